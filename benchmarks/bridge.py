"""MediaBridge scaling: N concurrent bridged calls, browsers and far ends in another process.

    fake browsers (aiortc peers)  <-DTLS-SRTP->  MediaBridge  <->  RtpLeg  <-RTP->  UDP echo
    \\___________ load process (one or more) ___/ \\___ this process (measured) ___/    (load)

The measured process holds only what a sipworker holds per call: one MediaBridge (aiortc
peer connection) and one RtpLeg. The fake browsers and the RTP echo far end run in separate
"load" processes so their CPU is not counted. A fake browser uses aiortc for ICE/DTLS/SRTP
but no media pipeline: every 20 ms (one shared timer) it sends a pre-encoded 1000 Hz frame
tagged with a counter, and it timestamps what comes back; in passthrough the tag survives the
round trip browser -> bridge -> leg -> echo -> leg -> bridge -> browser, so echoed frames and
their round-trip time are counted exactly. In opus mode payloads are transcoded twice, so the
browser counts received frames and decodes call 0's audio to check the tone frequency.

Modes: passthrough (the normal call: packets forwarded as they arrive), retimed (the same
calls with MediaBridge(direct=False): every packet waits for the 20 ms tick, the leg's playout
buffer and its send queue - what every call paid before forwarding), moh (every call held the
way the worker holds one: the leg plays music on hold to the far end on the tick, the bridge
carries nothing; no round trip to measure) and opus (transcoding).

Prints per run: CPU seconds per call per second of the bridge process (and the resulting calls
per core), the load processes' CPU and how busy the whole machine was, the round trip the
bridge adds (tagged frames browser -> bridge -> leg -> echo -> leg -> bridge -> browser; the
echo itself adds ~nothing) p50/p95/p99, frames echoed/received per call per second, gaps
> 60 ms between packets arriving at the fake browsers and at the far end (count and max),
MediaTicker slots missed in the bridge process, and call setup time p50/p95 (bridge:
accept_offer() -> "connected"; browser: createOffer() -> "connected"); then a table. Figures
only; no asserts.

    .venv/bin/python benchmarks/bridge.py [--seconds 5] [--load-procs 1]
        [--passthrough 1 10 25 50 100] [--retimed 10 50] [--moh 10 50] [--opus 10 25] [--naive]

--naive measures, in the same harness, the straightforward bridge (aiortc's tracks, decoder
thread and encoder thread pool, PCM into the leg) as a baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import fractions
import gc
import json
import os
import pstats
import resource
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from phone.media import g711
from phone.media.bridge import MediaBridge, _drive, _SilentTrack, ice_host_addresses
from phone.media.leg import MediaTicker, PortRange, RtpLeg
from phone.media.tones import MusicOnHold, SineTone
from tests.support import analysis

HOST = "127.0.0.1"
PROFILE = os.environ.get("BRIDGE_BENCH_PROFILE") == "1"  # cProfile the measured window
GAP = 0.060
TAG = struct.Struct("!HI")  # call index, frame counter: the first 6 bytes of a G.711 payload
_RTP = struct.Struct("!BBHII")


class GcWatch:
    """Longest garbage-collector pause since reset() (a loop stall nobody asked for)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.reset()
        gc.callbacks.append(self.callback)

    def reset(self) -> None:
        self.longest = 0.0
        self.collections = 0

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.collections += 1
            self.longest = max(self.longest, time.perf_counter() - self.started)


GC = GcWatch()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- load process: fake browsers + RTP echo ---------------------------------------------------


