"""Our SIP user agent (phone/sip) and RTP leg (phone/media) against real programs.

Kamailio 5.6 is the registrar/proxy with digest auth, baresip 1.0 the far ends (an ``aufile``
tone as source, ``sndfile`` recording what arrives), SIPp a scripted UAS; all on 127.0.0.1 with
ports chosen at runtime. Audio is proven by tone frequency: our leg sends 1000 Hz, baresip
plays 700 Hz (a second baresip 400 Hz), and each side checks what it recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from phone.sip.useragent import (
    CallState,
    CallStateChanged,
    IncomingCall,
    MediaUpdated,
    RegistrationState,
    TransferProgress,
    TransferRequested,
)
from tests.support.pbx import Kamailio
from tests.support.tones import active_seconds, dominant_frequency
from tests.support.ua import Datagram, LossyUdpProxy, Phone, any_of, drop_first, drop_once

pytestmark = pytest.mark.integration

TOLERANCE_HZ = 20
OUR_TONE = 1000
BOB_TONE = 700
CAROL_TONE = 400


@pytest.fixture
async def make_proxy(kamailio: Kamailio) -> AsyncIterator[Callable[..., Any]]:
    proxies: list[LossyUdpProxy] = []

    async def factory(drop: Callable[[Datagram], bool] | None = None) -> LossyUdpProxy:
        proxy = await LossyUdpProxy((kamailio.host, kamailio.port), drop).start()
        proxies.append(proxy)
        return proxy

    try:
        yield factory
    finally:
        for proxy in proxies:
            proxy.close()


@pytest.fixture
async def make_phone(
    kamailio: Kamailio, make_proxy: Callable[..., Any]
) -> AsyncIterator[Callable[..., Any]]:
    """``await make_phone("1001", transport="tcp", proxy_addr=...)`` -> a bound :class:`Phone`.

    Phones close (and unregister) before the proxies they may talk through.
    """
    phones: list[Phone] = []

    async def factory(ext: str = "1001", password: str | None = None, **kwargs: Any) -> Phone:
        phone = await Phone.open(kamailio, ext, password, **kwargs)
        phones.append(phone)
        return phone

    try:
        yield factory
    finally:
        for phone in phones:
            await phone.close()


def assert_wav_tone(wav: Path, freq: float, *, min_seconds: float = 1.0) -> None:
    found = dominant_frequency(wav)
    assert found is not None, f"{wav} is silent"
    assert abs(found - freq) <= TOLERANCE_HZ, f"{wav}: {found:.1f} Hz, expected {freq} Hz"
    assert active_seconds(wav) >= min_seconds, f"{wav}: only {active_seconds(wav):.2f}s of audio"


def assert_heard(phone: Phone, call_id: str, freq: float, *, min_seconds: float = 1.0) -> None:
    found = phone.heard_frequency(call_id)
    assert found is not None, "our leg heard nothing"
    assert abs(found - freq) <= TOLERANCE_HZ, f"our leg heard {found:.1f} Hz, expected {freq} Hz"
    assert phone.heard_seconds(call_id) >= min_seconds


def connected(call_id: str) -> dict[str, Any]:
    return {"call_id": call_id, "state": CallState.CONNECTED}


def terminated(call_id: str) -> dict[str, Any]:
    return {"call_id": call_id, "state": CallState.TERMINATED}


def summary(log: list[Datagram]) -> list[str]:
    """REGISTER/INVITE exchange as "REGISTER", "REGISTER+auth", "401", ... (drops marked)."""
    out = []
    for d in log:
        text = str(d.status) if d.status is not None else str(d.method)
        if d.method and d.authorized:
            text += "+auth"
        out.append(text + (" (dropped)" if d.dropped else ""))
    return out


# ---------------------------------------------------------------- registration


async def test_it_registers_with_digest_auth_and_unregisters(kamailio, make_phone, make_proxy):
    tap = await make_proxy()  # drops nothing: it only shows the exchange
    phone = await make_phone("1004", proxy_addr=tap.addr, expires=120)

    registered = await phone.register()

    assert registered.state is RegistrationState.REGISTERED
    assert registered.expires == 120
    assert summary(tap.exchanged("REGISTER")) == ["REGISTER", "401", "REGISTER+auth", "200"]
    [contact] = kamailio.registered("1004")
    assert contact.uri == f"sip:1004@127.0.0.1:{phone.local_addr[1]}"
    assert contact.user_agent == "BrowserPhone"
    assert 0 < (contact.expires or 0) <= 120

    await phone.unregister()
    assert kamailio.registered("1004") == []
    # The nonce from the first challenge is reused: no second 401.
    assert summary(tap.exchanged("REGISTER"))[4:] == ["REGISTER+auth", "200"]


async def test_it_fails_to_register_with_a_wrong_password(kamailio, make_phone, make_proxy):
    tap = await make_proxy()
    phone = await make_phone("2001", "not-the-password", proxy_addr=tap.addr)

    failed = await phone.register()

    assert failed.state is RegistrationState.FAILED
    assert failed.reason.startswith("403"), failed.reason
    assert kamailio.registered("2001") == []
    # One challenge, one answer, then it stops (the retry is minutes away, not a loop).
    await asyncio.sleep(0.6)
    assert summary(tap.exchanged("REGISTER")) == ["REGISTER", "401", "REGISTER+auth", "403"]
    assert phone.ua.registration.next_timer() is not None


# ---------------------------------------------------------------- calls with audio


async def test_it_calls_baresip_with_audio_both_ways(kamailio, make_phone, make_baresip):
    bob = make_baresip("1002", tone_hz=BOB_TONE, auto_answer=True)
    phone = await make_phone("1001", tone_hz=OUR_TONE)
    await phone.register()

    call_id = await phone.call("1002")
    await phone.wait_for(CallStateChanged, **connected(call_id))
    media = await phone.wait_for(MediaUpdated, call_id=call_id)
    assert media.media.codec.name == "PCMU" and media.media.direction == "sendrecv"
    await bob.wait_event_async("CALL_ESTABLISHED", peeruri=kamailio.aor("1001"))

    await asyncio.sleep(3)
    phone.hangup(call_id)
    await bob.wait_event_async("CALL_CLOSED")
    ended = await phone.wait_for(CallStateChanged, **terminated(call_id))
    assert ended.reason == "local-bye"

    assert_heard(phone, call_id, BOB_TONE, min_seconds=2)
    [heard_by_bob] = bob.received_wavs()
    assert_wav_tone(heard_by_bob, OUR_TONE, min_seconds=2)


async def test_it_answers_a_call_from_baresip_with_audio_both_ways(
    kamailio, make_phone, make_baresip
):
    phone = await make_phone("1001", tone_hz=OUR_TONE)
    await phone.register()
    bob = make_baresip("1002", tone_hz=BOB_TONE)

    bob.dial("1001")
    incoming = await phone.wait_for(IncomingCall)
    assert incoming.caller.uri.user == "1002"
    assert incoming.offer is not None
    phone.ring(incoming.call_id)
    await bob.wait_event_async("CALL_RINGING")
    await phone.answer(incoming.call_id)
    await phone.wait_for(CallStateChanged, **connected(incoming.call_id))
    await bob.wait_event_async("CALL_ESTABLISHED")

    await asyncio.sleep(3)
    bob.hangup()
    ended = await phone.wait_for(CallStateChanged, **terminated(incoming.call_id))
    assert ended.reason == "remote-bye"
    await bob.wait_event_async("CALL_CLOSED")

    assert_heard(phone, incoming.call_id, BOB_TONE, min_seconds=2)
    [heard_by_bob] = bob.received_wavs()
    assert_wav_tone(heard_by_bob, OUR_TONE, min_seconds=2)


# ---------------------------------------------------------------- CANCEL


async def test_it_cancels_a_call_before_baresip_answers(kamailio, make_phone, make_baresip):
    bob = make_baresip("1002")  # answers by hand: it just rings
    phone = await make_phone("1001")
    await phone.register()

    call_id = await phone.call("1002")
    await bob.wait_event_async("CALL_INCOMING")
    await phone.wait_for(CallStateChanged, call_id=call_id, state=CallState.RINGING)
    phone.hangup(call_id)  # CANCEL

    ended = await phone.wait_for(CallStateChanged, **terminated(call_id))
    assert (ended.status, ended.reason) == (487, "cancelled")
    await bob.wait_event_async("CALL_CLOSED")
    assert "CALL_ESTABLISHED" not in bob.event_types()


async def test_it_sees_baresip_cancel_before_we_answer(kamailio, make_phone, make_baresip):
    phone = await make_phone("1001")
    await phone.register()
    bob = make_baresip("1002")

    bob.dial("1001")
    incoming = await phone.wait_for(IncomingCall)
    phone.ring(incoming.call_id)
    await bob.wait_event_async("CALL_RINGING")
    bob.hangup()  # CANCEL

    ended = await phone.wait_for(CallStateChanged, **terminated(incoming.call_id))
    assert (ended.status, ended.reason) == (487, "cancelled")
    closed = await bob.wait_event_async("CALL_CLOSED")
    assert "CALL_ESTABLISHED" not in bob.event_types(), closed


# ---------------------------------------------------------------- mid-call features


async def test_it_holds_and_resumes_and_baresip_follows(kamailio, make_phone, make_baresip):
    bob = make_baresip("1002", tone_hz=BOB_TONE, auto_answer=True)
    phone = await make_phone("1001")
    await phone.register()
    call_id = await phone.call("1002")
    await phone.wait_for(CallStateChanged, **connected(call_id))
    await bob.wait_event_async("CALL_REMOTE_SDP", param="offer")  # the initial INVITE
    await phone.wait_for(MediaUpdated, call_id=call_id)
    await asyncio.sleep(0.5)
    assert phone.heard_seconds(call_id) > 0.1

    phone.hold(call_id)
    await bob.wait_event_async("CALL_REMOTE_SDP", param="offer")  # re-INVITE a=sendonly
    held = await phone.wait_for(MediaUpdated, call_id=call_id)
    assert held.local.audio.direction == "sendonly"
    # baresip's answer to our sendonly offer: recvonly, so it stops sending to us.
    assert held.remote.audio.direction == "recvonly"
    assert held.media.direction == "sendonly"
    await asyncio.sleep(0.3)
    mark = len(phone.calls[call_id].received)
    await asyncio.sleep(1.0)
    during_hold = phone.calls[call_id].received[mark:]
    assert sum(int(abs(f).max() > 300) for f in during_hold) <= 2, "bob kept sending on hold"

    phone.unhold(call_id)
    await bob.wait_event_async("CALL_REMOTE_SDP", param="offer")  # re-INVITE a=sendrecv
    resumed = await phone.wait_for(MediaUpdated, call_id=call_id)
    assert resumed.local.audio.direction == "sendrecv"
    assert resumed.remote.audio.direction == "sendrecv"
    assert resumed.local.origin.version == held.local.origin.version + 1
    mark = len(phone.calls[call_id].received)
    await asyncio.sleep(1.0)
    after = phone.calls[call_id].received[mark:]
    assert sum(int(abs(f).max() > 300) for f in after) >= 25, "no audio after resume"

    phone.hangup(call_id)
    await bob.wait_event_async("CALL_CLOSED")


async def test_it_follows_baresip_putting_us_on_hold(kamailio, make_phone, make_baresip):
    bob = make_baresip("1002", tone_hz=BOB_TONE, auto_answer=True)
    phone = await make_phone("1001")
    await phone.register()
    call_id = await phone.call("1002")
    await phone.wait_for(CallStateChanged, **connected(call_id))
    first = await phone.wait_for(MediaUpdated, call_id=call_id)
    await bob.wait_event_async("CALL_ESTABLISHED")

    bob.hold()  # re-INVITE a=sendonly from bob
    held = await phone.wait_for(MediaUpdated, call_id=call_id)
    assert held.remote_hold
    assert held.remote.audio.direction == "sendonly"
    assert held.local.audio.direction == "recvonly"  # our answer mirrors it (RFC 3264 §6.1)
    assert held.local.origin.version == first.local.origin.version + 1

    bob.resume()
    resumed = await phone.wait_for(MediaUpdated, call_id=call_id)
    assert not resumed.remote_hold
    assert resumed.local.audio.direction == "sendrecv"
    assert resumed.media.direction == "sendrecv"
    mark = len(phone.calls[call_id].received)
    await asyncio.sleep(1.0)
    assert sum(int(abs(f).max() > 300) for f in phone.calls[call_id].received[mark:]) >= 25

    phone.hangup(call_id)
    await bob.wait_event_async("CALL_CLOSED")


async def test_it_is_transferred_by_baresip(kamailio, make_phone, make_baresip):
    bob = make_baresip("1002", tone_hz=BOB_TONE, auto_answer=True)
    carol = make_baresip("1003", tone_hz=CAROL_TONE, auto_answer=True)
    phone = await make_phone("1001")
    await phone.register()
    call_id = await phone.call("1002")
    await phone.wait_for(CallStateChanged, **connected(call_id))
    await bob.wait_event_async("CALL_ESTABLISHED")

    bob.transfer("1003")  # REFER to us
    refer = await phone.wait_for(TransferRequested, call_id=call_id)
    assert str(refer.target) == kamailio.aor("1003") and refer.replaces is None
    new_call = await phone.call(str(refer.target))
    await phone.wait_for(CallStateChanged, **connected(new_call))
    await carol.wait_event_async("CALL_ESTABLISHED", peeruri=kamailio.aor("1001"))
    # NOTIFY sipfrag 200: bob (the transferor) hangs up on us.
    phone.execute(lambda now: phone.ua.transfer_progress(now, call_id, 200, "OK"))
    closed = await bob.wait_event_async("CALL_CLOSED", id=call_id)
    assert "transfer" in closed["param"].lower()
    ended = await phone.wait_for(CallStateChanged, **terminated(call_id))
    assert ended.reason == "remote-bye"

    await asyncio.sleep(1.5)
    phone.hangup(new_call)
    await carol.wait_event_async("CALL_CLOSED")
    assert_heard(phone, new_call, CAROL_TONE, min_seconds=0.8)
    [heard_by_carol] = carol.received_wavs()
    assert_wav_tone(heard_by_carol, OUR_TONE, min_seconds=0.8)


async def test_it_sends_and_receives_rfc4733_dtmf(kamailio, make_phone, make_baresip):
    bob = make_baresip("1002", tone_hz=BOB_TONE, auto_answer=True)
    phone = await make_phone("1001")
    await phone.register()
    call_id = await phone.call("1002")
    await phone.wait_for(CallStateChanged, **connected(call_id))
    await bob.wait_event_async("CALL_RTPESTAB")

    await phone.send_dtmf(call_id, "159#*0")
    received = [(await bob.wait_event_async("CALL_DTMF_START"))["param"] for _ in range(6)]
    assert "".join(received) == "159#*0"

    bob.send_dtmf("42")
    for _ in range(50):
        if phone.calls[call_id].dtmf == "42":
            break
        await asyncio.sleep(0.05)
    assert phone.calls[call_id].dtmf == "42"

    phone.hangup(call_id)
    await bob.wait_event_async("CALL_CLOSED")


async def test_it_blind_transfers_baresip_to_another_baresip(kamailio, make_phone, make_baresip):
    bob = make_baresip("1002", tone_hz=BOB_TONE, auto_answer=True)
    carol = make_baresip("1003", tone_hz=CAROL_TONE, auto_answer=True)
    phone = await make_phone("1001")
    await phone.register()
    call_id = await phone.call("1002")
    await phone.wait_for(CallStateChanged, **connected(call_id))
    await bob.wait_event_async("CALL_ESTABLISHED")
    # sndfile names its WAVs by the second a call starts: bob's call with carol must not
    # start within the same second as ours, or the two recordings share one file.
    await asyncio.sleep(1.1)

    phone.refer(call_id, "1003")
    # The 202 and baresip's first NOTIFY (sipfrag 100) race through the proxy: either order.
    accepted = await phone.wait_for(TransferProgress, call_id=call_id, status=202)
    assert not accepted.final
    transfer = await bob.wait_event_async("TRANSFER")
    assert transfer["param"].strip("<>") == kamailio.aor("1003")
    done = await phone.wait_for(TransferProgress, call_id=call_id, final=True)
    assert done.status == 200  # NOTIFY message/sipfrag "SIP/2.0 200 OK"
    await carol.wait_event_async("CALL_ESTABLISHED", peeruri=kamailio.aor("1002"))

    # The transferor leaves (RFC 5589 §6): BYE our leg to bob; bob and carol stay.
    phone.hangup(call_id)
    await phone.wait_for(CallStateChanged, **terminated(call_id))
    await bob.wait_event_async("CALL_CLOSED", id=call_id)
    await asyncio.sleep(2.5)
    bob.hangup()
    await carol.wait_event_async("CALL_CLOSED")
    await bob.wait_event_async("CALL_CLOSED")

    [heard_by_carol] = carol.received_wavs()
    assert_wav_tone(heard_by_carol, BOB_TONE, min_seconds=1.5)
    heard_from_us, heard_from_carol = bob.received_wavs()
    assert_wav_tone(heard_from_us, OUR_TONE, min_seconds=0.5)
    assert_wav_tone(heard_from_carol, CAROL_TONE, min_seconds=1.5)


# ---------------------------------------------------------------- loss and transports


def _is_invite_200(d: Datagram) -> bool:
    return d.direction == "down" and d.status == 200 and b"INVITE\r\n" in d.data


async def test_it_survives_a_dropped_first_register_and_invite_over_udp(
    kamailio, make_phone, make_proxy, make_baresip
):
    lossy = await make_proxy(
        any_of(
            drop_first("REGISTER"),
            drop_first("INVITE", authorized=False),
            drop_first("INVITE", authorized=True),
            drop_once(_is_invite_200),
        )
    )
    bob = make_baresip("1002", tone_hz=BOB_TONE, auto_answer=True)
    phone = await make_phone("1001", proxy_addr=lossy.addr)

    registered = await phone.register(timeout=5)
    assert registered.state is RegistrationState.REGISTERED
    assert summary(lossy.exchanged("REGISTER")) == [
        "REGISTER (dropped)",
        "REGISTER",  # Timer E retransmission, 500 ms later (RFC 3261 §17.1.2.2)
        "401",
        "REGISTER+auth",
        "200",
    ]

    call_id = await phone.call("1002")
    await phone.wait_for(CallStateChanged, timeout=8, **connected(call_id))
    await bob.wait_event_async("CALL_ESTABLISHED")
    invites = [s for s in summary(lossy.exchanged("INVITE")) if s.startswith("INVITE")]
    assert invites == [
        "INVITE (dropped)",
        "INVITE",  # Timer A retransmission
        "INVITE+auth (dropped)",
        "INVITE+auth",
    ]
    # baresip's 200 OK was lost once too: its retransmission got our ACK.
    oks = [s for s in summary(lossy.exchanged("INVITE")) if s.startswith("200")]
    assert oks[0] == "200 (dropped)" and len(oks) >= 2
    assert [e.state for e in phone.seen(CallStateChanged, call_id=call_id)].count(
        CallState.CONNECTED
    ) == 1

    await asyncio.sleep(0.5)
    phone.hangup(call_id)
    await bob.wait_event_async("CALL_CLOSED")
    assert phone.heard_seconds(call_id) > 0.2


async def test_it_registers_and_calls_both_ways_over_tcp(kamailio, make_phone, make_baresip):
    bob = make_baresip("1002", tone_hz=BOB_TONE, auto_answer=True)
    phone = await make_phone("1001", transport="tcp")

    registered = await phone.register()
    assert registered.state is RegistrationState.REGISTERED
    [contact] = kamailio.registered("1001")
    assert contact.uri == f"sip:1001@127.0.0.1:{phone.local_addr[1]};transport=tcp"
    assert contact.socket.startswith("tcp:")

    # Outgoing over TCP.
    call_id = await phone.call("1002")
    await phone.wait_for(CallStateChanged, **connected(call_id))
    await bob.wait_event_async("CALL_ESTABLISHED")
    await asyncio.sleep(1.0)
    phone.hangup(call_id)
    await bob.wait_event_async("CALL_CLOSED")
    assert_heard(phone, call_id, BOB_TONE, min_seconds=0.5)

    # Incoming: Kamailio connects to our TCP listener (the registered Contact).
    bob.dial("1001")
    incoming = await phone.wait_for(IncomingCall)
    await phone.answer(incoming.call_id)
    await bob.wait_event_async("CALL_ESTABLISHED")
    await asyncio.sleep(0.5)
    bob.hangup()
    ended = await phone.wait_for(CallStateChanged, **terminated(incoming.call_id))
    assert ended.reason == "remote-bye"

    await phone.unregister()
    assert kamailio.registered("1001") == []


async def test_it_calls_a_sipp_uas_and_hears_its_rtp_echo(kamailio, make_phone, make_sipp):
    uas = make_sipp("uas_answer.xml", timeout=20, extra_args=["-rtp_echo"]).start()
    reg = make_sipp(
        "register.xml",
        kamailio.hostport,
        service="1004",
        auth=("1004", "pw1004"),
        keys={"domain": kamailio.domain, "contact_port": str(uas.port), "expires": "60"},
    )
    assert (await asyncio.to_thread(reg.run)).ok
    phone = await make_phone("1001", tone_hz=OUR_TONE)
    await phone.register()

    call_id = await phone.call("1004")
    await phone.wait_for(CallStateChanged, **connected(call_id))
    await asyncio.sleep(1.5)
    phone.hangup(call_id)
    await phone.wait_for(CallStateChanged, **terminated(call_id))
    res = await uas.wait_async(timeout=10)
    assert res.ok, res.stderr[-2000:]
    assert res.requests[:2] == ["INVITE", "ACK"] and "BYE" in res.requests
    # SIPp echoes our RTP back: we hear our own tone.
    assert_heard(phone, call_id, OUR_TONE, min_seconds=0.5)
    # Leave 1004 unregistered for the other tests.
    kamailio.kamcmd("ul.rm", "location", "1004")


async def test_it_keeps_the_proxy_in_the_route_between_two_of_our_user_agents(
    make_phone: Callable[..., Any],
) -> None:
    """The callee copies Record-Route into its 2xx (RFC 3261 §12.1.1), so the caller's re-INVITE
    and BYE go through Kamailio with a Route header instead of being refused as new calls."""
    alice = await make_phone("1001")
    bob = await make_phone("1002", tone_hz=700)
    await alice.register()
    await bob.register()
    call_id = await alice.call("1002")
    incoming = await bob.wait_for(IncomingCall)
    bob.ring(incoming.call_id)
    await bob.answer(incoming.call_id)
    await alice.wait_for(CallStateChanged, call_id=call_id, state=CallState.CONNECTED)
    await bob.wait_for(MediaUpdated, call_id=incoming.call_id)
    alice.hold(call_id)
    held = await bob.wait_for(MediaUpdated, call_id=incoming.call_id)
    assert held.remote_hold
    alice.hangup(call_id)
    ended = await bob.wait_for(
        CallStateChanged, call_id=incoming.call_id, state=CallState.TERMINATED
    )
    assert ended.reason == "remote-bye"
