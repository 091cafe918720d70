"""Production mode: Redis channel layer and a separate `manage.py sipworker` process.

A throwaway redis-server on a free port (services.md: tests do not touch the shared one), the
real sipworker command, the real consumer over the Redis layer, Kamailio and baresip.
"""

import time

import pytest
from channels.db import database_sync_to_async

from phone.media.bridge import ice_host_addresses
from phone.models import CallRecord
from tests.integration.test_call_control import Desk
from tests.phone.ws import communicator
from tests.support.workers import Workers, next_of, redis_layer_settings

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


async def test_it_keeps_an_idle_channel_alive_past_the_redis_socket_timeout(settings, redis_url):
    """redis-py 8 would time an idle channel out after 5 s (channels_redis blocks that long)."""
    import asyncio

    from channels.layers import get_channel_layer

    settings.CHANNEL_LAYERS = redis_layer_settings(redis_url)
    layer = get_channel_layer()
    channel = await layer.new_channel()

    async def later():
        await asyncio.sleep(6)
        await layer.send(channel, {"type": "late"})

    sender = asyncio.create_task(later())
    assert await layer.receive(channel) == {"type": "late"}
    await sender


@pytest.fixture
def workers(settings, redis_url, on_pbx, tmp_path):
    """Tenant A on the test PBX; this process's consumers on the Redis layer; sipworkers."""
    settings.CHANNEL_LAYERS = redis_layer_settings(redis_url)
    settings.SIPWORKER_EMBEDDED = False
    settings.REDIS_URL = redis_url  # leases: pages reach the worker that owns their line
    # ICE on loopback: a test page (FakeBrowser, patched alike) reaches the workers' WebRTC.
    pool = Workers(redis_url, tmp_path, ICE_HOST_ADDRESSES="127.0.0.1")
    yield pool
    pool.close()


@pytest.fixture
def production_mode(workers):
    """One sipworker."""
    return workers.start()


async def test_it_registers_and_calls_through_a_separate_sipworker(
    cast, production_mode, make_baresip, kamailio
):
    bob = await database_sync_to_async(make_baresip)("1002", auto_answer=True, tone_hz=700)
    ws = await database_sync_to_async(communicator)(cast.alice)
    assert (await ws.connect())[0]
    while (await next_of(ws, "registration"))["state"] != "registered":
        pass
    await ws.send_json_to({"type": "dial", "number": "1002"})
    while (call := await next_of(ws, "call"))["state"] != "incall":
        pass
    await bob.wait_event_async("CALL_ESTABLISHED", timeout=10)
    await ws.send_json_to({"type": "hangup", "call_id": call["id"]})
    while (await next_of(ws, "call"))["state"] != "ended":
        pass
    await bob.wait_event_async("CALL_CLOSED", timeout=10)
    await ws.disconnect()
    records = await database_sync_to_async(list)(CallRecord.objects.filter(user=cast.alice))
    assert [r.direction for r in records] == ["out"]


async def test_it_unregisters_its_lines_when_stopped(cast, production_mode, kamailio):
    ws = await database_sync_to_async(communicator)(cast.alice)
    assert (await ws.connect())[0]
    while (await next_of(ws, "registration"))["state"] != "registered":
        pass
    assert kamailio.registered("1001")
    production_mode.terminate()  # SIGTERM: the sipworker unregisters before it exits
    production_mode.wait(10)
    assert not kamailio.registered("1001")
    await ws.disconnect()