class Echo(asyncio.DatagramProtocol):
    """The far end: every RTP datagram goes straight back where it came from. It also times
    what arrives per leg (gaps > 60 ms between packets: what the PBX side would hear)."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, int], float] = {}
        self.reset()

    def reset(self) -> None:
        self.gaps = 0
        self.max_gap = 0.0
        self.last.clear()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)
        now = time.monotonic()
        last = self.last.get(addr)
        if last is not None:
            gap = now - last
            if gap > GAP:
                self.gaps += 1
            if gap > self.max_gap:
                self.max_gap = gap
        self.last[addr] = now


def opus_frames(count: int = 50) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.format, enc.layout, enc.sample_rate = "s16", "mono", 48000
    enc.bit_rate = 32000
    enc.time_base = fractions.Fraction(1, 48000)
    tone = SineTone(1000, rate=48000)
    out: list[bytes] = []
    pts = 0
    while len(out) < count:
        frame = av.AudioFrame.from_ndarray(tone.next_frame(960).reshape(1, -1), "s16", "mono")
        frame.sample_rate, frame.pts = 48000, pts
        pts += 960
        out += [bytes(p) for p in enc.encode(frame)]
    return out[:count]


class FakeBrowser:
    def __init__(self, index: int, codec: str) -> None:
        self.index = index
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.transceiver = self.pc.addTransceiver(_SilentTrack(), direction="sendrecv")
        caps = RTCRtpSender.getCapabilities("audio").codecs
        # Like Chromium: opus first, then G.711; the "opus" runs offer opus only.
        names = ["opus"] if codec == "opus" else ["opus", "PCMU", "PCMA"]
        self.transceiver.setCodecPreferences(
            [c for n in names for c in caps if c.mimeType == f"audio/{n}"]
        )
        self.transceiver.receiver._handle_rtp_packet = self.on_rtp
        self.codec = codec
        self.sent_at: dict[int, float] = {}
        self.counter = 0
        self.seq, self.ts = 1000, 0
        self.pt = 0
        self.dtls: Any = None
        self.connected_after: float | None = None
        self.reset()

    def reset(self) -> None:
        self.received = 0
        self.echoed = 0
        self.rtts: list[float] = []
        self.gaps = 0
        self.max_gap = 0.0
        self.last: float | None = None
        self.opus_rx: list[bytes] = []

    async def offer(self) -> str:
        self.t0 = time.monotonic()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        media = aiortc_sdp.SessionDescription.parse(sdp).media[0]
        self.pt = media.rtp.codecs[0].payloadType
        self.ssrc = self.transceiver.sender._ssrc
        self.dtls = self.transceiver.sender.transport

    async def on_rtp(self, packet: Any, arrival_time_ms: int = 0) -> None:
        now = time.monotonic()
        if self.last is not None:
            gap = now - self.last
            self.max_gap = max(self.max_gap, gap)
            self.gaps += gap > GAP
        self.last = now
        self.received += 1
        payload = packet.payload
        if self.codec == "opus":
            if self.index == 0:
                self.opus_rx.append(payload)
            return
        index, counter = TAG.unpack_from(payload)
        sent = self.sent_at.pop(counter, None) if index == self.index else None
        if sent is not None:
            self.echoed += 1
            self.rtts.append(now - sent)

    def send(self, payload: bytes, spf: int) -> None:
        if self.codec != "opus":
            self.counter += 1
            payload = TAG.pack(self.index, self.counter) + payload[TAG.size :]
            self.sent_at[self.counter] = time.monotonic()
            if len(self.sent_at) > 100:  # forget frames that never came back
                self.sent_at.pop(next(iter(self.sent_at)))
        data = _RTP.pack(0x80, self.pt, self.seq, self.ts, self.ssrc) + payload
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + spf) & 0xFFFFFFFF
        _drive(self.dtls._send_rtp(data))


class Load:
    def __init__(self, out: asyncio.StreamWriter | Any) -> None:
        self.out = out
        self.browsers: dict[int, FakeBrowser] = {}
        self.answers: dict[int, asyncio.Future[str]] = {}
        self.sending = False
        self.g711 = [g711.ulaw_encode(f) for f in SineTone(1000).frames(50)]
        self.lag = 0.0
        self.opus = opus_frames()

    def emit(self, msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    async def setup(self, first: int, n: int, codec: str, parallel: int) -> None:
        transport, self.echo_end = await asyncio.get_running_loop().create_datagram_endpoint(
            Echo, local_addr=(HOST, 0)
        )
        self.echo = transport
        self.emit({"op": "echo", "port": transport.get_extra_info("sockname")[1]})
        gate = asyncio.Semaphore(parallel)

        async def one(i: int) -> None:
            async with gate:
                b = FakeBrowser(i, codec)
                self.browsers[i] = b
                self.answers[i] = asyncio.get_running_loop().create_future()
                self.emit({"op": "offer", "i": i, "sdp": await b.offer()})
                await b.answer(await self.answers[i])
                while b.pc.connectionState != "connected":
                    await asyncio.sleep(0.005)
                b.connected_after = time.monotonic() - b.t0

        await asyncio.gather(*(one(i) for i in range(first, first + n)))
        self.sending = True
        self.pacer = asyncio.ensure_future(self.pace())
        self.emit({"op": "ready", "setup": [b.connected_after for b in self.browsers.values()]})

    async def pace(self) -> None:
        # One shared 20 ms grid for every fake browser (like MediaTicker).
        loop = asyncio.get_running_loop()
        t0, k = loop.time(), 0
        while self.sending:
            k += 1
            await asyncio.sleep(max(0.0, t0 + k * 0.02 - loop.time()))
            # How late this process sends (its own stalls show up downstream as gaps).
            self.lag = max(self.lag, loop.time() - (t0 + k * 0.02))
            for b in self.browsers.values():
                if b.dtls is None:
                    continue
                if b.codec == "opus":
                    b.send(self.opus[k % len(self.opus)], 960)
                else:
                    b.send(self.g711[k % len(self.g711)], 160)

    def report(self, cpu: float, wall: float) -> dict[str, Any]:
        browsers = list(self.browsers.values())
        rtts = [r for b in browsers for r in b.rtts]
        freq = None
        opus_rx = self.browsers[min(self.browsers)].opus_rx if browsers else []
        if opus_rx:
            dec = av.CodecContext.create("libopus", "r")
            dec.format, dec.layout, dec.sample_rate = "s16", "mono", 48000
            pcm = np.concatenate(
                [f.to_ndarray()[0] for p in opus_rx[-100:] for f in dec.decode(av.Packet(p))]
            )
            freq = analysis.dominant_frequency(pcm, rate=48000)
        return {
            "op": "report",
            "cpu": cpu,
            "wall": wall,
            "received": [b.received for b in browsers],
            "echoed": [b.echoed for b in browsers],
            "gaps": sum(b.gaps for b in browsers),
            "max_gap": max((b.max_gap for b in browsers), default=0.0),
            "rtt_p50": percentile(rtts, 0.5),
            "rtt_p95": percentile(rtts, 0.95),
            "rtt_p99": percentile(rtts, 0.99),
            "rtts": len(rtts),
            "send_lag": self.lag,
            "far_gaps": self.echo_end.gaps,
            "far_max_gap": self.echo_end.max_gap,
            "freq": freq,
            "gc_ms": GC.longest * 1000,
        }

    async def run(self) -> None:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            msg = json.loads(line)
            op = msg["op"]
            if op == "setup":
                self.setting_up = asyncio.ensure_future(
                    self.setup(msg["first"], msg["n"], msg["codec"], msg["parallel"])
                )
            elif op == "answer":
                self.answers[msg["i"]].set_result(msg["sdp"])
            elif op == "measure":
                for b in self.browsers.values():
                    b.reset()
                self.echo_end.reset()
                self.lag = 0.0
                GC.reset()
                self.cpu0, self.wall0 = time.process_time(), time.monotonic()
            elif op == "report":
                cpu, wall = time.process_time() - self.cpu0, time.monotonic() - self.wall0
                self.emit(self.report(cpu, wall))
            elif op == "teardown":
                self.sending = False
                self.pacer.cancel()
                await asyncio.gather(*(b.pc.close() for b in self.browsers.values()))
                self.browsers.clear()
                self.echo.close()
                self.emit({"op": "done"})
            elif op == "exit":
                return


# -- per-packet cost of the forwarding path, stage by stage (--stages) -------------------------


async def stages(count: int = 20000) -> None:
    """Microseconds per packet of each stage of forwarding, in this process with real sockets
    and real SRTP (libsrtp, AES-128-CM/HMAC-SHA1-80) but no peer: what one packet costs the
    sipworker in each direction, and which part is ours."""
    import socket
    import timeit

    import pylibsrtp
    from aiortc.rtcrtpreceiver import StreamStatistics

    from phone.media.bridge import _G711Codec, _Probe
    from phone.media.rtp import ReceiverStats, RtpForwarder, RtpSender, payload_bounds

    key = bytes(range(30))
    tx = pylibsrtp.Session(pylibsrtp.Policy(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    rx = pylibsrtp.Session(pylibsrtp.Policy(key, pylibsrtp.Policy.SSRC_ANY_INBOUND))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # overflows: dropped, fine
    sink_addr = sink.getsockname()
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setblocking(False)
    payload = g711.ulaw_encode(SineTone(1000).next_frame())
    seqs = iter(range(1 << 30))

    def wire() -> bytes:
        n = next(seqs)
        return _RTP.pack(0x80, 0, n & 0xFFFF, n * 160 & 0xFFFFFFFF, 0x55) + payload

    packets = [wire() for _ in range(count)]
    protected = [tx.protect(_RTP.pack(0x80, 0, n, n * 160, 0x77) + payload) for n in range(count)]

    def per_packet(fn: Any, n: int = count) -> float:
        return timeit.timeit(fn, number=n) / n * 1e6

    ports = PortRange(32000, 32199)
    leg = await RtpLeg.open(HOST, ports)
    leg.set_remote(*sink_addr)
    bridge = MediaBridge()

    class Peer:
        async def close(self) -> None:
            pass

    bridge._pc = Peer()  # type: ignore[assignment]
    bridge._codec = _G711Codec(0)
    bridge._pt, bridge._send_ok = 0, True
    bridge._out.ssrc = 0x1234
    bridge._sender = type("Sender", (), {})()  # type: ignore[assignment]
    bridge._browser_send = lambda data: out.sendto(tx.protect(data), sink_addr)
    bridge.connect(leg)
    assert bridge.forwarding
    addr = (HOST, 40000)
    leg.remote = addr  # the far end the packets "come from" (symmetric RTP latched to it)
    leg._latched = True

    it = iter(packets)
    full_in = per_packet(lambda: leg._on_rtp(next(it), addr))
    it = iter(packets)
    stats = ReceiverStats(0x55)
    parse = per_packet(lambda: (payload_bounds(d := next(it)), _RTP.unpack_from(d)))
    it2 = iter(range(count))
    stat = per_packet(lambda: stats.on_packet(next(it2), 0, 0.0, 160))
    fwd = RtpForwarder(RtpSender(0))
    it2 = iter(range(count))
    forward = per_packet(lambda: fwd.forward(0x55, next(it2) & 0xFFFF, 0, False, 160, 0.0))
    header = per_packet(lambda: _RTP.pack(0x90, 0, 1, 2, 3) + b"\xbe\xde\0\x01\x10a\0\0" + payload)
    tx2 = pylibsrtp.Session(pylibsrtp.Policy(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    it = iter([_RTP.pack(0x80, 0, n & 0xFFFF, n * 160, 0x99) + payload for n in range(count)])
    protect = per_packet(lambda: tx2.protect(next(it)))
    srtp_data = protected[0]
    send = per_packet(lambda: out.sendto(srtp_data, sink_addr))
    it = iter(protected)
    unprotect = per_packet(lambda: rx.unprotect(next(it)))
    probe, rxstats = _Probe(), StreamStatistics(8000)
    it2 = iter(range(count))

    def aiortc_stats() -> None:
        probe.sequence_number = next(it2) & 0xFFFF
        probe.timestamp = 0
        rxstats.add(probe)  # type: ignore[arg-type]

    rstat = per_packet(aiortc_stats)
    it2 = iter(range(count))
    relay = per_packet(
        lambda: leg.relay(payload, 0x77, next(it2) & 0xFFFF, 0, False, time.monotonic())
    )
    rx2 = pylibsrtp.Session(pylibsrtp.Policy(key, pylibsrtp.Policy.SSRC_ANY_INBOUND))
    it = iter(protected)
    full_out = per_packet(lambda: bridge._on_browser_datagram(rx2.unprotect(next(it))))
    await bridge.close()
    await leg.aclose()
    out.close()
    sink.close()
    ours_in = full_in - protect - send
    ours_out = full_out - unprotect - send
    print(
        f"per-packet cost of forwarding, microseconds ({count} packets each; CPU of this"
        " process, syscalls included):\n"
        f"  PBX -> browser, leg datagram to SRTP sendto: {full_in:5.1f}\n"
        f"      header unpack + payload bounds   {parse:5.1f}\n"
        f"      RTCP receive statistics (A.1/A.8) {stat:5.1f}\n"
        f"      RtpForwarder.forward             {forward:5.1f}\n"
        f"      new header (+MID ext) + payload  {header:5.1f}\n"
        f"      SRTP protect (libsrtp)           {protect:5.1f}\n"
        f"      sendto (kernel, loopback)        {send:5.1f}\n"
        f"      => our Python, all of it         {ours_in:5.1f}\n"
        f"  browser -> PBX, SRTP datagram to the leg's sendto: {full_out:5.1f}\n"
        f"      SRTP unprotect (libsrtp)         {unprotect:5.1f}\n"
        f"      aiortc receive statistics (RR)   {rstat:5.1f}\n"
        f"      RtpLeg.relay (forward+header+send) {relay:5.1f}\n"
        f"      => our Python, all of it         {ours_out:5.1f}\n"
        "  (not counted: the event loop's wake-up and recvfrom per datagram, ~10 us here,\n"
        "   and aiortc's RTCP and ICE consent timers, per call not per packet)",
        flush=True,
    )


def load_main() -> None:
    with ice_host_addresses([HOST]):
        asyncio.run(Load(None).run())


# -- baseline: aiortc used as documented (tracks + its codecs) -----------------------------------


class LegTrack(MediaStreamTrack):
    """The leg's decoded audio as an aiortc track (aiortc encodes it in its thread pool)."""

    kind = "audio"

    def __init__(self, leg: RtpLeg) -> None:
        super().__init__()
        self.leg = leg
        self.pts = 0

    async def recv(self) -> av.AudioFrame:
        pcm = await self.leg.recv_pcm()
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, self.pts
        frame.time_base = fractions.Fraction(1, 8000)
        self.pts += len(pcm)
        return frame


