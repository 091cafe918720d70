"""MediaBridge end to end on loopback, proved by tone frequency.

An aiortc RTCPeerConnection stands in for the browser: it sends a 1000 Hz tone and records
what it receives. The bridge is connected to an RtpLeg whose far end is a second RtpLeg in the
test playing 700 Hz and recording. Both ICE agents gather on 127.0.0.1 only
(`ice_host_addresses`), so the tests work on a loopback-only machine and pair instantly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time

import numpy as np
import pytest

from phone.media import g711
from phone.media.bridge import BridgeError, MediaBridge
from phone.media.dtmf import DtmfReceiver
from phone.media.leg import PortRange, RtpLeg
from phone.media.rtp import RtpPacket, RtpSender
from phone.media.tones import JapaneseRingback, MusicOnHold, SineTone
from tests.support import analysis
from tests.support.fake_browser import FakeBrowser, wait_for

HOST = "127.0.0.1"
BROWSER_HZ, FAR_HZ = 1000, 700

pytestmark = pytest.mark.usefixtures("loopback_ice")


@pytest.fixture(autouse=True)
def no_errors_logged(caplog):
    caplog.set_level(logging.WARNING)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    bad += [r for r in caplog.records if r.name.startswith(("phone", "aiortc", "aioice"))]
    assert not bad, [r.getMessage() for r in bad]


@pytest.fixture
def ports():
    base = random.randrange(40000, 60000, 200)
    return PortRange(base, base + 199)


class FarEnd:
    """The PBX side of the call: an RtpLeg playing a tone and recording what arrives."""

    def __init__(self, leg: RtpLeg, frequency: float) -> None:
        self.leg = leg
        leg.source = SineTone(frequency)
        self.heard: list[tuple[float, np.ndarray]] = []
        self._task = asyncio.ensure_future(self._record())

    async def _record(self) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                pcm = await self.leg.recv_pcm()
                self.heard.append((time.monotonic(), pcm))

    def since(self, t: float) -> np.ndarray:
        chunks = [pcm for at, pcm in self.heard if at >= t]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    async def close(self) -> None:
        self._task.cancel()
        await self.leg.aclose()


async def leg_pair(
    ports, far_hz: float = FAR_HZ, payload_type: int = g711.PAYLOAD_TYPE_PCMU, **leg_kw
):
    """(call leg for the bridge, far end playing far_hz) wired to each other."""
    leg = await RtpLeg.open(HOST, ports, payload_type=payload_type, **leg_kw)
    far_leg = await RtpLeg.open(HOST, ports, payload_type=payload_type, **leg_kw)
    leg.set_remote(HOST, far_leg.local_port)
    far_leg.set_remote(HOST, leg.local_port)
    return leg, FarEnd(far_leg, far_hz)


def frequency(pcm: np.ndarray, rate: int = 8000) -> float:
    heard = analysis.non_silent(pcm) if rate == 8000 else pcm
    assert len(heard) > rate // 4, f"only {len(heard)} non-silent samples"
    return analysis.dominant_frequency(heard, rate=rate)


async def listen(seconds: float = 0.8) -> float:
    t = time.monotonic()
    await asyncio.sleep(seconds)
    return t


async def rtcp_seen_by(browser: FakeBrowser) -> set[str]:
    """Stats types the browser built from the bridge's RTCP (SR -> remote-outbound-rtp,
    RR -> remote-inbound-rtp)."""
    seen = set()
    for s in (await browser.pc.getStats()).values():
        if s.type == "remote-outbound-rtp" and s.packetsSent > 0:
            seen.add(s.type)
        if s.type == "remote-inbound-rtp" and s.packetsReceived > 0:
            seen.add(s.type)
    return seen


async def exchange(ports, codecs=None, payload_type=g711.PAYLOAD_TYPE_PCMU, **bridge_kw):
    """Browser <-> bridge <-> leg <-> far end; returns what each end heard and the bridge."""
    leg, far = await leg_pair(ports, payload_type=payload_type)
    browser = FakeBrowser(codecs=codecs)
    bridge_kw.setdefault("rtcp_interval", 0.5)  # RTCP within the test's time (default: 5 s)
    bridge = MediaBridge(payload_type=payload_type, **bridge_kw)
    try:
        await browser.call(bridge)
        bridge.connect(leg)
        await asyncio.sleep(0.3)  # jitter buffers fill, first frames out of the way
        t = await listen(1.0)
        heard = browser.since(t), far.since(t)
        forwarding = bridge.forwarding
        # The bridge sends RTP around aiortc, but its RTCP still reports true counters.
        deadline = time.monotonic() + 2
        while {"remote-inbound-rtp", "remote-outbound-rtp"} - await rtcp_seen_by(browser):
            assert time.monotonic() < deadline, await rtcp_seen_by(browser)
            await asyncio.sleep(0.1)
        return forwarding, bridge, heard[0], browser.rate, heard[1]
    finally:
        await bridge.close()
        await browser.close()
        await far.close()
        await leg.aclose()


async def test_it_passes_pcmu_through_both_ways(ports):
    # Like Chromium, the fake browser offers opus first; the bridge answers with the leg's law.
    forwarding, bridge, at_browser, rate, at_far = await exchange(ports)
    assert bridge.codec == "PCMU" and bridge.passthrough and forwarding
    assert frequency(at_browser, rate) == pytest.approx(FAR_HZ, abs=5)
    assert frequency(at_far) == pytest.approx(BROWSER_HZ, abs=5)
    assert bridge.stats.to_leg >= 40 and bridge.stats.to_browser >= 40
    assert bridge.stats.decode_errors == 0 and bridge.stats.send_errors == 0


async def test_it_passes_pcma_through_when_the_leg_uses_pcma(ports):
    forwarding, bridge, at_browser, rate, at_far = await exchange(
        ports, payload_type=g711.PAYLOAD_TYPE_PCMA
    )
    assert bridge.codec == "PCMA" and bridge.passthrough and forwarding
    assert frequency(at_browser, rate) == pytest.approx(FAR_HZ, abs=5)
    assert frequency(at_far) == pytest.approx(BROWSER_HZ, abs=5)


async def test_it_translates_between_g711_laws(ports):
    forwarding, bridge, at_browser, rate, at_far = await exchange(ports, codecs=["PCMA"])
    assert bridge.codec == "PCMA" and not bridge.passthrough  # leg is PCMU
    assert forwarding  # a table lookup per byte needs no re-timing
    assert frequency(at_browser, rate) == pytest.approx(FAR_HZ, abs=5)
    assert frequency(at_far) == pytest.approx(BROWSER_HZ, abs=5)


async def test_it_transcodes_when_the_browser_insists_on_opus(ports):
    forwarding, bridge, at_browser, rate, at_far = await exchange(ports, codecs=["opus"])
    assert bridge.codec == "opus" and not bridge.passthrough and not forwarding
    assert rate == 48000
    assert frequency(at_browser, rate) == pytest.approx(FAR_HZ, abs=5)
    assert frequency(at_far) == pytest.approx(BROWSER_HZ, abs=5)


async def test_it_rejects_an_offer_without_a_usable_codec():
    browser = FakeBrowser(codecs=["G722"])
    bridge = MediaBridge()
    try:
        await browser.pc.setLocalDescription(await browser.pc.createOffer())
        with pytest.raises(BridgeError):
            await bridge.accept_offer(browser.pc.localDescription.sdp)
    finally:
        await bridge.close()
        await browser.close()


async def test_answer_is_complete_and_uses_only_host_candidates():
    browser = FakeBrowser()
    bridge = MediaBridge()
    try:
        await browser.pc.setLocalDescription(await browser.pc.createOffer())
        answer = await bridge.accept_offer(browser.pc.localDescription.sdp)
        candidates = [line for line in answer.splitlines() if line.startswith("a=candidate")]
        assert candidates and all(" typ host" in c and HOST in c for c in candidates)
        audio = [line for line in answer.splitlines() if line.startswith("m=audio")]
        assert audio[0].split()[3:] == ["0"]  # exactly one codec: PCMU
    finally:
        await bridge.close()
        await browser.close()


async def test_play_sends_ringback_to_the_browser_then_back_to_the_leg(ports):
    leg, far = await leg_pair(ports)
    browser = FakeBrowser()
    seen = spy_on_rtp(browser)
    bridge = MediaBridge()
    try:
        await browser.call(bridge)
        bridge.play(JapaneseRingback())  # dialling: no leg yet
        await asyncio.sleep(0.2)
        t = await listen(0.6)  # inside the first 1 s "on" phase
        assert frequency(browser.since(t), browser.rate) == pytest.approx(400, abs=5)

        bridge.connect(leg)  # answered, but ringback still asked for: leg audio stays out
        assert not bridge.forwarding and leg.direct  # re-timed to the browser only
        await asyncio.sleep(0.2)
        t = await listen(0.5)
        assert frequency(far.since(t)) == pytest.approx(BROWSER_HZ, abs=5)

        bridge.play(None)
        assert bridge.forwarding
        first_forwarded = bridge._out.sequence
        await asyncio.sleep(0.2)
        t = await listen(0.6)
        assert frequency(browser.since(t), browser.rate) == pytest.approx(FAR_HZ, abs=5)
        # From the tick's ringback to forwarded packets: one stream for the browser.
        assert_one_stream([s[0] for s in seen], [s[1] for s in seen], [s[2] for s in seen])
        assert {s[1]: s[3] for s in seen}[first_forwarded]  # marked where forwarding began
    finally:
        await bridge.close()
        await browser.close()
        await far.close()
        await leg.aclose()


async def test_it_moves_between_legs_with_disconnect_and_connect(ports):
    leg1, far1 = await leg_pair(ports, far_hz=700)
    leg2, far2 = await leg_pair(ports, far_hz=500)
    browser = FakeBrowser()
    bridge = MediaBridge()
    try:
        await browser.call(bridge)
        bridge.connect(leg1)
        await asyncio.sleep(0.2)
        t = await listen(0.6)
        assert frequency(browser.since(t), browser.rate) == pytest.approx(700, abs=5)
        assert frequency(far1.since(t)) == pytest.approx(BROWSER_HZ, abs=5)

        bridge.disconnect()
        assert bridge.leg is None
        await asyncio.sleep(0.2)
        t = await listen(0.4)
        assert len(analysis.non_silent(far1.since(t))) == 0  # leg1 runs on, sending silence
        assert not leg1.closed

        bridge.connect(leg2)
        await asyncio.sleep(0.2)
        t = await listen(0.6)
        assert frequency(browser.since(t), browser.rate) == pytest.approx(500, abs=5)
        assert frequency(far2.since(t)) == pytest.approx(BROWSER_HZ, abs=5)
        assert len(analysis.non_silent(far1.since(t))) == 0
    finally:
        await bridge.close()
        await browser.close()
        for end in (far1, far2):
            await end.close()
        await leg1.aclose()
        await leg2.aclose()


async def test_losing_the_browser_leaves_the_call_running(ports):
    leg, far = await leg_pair(ports)
    browser = FakeBrowser()
    states: list[str] = []
    bridge = MediaBridge(on_state=states.append)
    try:
        await browser.call(bridge)
        bridge.connect(leg)
        await asyncio.sleep(0.3)
        await browser.close()  # tab closed: DTLS close_notify reaches the bridge
        await wait_for(lambda: bridge.state == "closed")
        assert bridge.leg is None
        assert states[-1] == "closed" and "connected" in states
        sent = leg.stats.packets_sent
        t = await listen(0.4)
        assert not leg.closed and leg.stats.packets_sent >= sent + 15
        assert len(far.since(t)) >= 15 * 160  # the far end still gets a stream (silence)
        with pytest.raises(BridgeError):
            bridge.connect(leg)
    finally:
        await bridge.close()
        await far.close()
        await leg.aclose()


class StubLeg:
    """Just what the bridge's tick reads from a leg: a queue of playout frames."""

    def __init__(self, frames, payload_type=g711.PAYLOAD_TYPE_PCMU) -> None:
        self.frames = list(frames)
        self.payload_type = payload_type
        self.closed = False

    def pull_frame(self):
        return self.frames.pop(0) if self.frames else None

    def listen(self, listener): ...
    def unlisten(self, listener): ...
    def relay_from(self, owner): ...
    def release_relay(self, owner): ...


