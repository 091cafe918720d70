"""The line actor (phone.worker.line) against SIP peers wired in memory: no PBX, no sockets for
SIP, the real host, channel layer, database and RTP legs.

Each test plays the PBX and the other party with a FarEnd at PBX (the line's outbound proxy),
and the page with a channel of the in-memory layer.
"""

import asyncio
from dataclasses import dataclass

import pytest
from channels.db import database_sync_to_async

from phone.models import CallRecord
from phone.signalling import protocol
from phone.sip.useragent import CallState, CallStateChanged, HoldChanged
from phone.worker.host import SipWorkerHost
from tests.support.memsip import PBX, FarEnd, MemoryNetwork, Page

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class World:
    host: SipWorkerHost
    net: MemoryNetwork
    far: FarEnd
    page: Page
    line: object


@pytest.fixture
def pbx_tenant(cast, settings):
    settings.SIP_KEEPALIVE_SECONDS = 0  # no OPTIONS probes in memory: nothing answers them
    settings.SIPWORKER_RELEASE_SECONDS = 30
    cast.tenant_a.outbound_proxy = f"{PBX[0]}:{PBX[1]}"
    cast.tenant_a.save()
    return cast.tenant_a


@pytest.fixture
async def world(pbx_tenant, cast):
    """(host, network, far end at PBX, alice's page) with alice's line started."""
    net = MemoryNetwork()
    far = FarEnd.open(net, PBX)
    host = SipWorkerHost("sipworker-test")
    host.open_sip = net.open_sip
    page = await Page.open(host, cast.alice)
    await page.wait("calls")
    line = host.lines[cast.alice.pk]
    yield World(host, net, far, page, line)
    page.close()
    await host.shutdown()


def line_addr(line):
    return line.transport.local_addr


async def incoming(far, page, line):
    call_id = far.call(line_addr(line))
    await page.wait("call", id=call_id, state="incoming")
    return call_id


async def rows(**filters):
    return await database_sync_to_async(lambda: list(CallRecord.objects.filter(**filters)))()


async def test_it_opens_the_history_row_when_a_call_rings_and_completes_it_at_the_end(world, cast):
    host, far, page, line = world.host, world.far, world.page, world.line
    call_id = await incoming(far, page, line)
    [row] = await rows(sip_call_id=call_id)
    assert row.ended_at is None and row.worker == host.worker_id
    far.execute(lambda now: far.ua.hangup(now, call_id))  # CANCEL
    await page.wait("call", id=call_id, state="ended")
    [row] = await rows(sip_call_id=call_id)
    assert row.ended_at is not None and row.direction == "missed" and row.worker == ""


async def test_it_refuses_the_answer_when_the_caller_cancels_while_the_port_opens(world, cast):
    host, net, far, page, line = world.host, world.net, world.far, world.page, world.line
    gate = asyncio.Event()
    opened = []

    async def slow_media():
        from phone.worker.media import CallMedia

        media = await CallMedia.open()
        opened.append(media)
        await gate.wait()
        return media

    host.open_media = slow_media
    call_id = await incoming(far, page, line)
    page.send(protocol.Answer(call_id))
    while not opened:
        await asyncio.sleep(0.01)
    far.execute(lambda now: far.ua.hangup(now, call_id))  # CANCEL lands mid-answer
    await asyncio.sleep(0.05)
    gate.set()
    error = await page.wait("error", request="answer")
    assert error["code"] == "no_call"
    await page.wait("call", id=call_id, state="ended")
    assert opened[0].leg.closed, "the RTP leg opened for the answer must be closed"
    assert not line.calls
    [row] = await rows(sip_call_id=call_id)
    assert row.direction == "missed"
    # Nothing answered the INVITE with 200 after its 487.
    assert not [d for d in net.sent("SIP/2.0 200", src=line_addr(line)) if b"INVITE" in d.data]


async def test_it_answers_the_call_the_user_clicked_with_a_stale_call_ringing(world, cast):
    far, page, line = world.far, world.page, world.line
    stale = await incoming(far, page, line)
    fresh = await incoming(far, page, line)
    page.send(protocol.Answer(fresh))
    await page.wait("call", id=fresh, state="incall")
    assert line.calls[stale].phase == "incoming"
    page.send(protocol.Reject(stale))
    await page.wait("call", id=stale, state="ended")
    [row] = await rows(sip_call_id=stale)
    assert row.direction == "rejected"