class NaiveBridge:
    """The straightforward bridge (--naive): aiortc's receiver decodes (decoder thread), a
    task reads its track into leg.send_pcm(); the leg's PCM is a track aiortc encodes."""

    def __init__(self, prefer_passthrough: bool = True) -> None:
        self.codec = "PCMU" if prefer_passthrough else "opus"
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.setup_seconds: float | None = None
        self.leg: RtpLeg | None = None
        self.reader: asyncio.Future[None] | None = None
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)

    @property
    def state(self) -> str:
        return self.pc.connectionState

    async def accept_offer(self, sdp: str, leg: RtpLeg) -> str:
        t0 = time.monotonic()
        self.leg = leg
        transceiver = self.pc.addTransceiver(LegTrack(leg), direction="sendrecv")
        caps = RTCRtpSender.getCapabilities("audio").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType == f"audio/{self.codec}"])

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.reader = asyncio.ensure_future(self.pump(track))

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self.setup_seconds = time.monotonic() - t0

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    async def pump(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                for low in self.resampler.resample(frame):
                    self.leg.send_pcm(low.to_ndarray()[0])  # type: ignore[union-attr]

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        await self.pc.close()


# -- bridge process (measured) ----------------------------------------------------------------


class LoadProc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls) -> LoadProc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--role",
            "load",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 22,
        )
        return cls(proc)

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())

    async def recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("load process died")
        return json.loads(line)


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together, from /proc/stat (what else runs here)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)  # minus idle and iowait


