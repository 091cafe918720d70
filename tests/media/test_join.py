"""Two calls' legs joined in the worker (phone.media.join): each far end hears the other, across
μ-law and A-law, with real sockets and the shared 20 ms ticker."""

import asyncio
import secrets
import struct
import wave

import numpy as np
import pytest

from phone.media import g711
from phone.media.join import LegJoin
from phone.media.leg import MediaTicker, PortRange, RtpLeg
from phone.media.srtp import SrtpContext
from phone.media.tones import MusicOnHold, SineTone, ToneSource
from tests.support import analysis, tones

HOST = "127.0.0.1"


@pytest.fixture
def ports():
    return PortRange(47000, 47999)


async def pair(ports, payload_type):
    """(our leg of a call, the far end's leg) wired to each other."""
    ours = await RtpLeg.open(HOST, ports, payload_type=payload_type)
    far = await RtpLeg.open(HOST, ports, payload_type=payload_type)
    ours.set_remote(HOST, far.local_port)
    far.set_remote(HOST, ours.local_port)
    return ours, far


async def heard(leg: RtpLeg, seconds: float):
    frames = []
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        pcm = leg.pull_pcm()
        if pcm is None:
            await asyncio.sleep(0.01)
        else:
            frames.append(pcm)
    return analysis.non_silent(np.concatenate(frames)) if frames else np.zeros(0)


async def test_each_far_end_hears_the_other_across_laws(ports):
    a, far_a = await pair(ports, g711.PAYLOAD_TYPE_PCMU)
    b, far_b = await pair(ports, g711.PAYLOAD_TYPE_PCMA)
    a.source = MusicOnHold()  # the held party had music: the join replaces it with the other
    far_a.source, far_b.source = SineTone(700), SineTone(1000)
    join = LegJoin(a, b)
    try:
        await asyncio.sleep(0.3)
        at_b, at_a = await asyncio.gather(heard(far_b, 1.0), heard(far_a, 1.0))
        assert analysis.dominant_frequency(at_b) == pytest.approx(700, abs=10)
        assert analysis.dominant_frequency(at_a) == pytest.approx(1000, abs=10)
        assert join.relayed > 50 and a.source is None
    finally:
        join.close()
        for leg in (a, b, far_a, far_b):
            await leg.aclose()


async def test_it_stops_relaying_when_closed(ports):
    a, far_a = await pair(ports, g711.PAYLOAD_TYPE_PCMU)
    b, far_b = await pair(ports, g711.PAYLOAD_TYPE_PCMU)
    far_a.source = SineTone(700)
    join = LegJoin(a, b)
    try:
        await asyncio.sleep(0.3)
        join.close()
        await asyncio.sleep(0.1)
        count = join.relayed
        await asyncio.sleep(0.3)
        assert join.relayed == count
    finally:
        for leg in (a, b, far_a, far_b):
            await leg.aclose()


# -- forwarding: a joined packet leaves at once ----------------------------------------------


class ManualTicker(MediaTicker):
    """A fake clock: legs and joins register as usual, but nothing ticks unless tick() is
    called - so whatever reaches a far end got there without a tick."""

    def add(self, leg) -> None:
        self._legs[id(leg)] = leg

    def discard(self, leg) -> None:
        self._legs.pop(id(leg), None)

    def tick(self, slots: int = 1) -> None:
        self.ticks += 1
        for leg in list(self._legs.values()):
            leg._on_tick(asyncio.get_running_loop().time(), slots)