class StubDtls:
    """Stands in for aiortc's RTCDtlsTransport: records what `_send_rtp` is given."""

    def __init__(self) -> None:
        self.sent: list[RtpPacket] = []

    async def _send_rtp(self, data: bytes) -> None:
        self.sent.append(RtpPacket.parse(data))


def test_only_g711_audio_goes_to_the_browser_and_the_clock_keeps_running():
    from phone.media.bridge import _G711Codec
    from phone.media.playout import PlayoutFrame

    ulaw = g711.ulaw_encode(SineTone(700).next_frame())
    leg = StubLeg(
        [
            PlayoutFrame(1, 0, 0, ulaw),
            PlayoutFrame(2, 160, 0, ulaw),
            PlayoutFrame(3, 320, None, None),  # lost
            PlayoutFrame(4, 480, 13, b"\x40"),  # comfort noise from the PBX
            PlayoutFrame(5, 640, 0, ulaw),
        ]
    )
    bridge = MediaBridge()
    bridge._codec = _G711Codec(g711.PAYLOAD_TYPE_PCMA)  # browser chose PCMA, leg is PCMU
    bridge._pt, bridge._out.ssrc = 8, 0x1234
    bridge._dtls, bridge._sender = StubDtls(), type("Sender", (), {})()
    bridge._send_ok = True
    bridge._leg = leg
    ts0 = bridge._out.timestamp
    bridge._tick(5)
    sent = bridge._dtls.sent
    assert [(p.timestamp - ts0) % (1 << 32) for p in sent] == [0, 160, 640]
    assert [p.marker for p in sent] == [True, False, True]  # a new talkspurt after the gap
    assert [p.sequence_number - sent[0].sequence_number for p in sent] == [0, 1, 2]
    assert {(p.payload_type, p.ssrc) for p in sent} == {(8, 0x1234)}
    pcm = g711.alaw_decode(sent[0].payload)
    assert analysis.dominant_frequency(pcm) == pytest.approx(700, abs=10)
    assert bridge.stats.from_leg == 5 and bridge.stats.to_browser == 3


