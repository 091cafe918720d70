"""Call control between users (seed 3-3, 3-4) on the real stack: the phone WebSocket and the
embedded sipworker in this process, Kamailio, baresip as the outside phone, and an aiortc peer
per user playing the page's microphone (a tone) and recording what the page hears.

Audio is checked by frequency at both ends: the outside phone plays 700 Hz, alice's page
1000 Hz, bob's page 1300 Hz.
"""

import asyncio
import time

import pytest
from channels.db import database_sync_to_async

from phone.models import CallRecord
from portal.models import SipAccount
from tests.phone.ws import communicator
from tests.support import analysis
from tests.support.fake_browser import FakeBrowser
from tests.support.tones import tone_windows
from tests.support.workers import Workers, redis_layer_settings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("loopback_ice"),
]

OUTSIDE_HZ, ALICE_HZ, BOB_HZ = 700, 1000, 1300


class Desk:
    """One user's phone page: the WebSocket, its WebRTC peer, and every message it got."""

    def __init__(self, ws, browser):
        self.ws, self.browser = ws, browser
        self.unread: list[dict] = []  # arrived while waiting for something else

    @classmethod
    async def open(cls, user, tone_hz):
        ws = await database_sync_to_async(communicator)(user)
        assert (await ws.connect())[0]
        browser = FakeBrowser(tone_hz)
        desk = cls(ws, browser)
        await desk.send("webrtc.offer", sdp=await browser.offer())
        await browser.accept_answer((await desk.next("webrtc.answer"))["sdp"])
        await desk.next("registration", state="registered")
        return desk

    async def next(self, kind, timeout=15, **fields):
        """The oldest message of `kind` with these fields not taken before (others wait)."""

        def matches(message):
            return message["type"] == kind and fields.items() <= message.items()

        for message in self.unread:
            if matches(message):
                self.unread.remove(message)
                return message
        deadline = time.monotonic() + timeout
        while True:
            message = await self.ws.receive_json_from(timeout=max(0.1, deadline - time.monotonic()))
            if matches(message):
                return message
            self.unread.append(message)

    async def slot(self, number, state, timeout=15):
        """The next park.slots message in which slot `number` is in `state`."""
        while True:
            slots = (await self.next("park.slots", timeout=timeout))["slots"]
            if slots[number - 1]["state"] == state:
                return slots[number - 1]

    async def send(self, kind, **fields):
        await self.ws.send_json_to({"type": kind, **fields})

    def hears(self, since: float) -> int | None:
        pcm = self.browser.since(since)
        sound = analysis.non_silent(pcm, self.browser.rate)
        if len(sound) < self.browser.rate // 4:
            return None
        return round(analysis.dominant_frequency(sound, self.browser.rate))

    async def close(self):
        await self.ws.disconnect()
        await self.browser.close()


@pytest.fixture
async def desks(request, office, cast, settings, tmp_path):
    """Opens users' pages. Parametrised "sipworkers" (indirect), every page's line lives on a
    sipworker process of its own (production mode: Redis channel layer and leases), so what
    passes between users passes between workers."""
    opened = []
    workers = None
    if getattr(request, "param", "embedded") == "sipworkers":
        redis_url = request.getfixturevalue("redis_url")
        settings.CHANNEL_LAYERS = redis_layer_settings(redis_url)
        settings.SIPWORKER_EMBEDDED = False
        settings.REDIS_URL = redis_url
        workers = Workers(redis_url, tmp_path, ICE_HOST_ADDRESSES="127.0.0.1")

    async def open_desk(user, tone_hz):
        if workers is not None:
            # The newest worker is the least loaded one: the line is claimed there.
            worker = workers.start()
            await asyncio.to_thread(workers.wait_live, len(opened) + 1)
        desk = await Desk.open(user, tone_hz)
        if workers is not None:
            assert workers.owner_pid(user.pk) == worker.pid
        opened.append(desk)
        return desk

    yield open_desk
    for desk in opened:
        await desk.close()
    if workers is not None:
        workers.close()


