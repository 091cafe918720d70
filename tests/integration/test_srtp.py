"""SRTP towards the PBX (SDES, RFC 4568) on the real stack: Kamailio, baresip with its srtp
module as the outside phone (``mediaenc=srtp-mand``: it accepts and offers RTP/SAVP only), the
embedded sipworker in this process, and an aiortc peer per user playing the page (Desk).

Audio is proved by tone frequency both ways: the outside phone plays 900 Hz, alice's page
1000 Hz. baresip's own log says whether it ran SRTP; our legs say so through their stats.
"""

import asyncio
import gc
import time

import pytest
from channels.db import database_sync_to_async

from phone.media.leg import RtpLeg
from phone.models import CallRecord
from portal.models import SipAccount
from tests.integration.test_call_control import Desk, hears_in_recordings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("loopback_ice"),
]

ALICE_HZ, OUTSIDE_HZ = 1000, 900
SRTP_PHONE = {"extra_config": "module srtp.so", "account_params": "mediaenc=srtp-mand"}


def _tenant_on(kamailio, cast, encryption):
    cast.tenant_a.pbx_domain = kamailio.domain
    cast.tenant_a.outbound_proxy = kamailio.hostport
    cast.tenant_a.media_encryption = encryption
    cast.tenant_a.save()
    account = SipAccount.objects.get(user=cast.alice)
    account.password = "pw1001"
    account.save()


@pytest.fixture
def pbx(make_kamailio):
    """A PBX of this test's own: a line of an earlier test, still registered as 1001 until its
    grace runs out, would get a fork of every call to alice."""
    return make_kamailio()


@pytest.fixture
async def alice(pbx, cast, request):
    """alice's page, her tenant on the test PBX with the media encryption of the parameter."""
    await database_sync_to_async(_tenant_on)(pbx, cast, request.param)
    desk = await Desk.open(cast.alice, ALICE_HZ)
    yield desk
    await desk.close()


def _live_legs() -> list[RtpLeg]:
    # type(), not isinstance(): isinstance asks a lazy object such as an earlier request's CSP
    # nonce for its __class__, which evaluates it and raises.
    return [o for o in gc.get_objects() if issubclass(type(o), RtpLeg) and not o.closed]


EARLIER: set[int] = set()


@pytest.fixture(autouse=True)
def _earlier_legs():
    """Legs of calls that earlier tests left up (the embedded sipworker lives as long as the
    test process; a call between two of our users with no page attached goes on) are not
    this test's."""
    EARLIER.clear()
    EARLIER.update(id(leg) for leg in _live_legs())


def open_legs() -> list[RtpLeg]:
    """The RTP legs this test's calls opened (in the embedded sipworker) that are still open."""
    return [leg for leg in _live_legs() if id(leg) not in EARLIER]


async def everything_else(desk: Desk, quiet: float = 1.0) -> list[dict]:
    """What the page got until it heard nothing for `quiet` seconds, and all it kept unread
    (receive_nothing: a timed-out receive would cancel the consumer)."""
    while not await desk.ws.receive_nothing(timeout=quiet):
        desk.unread.append(await desk.ws.receive_json_from())
    return list(desk.unread)


async def talk(desk: Desk, seconds: float = 2.0) -> int | None:
    since = time.monotonic()
    await asyncio.sleep(seconds)
    return desk.hears(since)


def assert_srtp_leg() -> None:
    legs = [leg for leg in open_legs() if leg.remote is not None]
    assert len(legs) == 1
    stats = legs[0].stats
    assert stats.srtp and stats.packets_received > 50 and stats.srtp_auth_failures == 0


def srtp_enabled(phone) -> bool:
    return "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in phone.log_text()