async def test_a_failed_peer_disconnects_and_closes_itself():
    # ICE consent expiry takes ~30 s in aioice; drive the state change directly instead.
    class FailedPeer:
        connectionState = "failed"

        async def close(self) -> None:
            pass

    leg = StubLeg([])
    states: list[str] = []
    bridge = MediaBridge(on_state=states.append)
    bridge._pc = FailedPeer()
    bridge.connect(leg)
    bridge._on_pc_state()
    assert bridge.state == "failed" and bridge.leg is None and not leg.closed
    await wait_for(lambda: bridge.state == "closed")
    assert states == ["failed", "closed"]


# -- forwarding: packets cross the moment they arrive -------------------------------------------


class StubPeer:
    connectionState = "connected"

    async def close(self) -> None:
        pass


class IdleTicker:
    """A MediaTicker that never ticks: whatever is forwarded got there without a tick."""

    def __init__(self) -> None:
        self.members: list = []

    def add(self, member) -> None:
        if member not in self.members:
            self.members.append(member)

    def discard(self, member) -> None:
        if member in self.members:
            self.members.remove(member)

    def __len__(self) -> int:
        return len(self.members)


class RawFarEnd(asyncio.DatagramProtocol):
    """The PBX side as plain RTP: sends a PCMU tone every 20 ms from the port it listens on
    (so symmetric RTP answers here) and records every packet it gets, header and all."""

    def __init__(self, frequency: float | None = FAR_HZ) -> None:
        self.tone = SineTone(frequency) if frequency else None
        self.sender = RtpSender(g711.PAYLOAD_TYPE_PCMU)
        self.packets: list[tuple[float, RtpPacket]] = []
        self.transport = None
        self.port = 0
        self._task: asyncio.Task | None = None

    @classmethod
    async def open(cls, frequency: float | None = FAR_HZ) -> RawFarEnd:
        end = cls(frequency)
        loop = asyncio.get_running_loop()
        end.transport, _ = await loop.create_datagram_endpoint(lambda: end, local_addr=(HOST, 0))
        end.port = end.transport.get_extra_info("sockname")[1]
        return end

    def datagram_received(self, data, addr) -> None:
        self.packets.append((time.monotonic(), RtpPacket.parse(data)))

    def send_to(self, port: int) -> None:
        self._task = asyncio.ensure_future(self._send((HOST, port)))

    async def _send(self, remote) -> None:
        loop = asyncio.get_running_loop()
        t0, k = loop.time(), 0
        while True:
            k += 1
            await asyncio.sleep(max(0.0, t0 + k * 0.02 - loop.time()))
            payload = g711.ulaw_encode(self.tone.next_frame())
            self.transport.sendto(self.sender.next_packet(payload).serialize(), remote)

    def audio(self, since: float, until: float = float("inf")) -> np.ndarray:
        chunks = [
            g711.ulaw_decode(p.payload)
            for at, p in self.packets
            if since <= at < until and p.payload_type == g711.PAYLOAD_TYPE_PCMU
        ]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.transport.close()