async def test_it_recovers_from_a_killed_sipworker_without_a_reload(
    cast, workers, make_baresip, kamailio
):
    """kill -9 mid-call, start a new one: the page hears of the loss, re-attaches by itself,
    the line registers again, the interrupted call is closed in history, calls ring again."""
    import asyncio
    import signal

    from django.db.models import Q

    bob = await database_sync_to_async(make_baresip)("1002", auto_answer=True, tone_hz=700)
    carol = await database_sync_to_async(make_baresip)("1003")
    worker = workers.start()
    ws = await database_sync_to_async(communicator)(cast.alice)
    assert (await ws.connect())[0]
    while (await next_of(ws, "registration"))["state"] != "registered":
        pass
    await ws.send_json_to({"type": "dial", "number": "1002"})
    while (call := await next_of(ws, "call"))["state"] != "incall":
        pass
    await bob.wait_event_async("CALL_ESTABLISHED", timeout=10)
    loop = asyncio.get_running_loop()
    # The worker writes the call's history row on its database thread while the call goes on
    # (call setup never waits for the database); on a loaded machine that INSERT can still be
    # queued when the call is up. This test is about what recovery does with an open row, so
    # the kill waits until there is one (seen once: a kill before the INSERT left no row).
    opened = database_sync_to_async(
        CallRecord.objects.filter(sip_call_id=call["id"], user=cast.alice).exists
    )
    deadline = loop.time() + 10
    while not await opened():
        assert loop.time() < deadline, "the worker never wrote the call's history row"
        await asyncio.sleep(0.05)

    worker.send_signal(signal.SIGKILL)
    killed = loop.time()
    lost = await next_of(ws, "worker", timeout=10)
    lost_after = loop.time() - killed
    assert lost["state"] == "lost"

    workers.start()
    started = loop.time()
    assert (await next_of(ws, "worker", timeout=20))["state"] == "ok"
    assert (await next_of(ws, "calls"))["calls"] == []  # the call died with its worker
    while (await next_of(ws, "registration", timeout=20))["state"] != "registered":
        pass
    registered_after = loop.time() - started
    contacts = await database_sync_to_async(kamailio.registered)("1001")
    assert len(contacts) >= 1
    print(
        f"\nsipworker killed -> page told after {lost_after:.2f} s;"
        f" new sipworker -> line registered again after {registered_after:.2f} s"
    )

    row = await database_sync_to_async(
        lambda: CallRecord.objects.get(Q(sip_call_id=call["id"]), user=cast.alice)
    )()
    assert row.ended_at is not None and row.end_reason == "worker restart"

    # Callers reach the user again: carol calls and alice's page rings.
    await database_sync_to_async(carol.dial)("1001")
    incoming = await next_of(ws, "incoming", timeout=15)
    assert incoming["remote"] == "1003"
    await ws.send_json_to({"type": "reject", "call_id": incoming["id"]})
    await ws.disconnect()


STAFF = [f"30{i:02d}" for i in range(20)]  # twenty users' extensions on a PBX of their own
OUTSIDE = "3099"
OUTSIDE_HZ, PAGE_HZ = 700, 1000


@pytest.fixture
def staff(cast, make_kamailio):
    """Twenty users of tenant A on a Kamailio that knows them (and an outside phone, 3099)."""
    from django.contrib.auth import get_user_model

    from portal.models import Profile, SipAccount

    pbx = make_kamailio(users={ext: f"pw{ext}" for ext in [*STAFF, OUTSIDE]})
    cast.tenant_a.pbx_domain = pbx.domain
    cast.tenant_a.outbound_proxy = pbx.hostport
    cast.tenant_a.save()
    users = []
    for ext in STAFF:
        user = get_user_model().objects.create_user(username=f"u{ext}", password="x")
        Profile.objects.create(user=user, tenant=cast.tenant_a, display_name=f"User {ext}")
        SipAccount.objects.create(
            tenant=cast.tenant_a, user=user, slot=1, extension=ext, password=f"pw{ext}"
        )
        users.append(user)
    return pbx, users


def owner_map(redis_url, users):
    import redis

    client = redis.from_url(redis_url)
    return {user.pk: (client.get(f"bp:owner:{user.pk}") or b"").decode() for user in users}