@pytest.mark.parametrize("alice", ["sdes"], indirect=True)
async def test_a_call_from_our_line_to_an_srtp_phone_has_audio_both_ways(alice, pbx, make_baresip):
    dave = await asyncio.to_thread(
        lambda: make_baresip("1004", pbx=pbx, tone_hz=OUTSIDE_HZ, auto_answer=True, **SRTP_PHONE)
    )
    await alice.send("dial", number="1004")
    call = await alice.next("call", state="incall")
    await dave.wait_event_async("CALL_ESTABLISHED", timeout=10)
    assert await talk(alice) == pytest.approx(OUTSIDE_HZ, abs=15)
    assert_srtp_leg()
    # DTMF (RFC 4733) travels inside SRTP too.
    await alice.send("dtmf", call_id=call["id"], digits="7")
    assert (await dave.wait_event_async("CALL_DTMF_START"))["param"] == "7"
    await alice.send("hangup", call_id=call["id"])
    await dave.wait_event_async("CALL_CLOSED", timeout=10)
    assert srtp_enabled(dave)
    assert await asyncio.to_thread(hears_in_recordings, dave, ALICE_HZ)


@pytest.mark.parametrize("alice", ["sdes", "sdes-optional"], indirect=True)
async def test_a_call_from_an_srtp_phone_to_our_line_survives_hold_both_ways(
    alice, pbx, make_baresip
):
    carol = await asyncio.to_thread(
        lambda: make_baresip("1003", pbx=pbx, tone_hz=OUTSIDE_HZ, **SRTP_PHONE)
    )
    await asyncio.to_thread(carol.dial, "1001")
    incoming = await alice.next("incoming")
    await alice.send("answer", call_id=incoming["id"])
    await alice.next("call", id=incoming["id"], state="incall")
    await carol.wait_event_async("CALL_ESTABLISHED", timeout=10)
    assert await talk(alice) == pytest.approx(OUTSIDE_HZ, abs=15)
    assert_srtp_leg()
    # The far end holds and resumes: its re-INVITEs are RTP/SAVP offers we answer with our
    # key (RFC 4568 §7.1.4), not 488.
    await carol.wait_event_async("CALL_MENC")  # baresip: "SRTP is Enabled" for the call
    await asyncio.to_thread(carol.hold)
    await carol.wait_event_async("CALL_MENC")  # our 200 answered with a=crypto
    await asyncio.to_thread(carol.resume)
    await carol.wait_event_async("CALL_MENC")
    # We hold and resume: our re-offers (our SDP with its a=crypto lines, direction changed)
    # keep SRTP, and baresip takes them as SRTP again.
    await alice.send("hold", call_id=incoming["id"])
    await alice.next("call", id=incoming["id"], state="held")
    await carol.wait_event_async("CALL_MENC")
    await alice.send("unhold", call_id=incoming["id"])
    await alice.next("call", id=incoming["id"], state="incall", pending=None)
    assert await talk(alice) == pytest.approx(OUTSIDE_HZ, abs=15)
    assert_srtp_leg()
    await asyncio.to_thread(carol.hangup)
    await alice.next("call", id=incoming["id"], state="ended")
    assert srtp_enabled(carol)
    assert await asyncio.to_thread(hears_in_recordings, carol, ALICE_HZ)


@pytest.mark.parametrize("alice", ["sdes"], indirect=True)
async def test_srtp_required_and_a_plain_rtp_phone_fail_cleanly(alice, pbx, make_baresip, cast):
    plain = await asyncio.to_thread(lambda: make_baresip("1004", pbx=pbx, tone_hz=OUTSIDE_HZ))
    # Out: the plain phone cannot take RTP/SAVP and says 488; the page says so, history too.
    await alice.send("dial", number="1004")
    notice = await alice.next("notice", level="error")
    assert notice["text"].startswith("488"), notice
    await alice.next("call", state="ended")
    await plain.wait_event_async("CALL_CLOSED", timeout=10)  # it closed its side ("No audio")
    # In: its plain RTP/AVP offer is refused with 488 as it arrives (RFC 3261 §13.3.1.1):
    # nothing rings on the page, no RTP leg opens, so nothing is sent unencrypted.
    await asyncio.to_thread(plain.dial, "1001")
    closed = await plain.wait_event_async("CALL_CLOSED", timeout=10)
    assert "488" in closed.get("param", ""), closed
    heard = await everything_else(alice)
    assert not [m for m in heard if m["type"] == "incoming"], heard
    assert not [m for m in heard if m["type"] == "call" and m.get("direction") == "in"], heard
    assert [leg for leg in open_legs() if leg.remote is not None] == []
    rows = await database_sync_to_async(
        lambda: list(
            CallRecord.objects.filter(user=cast.alice)
            .order_by("started_at")
            .values_list("direction", "remote_number", "end_reason", "answered_at", "ended_at")
        )
    )()
    assert [(d, r) for d, r, *_ in rows] == [("out", "1004"), ("rejected", "1004")]
    assert rows[1][2] == "insecure-media"
    assert all(answered is None and ended_at is not None for *_, answered, ended_at in rows)