def spy_on_rtp(browser: FakeBrowser) -> list[tuple[float, int, int, bool]]:
    """(arrival, sequence, timestamp, marker) of every RTP packet the browser receives."""
    receiver = browser.pc.getTransceivers()[0].receiver
    original = receiver._handle_rtp_packet
    seen: list[tuple[float, int, int, bool]] = []

    async def spy(packet, arrival_time_ms):
        seen.append((time.monotonic(), packet.sequence_number, packet.timestamp, packet.marker))
        await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = spy
    return seen


def assert_one_stream(arrivals, seqs, stamps, slack=0.08):
    """What a receiver needs to see one continuous stream: every sequence number follows the
    one before, and the timestamps advance in whole 20 ms frames with the wall clock (a reset
    or a jump would break both)."""
    steps = [(b - a) & 0xFFFF for a, b in itertools.pairwise(seqs)]
    assert set(steps) == {1}, sorted(set(steps))
    ts_steps = [(b - a) & 0xFFFF_FFFF for a, b in itertools.pairwise(stamps)]
    assert all(s % 160 == 0 and 0 < s <= 160 * 100 for s in ts_steps), sorted(set(ts_steps))
    media = sum(ts_steps) / 8000
    wall = arrivals[-1] - arrivals[0]
    assert media == pytest.approx(wall, abs=slack)


