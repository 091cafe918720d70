"""SRTP/SRTCP (RFC 3711, keyed by SDES) on the RTP leg towards the PBX, on loopback.

The far end is a second RtpLeg with the mirror-image keys (what the PBX would hold after the
offer/answer), or a raw socket that records what really crosses the wire. Audio is proved by
tone frequency; the wire by showing the tone's G.711 bytes are not in it, yet come back out
when the packets are unprotected with the far end's keys.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import secrets
import struct
import weakref

import numpy as np
import pylibsrtp
import pytest

from phone.media import g711
from phone.media.bridge import MediaBridge
from phone.media.leg import PortRange, RtpLeg
from phone.media.rtp import (
    RtcpReceiverReport,
    RtcpSdes,
    RtpPacket,
    RtpSender,
    build_compound,
    parse_rtcp,
)
from phone.media.srtp import SrtpContext, rtp_protector, rtp_unprotector
from phone.media.tones import MusicOnHold, SineTone
from tests.media.test_bridge import BROWSER_HZ, FAR_HZ, FarEnd, frequency, listen
from tests.support import analysis
from tests.support.fake_browser import FakeBrowser

HOST = "127.0.0.1"
SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")

pytestmark = pytest.mark.usefixtures("loopback_ice")


@pytest.fixture(autouse=True)
def no_errors_logged(caplog):
    caplog.set_level(logging.WARNING)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


@pytest.fixture
def ports():
    base = random.randrange(40000, 60000, 200)
    return PortRange(base, base + 199)


def key_pair(suite: str = SUITES[0]) -> tuple[SrtpContext, SrtpContext]:
    """Our context and the far end's: each sends with its own key (RFC 4568 §6.1)."""
    ours, theirs = secrets.token_bytes(30), secrets.token_bytes(30)
    return SrtpContext(suite, ours, theirs), SrtpContext(suite, theirs, ours)


def rtp(seq: int, payload: bytes = b"\xff" * 160, ssrc: int = 0x1234) -> bytes:
    return RtpPacket(0, seq, 160 * seq, ssrc, payload).serialize()


# -- the context itself ---------------------------------------------------------------------


@pytest.mark.parametrize(("suite", "tag"), [(SUITES[0], 10), (SUITES[1], 4)])
def test_it_protects_and_unprotects_rtp_and_rtcp_with_either_suite(suite: str, tag: int) -> None:
    ours, theirs = key_pair(suite)
    plain = rtp(1, bytes(range(160)))
    wire = ours.protect(plain)
    assert wire is not None and len(wire) == len(plain) + tag  # RFC 3711 §3.1 auth tag
    assert wire[:12] == plain[:12] and wire[12:172] != plain[12:]  # header clear, payload not
    assert theirs.unprotect(wire) == plain
    report = build_compound(RtcpReceiverReport(0x1234), RtcpSdes(0x1234, "leg@test"))
    srtcp = ours.protect_rtcp(report)
    assert srtcp is not None
    # RFC 3711 §3.4: E flag + SRTCP index, then an 80-bit tag whatever the SRTP suite (§6.2.2
    # of RFC 4568 for _32).
    assert len(srtcp) == len(report) + 4 + 10
    (e_index,) = struct.unpack_from("!I", srtcp, len(report))
    assert e_index >> 31 == 1
    assert theirs.unprotect_rtcp(srtcp) == report


def test_forged_replayed_and_plain_packets_are_dropped_and_counted() -> None:
    ours, theirs = key_pair()
    wire = ours.protect(rtp(7))
    assert wire is not None
    tampered = bytearray(wire)
    tampered[20] ^= 0x01
    stranger = SrtpContext(SUITES[0], secrets.token_bytes(30), secrets.token_bytes(30))
    forged = stranger.protect(rtp(8))
    assert forged is not None
    for bad in (bytes(tampered), rtp(9), forged, b"", b"\x80", b"\x00" * 2000):
        assert theirs.unprotect(bad) is None
    assert theirs.unprotect(wire) is not None
    assert theirs.unprotect(wire) is None  # RFC 3711 §3.3.2: a replay
    assert theirs.unprotect_rtcp(b"\x80\xc9\x00\x01" + b"\x00" * 4) is None
    assert theirs.counters.auth_failures == 8


def test_keys_are_checked_and_never_shown() -> None:
    key = secrets.token_bytes(30)
    with pytest.raises(ValueError):
        SrtpContext(SUITES[0], key[:16], key)
    with pytest.raises(ValueError):
        SrtpContext("AES_256_CM_HMAC_SHA1_80", key, key)
    context = SrtpContext(SUITES[0], key, key)
    assert key.hex() not in repr(context) and repr(key) not in repr(context)


# -- legs -----------------------------------------------------------------------------------


async def srtp_legs(ports, suite: str = SUITES[0], **kw) -> tuple[RtpLeg, RtpLeg]:
    ours, theirs = key_pair(suite)
    a = await RtpLeg.open(HOST, ports, **kw)
    b = await RtpLeg.open(HOST, ports, **kw)
    a.set_srtp(ours)
    b.set_srtp(theirs)
    a.set_remote(HOST, b.local_port)
    b.set_remote(HOST, a.local_port)
    return a, b


