"""代理応答 and 応答不可 (issue 13) on the real stack: Kamailio, the embedded sipworker, the phone
WebSocket with an aiortc peer per page (tests/integration/test_call_control.Desk), and an
outside phone (our UA registered as 1003, playing 700 Hz).

Audio is checked by frequency at both ends: the outside phone 700 Hz, alice's page 1000 Hz,
bob's 1300 Hz, carol's 1600 Hz.
"""

import asyncio
import time

import pytest
from channels.db import database_sync_to_async

from phone import presence
from phone.models import CallRecord
from phone.sip.useragent import CallState, CallStateChanged
from tests.integration import test_call_control as call_control
from tests.integration.test_call_control import ALICE_HZ, BOB_HZ, OUTSIDE_HZ, frequency_heard

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("loopback_ice"),
]

CAROL_HZ = 1600

# The pages (Desk) and the outside phone of the call-control tests.
desks = call_control.desks
outside = call_control.outside
carol_user = call_control.carol_user


@pytest.fixture(autouse=True)
def fresh_presence():
    presence.reset_memory()
    yield
    presence.reset_memory()


async def lamp(desk, extension, state, timeout=15):
    """Wait until this page's lamp of `extension` is `state`; the states seen on the way."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        message = await desk.next("presence", timeout=max(0.1, deadline - time.monotonic()))
        for entry in message["entries"]:
            if entry["extension"] == extension:
                seen.append(entry["state"])
        if seen and seen[-1] == state:
            return seen


async def rows():
    return await database_sync_to_async(
        lambda: {r.user_id: r for r in CallRecord.objects.filter(ended_at__isnull=False)}
    )()


async def test_alice_picks_up_an_outside_call_ringing_at_bob_with_audio(desks, cast, outside):
    alice, bob = await desks(cast.alice, ALICE_HZ), await desks(cast.bob, BOB_HZ)
    await lamp(alice, "1002", "idle")
    caller = await outside.call("1002")
    ringing = await bob.next("incoming")
    await lamp(alice, "1002", "ringing")

    await alice.send("pickup", extension="1002")
    picked = await alice.next("call", state="incall", direction="in")
    assert picked["remote"] == "1003"
    # bob's page stops ringing: his call ended, taken by a colleague.
    await bob.next("call", id=ringing["id"], state="ended", reason="picked-up")
    await outside.wait_for(CallStateChanged, 10, call_id=caller, state=CallState.CONNECTED)
    since = time.monotonic()
    heard_since = len(outside.heard(caller, skip_seconds=0))
    await asyncio.sleep(2.0)
    assert alice.hears(since) == pytest.approx(OUTSIDE_HZ, abs=15)
    tail = outside.heard(caller, skip_seconds=0)[heard_since:]
    assert frequency_heard(tail) == pytest.approx(ALICE_HZ, abs=15)
    assert bob.hears(since) is None  # bob's page is out of it
    await lamp(alice, "1002", "idle")

    await alice.send("hangup", call_id=picked["id"])
    await outside.wait_for(CallStateChanged, 10, call_id=caller, state=CallState.TERMINATED)
    await asyncio.sleep(0.5)
    history = await rows()
    assert history[cast.bob.pk].end_reason == "picked-up"
    assert history[cast.bob.pk].answered_by_id == cast.alice.pk
    assert history[cast.bob.pk].answered_by_name == "Alice"
    mine = history[cast.alice.pk]
    assert (mine.direction, mine.remote_number) == ("in", "1003")


async def test_group_pickup_takes_a_colleagues_call_to_bob(desks, cast, carol_user):
    """carol (tenant A, not in the group) calls bob; alice (bob's group) presses
    グループ代理応答 and talks with carol."""
    alice, bob = await desks(cast.alice, ALICE_HZ), await desks(cast.bob, BOB_HZ)
    carol = await desks(carol_user, CAROL_HZ)
    await carol.send("dial", number="1002")
    ringing = await bob.next("incoming")
    await lamp(alice, "1002", "ringing")
    await alice.send("pickup.group")
    picked = await alice.next("call", state="incall", direction="in")
    assert picked["remote"] == "1003"
    await bob.next("call", id=ringing["id"], state="ended", reason="picked-up")
    await carol.next("call", state="incall")
    since = time.monotonic()
    await asyncio.sleep(2.0)
    assert alice.hears(since) == pytest.approx(CAROL_HZ, abs=15)
    assert carol.hears(since) == pytest.approx(ALICE_HZ, abs=15)
    # Nothing rings any more: group pickup says so.
    await alice.send("pickup.group")
    assert (await alice.next("error", request="pickup.group"))["code"] == "no_call"


async def test_pickup_of_a_colleague_whose_phone_is_not_ringing_is_refused(desks, cast):
    alice = await desks(cast.alice, ALICE_HZ)
    await desks(cast.bob, BOB_HZ)
    await lamp(alice, "1002", "idle")
    await alice.send("pickup", extension="1002")
    assert (await alice.next("error", request="pickup"))["code"] == "no_call"


def embedded_line(user):
    """The embedded sipworker's line of `user` (the host runs on this test's event loop)."""
    from phone.worker import embedded

    task = embedded._hosts[asyncio.get_running_loop()]
    host = task.get_coro().cr_frame.f_locals["self"]
    return host.lines[user.pk]


def drop_stale_contacts(pbx, ext, token):
    """Earlier tests' lines of `ext` died with their event loop still registered: Kamailio
    would fork to them too (and answer 408 for the dead branch). Keep the live line's (its
    Contact carries the line's token, phone.sip.demux)."""
    contacts = pbx.registered(ext)
    assert any(f"bpline={token}" in c.uri for c in contacts), contacts
    for contact in contacts:
        if f"bpline={token}" not in contact.uri:
            pbx.kamcmd("ul.rm_contact", "location", f"{ext}@{pbx.domain}", contact.uri)


async def test_dnd_refuses_with_486_and_logs_it(desks, cast, outside, office):
    alice, bob = await desks(cast.alice, ALICE_HZ), await desks(cast.bob, BOB_HZ)
    token = embedded_line(cast.bob).ua.config.line_token
    await asyncio.to_thread(drop_stale_contacts, office, "1002", token)
    await bob.send("dnd", on=True)
    await bob.next("dnd", on=True)
    assert await lamp(alice, "1002", "dnd")
    caller = await outside.call("1002")
    ended = await outside.wait_for(CallStateChanged, 10, call_id=caller, state=CallState.TERMINATED)
    assert ended.status == 486
    while not await bob.ws.receive_nothing(timeout=0.3):
        bob.unread.append(await bob.ws.receive_json_from())
    assert not [m for m in bob.unread if m["type"] in ("incoming", "call")]
    row = (await rows())[cast.bob.pk]
    assert (row.direction, row.end_reason, row.remote_number) == ("rejected", "DND", "1003")