async def run(
    loads: list[LoadProc],
    n: int,
    mode: str,
    seconds: float,
    ports: PortRange,
    naive: bool,
) -> dict[str, Any]:
    """One run of n calls. mode: "passthrough" (forwarding), "retimed" (the same calls with
    MediaBridge(direct=False): every packet waits for the tick, the playout buffer and the
    send queue), "moh" (every call held as the worker holds it: the far end gets music on
    hold on the tick, the page's bridge carries nothing) or "opus" (transcoding)."""
    codec = "opus" if mode == "opus" else "PCMU"
    ticker = MediaTicker.shared()
    bridges: list[MediaBridge] = []
    legs: list[RtpLeg] = []
    per_load = [n // len(loads) + (i < n % len(loads)) for i in range(len(loads))]
    first = 0
    for load, count in zip(loads, per_load, strict=True):
        load.send({"op": "setup", "first": first, "n": count, "codec": codec, "parallel": 10})
        first += count

    async def serve(load: LoadProc, count: int) -> list[float]:
        echo_port = (await load.recv())["port"]
        pending: set[asyncio.Task[None]] = set()

        async def answer(i: int, sdp: str) -> None:
            leg = await RtpLeg.open(HOST, ports)
            leg.set_remote(HOST, echo_port)
            legs.append(leg)
            if naive:
                baseline = NaiveBridge(prefer_passthrough=codec != "opus")
                bridges.append(baseline)  # type: ignore[arg-type]
                answer_sdp = await baseline.accept_offer(sdp, leg)
            else:
                # (direct= only when asked: the harness also runs against older bridges.)
                retimed: dict[str, Any] = {"direct": False} if mode == "retimed" else {}
                bridge = MediaBridge(prefer_passthrough=codec != "opus", **retimed)
                bridges.append(bridge)
                answer_sdp = await bridge.accept_offer(sdp)
                if mode == "moh":
                    leg.source = MusicOnHold()  # what phone.worker.media does on hold
                else:
                    bridge.connect(leg)
            load.send({"op": "answer", "i": i, "sdp": answer_sdp})

        while True:
            msg = await load.recv()
            if msg["op"] == "offer":
                task = asyncio.ensure_future(answer(msg["i"], msg["sdp"]))
                pending.add(task)
                task.add_done_callback(pending.discard)
            elif msg["op"] == "ready":
                return msg["setup"]

    browser_setup = [
        t
        for ts in await asyncio.gather(
            *(serve(ld, c) for ld, c in zip(loads, per_load, strict=True))
        )
        for t in ts
    ]
    while any(b.state != "connected" for b in bridges):
        await asyncio.sleep(0.01)
    await asyncio.sleep(1.0)  # warm up: playout buffers fill, RTCP starts
    for load in loads:
        load.send({"op": "measure"})
    missed0 = ticker.missed_slots
    forwarding = sum(getattr(b, "forwarding", False) for b in bridges)
    busy0, total0 = machine_busy()
    GC.reset()
    profiler = cProfile.Profile() if PROFILE else None
    rusage0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = time.process_time(), time.monotonic()
    if profiler is not None:
        profiler.enable()
    await asyncio.sleep(seconds)
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    busy1, total1 = machine_busy()
    preempted = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - rusage0.ru_nivcsw
    missed = ticker.missed_slots - missed0
    for load in loads:
        load.send({"op": "report"})
    reports = [await load.recv() for load in loads]
    for load in loads:
        load.send({"op": "teardown"})
    for load in loads:
        assert (await load.recv())["op"] == "done"
    for bridge in bridges:
        await bridge.close()
    for leg in legs:
        await leg.aclose()
    received = [r for rep in reports for r in rep["received"]]
    echoed = [e for rep in reports for e in rep["echoed"]]
    lwall = max(rep["wall"] for rep in reports)
    return {
        "n": n,
        "codec": codec,
        "mode": mode,
        "forwarding": forwarding,
        "machine": (busy1 - busy0) / max(1, total1 - total0),
        "rtt_p95_ms": reports[0]["rtt_p95"] * 1000,
        "rtt_p99_ms": reports[0]["rtt_p99"] * 1000,
        "rtts": sum(rep["rtts"] for rep in reports),
        "far_gaps": sum(rep["far_gaps"] for rep in reports),
        "send_lag_ms": max(rep["send_lag"] for rep in reports) * 1000,
        "far_max_gap_ms": max(rep["far_max_gap"] for rep in reports) * 1000,
        "naive": naive,
        "cpu_per_call": cpu / wall / n,
        "cpu_total": cpu / wall,
        "load_cpu": sum(rep["cpu"] / rep["wall"] for rep in reports),
        "recv_per_call_s": statistics.mean(received) / lwall,
        "min_recv_per_call_s": min(received) / lwall,
        "echo_per_call_s": statistics.mean(echoed) / lwall,
        "gaps": sum(rep["gaps"] for rep in reports),
        "max_gap_ms": max(rep["max_gap"] for rep in reports) * 1000,
        "rtt_p50_ms": reports[0]["rtt_p50"] * 1000,
        "missed": missed,
        "setup_p50": percentile([b.setup_seconds or 0.0 for b in bridges], 0.5) * 1000,
        "setup_p95": percentile([b.setup_seconds or 0.0 for b in bridges], 0.95) * 1000,
        "bsetup_p50": percentile(browser_setup, 0.5) * 1000,
        "bsetup_p95": percentile(browser_setup, 0.95) * 1000,
        "freq": reports[0]["freq"],
        "gc_ms": GC.longest * 1000,
        "preempted": preempted,
        "load_gc_ms": max(rep["gc_ms"] for rep in reports),
    }


def show(r: dict[str, Any], seconds: float) -> None:
    per_core = 1 / r["cpu_per_call"] if r["cpu_per_call"] else float("inf")
    mode = r["mode"]
    if r["naive"]:
        mode = "naive " + ("PCMU" if r["codec"] != "opus" else "opus")
    freq = f" tone {r['freq']:.0f} Hz" if r["freq"] else ""
    rtt = (
        f"added rtt p50/p95/p99 {r['rtt_p50_ms']:.1f}/{r['rtt_p95_ms']:.1f}/"
        f"{r['rtt_p99_ms']:.1f} ms ({r['rtts']} tagged frames)"
        if r["rtts"]
        else "added rtt n/a"
    )
    print(
        f"{mode:>11} N={r['n']:>3}  cpu/call {r['cpu_per_call'] * 1000:6.2f} ms/s"
        f"  -> {per_core:5.0f} calls/core  (bridge proc {r['cpu_total'] * 100:5.1f}%,"
        f" load {r['load_cpu'] * 100:5.1f}%; all CPUs busy {r['machine'] * 100:3.0f}%)"
        f"  forwarding {r['forwarding']}/{r['n']}\n"
        f"{'':>17}{rtt}\n"
        f"{'':>17}frames/call/s recv {r['recv_per_call_s']:5.1f}"
        f" (min {r['min_recv_per_call_s']:5.1f}) echoed {r['echo_per_call_s']:5.1f};"
        f" gaps>60ms at browsers {r['gaps']} (max {r['max_gap_ms']:.0f} ms),"
        f" at far end {r['far_gaps']} (max {r['far_max_gap_ms']:.0f} ms; the fake browsers"
        f" sent up to {r['send_lag_ms']:.0f} ms late);"
        f" missed ticks {r['missed']}{freq}\n"
        f"{'':>17}longest GC pause: bridge {r['gc_ms']:.0f} ms, load {r['load_gc_ms']:.0f} ms;"
        f" bridge involuntary ctx switches {r['preempted']};"
        f" setup p50/p95: bridge {r['setup_p50']:.0f}/{r['setup_p95']:.0f} ms,"
        f" browser {r['bsetup_p50']:.0f}/{r['bsetup_p95']:.0f} ms",
        flush=True,
    )


def table(results: list[dict[str, Any]]) -> None:
    print(
        "\n       mode    N  cpu ms/call/s  calls/core  rtt p50   rtt p99  gaps>60 browser/far"
        "  all CPUs busy"
    )
    for r in results:
        per_core = 1 / r["cpu_per_call"] if r["cpu_per_call"] else float("inf")
        p50 = f"{r['rtt_p50_ms']:6.1f}" if r["rtts"] else "   n/a"
        p99 = f"{r['rtt_p99_ms']:6.1f}" if r["rtts"] else "   n/a"
        print(
            f"{r['mode']:>11} {r['n']:>4}  {r['cpu_per_call'] * 1000:13.2f}  {per_core:10.0f}"
            f"  {p50} ms {p99} ms  {r['gaps']:>7}/{r['far_gaps']:<7}"
            f"  {r['machine'] * 100:10.0f}%"
        )


async def main(args: argparse.Namespace) -> None:
    ports = PortRange(30000, 31999)
    loads = [await LoadProc.start() for _ in range(args.load_procs)]
    print(
        f"bridge benchmark: {args.seconds:.0f} s per run, {args.load_procs} load process(es),"
        f' {os.cpu_count()} CPUs; CPU is this (bridge) process only; "all CPUs busy" is'
        " the whole machine (load processes and anything else running) during the run",
        flush=True,
    )
    results = []
    try:
        for mode in ("passthrough", "retimed", "moh", "opus"):
            for n in getattr(args, mode):
                result = await run(loads, n, mode, args.seconds, ports, args.naive)
                show(result, args.seconds)
                results.append(result)
    finally:
        for load in loads:
            load.send({"op": "exit"})
            await load.proc.wait()
    table(results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["bridge", "load"], default="bridge")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--load-procs", type=int, default=1)
    parser.add_argument("--passthrough", type=int, nargs="*", default=[1, 10, 25, 50, 100])
    parser.add_argument(
        "--retimed",
        type=int,
        nargs="*",
        default=[10, 50],
        help="the same calls, every packet re-timed on the 20 ms tick (MediaBridge direct=False)",
    )
    parser.add_argument(
        "--moh", type=int, nargs="*", default=[10, 50], help="every call held, music on hold"
    )
    parser.add_argument("--opus", type=int, nargs="*", default=[10, 25])
    parser.add_argument(
        "--naive", action="store_true", help="measure the baseline aiortc-tracks bridge instead"
    )
    parser.add_argument(
        "--stages", action="store_true", help="only time the forwarding path stage by stage"
    )
    args = parser.parse_args()
    if args.role == "load":
        load_main()
    elif args.stages:
        asyncio.run(stages())
    else:
        with ice_host_addresses([HOST]):
            asyncio.run(main(args))