@pytest.mark.parametrize("alice", ["sdes-optional"], indirect=True)
async def test_srtp_when_offered_still_calls_a_plain_rtp_phone(alice, pbx, make_baresip):
    plain = await asyncio.to_thread(
        lambda: make_baresip("1004", pbx=pbx, tone_hz=OUTSIDE_HZ, auto_answer=True)
    )
    await alice.send("dial", number="1004")
    call = await alice.next("call", state="incall")
    await plain.wait_event_async("CALL_ESTABLISHED", timeout=10)
    assert await talk(alice) == pytest.approx(OUTSIDE_HZ, abs=15)
    legs = [leg for leg in open_legs() if leg.remote is not None]
    assert len(legs) == 1 and not legs[0].stats.srtp
    await alice.send("hangup", call_id=call["id"])
    await plain.wait_event_async("CALL_CLOSED", timeout=10)


@pytest.mark.parametrize("alice", ["sdes"], indirect=True)
async def test_an_answer_that_drops_required_srtp_is_hung_up_not_talked_over(
    alice, pbx, make_sipp, cast
):
    """A far end that answers our RTP/SAVP offer with plain RTP/AVP (SIPp's UAS answers
    RTP/AVP whatever it is offered): no audio in the clear - BYE, a notice, a history row."""
    uas = make_sipp("uas_answer.xml", timeout=20).start()
    registered = await asyncio.to_thread(
        lambda: make_sipp(
            "register.xml",
            pbx.hostport,
            service="1004",
            auth=("1004", "pw1004"),
            keys={"domain": pbx.domain, "contact_port": str(uas.port)},
        ).run()
    )
    assert registered.ok, registered.stderr[-2000:]
    await alice.send("dial", number="1004")
    notice = await alice.next("notice", level="error")
    assert notice["text"] == "488 insecure-media", notice
    await alice.next("call", state="ended", reason="insecure-media")
    result = await uas.wait_async(timeout=10)
    assert result.requests[:1] == ["INVITE"] and "BYE" in result.requests
    assert [leg for leg in open_legs() if leg.remote is not None] == []
    row = await database_sync_to_async(
        lambda: CallRecord.objects.filter(user=cast.alice).values("direction", "end_reason").get()
    )()
    assert row == {"direction": "out", "end_reason": "insecure-media"}


@pytest.mark.parametrize("alice", ["sdes"], indirect=True)
async def test_srtp_required_still_takes_an_invite_without_an_offer(alice, pbx, make_sipp, cast):
    """No SDP in the INVITE (RFC 3261 §13.2.1): nothing to refuse on arrival; the page rings,
    and answering offers RTP/SAVP with a=crypto in the 200 (SIPp checks it and answers SRTP
    in the ACK)."""
    caller = make_sipp(
        "uac_invite_no_sdp.xml",
        pbx.hostport,
        service="1001",
        auth=("1004", "pw1004"),
        keys={"domain": pbx.domain, "caller": "1004"},
        timeout=20,
    ).start()
    incoming = await alice.next("incoming")
    assert incoming["remote"] == "1004"
    await alice.send("answer", call_id=incoming["id"])
    await alice.next("call", id=incoming["id"], state="incall")
    await alice.next("call", id=incoming["id"], state="ended")
    result = await caller.wait_async(timeout=20)
    assert result.ok, result.error_log[-2000:] or result.stderr[-2000:]
    assert 407 in result.responses and result.responses[-2:] == [200, 200]
    row = await database_sync_to_async(
        lambda: CallRecord.objects.filter(user=cast.alice).values("direction", "end_reason").get()
    )()
    assert row["direction"] == "in"