async def test_it_shows_the_answer_after_the_caller_gave_up_as_an_error(world, cast):
    far, page, line = world.far, world.page, world.line
    call_id = await incoming(far, page, line)
    far.execute(lambda now: far.ua.hangup(now, call_id))
    await page.wait("call", id=call_id, state="ended")
    page.send(protocol.Answer(call_id))
    assert (await page.wait("error", request="answer"))["code"] == "no_call"


async def connected_call(far, page, line):
    call_id = await incoming(far, page, line)
    page.send(protocol.Answer(call_id))
    await page.wait("call", id=call_id, state="incall")
    await far.wait(lambda e: isinstance(e, CallStateChanged) and e.state is CallState.CONNECTED)
    return call_id


async def test_it_holds_only_when_the_far_end_accepts(world, cast):
    far, page, line = world.far, world.page, world.line
    call_id = await connected_call(far, page, line)
    page.send(protocol.Hold(call_id))
    pending = await page.wait("call", id=call_id, pending="hold")
    assert pending["state"] == "incall"  # not held until the 2xx
    held = await page.wait("call", id=call_id, state="held")
    assert held["held"] and held["pending"] is None
    page.send(protocol.Unhold(call_id))
    await page.wait("call", id=call_id, state="incall", pending=None, held=False)


@pytest.mark.parametrize("status", [488, 403])
async def test_it_reports_a_refused_hold_and_stays_in_the_call(world, cast, status):
    net, far, page, line = world.net, world.far, world.page, world.line
    call_id = await connected_call(far, page, line)

    def refuse(datagram):
        if datagram.first_line.startswith("INVITE") and datagram.dst == PBX:
            net.answer(datagram, status)
            return True
        return False

    net.intercept = refuse
    page.send(protocol.Hold(call_id))
    error = await page.wait("error", code="hold_refused")
    assert str(status) in error["message"]
    message = [m for m in page.messages if m["type"] == "call"][-1]
    assert message["state"] == "incall" and not message["held"] and message["pending"] is None
    assert line.calls[call_id].phase == "incall"


async def test_it_retries_a_hold_after_491_and_reports_it_once(world, cast):
    net, far, page, line = world.net, world.far, world.page, world.line
    call_id = await connected_call(far, page, line)
    refused = []

    def glare_once(datagram):
        if datagram.first_line.startswith("INVITE") and datagram.dst == PBX and not refused:
            refused.append(datagram)
            net.answer(datagram, 491)
            return True
        return False

    net.intercept = glare_once
    page.send(protocol.Hold(call_id))
    await page.wait("call", id=call_id, state="held", timeout=8)  # RFC 3261 §14.1: 2.1-4 s
    assert refused
    assert not [m for m in page.messages if m["type"] == "error"]


async def test_it_survives_glare_when_both_sides_reinvite_at_once(world, cast):
    far, page, line = world.far, world.page, world.line
    call_id = await connected_call(far, page, line)
    page.send(protocol.Hold(call_id))
    far.execute(lambda now: far.ua.hold(now, call_id))  # their re-INVITE crosses ours
    await page.wait("call", id=call_id, state="held", timeout=10)
    await far.wait(lambda e: isinstance(e, HoldChanged) and e.ok, timeout=10)
    assert line.calls[call_id].phase == "held"


async def test_it_ends_the_call_when_bye_arrives_during_a_hold(world, cast):
    net, far, page, line = world.net, world.far, world.page, world.line
    call_id = await connected_call(far, page, line)
    # The far end never answers the hold; it hangs up instead.
    net.intercept = lambda d: d.first_line.startswith("INVITE") and d.dst == PBX
    page.send(protocol.Hold(call_id))
    await page.wait("call", id=call_id, pending="hold")
    net.intercept = None
    far.execute(lambda now: far.ua.hangup(now, call_id))
    ended = await page.wait("call", id=call_id, state="ended")
    assert ended["reason"] == "remote-bye"
    assert not line.calls
    [row] = await rows(sip_call_id=call_id)
    assert row.direction == "in" and row.ended_at is not None