class FarEnd(asyncio.DatagramProtocol):
    """A raw RTP far end: sends literal packets, keeps what arrives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data, addr) -> None:
        self.received.put_nowait(data)

    @classmethod
    async def open(cls):
        transport, far = await asyncio.get_running_loop().create_datagram_endpoint(
            cls, local_addr=(HOST, 0)
        )
        far.transport = transport
        far.port = transport.get_extra_info("sockname")[1]
        return far

    def send(self, leg, pt, seq, ts, ssrc, payload, marker=False):
        header = struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq, ts, ssrc)
        self.transport.sendto(header + payload, (HOST, leg.local_port))

    async def next(self) -> tuple[int, int, int, int, bool, bytes]:
        """(payload type, sequence, timestamp, ssrc, marker, payload) of the next packet."""
        data = await asyncio.wait_for(self.received.get(), 2.0)
        b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
        assert b0 == 0x80
        return b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80), data[12:]


async def test_a_joined_packet_is_forwarded_at_once_without_a_tick(ports):
    ticker = ManualTicker()
    digits = []
    a = await RtpLeg.open(HOST, ports, payload_type=g711.PAYLOAD_TYPE_PCMU, ticker=ticker)
    b = await RtpLeg.open(HOST, ports, payload_type=g711.PAYLOAD_TYPE_PCMA, ticker=ticker)
    a.on_dtmf = digits.append
    far_a, far_b = await FarEnd.open(), await FarEnd.open()
    a.set_remote(HOST, far_a.port)
    b.set_remote(HOST, far_b.port)
    join = LegJoin(a, b, ticker=ticker)
    try:
        assert a.direct and b.direct and len(ticker) == 0  # nothing left on the clock
        tone = [g711.ulaw_encode(f) for f in SineTone(700).frames(6)]
        pu = g711.PAYLOAD_TYPE_PCMU
        for i in range(3):
            far_a.send(a, pu, 100 + i, 8000 + 160 * i, 0xA0A0A0A0, tone[i], marker=i == 0)
        out = [await far_b.next() for _ in range(3)]
        assert ticker.ticks == 0
        # b's own stream: its SSRC, the A-law payload type and law, numbering that runs on.
        for i, (pt, seq, ts, ssrc, marker, payload) in enumerate(out):
            assert pt == g711.PAYLOAD_TYPE_PCMA and ssrc == b.sender.ssrc
            assert seq == (out[0][1] + i) & 0xFFFF and ts == (out[0][2] + 160 * i) & 0xFFFFFFFF
            assert marker == (i == 0)  # RFC 3551 §4.1: the first packet after the splice
            assert payload == g711.convert(tone[i], pu, g711.PAYLOAD_TYPE_PCMA)
        seq0, ts0 = out[0][1], out[0][2]
        # An RFC 4733 event is not carried across, and does not show as a loss after it.
        far_a.send(a, 101, 103, 8480, 0xA0A0A0A0, bytes([5, 0x80 | 10, 0, 160]), marker=True)
        far_a.send(a, pu, 104, 8640, 0xA0A0A0A0, tone[3])
        pt, seq, ts, _, _, _ = await far_b.next()
        assert pt == g711.PAYLOAD_TYPE_PCMA and seq == (seq0 + 3) & 0xFFFF
        assert ts == (ts0 + 160 * 4) & 0xFFFFFFFF  # the time the event took stays visible
        assert [e.digit for e in digits] == ["5"]
        # The far end paused (silence suppression, no marker): the marker says so; a loss
        # upstream stays a gap in the sequence numbers downstream.
        far_a.send(a, pu, 105, 8640 + 160 * 11, 0xA0A0A0A0, tone[4])
        far_a.send(a, pu, 107, 8640 + 160 * 13, 0xA0A0A0A0, tone[5])
        _, seq1, ts1, _, marker1, _ = await far_b.next()
        _, seq2, ts2, _, marker2, _ = await far_b.next()
        assert marker1 and ts1 == (ts0 + 160 * 15) & 0xFFFFFFFF and seq1 == (seq0 + 4) & 0xFFFF
        assert not marker2 and seq2 == (seq1 + 2) & 0xFFFF and ts2 == (ts1 + 320) & 0xFFFFFFFF
        # The other way too, law converted back.
        far_b.send(b, g711.PAYLOAD_TYPE_PCMA, 9, 0, 0xB0B0B0B0, g711.convert(tone[0], pu, 8))
        pt, _, _, ssrc, marker, payload = await far_a.next()
        assert (pt, ssrc, marker) == (pu, a.sender.ssrc, True)
        assert payload == g711.convert(g711.convert(tone[0], pu, 8), 8, pu)
        assert ticker.ticks == 0 and join.relayed == 7
    finally:
        join.close()
        for leg in (a, b):
            await leg.aclose()
        far_a.transport.close()
        far_b.transport.close()


async def test_a_closed_join_gives_the_legs_back_to_their_tick(ports):
    ticker = ManualTicker()
    a = await RtpLeg.open(HOST, ports, ticker=ticker)
    b = await RtpLeg.open(HOST, ports, ticker=ticker)
    far_b = await FarEnd.open()
    b.set_remote(HOST, far_b.port)
    join = LegJoin(a, b, ticker=ticker)
    try:
        join.close()
        assert not a.direct and not b.direct and len(ticker) == 2
        ticker.tick()
        *_, payload = await far_b.next()  # b sends silence of its own again
        assert payload == g711.silence_payload(g711.PAYLOAD_TYPE_PCMU)
    finally:
        for leg in (a, b):
            await leg.aclose()
        far_b.transport.close()


class WavSource(ToneSource):
    """A far end playing a WAV file (tests.support.tones), looped."""

    def __init__(self, path) -> None:
        super().__init__()
        self.pcm, _ = analysis.read_wav(path)

    def _render(self, start: int, samples: int) -> np.ndarray:
        return np.take(self.pcm, np.arange(start, start + samples), mode="wrap")


def record(path, pcm: np.ndarray):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


async def test_tones_cross_a_join_of_srtp_legs_both_ways(ports, tmp_path):
    """Each far end plays a tone WAV and records what it hears (tests.support.tones): each
    hears the other's tone, with SRTP on both calls, μ-law on one and A-law on the other,
    forwarded (no tick)."""
    suite = "AES_CM_128_HMAC_SHA1_80"
    a, far_a = await pair(ports, g711.PAYLOAD_TYPE_PCMU)
    b, far_b = await pair(ports, g711.PAYLOAD_TYPE_PCMA)
    for ours, far in ((a, far_a), (b, far_b)):
        k1, k2 = secrets.token_bytes(30), secrets.token_bytes(30)
        ours.set_srtp(SrtpContext(suite, k1, k2))
        far.set_srtp(SrtpContext(suite, k2, k1))
    far_a.source = WavSource(tones.write_tone(tmp_path / "a.wav", 700, 1.0))
    far_b.source = WavSource(tones.write_tone(tmp_path / "b.wav", 1000, 1.0))
    a.source = MusicOnHold()  # the held party had music: the join replaces it
    join = LegJoin(a, b)
    try:
        assert a.direct and b.direct and a.source is None
        await asyncio.sleep(0.3)
        at_b, at_a = await asyncio.gather(heard(far_b, 1.2), heard(far_a, 1.2))
        for pcm, name, hz in ((at_b, "at_b.wav", 700), (at_a, "at_a.wav", 1000)):
            path = record(tmp_path / name, pcm)
            assert tones.dominant_frequency(path) == pytest.approx(hz, abs=10)
            assert tones.active_seconds(path) > 1.0
        assert a.relayed > 50 and b.relayed > 50  # forwarded, not re-timed
        assert a.stats.srtp_auth_failures == b.stats.srtp_auth_failures == 0
    finally:
        join.close()
        for leg in (a, b, far_a, far_b):
            await leg.aclose()


async def test_a_page_still_connected_to_a_joined_leg_is_not_heard_in_the_join(ports):
    """The line joins two calls before it disconnects the page from one of them: from the
    join on, the page's audio must not be relayed into the joined stream."""
    from aiortc.rtp import RtpPacket as BrowserPacket

    from phone.media.bridge import MediaBridge, _G711Codec

    class Peer:
        connectionState = "connected"

        async def close(self) -> None:
            pass

    class Dtls:
        async def _send_rtp(self, data: bytes) -> None:
            pass

    ticker = ManualTicker()
    a = await RtpLeg.open(HOST, ports, ticker=ticker)
    b = await RtpLeg.open(HOST, ports, ticker=ticker)
    far_a, far_b = await FarEnd.open(), await FarEnd.open()
    a.set_remote(HOST, far_a.port)
    b.set_remote(HOST, far_b.port)
    bridge = MediaBridge(ticker=ticker)
    bridge._pc, bridge._codec = Peer(), _G711Codec(g711.PAYLOAD_TYPE_PCMU)
    bridge._pt, bridge._out.ssrc = 0, 0x1234
    bridge._dtls, bridge._sender = Dtls(), type("Sender", (), {})()
    bridge._send_ok = True
    bridge.connect(b)  # the page talks on b's call ...
    join = LegJoin(a, b, ticker=ticker)  # ... which the line joins to a's
    try:
        packet = BrowserPacket(payload_type=0, sequence_number=7, timestamp=0, ssrc=0x99)
        packet.payload = b"\x11" * 160
        await bridge._on_browser_rtp(packet, 0)
        far_a.send(a, 0, 1, 0, 0xA0, b"\x22" * 160)
        *_, payload = await far_b.next()
        assert payload == b"\x22" * 160  # a's far end, and nothing from the page
        await asyncio.sleep(0.05)
        assert far_b.received.empty() and b.relayed == 1
    finally:
        join.close()
        await bridge.close()
        for leg in (a, b):
            await leg.aclose()
        far_a.transport.close()
        far_b.transport.close()