async def collect(leg: RtpLeg, frames: int) -> np.ndarray:
    return np.concatenate([await asyncio.wait_for(leg.recv_pcm(), 2) for _ in range(frames)])


@pytest.mark.parametrize("suite", SUITES)
async def test_two_srtp_legs_exchange_tones_and_srtcp_reports(ports, suite: str) -> None:
    a, b = await srtp_legs(ports, suite, rtcp_interval=0.2)
    a.source, b.source = SineTone(1000), SineTone(700)
    try:
        got_b, got_a = await asyncio.gather(collect(b, 60), collect(a, 60))
        await asyncio.sleep(0.6)
    finally:
        a.close()
        b.close()
    assert analysis.dominant_frequency(analysis.non_silent(got_b)) == pytest.approx(1000, abs=5)
    assert analysis.dominant_frequency(analysis.non_silent(got_a)) == pytest.approx(700, abs=5)
    for leg in (a, b):
        st = leg.stats
        assert st.srtp and st.srtp_auth_failures == 0
        # SRTCP made it both ways: the far end's reports about us give a round-trip time.
        assert st.rtcp_received >= 1 and st.rtt_ms is not None


class Wire(asyncio.DatagramProtocol):
    """A raw socket standing where the PBX would: records the datagrams it is sent."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr) -> None:
        self.datagrams.append(data)

    @classmethod
    async def open(cls, port: int = 0) -> Wire:
        wire = cls()
        loop = asyncio.get_running_loop()
        wire.transport, _ = await loop.create_datagram_endpoint(
            lambda: wire, local_addr=(HOST, port)
        )
        return wire

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]


async def test_on_the_wire_the_tone_is_encrypted_and_only_the_keys_recover_it(ports) -> None:
    ours, theirs = key_pair()
    leg = await RtpLeg.open(HOST, ports, rtcp_interval=0.2)
    rtp_wire = await Wire.open()
    rtcp_wire = await Wire.open()
    leg.set_srtp(ours)
    leg.set_remote(HOST, rtp_wire.port, rtcp_port=rtcp_wire.port)
    tone = SineTone(1000)
    leg.source = tone
    try:
        await asyncio.sleep(1.0)
        leg.send_dtmf("5", duration_ms=60)
        await asyncio.sleep(0.4)
    finally:
        await leg.aclose()
        rtp_wire.transport.close()
        rtcp_wire.transport.close()
    # The plain G.711 frames the tone makes (it is periodic: a few distinct frames).
    reference = SineTone(1000)
    frames = {g711.ulaw_encode(reference.next_frame()) for _ in range(200)}
    audio = [d for d in rtp_wire.datagrams if d[1] & 0x7F == 0]
    assert len(audio) >= 40
    assert all(len(d) == 12 + 160 + 10 for d in audio)  # header, payload, 80-bit tag
    assert not any(frame in d for d in audio for frame in frames)
    plain = [theirs.unprotect(d) for d in rtp_wire.datagrams]
    assert all(p is not None for p in plain)
    packets = [RtpPacket.parse(p) for p in plain if p is not None]
    assert {p.payload for p in packets if p.payload_type == 0} <= frames
    events = [p for p in packets if p.payload_type == 101]
    assert events and events[0].payload[0] == 5  # RFC 4733 event 5, encrypted like audio
    assert not any(e.payload in d for e in events for d in rtp_wire.datagrams)
    # RTCP left as SRTCP (RFC 3711 §3.4), the BYE of the close included.
    assert rtcp_wire.datagrams
    for datagram in rtcp_wire.datagrams:
        report = theirs.unprotect_rtcp(datagram)
        assert report is not None and parse_rtcp(report)
        assert leg.cname.encode() not in datagram  # SDES is encrypted too


async def test_a_stranger_cannot_play_into_or_steal_an_srtp_leg(ports) -> None:
    ours, theirs = key_pair()
    a = await RtpLeg.open(HOST, ports)
    b = await RtpLeg.open(HOST, ports)
    a.set_srtp(ours)
    b.set_srtp(theirs)
    # a was given a wrong address (NAT): symmetric RTP would latch onto whoever sends first.
    a.set_remote(HOST, 9)
    stranger = await Wire.open()
    try:
        sender, tone = RtpSender(0), SineTone(1500)
        for _ in range(20):
            payload = g711.ulaw_encode(tone.next_frame())
            stranger.transport.sendto(sender.next_packet(payload).serialize(), (HOST, a.local_port))
        await asyncio.sleep(0.1)
        assert a.remote == (HOST, 9)  # plain RTP did not latch
        b.source = SineTone(700)
        b.set_remote(HOST, a.local_port)
        heard = await collect(a, 40)
        assert a.remote == (HOST, b.local_port)  # the keyed far end did
    finally:
        a.close()
        b.close()
        stranger.transport.close()
    assert a.stats.srtp_auth_failures >= 20
    assert not analysis.has_tone(heard, 1500)
    assert analysis.dominant_frequency(analysis.non_silent(heard)) == pytest.approx(700, abs=5)


async def test_an_srtp_leg_without_keys_yet_sends_and_plays_nothing(ports) -> None:
    leg = await RtpLeg.open(HOST, ports)
    wire = await Wire.open()
    leg.srtp_required = True  # our SDP said RTP/SAVP; the answer with the keys is not in yet
    leg.set_remote(HOST, wire.port)
    leg.source = SineTone(1000)
    try:
        await asyncio.sleep(0.3)
        wire.transport.sendto(rtp(1), (HOST, leg.local_port))
        await asyncio.sleep(0.1)
    finally:
        await leg.aclose()
        wire.transport.close()
    assert wire.datagrams == []
    assert leg.stats.packets_received == 0


# -- the bridge: passthrough (forwarded the moment it arrives) and re-timed (opus) ----------


async def srtp_far_end(ports) -> tuple[RtpLeg, FarEnd]:
    leg, far_leg = await srtp_legs(ports)
    return leg, FarEnd(far_leg, FAR_HZ)


@pytest.mark.parametrize("codecs", [None, ["opus"]], ids=["passthrough", "re-timed"])
async def test_the_bridge_carries_audio_music_on_hold_and_dtmf_over_srtp(ports, codecs) -> None:
    leg, far = await srtp_far_end(ports)
    digits: list[str] = []
    far.leg.on_dtmf = lambda event: digits.append(event.digit)
    browser = FakeBrowser(codecs=codecs)
    bridge = MediaBridge()
    try:
        await browser.call(bridge)
        bridge.connect(leg)
        await asyncio.sleep(0.4)
        assert bridge.forwarding == (codecs is None)
        talk = await listen(1.0)
        at_browser, at_far = browser.since(talk), far.since(talk)
        await asyncio.wait_for(leg.send_dtmf("12#", duration_ms=60, gap_ms=40), 3)
        # Hold: the far end hears music on hold, made and encrypted by the leg.
        leg.source = MusicOnHold()
        bridge.disconnect()
        await asyncio.sleep(0.2)
        held = await listen(0.8)
        moh = far.since(held)
        leg.source = None
        bridge.connect(leg)
        await asyncio.sleep(0.3)
        back = await listen(0.8)
        back_at_far = far.since(back)
    finally:
        await bridge.close()
        await browser.close()
        await far.close()
        await leg.aclose()
    assert frequency(at_browser, browser.rate) == pytest.approx(FAR_HZ, abs=5)
    assert frequency(at_far) == pytest.approx(BROWSER_HZ, abs=5)
    assert digits == ["1", "2", "#"]
    assert len(analysis.non_silent(moh)) > 2000 and not analysis.has_tone(moh, BROWSER_HZ)
    assert frequency(back_at_far) == pytest.approx(BROWSER_HZ, abs=5)
    assert leg.stats.srtp_auth_failures == 0 and far.leg.stats.srtp_auth_failures == 0


def _session_pair():
    """Two pylibsrtp sessions on one fresh key: one that protects, one that unprotects."""
    key = secrets.token_bytes(30)
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80

    def session(direction):
        return pylibsrtp.Session(
            pylibsrtp.Policy(key=key, ssrc_type=direction, srtp_profile=profile)
        )

    return session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND), session(pylibsrtp.Policy.SSRC_ANY_INBOUND)


def test_the_per_packet_protect_and_unprotect_match_pylibsrtp():
    """rtp_protector/rtp_unprotector (the bridge's and the leg's per-packet path) give what
    pylibsrtp's own methods give, and fail the same way."""
    tx, rx = _session_pair()
    protect, unprotect = rtp_protector(tx), rtp_unprotector(rx)
    packets = [RtpPacket(0, i, i * 160, 0x1234, bytes([i]) * 160).serialize() for i in range(6)]
    wire = [protect(p) if i % 2 else tx.protect(p) for i, p in enumerate(packets)]
    assert [rx.unprotect(w) if i % 2 else unprotect(w) for i, w in enumerate(wire)] == packets
    with pytest.raises(pylibsrtp.Error):
        unprotect(wire[0])  # a replay
    with pytest.raises(pylibsrtp.Error):
        unprotect(wire[1][:-1] + bytes([wire[1][-1] ^ 1]))  # forged
    with pytest.raises(ValueError):
        protect(bytes(1500))


def test_the_per_packet_path_keeps_its_libsrtp_context_alive():
    """aiortc drops its SRTP sessions when a peer connection closes, while a packet may still
    arrive on the socket we wrapped: our callables must keep the context they call into, or
    that packet writes into freed memory (a sipworker that died in the garbage collector)."""
    tx, rx = _session_pair()
    contexts = [weakref.ref(tx._srtp), weakref.ref(rx._srtp)]
    protect, unprotect = rtp_protector(tx), rtp_unprotector(rx)
    del tx, rx
    gc.collect()
    assert all(ref() is not None for ref in contexts)
    packet = RtpPacket(0, 7, 1120, 0x1234, b"\x55" * 160).serialize()
    assert unprotect(protect(packet)) == packet
    del protect, unprotect
    gc.collect()
    assert all(ref() is None for ref in contexts)  # and nothing keeps them longer