ACROSS_WORKERS = pytest.mark.parametrize("desks", ["embedded", "sipworkers"], indirect=True)


def outside_phone(make_baresip, ext="1003"):
    return make_baresip(ext, tone_hz=OUTSIDE_HZ)


@pytest.fixture
async def outside(office):
    """Our own UA as an outside phone playing 700 Hz: unlike baresip's recorder (one file per
    audio start, overwritten within the same second) it keeps every frame across re-INVITEs."""
    from tests.support.ua import Phone

    phone = await Phone.open(office, "1003", tone_hz=OUTSIDE_HZ)
    await phone.register()
    yield phone
    await phone.close()


def frequency_heard(pcm) -> int | None:
    sound = analysis.non_silent(pcm)
    return round(analysis.dominant_frequency(sound)) if len(sound) > 2000 else None


async def answered_call_from_outside(desk, phone, ext="1002"):
    await asyncio.to_thread(phone.dial, ext)
    incoming = await desk.next("incoming")
    await desk.send("answer", call_id=incoming["id"])
    await desk.next("call", id=incoming["id"], state="incall")
    await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 10)
    return incoming["id"]


@ACROSS_WORKERS
async def test_a_colleague_takes_a_parked_call_with_audio(desks, cast, outside):
    from phone.sip.useragent import CallState, CallStateChanged

    alice, bob = await desks(cast.alice, ALICE_HZ), await desks(cast.bob, BOB_HZ)
    carol_call = await outside.call("1002")
    incoming = await bob.next("incoming")
    await bob.send("answer", call_id=incoming["id"])
    call_id = (await bob.next("call", id=incoming["id"], state="incall"))["id"]

    await bob.send("park", call_id=call_id, slot=1)
    sent = time.monotonic()
    slot = await alice.slot(1, "parked")
    fanout_ms = (time.monotonic() - sent) * 1000
    assert slot["caller"] == "1003" and slot["parked_by"] == "Bob"
    await bob.slot(1, "mine")
    print(f"\npark → slot lit on a colleague's page after {fanout_ms:.0f} ms")

    await alice.send("park.pickup", slot=1)
    picked = await alice.next("call", state="incall", direction="in")
    assert picked["remote"] == "1003"
    await bob.next("call", id=call_id, state="ended", reason="picked-up")
    await alice.slot(1, "free")
    since = time.monotonic()
    await asyncio.sleep(2.0)
    assert alice.hears(since) == pytest.approx(OUTSIDE_HZ, abs=15)

    heard_since = len(outside.heard(carol_call, skip_seconds=0))
    await asyncio.sleep(1.5)
    tail = outside.heard(carol_call, skip_seconds=0)[heard_since:]
    assert frequency_heard(tail) == pytest.approx(ALICE_HZ, abs=15)
    await alice.send("hangup", call_id=picked["id"])
    await outside.wait_for(CallStateChanged, 10, call_id=carol_call, state=CallState.TERMINATED)
    rows = await ended_rows(2)  # (each worker writes its own user's row)
    assert rows[cast.bob.pk].end_reason == "picked-up"
    assert rows[cast.alice.pk].direction == "in" and rows[cast.alice.pk].remote_number == "1003"