async def test_it_forwards_each_packet_the_moment_it_arrives_without_a_tick(ports):
    """Both directions, driven by hand: the ticker never fires, nothing waits for it."""
    from aiortc.rtp import RtpPacket as BrowserPacket

    from phone.media.bridge import _G711Codec

    ticker = IdleTicker()
    far = await RawFarEnd.open(frequency=None)
    leg = await RtpLeg.open(HOST, ports, ticker=ticker)
    leg.set_remote(HOST, far.port)
    bridge = MediaBridge(ticker=ticker)
    bridge._pc = StubPeer()  # negotiated (by hand): a PCMU answer
    bridge._codec = _G711Codec(g711.PAYLOAD_TYPE_PCMU)
    bridge._pt, bridge._out.ssrc = 0, 0x1234
    bridge._dtls, bridge._sender = StubDtls(), type("Sender", (), {})()
    bridge._send_ok = True
    try:
        assert leg in ticker.members  # a lone leg ticks: it sends silence
        bridge.connect(leg)
        assert bridge.forwarding and len(ticker) == 0  # now nothing ticks

        # PBX -> browser: the leg's datagram handler hands the packet straight on.
        tone = [g711.ulaw_encode(f) for f in SineTone(FAR_HZ).frames(3)]
        for i, payload in enumerate(tone[:2]):
            wire = RtpPacket(0, 500 + i, 8000 + 160 * i, 0x55, payload).serialize()
            leg._on_rtp(wire, (HOST, far.port))
            assert len(bridge._dtls.sent) == i + 1  # sent before _on_rtp returned
        first, second = bridge._dtls.sent
        assert (first.ssrc, first.payload_type, first.payload) == (0x1234, 0, tone[0])
        assert first.marker and not second.marker
        assert second.sequence_number == (first.sequence_number + 1) & 0xFFFF
        assert second.timestamp == (first.timestamp + 160) & 0xFFFF_FFFF

        # Browser -> PBX: aiortc's receive hook sends on the leg's socket at once.
        for i, payload in enumerate(tone):
            packet = BrowserPacket(
                payload_type=0, sequence_number=70 + i, timestamp=9000 + 160 * i, ssrc=0x99
            )
            packet.payload = payload
            await bridge._on_browser_rtp(packet, 0)
            assert leg.relayed == i + 1
        await wait_for(lambda: len(far.packets) == 3)
        got = [p for _, p in far.packets]
        assert [p.payload for p in got] == tone
        assert {(p.ssrc, p.payload_type) for p in got} == {(leg.sender.ssrc, 0)}
        assert [p.marker for p in got] == [True, False, False]
        assert [(p.sequence_number - got[0].sequence_number) & 0xFFFF for p in got] == [0, 1, 2]
        assert len(ticker) == 0
    finally:
        await bridge.close()
        far.close()
        await leg.aclose()