async def test_two_sipworkers_share_the_lines_and_take_over_when_one_dies(
    workers, staff, redis_url, make_baresip, make_tone
):
    # (`staff` after `workers`: it points tenant A at its own PBX, after on_pbx did.)
    import asyncio
    import signal

    pbx, users = staff
    first, second = workers.start(), workers.start()
    await asyncio.to_thread(workers.wait_live, 2)
    pages = {}
    for user in users:
        ws = await database_sync_to_async(communicator)(user)
        assert (await ws.connect())[0]
        pages[user.pk] = ws
    for ws in pages.values():
        while (await next_of(ws, "registration"))["state"] != "registered":
            pass
    owners = owner_map(redis_url, users)
    by_pid = {proc.pid: proc for proc in (first, second)}
    pids = {int(owner.split("-")[-2]) for owner in owners.values()}
    assert pids == set(by_pid), f"lines not spread over both workers: {owners}"
    for ext in STAFF:  # one binding per account: no line registered by two workers
        assert len(await asyncio.to_thread(pbx.registered, ext)) == 1, ext

    # A call with audio (a page with its WebRTC peer) on the worker that survives.
    doomed_pid = int(owners[users[0].pk].split("-")[-2])
    survivor = next(u for u in users if int(owners[u.pk].split("-")[-2]) != doomed_pid)
    outside = await asyncio.to_thread(
        make_baresip, OUTSIDE, f"pw{OUTSIDE}", pbx=pbx, auto_answer=True,
        tone=make_tone(OUTSIDE_HZ, seconds=60),
    )  # fmt: skip
    with ice_host_addresses(["127.0.0.1"]):
        desk = await Desk.open(survivor, PAGE_HZ)
    await desk.send("dial", number=OUTSIDE)
    call = await desk.next("call", state="incall")
    await asyncio.to_thread(outside.wait_event, "CALL_ESTABLISHED", 10)

    moved = [u for u in users if int(owners[u.pk].split("-")[-2]) == doomed_pid]
    by_pid[doomed_pid].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    back = {}
    for user in moved:
        ws = pages[user.pk]
        assert (await next_of(ws, "worker", timeout=15))["state"] == "lost"
        while (await next_of(ws, "registration", timeout=20))["state"] != "registered":
            pass
        back[user.pk] = time.monotonic() - killed
    print(
        f"\nsipworker killed: {len(moved)} lines registered again on the other after "
        f"{min(back.values()):.2f}-{max(back.values()):.2f} s"
    )
    after = owner_map(redis_url, users)
    assert {int(after[u.pk].split("-")[-2]) for u in users} == set(by_pid) - {doomed_pid}
    # The survivor's call went on untouched: the page still hears the outside phone.
    since = time.monotonic()
    await asyncio.sleep(1.5)
    assert not outside.event_types().count("CALL_CLOSED")
    assert desk.hears(since) == pytest.approx(OUTSIDE_HZ, abs=15)

    # A worker starting again takes nothing back, not even mid-call: owners stay as they are.
    workers.start()
    await asyncio.to_thread(workers.wait_live, 2)
    await asyncio.sleep(2.5)
    assert owner_map(redis_url, users) == after
    since = time.monotonic()
    await asyncio.sleep(1.5)
    assert desk.hears(since) == pytest.approx(OUTSIDE_HZ, abs=15)
    # ... and the outside phone heard the page to the end.
    await desk.send("hangup", call_id=call["id"])
    await asyncio.to_thread(outside.wait_event, "CALL_CLOSED", 10)
    heard = await asyncio.to_thread(recorded_windows, outside)
    assert heard[-4:].count(PAGE_HZ) >= 2, heard
    await desk.close()
    for ws in pages.values():
        await ws.disconnect()


def recorded_windows(phone) -> list[int | None]:
    """Half-second windows of what a baresip far end recorded, 15 Hz buckets snapped to the
    page's tone (baresip may still be finishing the file: read it again shortly)."""
    import wave

    from tests.support import analysis
    from tests.support.tones import tone_windows

    deadline = time.monotonic() + 3.0
    while True:
        try:
            windows = tone_windows(analysis.read_wav(phone.received_wavs()[-1])[0])
            return [PAGE_HZ if w is not None and abs(w - PAGE_HZ) < 15 else w for w in windows]
        except (wave.Error, EOFError, IndexError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