async def test_it_answers_a_reinvite_without_sdp_with_an_offer(world, cast):
    net, far, page, line = world.net, world.far, world.page, world.line
    call_id = await connected_call(far, page, line)
    dialog = far.ua.calls[call_id].dialog
    reinvite = dialog.create_request("INVITE")
    reinvite.headers.set("via", str(far.ua.layer.make_via()))
    net.inject(PBX, line_addr(line), reinvite.to_bytes())
    for _ in range(100):
        answers = [
            d
            for d in net.sent("SIP/2.0 200", src=line_addr(line))
            if f"{reinvite.cseq.seq} INVITE".encode() in d.data
        ]
        if answers:
            break
        await asyncio.sleep(0.01)
    assert answers and b"application/sdp" in answers[0].data and b"m=audio" in answers[0].data
    assert line.calls[call_id].phase == "incall"


@pytest.fixture
def short_ring(pbx_tenant):
    pbx_tenant.ring_timeout = 1  # below the admin form's minimum: a test needs no minute
    pbx_tenant.save()


async def test_it_ends_an_unanswered_call_after_the_ring_timeout(short_ring, world, cast):
    far, page, line = world.far, world.page, world.line
    call_id = await incoming(far, page, line)
    ended = await page.wait("call", id=call_id, state="ended", timeout=4)
    assert ended["reason"] == "no-answer"
    final = await far.wait(
        lambda e: isinstance(e, CallStateChanged) and e.state is CallState.TERMINATED
    )
    assert final.status == 480
    [row] = await rows(sip_call_id=call_id)
    assert row.direction == "missed" and row.end_reason == "no-answer"


async def test_it_refuses_an_invite_from_anyone_but_the_pbx(world, cast):
    net, page, line = world.net, world.page, world.line
    intruder = FarEnd.open(net, ("127.0.0.1", 5998), "intruder")
    call_id = intruder.call(line_addr(line))
    final = await intruder.wait(
        lambda e: isinstance(e, CallStateChanged) and e.state is CallState.TERMINATED
    )
    assert final.status == 403
    await asyncio.sleep(0.05)
    assert call_id not in line.calls
    assert not [m for m in page.messages if m["type"] in ("incoming", "call")]
    assert not await rows(sip_call_id=call_id)


async def test_it_closes_rows_a_dead_worker_left_open(cast):
    from django.utils import timezone

    def open_row():
        return CallRecord.objects.create(
            tenant=cast.tenant_a,
            user=cast.alice,
            direction="in",
            remote_number="0312345678",
            started_at=timezone.now(),
            answered_at=timezone.now(),
            worker="dead-worker",
            sip_call_id="orphan@x",
        )

    await database_sync_to_async(open_row)()
    host = SipWorkerHost("sipworker-test")
    await host.recover()
    [row] = await rows(sip_call_id="orphan@x")
    assert row.ended_at is not None and row.end_reason == "worker restart"
    assert row.talk_seconds is not None


async def test_it_names_the_call_in_every_command(world, cast):
    far, page, line = world.far, world.page, world.line
    call_id = await connected_call(far, page, line)
    page.send(protocol.Hold("no-such-call"))
    assert (await page.wait("error", request="hold"))["code"] == "bad_state"
    assert line.calls[call_id].phase == "incall"
    page.send(protocol.Hangup(call_id))
    await page.wait("call", id=call_id, state="ended")


async def test_one_call_is_heard_in_one_page_the_one_that_took_it_back(world, cast):
    """Which page's WebRTC bridge carries a call is decided in one place: the page that took
    the call last; the other page's bridge lets go of the leg."""
    from phone.media.bridge import MediaBridge

    host, far, first, line = world.host, world.far, world.page, world.line
    second = await Page.open(host, cast.alice)
    try:
        await second.wait("calls")
        bridges = {page.session: MediaBridge() for page in (first, second)}
        host.media.bridges.update(bridges)  # as if each page had negotiated WebRTC
        call_id = await connected_call(far, first, line)
        leg = line.calls[call_id].media.leg
        assert bridges[first.session].leg is leg and bridges[second.session].leg is None
        first.send(protocol.Hold(call_id))
        await second.wait("call", id=call_id, state="held")
        assert bridges[first.session].leg is None  # nobody hears a held call
        mark = first.mark()
        second.send(protocol.Unhold(call_id))
        await first.wait("call", after=mark, id=call_id, state="incall", pending=None)
        assert bridges[second.session].leg is leg and bridges[first.session].leg is None
    finally:
        second.close()


