"""MediaBridge end to end on loopback, proved by tone frequency.

An aiortc RTCPeerConnection stands in for the browser: it sends a 1000 Hz tone and records
what it receives. The bridge is connected to an RtpLeg whose far end is a second RtpLeg in the
test playing 700 Hz and recording. Both ICE agents gather on 127.0.0.1 only
(`ice_host_addresses`), so the tests work on a loopback-only machine and pair instantly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

import numpy as np
import pytest

from phone.media import g711
from phone.media.bridge import BridgeError, MediaBridge, ice_host_addresses
from phone.media.leg import PortRange, RtpLeg
from phone.media.rtp import RtpPacket
from phone.media.tones import JapaneseRingback, SineTone
from tests.support import analysis
from tests.support.fake_browser import FakeBrowser, wait_for

HOST = "127.0.0.1"
BROWSER_HZ, FAR_HZ = 1000, 700


@pytest.fixture(autouse=True)
def loopback_ice():
    with ice_host_addresses([HOST]):
        yield


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


async def leg_pair(ports, far_hz: float = FAR_HZ, payload_type: int = g711.PAYLOAD_TYPE_PCMU):
    """(call leg for the bridge, far end playing far_hz) wired to each other."""
    leg = await RtpLeg.open(HOST, ports, payload_type=payload_type)
    far_leg = await RtpLeg.open(HOST, ports, payload_type=payload_type)
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
    bridge = MediaBridge(payload_type=payload_type, **bridge_kw)
    try:
        await browser.call(bridge)
        bridge.connect(leg)
        await asyncio.sleep(0.3)  # jitter buffers fill, first frames out of the way
        t = await listen(1.0)
        heard = browser.since(t), far.since(t)
        # The bridge sends RTP around aiortc, but its RTCP still reports true counters.
        deadline = time.monotonic() + 2
        while {"remote-inbound-rtp", "remote-outbound-rtp"} - await rtcp_seen_by(browser):
            assert time.monotonic() < deadline, await rtcp_seen_by(browser)
            await asyncio.sleep(0.1)
        return bridge, heard[0], browser.rate, heard[1]
    finally:
        await bridge.close()
        await browser.close()
        await far.close()
        await leg.aclose()


async def test_it_passes_pcmu_through_both_ways(ports):
    # Like Chromium, the fake browser offers opus first; the bridge answers with the leg's law.
    bridge, at_browser, rate, at_far = await exchange(ports)
    assert bridge.codec == "PCMU" and bridge.passthrough
    assert frequency(at_browser, rate) == pytest.approx(FAR_HZ, abs=5)
    assert frequency(at_far) == pytest.approx(BROWSER_HZ, abs=5)
    assert bridge.stats.to_leg >= 40 and bridge.stats.to_browser >= 40
    assert bridge.stats.decode_errors == 0 and bridge.stats.send_errors == 0


async def test_it_passes_pcma_through_when_the_leg_uses_pcma(ports):
    bridge, at_browser, rate, at_far = await exchange(ports, payload_type=g711.PAYLOAD_TYPE_PCMA)
    assert bridge.codec == "PCMA" and bridge.passthrough
    assert frequency(at_browser, rate) == pytest.approx(FAR_HZ, abs=5)
    assert frequency(at_far) == pytest.approx(BROWSER_HZ, abs=5)


async def test_it_translates_between_g711_laws(ports):
    bridge, at_browser, rate, at_far = await exchange(ports, codecs=["PCMA"])
    assert bridge.codec == "PCMA" and not bridge.passthrough  # leg is PCMU
    assert frequency(at_browser, rate) == pytest.approx(FAR_HZ, abs=5)
    assert frequency(at_far) == pytest.approx(BROWSER_HZ, abs=5)


async def test_it_transcodes_when_the_browser_insists_on_opus(ports):
    bridge, at_browser, rate, at_far = await exchange(ports, codecs=["opus"])
    assert bridge.codec == "opus" and not bridge.passthrough
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
    bridge = MediaBridge()
    try:
        await browser.call(bridge)
        bridge.play(JapaneseRingback())  # dialling: no leg yet
        await asyncio.sleep(0.2)
        t = await listen(0.6)  # inside the first 1 s "on" phase
        assert frequency(browser.since(t), browser.rate) == pytest.approx(400, abs=5)

        bridge.connect(leg)  # answered, but ringback still asked for: leg audio stays out
        await asyncio.sleep(0.2)
        t = await listen(0.5)
        assert frequency(far.since(t)) == pytest.approx(BROWSER_HZ, abs=5)

        bridge.play(None)
        await asyncio.sleep(0.2)
        t = await listen(0.6)
        assert frequency(browser.since(t), browser.rate) == pytest.approx(FAR_HZ, abs=5)
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
    bridge._pt, bridge._ssrc = 8, 0x1234
    bridge._dtls, bridge._sender = StubDtls(), type("Sender", (), {})()
    bridge._send_ok = True
    bridge._leg = leg
    ts0 = bridge._ts
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
