"""Lamps for PBX extensions that are not ours (issue 13): the embedded sipworker subscribes to
the dialog event package (RFC 4235) of extension 1009 — a SIPp notifier registered at Kamailio
(tests/support/sipp/uas_dialog_notify.xml) — and alice's page sees 1009 go idle → ringing →
busy → idle; malformed NOTIFYs change nothing; charlie (tenant B) sees nothing of it; the
subscription is refreshed and removed when the line stops."""

import asyncio
import re
import time

import pytest
from channels.db import database_sync_to_async

from phone import presence
from phone.models import Contact, LineButton, Phonebook
from tests.phone.ws import communicator

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def fresh_presence():
    presence.reset_memory()
    yield
    presence.reset_memory()


def test_it_chooses_the_tenants_internal_extensions_that_are_not_ours(cast):
    book = Phonebook.objects.create(tenant=cast.tenant_a, name="Office")
    for number in ("1009", "1002", "0312345678", "119", "2001", "12-34"):
        Contact.objects.create(tenant=cast.tenant_a, phonebook=book, name=number, number=number)
    LineButton.objects.create(
        tenant=cast.tenant_a, kind=LineButton.Kind.ONE_TOUCH, number="1010", position=1
    )
    other = Phonebook.objects.create(tenant=cast.tenant_b, name="B")
    Contact.objects.create(tenant=cast.tenant_b, phonebook=other, name="x", number="1011")
    # 1002 is bob's line; 0312345678 is outside; 119 a service number; 12-34 is 1234 stripped.
    # 2001 is charlie's extension, but in tenant B: in tenant A it is the PBX's.
    assert presence.pbx_extensions(cast.tenant_a.pk) == ["1009", "1010", "1234", "2001"]
    assert presence.pbx_extensions(cast.tenant_b.pk) == ["1011"]
    assert {"1009", "1010", "1002"} <= presence.lamp_extensions(cast.alice)
    assert "1009" not in presence.lamp_extensions(cast.charlie)


def test_it_bounds_the_watched_extensions(cast):
    book = Phonebook.objects.create(tenant=cast.tenant_a, name="Office")
    Contact.objects.bulk_create(
        Contact(tenant=cast.tenant_a, phonebook=book, name=str(n), number=str(n))
        for n in range(3000, 3000 + presence.MAX_PBX_EXTENSIONS + 20)
    )
    watched = presence.pbx_extensions(cast.tenant_a.pk)
    assert len(watched) == presence.MAX_PBX_EXTENSIONS and watched[0] == "3000"


class Page:
    """A phone page's WebSocket (no WebRTC: lamps need none)."""

    def __init__(self, ws):
        self.ws = ws

    @classmethod
    async def open(cls, user):
        ws = await database_sync_to_async(communicator)(user)
        assert (await ws.connect())[0]
        return cls(ws)

    async def lamps(self, extension, until, timeout=20):
        """The states of `extension` this page hears until it hears `until`."""
        seen = []
        deadline = time.monotonic() + timeout
        while not seen or seen[-1] != until:
            message = await self.ws.receive_json_from(timeout=max(0.1, deadline - time.monotonic()))
            if message["type"] == "presence":
                seen += [e["state"] for e in message["entries"] if e["extension"] == extension]
        return seen

    async def heard_of(self, extension):
        """Every presence state of `extension` among the messages this page has got (a
        receive that times out would end the communicator: receive_nothing first)."""
        seen = []
        while not await self.ws.receive_nothing(timeout=0.5):
            message = await self.ws.receive_json_from()
            if message["type"] == "presence":
                seen += [e["state"] for e in message["entries"] if e["extension"] == extension]
        return seen