async def test_it_holds_the_call_that_is_up_to_answer_a_second_and_swaps(world, cast):
    far, page, line = world.far, world.page, world.line
    first = await connected_call(far, page, line)
    second = await incoming(far, page, line)  # call waiting: it rings as a second call
    assert line.calls[first].phase == "incall"
    page.send(protocol.Answer(second))
    await page.wait("call", id=first, state="held")
    await page.wait("call", id=second, state="incall")
    mark = page.mark()
    page.send(protocol.Swap(first))
    await page.wait("call", after=mark, id=second, state="held")
    await page.wait("call", after=mark, id=first, state="incall", pending=None)
    mark = page.mark()
    page.send(protocol.Swap(second))
    await page.wait("call", after=mark, id=first, state="held")
    await page.wait("call", after=mark, id=second, state="incall", pending=None)
    page.send(protocol.Hangup(second))
    await page.wait("call", id=second, state="ended")
    assert line.calls[first].phase == "held"


@pytest.mark.parametrize(
    ("status", "code", "tone"),
    [(486, "busy", True), (404, "not-found", False), (480, "no-answer", False)],
)
async def test_it_tells_why_a_call_failed_and_plays_the_busy_tone(
    world, cast, monkeypatch, status, code, tone
):
    from phone.media.bridge import MediaBridge
    from phone.media.tones import JapaneseBusy
    from phone.sip.useragent import IncomingCall
    from phone.worker import line as line_module

    monkeypatch.setattr(line_module, "BUSY_TONE_SECONDS", 0.3)
    host, far, page = world.host, world.far, world.page
    bridge = host.media.bridges[page.session] = MediaBridge()
    page.send(protocol.Dial("1002"))
    invite = await far.wait(lambda e: isinstance(e, IncomingCall))
    far.execute(lambda now: far.ua.reject(now, invite.call_id, status))
    notice = await page.wait("notice")
    assert (notice["level"], notice["code"]) == ("error", code)
    assert str(status) in notice["text"]
    await page.wait("call", state="ended")
    assert isinstance(bridge.source, JapaneseBusy) is tone
    await asyncio.sleep(0.5)
    assert bridge.source is None  # a few seconds, then silence


async def consultation(world):
    """alice has a held call with the far end and an answered consultation call to 1003."""
    from phone.sip.useragent import IncomingCall

    far, page, line = world.far, world.page, world.line
    held = await connected_call(far, page, line)
    page.send(protocol.Hold(held))
    await page.wait("call", id=held, state="held")
    page.send(protocol.TransferStart(held, "1003"))
    invite = await far.wait(lambda e: isinstance(e, IncomingCall) and e.call_id != held)
    far.execute(lambda now: far.ua.answer(now, invite.call_id, answer_sdp(invite.offer)))
    consult = await page.wait("call", state="incall", transfer={"of": held})
    return held, consult["id"], invite.call_id


def answer_sdp(offer):
    from phone.sip.sdp import negotiate_answer

    return negotiate_answer(offer, "127.0.0.1", 40002, session_id="9")


async def test_it_completes_a_transfer_the_peers_carry_out(world, cast):
    from phone.sip.useragent import TransferRequested

    far, page, line = world.far, world.page, world.line
    held, consult, _far_consult = await consultation(world)
    page.send(protocol.TransferComplete(consult))
    refer = await far.wait(lambda e: isinstance(e, TransferRequested))
    assert refer.replaces is not None and refer.replaces.startswith(consult)
    assert refer.target.user == "1003"  # its address at the PBX, not its Contact
    far.execute(lambda now: far.ua.transfer_progress(now, refer.call_id, 200))
    await page.wait("call", id=held, state="ended", reason="transferred")
    await page.wait("call", id=consult, state="ended", reason="transferred")
    assert not line.calls and not line.joined