async def test_hold_with_music_and_resume_keep_both_streams_continuous(ports):
    far = await RawFarEnd.open(FAR_HZ)
    leg = await RtpLeg.open(HOST, ports)
    leg.set_remote(HOST, far.port)
    far.send_to(leg.local_port)
    browser = FakeBrowser()
    at_browser = spy_on_rtp(browser)
    bridge = MediaBridge()
    try:
        await browser.call(bridge)
        # In a call: what phone.worker.media.carry() does for live audio.
        bridge.connect(leg)
        await asyncio.sleep(0.3)
        assert bridge.forwarding
        talk = await listen(0.6)
        # Hold: the far end hears music on hold, the page hears nothing of this call.
        hold_at = time.monotonic()
        leg.source = MusicOnHold()
        bridge.disconnect()
        assert not leg.direct
        moh_seq = leg.sender.sequence  # the tick's first packet
        await asyncio.sleep(0.2)
        held = await listen(0.6)
        # Resume.
        leg.source = None
        resume_at = time.monotonic()
        bridge.connect(leg)
        assert bridge.forwarding
        back_seq = leg.sender.sequence  # the first relayed packet
        await asyncio.sleep(0.3)
        back = await listen(0.6)
        end = time.monotonic()
    finally:
        await bridge.close()
        await browser.close()
        far.close()
        await leg.aclose()

    # The far end: one stream from first packet to last, through both switches.
    got = [(at, p) for at, p in far.packets if at >= talk - 0.2]
    assert_one_stream(
        [at for at, _ in got], [p.sequence_number for _, p in got], [p.timestamp for _, p in got]
    )
    # Music on hold starts a talkspurt (marker bit); so does the browser's audio again (the
    # fake browser, aiortc, marks every packet it sends itself, so that one proves less).
    by_seq = {p.sequence_number: p for _, p in got}
    assert by_seq[moh_seq].marker and by_seq[back_seq].marker
    assert frequency(far.audio(talk, hold_at)) == pytest.approx(BROWSER_HZ, abs=5)
    moh = far.audio(held, resume_at)
    assert len(analysis.non_silent(moh)) > 2000 and not analysis.has_tone(moh, BROWSER_HZ)
    assert frequency(far.audio(back, end)) == pytest.approx(BROWSER_HZ, abs=5)

    # The browser: the stream pauses while held and goes on where it left off.
    seen = [s for s in at_browser if s[0] >= talk - 0.2]
    assert_one_stream([s[0] for s in seen], [s[1] for s in seen], [s[2] for s in seen], 0.1)
    gap = max(itertools.pairwise(seen), key=lambda pair: pair[1][0] - pair[0][0])
    assert gap[1][0] - gap[0][0] > 0.5 and gap[1][3]  # the pause, then a marked packet
    assert frequency(browser.since(talk)[: 8000 * 6 // 10], browser.rate) == pytest.approx(
        FAR_HZ, abs=5
    )
    assert frequency(browser.since(back), browser.rate) == pytest.approx(FAR_HZ, abs=5)


async def test_dtmf_reaches_the_far_end_while_forwarding(ports):
    far = await RawFarEnd.open(FAR_HZ)
    leg = await RtpLeg.open(HOST, ports)
    leg.set_remote(HOST, far.port)
    far.send_to(leg.local_port)
    browser = FakeBrowser()
    bridge = MediaBridge()
    try:
        await browser.call(bridge)
        bridge.connect(leg)
        await asyncio.sleep(0.3)
        assert bridge.forwarding
        start = time.monotonic()
        await asyncio.wait_for(leg.send_dtmf("159#", duration_ms=60, gap_ms=40), 3)
        assert bridge.forwarding  # back to forwarding once the digits are out
        after = await listen(0.6)
        assert leg.direct and leg.relayed > 0
    finally:
        await bridge.close()
        await browser.close()
        far.close()
        await leg.aclose()
    receiver = DtmfReceiver(101)
    got = [(at, p) for at, p in far.packets if at >= start - 0.1]
    for _, p in got:
        receiver.on_packet(p)
    assert receiver.digits == "159#" and leg.stats.dtmf_sent == 4
    events = [p for _, p in got if p.payload_type == 101]
    assert events[0].marker and len({p.timestamp for p in events}) == 4
    # Audio and events share one sequence space: no jump into the digits or back out.
    # (Timestamps are not checked here: event packets repeat their start, RFC 4733 §2.3.1.)
    pairs = itertools.pairwise(p for _, p in got)
    assert {(b.sequence_number - a.sequence_number) & 0xFFFF for a, b in pairs} == {1}
    assert frequency(far.audio(after)) == pytest.approx(BROWSER_HZ, abs=5)


async def test_rtcp_flows_on_both_sides_while_forwarding(ports):
    leg, far = await leg_pair(ports, rtcp_interval=0.2)
    browser = FakeBrowser()
    bridge = MediaBridge(rtcp_interval=0.2)
    try:
        await browser.call(bridge)
        bridge.connect(leg)
        await asyncio.sleep(1.2)
        assert bridge.forwarding
        st = leg.stats
        assert st.rtcp_sent >= 3 and st.rtcp_received >= 3
        assert st.rtt_ms is not None and st.remote_fraction_lost == 0
        assert far.leg.stats.packets_received >= 50  # what the leg relayed reached it
        deadline = time.monotonic() + 2
        while {"remote-inbound-rtp", "remote-outbound-rtp"} - await rtcp_seen_by(browser):
            assert time.monotonic() < deadline, await rtcp_seen_by(browser)
            await asyncio.sleep(0.1)
    finally:
        await bridge.close()
        await browser.close()
        await far.close()
        await leg.aclose()


async def test_it_reports_to_the_browser_in_one_compound_packet_at_its_own_interval(ports):
    """One RTCP compound packet per interval (RFC 3550 §6.1, §6.3.1: 0.5-1.5x), where aiortc's
    sender and receiver each sent their own every 0.5-1.5 s: an RR + SDES while the bridge
    has sent no media, an SR with the report block about the browser's stream once it has;
    a BYE when it closes."""
    from aiortc.rtp import RtcpByePacket, RtcpPacket, RtcpRrPacket, RtcpSdesPacket, RtcpSrPacket

    browser = FakeBrowser()
    bridge = MediaBridge(rtcp_interval=1.0)
    leg, far = await leg_pair(ports)
    got: list[tuple[float, list]] = []
    try:
        await browser.call(bridge)
        dtls = browser.pc.getTransceivers()[0].sender.transport
        usual = dtls._handle_rtcp_data

        async def spy(data: bytes) -> None:
            got.append((time.monotonic(), RtcpPacket.parse(data)))
            await usual(data)

        dtls._handle_rtcp_data = spy
        browser_ssrc = browser.pc.getTransceivers()[0].sender._ssrc
        await asyncio.sleep(3.2)  # no leg: the bridge sends the browser nothing
        idle = list(got)
        bridge.connect(leg)
        await asyncio.sleep(3.6)
        assert bridge.forwarding
        talking = got[len(idle) :]
        # 3.2 s at 0.5-1.5 s each: 2 to 6 (aiortc's two loops: about 6, none compound).
        assert 2 <= len(idle) <= 6, [(round(t, 2), p) for t, p in got]
        for _, packets in idle:
            assert [type(p) for p in packets] == [RtcpRrPacket, RtcpSdesPacket]
            assert [r.ssrc for r in packets[0].reports] == [browser_ssrc]
        times = [t for t, _ in got]
        assert min(b - a for a, b in itertools.pairwise(times)) >= 0.45
        srs = [packets[0] for _, packets in talking if type(packets[0]) is RtcpSrPacket]
        assert srs, talking
        assert srs[-1].sender_info.packet_count > 0
        assert [r.ssrc for r in srs[-1].reports] == [browser_ssrc]
        assert all(type(packets[-1]) is RtcpSdesPacket for _, packets in talking)
        count = len(got)
        await bridge.close()
        await wait_for(lambda: len(got) > count)
        assert [type(p) for p in got[-1][1]] == [RtcpByePacket]
    finally:
        await bridge.close()
        await browser.close()
        await far.close()
        await leg.aclose()