@pytest.mark.integration
async def test_a_pbx_extensions_lamp_follows_its_dialogs(office, cast, make_sipp, settings):
    settings.SIPWORKER_RELEASE_SECONDS = 0.5
    kamailio = office
    await asyncio.to_thread(kamailio.add_user, "1009", "pw1009")
    try:
        await database_sync_to_async(_phonebook_with_1009)(cast)
        notifier = make_sipp(
            "uas_dialog_notify.xml", timeout=60, keys={"domain": kamailio.domain}
        ).start()
        registered = await asyncio.to_thread(
            lambda: make_sipp(
                "register.xml",
                kamailio.hostport,
                service="1009",
                auth=("1009", "pw1009"),
                keys={"domain": kamailio.domain, "contact_port": str(notifier.port)},
            ).run()
        )
        assert registered.ok, registered.stderr[-2000:]
        charlie = await Page.open(cast.charlie)
        alice = await Page.open(cast.alice)
        # SUBSCRIBE through Kamailio to 1009 (RFC 6665), then its NOTIFYs; the malformed
        # ones (bad XML → 400, 65 dialogs → 413) come between busy and idle and change nothing.
        assert await alice.lamps("1009", until="idle") == ["idle"]
        assert await alice.lamps("1009", until="idle") == ["ringing", "busy", "idle"]
        # 200 (Expires: 6) → refreshed after 3 s: wait for one refresh, then close the page;
        # the line stops (SIPWORKER_RELEASE_SECONDS) and un-SUBSCRIBEs (Expires: 0).
        await asyncio.sleep(4.0)
        await alice.ws.disconnect()
        result = await notifier.wait_async(timeout=30)
        assert result.ok, (result.stderr[-2000:], result.error_log[-2000:])
        assert result.requests.count("SUBSCRIBE") >= 3  # initial, refresh(es), Expires: 0
        assert 400 in result.responses and 413 in result.responses
        assert len(subscriptions(result)) == 1
        # The lamp is gone from the store with the subscription; tenant B heard nothing.
        for _ in range(50):
            entries = await presence.snapshot(cast.tenant_a.pk)
            if all(e.extension != "1009" for e in entries):
                break
            await asyncio.sleep(0.1)
        assert all(e.extension != "1009" for e in entries)
        assert await charlie.heard_of("1009") == []
        assert all(e.extension != "1009" for e in await presence.snapshot(cast.tenant_b.pk))
        await charlie.ws.disconnect()
    finally:
        await asyncio.to_thread(kamailio.remove_user, "1009")


def subscriptions(result):
    """The Call-IDs of the SUBSCRIBEs a SIPp notifier received."""
    ids = set()
    for block in re.split(r"^-{10,}.*$", result.messages_log, flags=re.M):
        lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
        if len(lines) > 1 and "received" in lines[0] and lines[1].startswith("SUBSCRIBE "):
            ids |= {line.split(":", 1)[1].strip() for line in lines if line.startswith("Call-ID:")}
    return ids


def _phonebook_with_1009(cast):
    book = Phonebook.objects.create(tenant=cast.tenant_a, name="Office")
    Contact.objects.create(tenant=cast.tenant_a, phonebook=book, name="Reception", number="1009")


class StubLine:
    """What phone.worker.blf.Watchers looks at of a line."""

    def __init__(self, tenant_id, registered=True):
        self.config = type("Config", (), {"tenant_id": tenant_id})()
        self.closed = False
        self.transport = object()
        self.registration = ("registered" if registered else "registering", "")
        self.watch = None
        self.posted = []

    def post(self, item):
        self.posted.append(item)


def test_one_line_per_tenant_watches_and_the_next_takes_over():
    from phone.worker import blf

    watchers = blf.Watchers()
    a1, a2, a3, b1 = StubLine(1), StubLine(1), StubLine(1, registered=False), StubLine(2)
    for line in (a1, a2, b1):  # a3 has not registered yet
        watchers.line_registered(line)
    assert watchers.elected == {1: a1, 2: b1}
    assert a1.posted == [blf.WatchTick()] and a2.posted == [] and b1.posted == [blf.WatchTick()]
    assert a1.watch is not None and a2.watch is None
    # a1 stops: a2 (registered, same tenant) takes over; a3 is not registered.
    a1.closed = True
    watchers.line_stopped(a1, [a3, a2, b1])
    assert watchers.elected == {1: a2, 2: b1} and a2.posted == [blf.WatchTick()]
    # A line that never watched stopping changes nothing.
    watchers.line_stopped(a3, [a2, b1])
    assert watchers.elected == {1: a2, 2: b1}
    a2.closed = True
    watchers.line_stopped(a2, [a3])
    assert 1 not in watchers.elected


async def test_only_one_worker_holds_a_tenants_watch_lease(settings, redis_url):
    from phone.worker import blf

    settings.REDIS_URL, settings.SIPWORKER_EMBEDDED = redis_url, False
    assert await blf.hold_lease(7, "w1")
    assert not await blf.hold_lease(7, "w2")
    assert await blf.hold_lease(7, "w1")  # renewed
    assert await blf.hold_lease(8, "w2")  # another tenant
    await blf.release_lease(7, "w2")  # not the holder: nothing happens
    assert not await blf.hold_lease(7, "w2")
    await blf.release_lease(7, "w1")
    assert await blf.hold_lease(7, "w2")