async def ended_rows(count, timeout=5.0):
    """The finished history rows by user, once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await database_sync_to_async(
            lambda: {r.user_id: r for r in CallRecord.objects.filter(ended_at__isnull=False)}
        )()
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.1)


async def consult(desk, held_id, number):
    """Hold → number → 転送: the consultation call, answered."""
    await desk.send("hold", call_id=held_id)
    await desk.next("call", id=held_id, state="held")
    await desk.send("transfer.start", call_id=held_id, number=number)
    return await desk.next("call", state="incall", transfer={"of": held_id})


def hears_in_recordings(phone, hz) -> bool:
    """Whether a baresip far end's recordings hold `hz`. baresip finishes writing a recording a
    moment after the call closed: an unfinished file is read again shortly."""
    import wave

    deadline = time.monotonic() + 3.0
    while True:
        try:
            heard = [
                h for wav in phone.received_wavs() for h in tone_windows(analysis.read_wav(wav)[0])
            ]
            return any(h is not None and abs(h - hz) < 15 for h in heard)
        except (wave.Error, EOFError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def test_attended_transfer_of_an_outside_caller_to_an_outside_phone(
    desks, cast, make_baresip
):
    bob = await desks(cast.bob, BOB_HZ)
    carol = await asyncio.to_thread(outside_phone, make_baresip)
    dave = await asyncio.to_thread(lambda: make_baresip("1004", tone_hz=900, auto_answer=True))
    held = await answered_call_from_outside(bob, carol)
    consultation = await consult(bob, held, "1004")
    await bob.send("transfer.complete", call_id=consultation["id"])
    await bob.next("call", id=held, state="ended", reason="transferred", timeout=15)
    await bob.next("call", id=consultation["id"], state="ended", reason="transferred")
    await asyncio.sleep(2.0)  # carol and dave talk (directly, or through the worker's join)
    await asyncio.to_thread(carol.hangup)
    await asyncio.to_thread(dave.wait_event, "CALL_CLOSED", 15)
    await asyncio.to_thread(carol.wait_event, "CALL_CLOSED", 15)
    assert await asyncio.to_thread(hears_in_recordings, carol, 900)
    assert await asyncio.to_thread(hears_in_recordings, dave, OUTSIDE_HZ)


@ACROSS_WORKERS
async def test_attended_transfer_of_an_outside_caller_to_a_colleague(desks, cast, outside):
    alice, bob = await desks(cast.alice, ALICE_HZ), await desks(cast.bob, BOB_HZ)
    carol_call = await outside.call("1002")
    incoming = await bob.next("incoming")
    await bob.send("answer", call_id=incoming["id"])
    held = (await bob.next("call", id=incoming["id"], state="incall"))["id"]
    await bob.send("hold", call_id=held)
    await bob.next("call", id=held, state="held")
    await bob.send("transfer.start", call_id=held, number="1001")
    ringing = await alice.next("incoming")
    await alice.send("answer", call_id=ringing["id"])
    consultation = await bob.next("call", state="incall", transfer={"of": held})
    await bob.send("transfer.complete", call_id=consultation["id"])
    await bob.next("call", id=held, state="ended", reason="transferred", timeout=15)
    # alice now talks with carol: her page's call is carol's (replaced, or joined by bob's
    # worker when carol's phone does not act on the REFER — this one does not), and they hear
    # each other.
    since, heard_since = time.monotonic(), len(outside.heard(carol_call, skip_seconds=0))
    await asyncio.sleep(2.0)
    assert alice.hears(since) == pytest.approx(OUTSIDE_HZ, abs=15)
    tail = outside.heard(carol_call, skip_seconds=0)[heard_since:]
    assert frequency_heard(tail) == pytest.approx(ALICE_HZ, abs=15)


@ACROSS_WORKERS
async def test_attended_transfer_of_a_colleague_to_an_outside_phone(desks, cast, make_baresip):
    alice, bob = await desks(cast.alice, ALICE_HZ), await desks(cast.bob, BOB_HZ)
    dave = await asyncio.to_thread(lambda: make_baresip("1004", tone_hz=900, auto_answer=True))
    await alice.send("dial", number="1002")
    ringing = await bob.next("incoming")
    await bob.send("answer", call_id=ringing["id"])
    first = await alice.next("call", state="incall")
    assert first["remote"] == "1002"
    consultation = await consult(bob, ringing["id"], "1004")
    await bob.send("transfer.complete", call_id=consultation["id"])
    await bob.next("call", id=ringing["id"], state="ended", reason="transferred", timeout=15)
    # alice's page moves to the call with dave (she was referred, or bob's worker joined).
    since = time.monotonic()
    await asyncio.sleep(2.0)
    assert alice.hears(since) == pytest.approx(900, abs=15)
    await asyncio.to_thread(dave.hangup)
    await asyncio.to_thread(dave.wait_event, "CALL_CLOSED", 10)
    assert await asyncio.to_thread(hears_in_recordings, dave, ALICE_HZ)


async def test_blind_transfer_and_cancel_by_hold(desks, cast, make_baresip):
    alice, bob = await desks(cast.alice, ALICE_HZ), await desks(cast.bob, BOB_HZ)
    carol = await asyncio.to_thread(outside_phone, make_baresip)
    dave = await asyncio.to_thread(lambda: make_baresip("1004", tone_hz=900, auto_answer=False))
    held = await answered_call_from_outside(bob, carol)
    # 保留 during a consultation gives up the attempt and returns to the held party.
    await bob.send("hold", call_id=held)
    await bob.next("call", id=held, state="held")
    await bob.send("transfer.start", call_id=held, number="1004")
    trying = await bob.next("call", transfer={"of": held})
    await asyncio.to_thread(dave.wait_event, "CALL_INCOMING", 10)
    await bob.send("transfer.cancel", call_id=trying["id"])
    await bob.next("call", id=trying["id"], state="ended")
    await asyncio.to_thread(dave.wait_event, "CALL_CLOSED", 10)  # dave stops ringing
    await bob.send("unhold", call_id=held)
    await bob.next("call", id=held, state="incall", pending=None)
    # Blind: straight to alice, no consultation.
    await bob.send("transfer.blind", call_id=held, number="1001")
    ringing = await alice.next("incoming")
    await alice.send("answer", call_id=ringing["id"])
    await bob.next("call", id=held, state="ended", reason="transferred")
    since = time.monotonic()
    await asyncio.sleep(2.0)
    assert alice.hears(since) == pytest.approx(OUTSIDE_HZ, abs=15)


@pytest.fixture
def lines(office, cast):
    """alice's line 0311112222 (tenant A) on the PBX and on her pad; tenant B's 0322224444."""
    from phone.models import LineButton

    office.add_line("0311112222", ["1001"])
    office.add_line("0322224444", ["2001"])
    cast.tenant_a.caller_id_method = "from"
    cast.tenant_a.save()
    LineButton.objects.create(
        tenant=cast.tenant_a, user=cast.alice, kind="line", number="0311112222", position=1,
        label="総務部",
    )  # fmt: skip
    LineButton.objects.create(
        tenant=cast.tenant_b, kind="line", number="0322224444", position=1, label="B"
    )
    return office


async def test_a_line_button_presents_its_number_and_calls_to_it_show_the_line(
    lines, desks, cast, make_baresip
):
    alice = await desks(cast.alice, ALICE_HZ)
    dave = await asyncio.to_thread(lambda: make_baresip("1004", tone_hz=900, auto_answer=True))
    await alice.send("dial", number="1004", line="0311112222")
    call = await alice.next("call", state="incall")
    assert call["line"] == "0311112222"
    await dave.wait_event_async("CALL_ESTABLISHED", peeruri=lines.aor("0311112222"))
    await alice.send("hangup", call_id=call["id"])
    await dave.wait_event_async("CALL_CLOSED", timeout=10)
    # Another tenant's line: refused with a message; the next call without a line works.
    await alice.send("dial", number="1004", line="0322224444")
    assert (await alice.next("error", request="dial"))["code"] == "not_allowed"
    await alice.send("dial", number="1004")
    plain = await alice.next("call", state="incall", line="")
    await alice.send("hangup", call_id=plain["id"])
    # A call to the line's number rings alice's page showing that line and its ring tone.
    await asyncio.to_thread(dave.dial, "0311112222")
    ringing = await alice.next("call", state="incoming")
    assert (ringing["called"], ringing["line"], ringing["ring"]) == ("0311112222",) * 2 + ("1",)
    assert ringing["remote"] == "1004"


async def test_a_busy_callee_gives_a_message_and_the_busy_tone(desks, cast, make_baresip):
    alice = await desks(cast.alice, ALICE_HZ)
    dave = await asyncio.to_thread(lambda: make_baresip("1004", tone_hz=900))
    await alice.send("dial", number="1004")
    await asyncio.to_thread(dave.wait_event, "CALL_INCOMING", 10)
    await asyncio.to_thread(dave.hangup)  # baresip rejects a ringing call with 486
    notice = await alice.next("notice")
    assert (notice["level"], notice["code"]) == ("error", "busy")
    since = time.monotonic()
    await asyncio.sleep(1.5)
    assert alice.hears(since) == pytest.approx(400, abs=15)  # 話中音
    # A number nobody has: the PBX says 404, the page says so, no busy tone needed.
    await alice.send("dial", number="1099")
    assert (await alice.next("notice"))["code"] == "not-found"


async def test_the_in_call_keypad_sends_dtmf_the_far_end_receives(desks, cast, make_baresip):
    alice = await desks(cast.alice, ALICE_HZ)
    dave = await asyncio.to_thread(lambda: make_baresip("1004", tone_hz=900, auto_answer=True))
    await alice.send("dial", number="1004")
    call = await alice.next("call", state="incall")
    await dave.wait_event_async("CALL_ESTABLISHED", timeout=10)
    for digit in "12#":
        await alice.send("dtmf", call_id=call["id"], digits=digit)
        await asyncio.sleep(0.25)
    received = [(await dave.wait_event_async("CALL_DTMF_START"))["param"] for _ in range(3)]
    assert received == ["1", "2", "#"]  # RFC 4733 events, in order
    await alice.send("dtmf", call_id="someone-elses@call", digits="9")
    assert (await alice.next("error", request="dtmf"))["code"] == "bad_state"


@pytest.fixture
def carol_user(office, cast):
    """A third colleague of tenant A: 1003 on the PBX."""
    from django.contrib.auth import get_user_model

    from portal.models import Profile

    user = get_user_model().objects.create_user(username="carol", password=cast.password)
    Profile.objects.create(user=user, tenant=cast.tenant_a, display_name="Carol")
    SipAccount.objects.create(
        tenant=cast.tenant_a, user=user, slot=1, extension="1003", password="pw1003"
    )
    return user


@ACROSS_WORKERS
async def test_attended_transfer_of_a_colleague_to_a_colleague(desks, cast, carol_user):
    """Both peers are our lines: alice acts on the REFER (INVITE with Replaces to carol's
    address at the PBX) and carol's line takes it in place of bob's consultation call."""
    alice, bob = await desks(cast.alice, ALICE_HZ), await desks(cast.bob, BOB_HZ)
    carol = await desks(carol_user, 1600)
    await alice.send("dial", number="1002")
    ringing = await bob.next("incoming")
    await bob.send("answer", call_id=ringing["id"])
    await alice.next("call", state="incall")
    await bob.send("hold", call_id=ringing["id"])
    await bob.next("call", id=ringing["id"], state="held")
    await bob.send("transfer.start", call_id=ringing["id"], number="1003")
    consulted = await carol.next("incoming")
    await carol.send("answer", call_id=consulted["id"])
    consultation = await bob.next("call", state="incall", transfer={"of": ringing["id"]})
    await bob.send("transfer.complete", call_id=consultation["id"])
    await bob.next("call", id=ringing["id"], state="ended", reason="transferred")
    await bob.next("call", id=consultation["id"], state="ended")
    replaced = await carol.next("call", id=consulted["id"], state="ended", reason="replaced")
    assert replaced["reason"] == "replaced"  # the peers did it: no join in bob's worker
    new = await carol.next("call", state="incall", remote="1001")  # alice, in its place
    assert new["id"] != consulted["id"]
    since = time.monotonic()
    await asyncio.sleep(2.0)
    assert alice.hears(since) == pytest.approx(1600, abs=15)
    assert carol.hears(since) == pytest.approx(ALICE_HZ, abs=15)