@pytest.mark.parametrize("how", ["refused", "silent"])
async def test_it_joins_the_calls_itself_when_the_peers_do_not_transfer(
    world, cast, monkeypatch, how
):
    from phone.worker import line as line_module

    monkeypatch.setattr(line_module, "TRANSFER_GRACE_SECONDS", 0.3)
    net, far, page, line = world.net, world.far, world.page, world.line
    held, consult, far_consult = await consultation(world)

    def refer(datagram):
        if datagram.first_line.startswith("REFER") and datagram.dst == PBX:
            if how == "refused":
                net.answer(datagram, 403)
            return True  # "silent": the far end never answers the REFER
        return False

    net.intercept = refer
    page.send(protocol.TransferComplete(consult))
    await page.wait("call", id=held, state="ended", reason="transferred")
    await page.wait("call", id=consult, state="ended", reason="transferred")
    assert set(line.joined) == {held, consult}  # the worker relays between them now
    pair = line.joined[held]
    assert pair.a.media.leg.source is None  # no more music on hold: the target talks
    # The user's history has both calls, ended when they were handed over.
    rows_now = await rows(user=cast.alice)
    assert {r.sip_call_id for r in rows_now if r.end_reason == "transferred"} == {held, consult}
    net.intercept = None
    # One side hangs up: the worker hangs up the other and stops relaying.
    far.execute(lambda now: far.ua.hangup(now, far_consult))
    await far.wait(
        lambda e: (
            isinstance(e, CallStateChanged)
            and e.call_id == held
            and e.state is CallState.TERMINATED
        )
    )
    assert not line.joined


async def test_it_calls_the_target_when_it_is_transferred_and_notifies_progress(world, cast):
    from phone.sip.useragent import IncomingCall, TransferProgress

    far, page, line = world.far, world.page, world.line
    old = await connected_call(far, page, line)
    far.execute(lambda now: far.ua.refer(now, old, "sip:1003@pbx.test"))
    invite = await far.wait(lambda e: isinstance(e, IncomingCall) and e.call_id != old)
    assert invite.request_uri.user == "1003"
    assert invite.headers.get("referred-by")
    far.execute(lambda now: far.ua.answer(now, invite.call_id, answer_sdp(invite.offer)))
    done = await far.wait(lambda e: isinstance(e, TransferProgress) and e.final)
    assert done.status == 200
    new = await page.wait("call", id=invite.call_id, state="incall")
    assert new["remote"] == "1003"
    await page.wait("call", id=old, state="ended", reason="transferred")
    assert line.calls[invite.call_id].session == page.session


async def test_it_takes_an_invite_with_replaces_in_place_of_the_call(world, cast):
    far, page, line = world.far, world.page, world.line
    old = await connected_call(far, page, line)
    dialog = far.ua.calls[old].dialog
    replaces = f"{old};to-tag={dialog.remote_tag};from-tag={dialog.local_tag}"
    offer = answer_sdp(far.ua.calls[old].remote_sdp)  # any valid SDP of ours will do
    uri = f"sip:1001@{line_addr(line)[0]}:{line_addr(line)[1]}"
    new_id, _ = far.execute(
        lambda now: far.ua.call(now, uri, offer, headers=[("Replaces", replaces)])
    )
    new = await page.wait("call", id=new_id, state="incall")
    assert new["direction"] == "in"
    await page.wait("call", id=old, state="ended", reason="replaced")
    assert not [m for m in page.messages if m["type"] == "incoming" and m["id"] == new_id]
    assert line.calls[new_id].session == page.session


@pytest.fixture
def park_group(cast):
    from phone.models import ParkGroup

    group = ParkGroup.objects.create(tenant=cast.tenant_a, name="Sales", park_timeout=60)
    group.members.add(cast.alice, cast.bob)
    other = ParkGroup.objects.create(tenant=cast.tenant_b, name="B")
    other.members.add(cast.charlie)
    return group


async def slot_row(group, number):
    from phone.models import ParkSlot

    return await database_sync_to_async(
        lambda: ParkSlot.objects.filter(group=group, number=number).first()
    )()