@pytest.mark.integration
async def test_across_sipworkers_one_subscribes_and_the_other_takes_over(
    cast, on_pbx, make_sipp, settings, redis_url, tmp_path
):
    """alice's and bob's lines on two sipworkers (Redis): each is its tenant's elected line on
    its worker, only the lease holder subscribes (SIPp takes one subscription), both pages see
    the lamp; when the holder's line stops, the other worker's line takes the lease."""
    import redis

    from portal.models import SipAccount
    from tests.phone.test_sipworker_redis import owner_map
    from tests.support.workers import Workers, redis_layer_settings

    kamailio = on_pbx
    settings.CHANNEL_LAYERS = redis_layer_settings(redis_url)
    settings.SIPWORKER_EMBEDDED = False
    settings.REDIS_URL = redis_url
    pool = Workers(redis_url, tmp_path, SIPWORKER_RELEASE_SECONDS="1")
    await asyncio.to_thread(kamailio.add_user, "1009", "pw1009")
    try:

        def setup():
            account = SipAccount.objects.get(user=cast.bob)
            account.password = "pw1002"
            account.save()
            _phonebook_with_1009(cast)

        await database_sync_to_async(setup)()
        notifier = make_sipp(
            "uas_dialog_notify.xml", timeout=60, keys={"domain": kamailio.domain}
        ).start()
        registered = await asyncio.to_thread(
            lambda: make_sipp(
                "register.xml",
                kamailio.hostport,
                service="1009",
                auth=("1009", "pw1009"),
                keys={"domain": kamailio.domain, "contact_port": str(notifier.port)},
            ).run()
        )
        assert registered.ok, registered.stderr[-2000:]
        pages = {}
        for n, user in enumerate((cast.alice, cast.bob), start=1):
            pool.start()  # the newest worker is the least loaded: the line is claimed there
            await asyncio.to_thread(pool.wait_live, n)
            pages[user.pk] = await Page.open(user)
        for _ in range(200):  # until both lines are claimed
            owners = owner_map(redis_url, [cast.alice, cast.bob])
            if all(owners.values()):
                break
            await asyncio.sleep(0.1)
        assert "" != owners[cast.alice.pk] != owners[cast.bob.pk] != "", owners
        # alice's line registered first and subscribed: her page sees the calls; bob's page
        # (the other worker) gets 1009's state from the shared store and the tenant group.
        alice = pages[cast.alice.pk]
        assert "busy" in await alice.lamps("1009", until="busy", timeout=30)
        assert (await alice.lamps("1009", until="idle"))[-1:] == ["idle"]
        assert (await pages[cast.bob.pk].lamps("1009", until="idle"))[-1:] == ["idle"]
        client = redis.from_url(redis_url)
        holder = client.get(f"bp:blf:{cast.tenant_a.pk}").decode()
        (holder_user,) = [u for u, w in owners.items() if w == holder]
        await asyncio.sleep(4.0)  # one refresh (Expires: 6)
        await pages[holder_user].ws.disconnect()
        result = await notifier.wait_async(timeout=30)
        assert result.ok, (result.stderr[-2000:], result.error_log[-2000:])
        assert len(subscriptions(result)) == 1  # one worker subscribed, not one per line
        # The other worker's line takes the lease at its next tick (every 10 s).
        for _ in range(300):
            now_holding = (client.get(f"bp:blf:{cast.tenant_a.pk}") or b"").decode()
            if now_holding not in ("", holder):
                break
            await asyncio.sleep(0.1)
        (other_user,) = [u for u in owners if u != holder_user]
        assert now_holding == owners[other_user]
        await pages[other_user].ws.disconnect()
    finally:
        await asyncio.to_thread(kamailio.remove_user, "1009")
        await asyncio.to_thread(pool.close)


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_withdrawing_a_pbx_lamp_leaves_a_line_of_ours_alone(store, settings, request):
    if store == "redis":
        settings.REDIS_URL = request.getfixturevalue("redis_url")
        settings.SIPWORKER_EMBEDDED = False
        from phone.signalling import owners

        await owners.announce("w1", 1)  # a live worker: its entries are in snapshots
    await presence.publish(1, presence.Entry("1009", "busy", 0, 1.0, "w1"))
    await presence.publish(1, presence.Entry("1010", "idle", 0, 1.0, "w1"))
    # 1010 became a portal user's line meanwhile: that line's entry replaced the PBX's.
    await presence.publish(1, presence.Entry("1010", "ringing", 42, 2.0, "w1"))
    await presence.withdraw_pbx(1, "1009")
    await presence.withdraw_pbx(1, "1010")
    assert [(e.extension, e.user_id) for e in await presence.snapshot(1)] == [("1010", 42)]