async def test_it_parks_a_call_and_tells_the_group(park_group, world, cast):
    from phone.signalling import events

    host, far, page, line = world.host, world.far, world.page, world.line
    listener = await host.layer.new_channel()
    await host.layer.group_add(events.park_group(park_group.pk), listener)
    call_id = await connected_call(far, page, line)
    page.send(protocol.Park(call_id, 2))
    parked = await page.wait("call", id=call_id, park=2)
    event = await asyncio.wait_for(host.layer.receive(listener), 2)
    assert event["type"] == events.PARK_CHANGED
    slot = event["slots"][1]
    assert (slot["slot"], slot["parked_by_id"], slot["caller"]) == (
        2,
        cast.alice.pk,
        parked["remote"],
    )
    await page.wait("call", id=call_id, state="held")  # the far end hears music meanwhile
    row = await slot_row(park_group, 2)
    assert row.call_id == call_id and row.worker == host.worker_id
    # The parker takes it back by clicking the slot.
    mark = page.mark()
    page.send(protocol.ParkPickup(2))
    await page.wait("call", after=mark, id=call_id, state="incall", park=None, pending=None)
    assert (await slot_row(park_group, 2)).call_id == ""


async def test_it_refuses_parking_where_it_cannot(park_group, world, cast):
    far, page, line = world.far, world.page, world.line
    call_id = await connected_call(far, page, line)
    page.send(protocol.Park(call_id, 7))  # the group has six slots
    assert (await page.wait("error", request="park"))["code"] == "no_slot"
    page.send(protocol.Park(call_id, 1))
    await page.wait("call", id=call_id, park=1)
    second = await incoming(far, page, line)
    page.send(protocol.Answer(second))
    await page.wait("call", id=second, state="incall")
    page.send(protocol.Park(second, 1))  # taken
    assert (await page.wait("error", request="park", code="slot_busy"))["code"] == "slot_busy"
    page.send(protocol.ParkPickup(5))  # nothing there
    assert (await page.wait("error", request="park.pickup"))["code"] == "no_slot"


async def test_a_parked_call_nobody_takes_rings_the_parker_again(park_group, world, cast):
    await database_sync_to_async(
        lambda: park_group.__class__.objects.filter(pk=park_group.pk).update(park_timeout=1)
    )()
    far, page, line = world.far, world.page, world.line
    call_id = await connected_call(far, page, line)
    page.send(protocol.Park(call_id, 3))
    await page.wait("call", id=call_id, park=3)
    notice = await page.wait("notice", timeout=4, code="park-timeout")
    assert notice["level"] == "info"
    await page.wait("incoming", id=call_id)  # the parker's page rings
    assert (await slot_row(park_group, 3)).call_id == ""
    mark = page.mark()
    page.send(protocol.Answer(call_id))  # answering the recall takes the call back
    await page.wait("call", after=mark, id=call_id, state="incall", pending=None)


async def test_a_user_without_a_park_group_cannot_park(world, cast):
    far, page, line = world.far, world.page, world.line
    call_id = await connected_call(far, page, line)
    page.send(protocol.Park(call_id, 1))
    assert (await page.wait("error", request="park"))["code"] == "not_allowed"


async def test_a_starting_worker_frees_the_slots_of_a_dead_one(park_group, cast):
    from phone.models import ParkSlot

    await database_sync_to_async(
        lambda: ParkSlot.objects.create(
            group=park_group, number=4, call_id="gone@x", worker="dead", parked_by=cast.bob
        )
    )()
    host = SipWorkerHost("sipworker-test")
    await host.recover()
    assert (await slot_row(park_group, 4)).call_id == ""


# -- call setup does not wait for the database (issue 11) -------------------------------------
# The history row and the phonebook name are looked up while the call proceeds. A phonebook that
# takes a second on the database thread (a real delay in the function the worker calls, the
# fault injected) must not hold up the far end's answer, and every call still gets one complete
# history row, however early it ends.

SLOW_DB = 1.0


@pytest.fixture
def phonebook_name(cast):
    from phone.models import Contact, Phonebook

    book = Phonebook.objects.create(tenant=cast.tenant_a, name="共有")
    Contact.objects.create(tenant=cast.tenant_a, phonebook=book, name="遠藤商事", number="1002")
    Contact.objects.create(tenant=cast.tenant_a, phonebook=book, name="一〇〇一", number="1001")
    return "遠藤商事"


@pytest.fixture
def slow_database(monkeypatch):
    import time

    from phone.worker import db

    looked_up = db.name_in_phonebooks  # what the line's start-up job calls (db.open_call)

    def slow_lookup(*args):
        time.sleep(SLOW_DB)  # on the database thread, as a slow query would be
        return looked_up(*args)

    monkeypatch.setattr(db, "name_in_phonebooks", slow_lookup)


async def test_it_forwards_the_answer_while_the_database_is_still_busy(
    phonebook_name, slow_database, world, cast
):
    from phone.sip.useragent import IncomingCall

    far, page = world.far, world.page
    loop = asyncio.get_running_loop()
    dialled = loop.time()
    page.send(protocol.Dial("1002"))
    invite = await far.wait(lambda e: isinstance(e, IncomingCall))
    far.execute(lambda now: far.ua.answer(now, invite.call_id, answer_sdp(invite.offer)))
    await page.wait("call", id=invite.call_id, state="incall")
    assert loop.time() - dialled < SLOW_DB / 2, "the 200 OK waited for the phonebook"
    [dialling, *_] = [m for m in page.messages if m["type"] == "call"]
    assert (dialling["state"], dialling["remote_name"]) == ("dialing", "")  # the name: later
    named = await page.wait("call", id=invite.call_id, remote_name=phonebook_name)
    assert named["state"] == "incall"  # a later snapshot: the name, the call as it is now
    page.send(protocol.Hangup(invite.call_id))
    await page.wait("call", id=invite.call_id, state="ended")
    [row] = await rows(sip_call_id=invite.call_id)
    assert (row.direction, row.remote_name, row.worker) == ("out", phonebook_name, "")
    assert row.answered_at is not None and row.ended_at is not None


async def test_a_call_that_ends_before_its_row_is_opened_gets_one_complete_row(
    phonebook_name, slow_database, world, cast
):
    """Both ways: the caller gives up while the row is still being opened; the user hangs up
    while it is."""
    from phone.sip.sdp import build_offer
    from phone.sip.useragent import IncomingCall

    far, page, line = world.far, world.page, world.line
    host, port = line_addr(line)
    offer = build_offer("127.0.0.1", 40000, session_id="1")
    incoming_id, _ = far.execute(  # from 1001, as the PBX asserts (RFC 3325 §9.1)
        lambda now: far.ua.call(
            now,
            f"sip:1001@{host}:{port}",
            offer,
            headers=[("P-Asserted-Identity", "<sip:1001@pbx.test>")],
        )
    )
    await far.wait(lambda e: isinstance(e, CallStateChanged) and e.state is CallState.RINGING)
    assert line.calls[incoming_id].opening is not None  # the row is not there yet
    far.execute(lambda now: far.ua.hangup(now, incoming_id))  # CANCEL
    await page.wait("call", id=incoming_id, state="ended", timeout=SLOW_DB + 3)
    assert not [m for m in page.messages if m["type"] == "incoming"]  # it never rang here

    page.send(protocol.Dial("1002"))
    dialling = await page.wait("call", state="dialing")
    await far.wait(lambda e: isinstance(e, IncomingCall) and e.call_id == dialling["id"])
    page.send(protocol.Hangup(dialling["id"]))
    await page.wait("call", id=dialling["id"], state="ended", timeout=SLOW_DB * 2 + 3)

    await asyncio.sleep(0.2)  # the late Opened messages find the calls gone
    [missed] = await rows(sip_call_id=incoming_id)
    assert (missed.direction, missed.remote_name, missed.worker) == ("missed", "一〇〇一", "")
    assert missed.ended_at is not None
    [out] = await rows(sip_call_id=dialling["id"])
    assert (out.direction, out.remote_name, out.worker) == ("out", phonebook_name, "")
    assert out.ended_at is not None and out.end_reason == "local-bye"
    assert not line.calls


async def test_a_row_that_could_not_be_opened_is_written_whole_at_the_end(world, cast, monkeypatch):
    from phone import actions

    def refused(*args, **kwargs):
        raise RuntimeError("the INSERT failed")

    monkeypatch.setattr(actions, "do_open_call", refused)
    far, page, line = world.far, world.page, world.line
    call_id = await incoming(far, page, line)
    page.send(protocol.Answer(call_id))
    await page.wait("call", id=call_id, state="incall")
    far.execute(lambda now: far.ua.hangup(now, call_id))
    await page.wait("call", id=call_id, state="ended")
    [row] = await rows(sip_call_id=call_id)
    assert (row.direction, row.worker) == ("in", "")
    assert row.answered_at is not None and row.ended_at is not None
