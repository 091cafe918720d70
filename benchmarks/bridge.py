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

Prints per run: CPU seconds per call per second of the bridge process (and the resulting calls
per core), the load processes' CPU, frames echoed/received per call per second, gaps > 60 ms
between packets arriving at the fake browsers (count and max), echo round trip p50, MediaTicker
slots missed in the bridge process, and call setup time p50/p95 (bridge: accept_offer() ->
"connected"; browser: createOffer() -> "connected"). Figures only; no asserts.

    .venv/bin/python benchmarks/bridge.py [--seconds 5] [--load-procs 1]
        [--passthrough 1 10 25 50 100] [--opus 10 25] [--naive]

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
from phone.media.tones import SineTone
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
    """The far end: every RTP/RTCP datagram goes straight back where it came from."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


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
        self.opus = opus_frames()

    def emit(self, msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    async def setup(self, first: int, n: int, codec: str, parallel: int) -> None:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
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


async def run(
    loads: list[LoadProc], n: int, codec: str, seconds: float, ports: PortRange, naive: bool
) -> dict[str, Any]:
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
                bridge = MediaBridge(prefer_passthrough=codec != "opus")
                bridges.append(bridge)
                answer_sdp = await bridge.accept_offer(sdp)
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
    mode = "passthrough" if r["codec"] != "opus" else "opus"
    if r["naive"]:
        mode = "naive " + ("PCMU" if r["codec"] != "opus" else "opus")
    freq = f" tone {r['freq']:.0f} Hz" if r["freq"] else ""
    print(
        f"{mode:>11} N={r['n']:>3}  cpu/call {r['cpu_per_call'] * 1000:6.2f} ms/s"
        f"  -> {per_core:5.0f} calls/core  (bridge proc {r['cpu_total'] * 100:5.1f}%,"
        f" load {r['load_cpu'] * 100:5.1f}%)\n"
        f"{'':>17}frames/call/s recv {r['recv_per_call_s']:5.1f}"
        f" (min {r['min_recv_per_call_s']:5.1f})"
        f" echoed {r['echo_per_call_s']:5.1f}  gaps>60ms {r['gaps']}"
        f" (max {r['max_gap_ms']:.0f} ms)  rtt p50 {r['rtt_p50_ms']:.0f} ms"
        f"  missed ticks {r['missed']}{freq}\n"
        f"{'':>17}longest GC pause: bridge {r['gc_ms']:.0f} ms, load {r['load_gc_ms']:.0f} ms;"
        f" bridge involuntary ctx switches {r['preempted']}\n"
        f"{'':>17}setup p50/p95: bridge {r['setup_p50']:.0f}/{r['setup_p95']:.0f} ms,"
        f" browser {r['bsetup_p50']:.0f}/{r['bsetup_p95']:.0f} ms",
        flush=True,
    )


async def main(args: argparse.Namespace) -> None:
    ports = PortRange(30000, 31999)
    loads = [await LoadProc.start() for _ in range(args.load_procs)]
    print(
        f"bridge benchmark: {args.seconds:.0f} s per run, {args.load_procs} load process(es),"
        f" {os.cpu_count()} CPUs; CPU is this (bridge) process only",
        flush=True,
    )
    try:
        for n in args.passthrough:
            show(await run(loads, n, "PCMU", args.seconds, ports, args.naive), args.seconds)
        for n in args.opus:
            show(await run(loads, n, "opus", args.seconds, ports, args.naive), args.seconds)
    finally:
        for load in loads:
            load.send({"op": "exit"})
            await load.proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["bridge", "load"], default="bridge")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--load-procs", type=int, default=1)
    parser.add_argument("--passthrough", type=int, nargs="*", default=[1, 10, 25, 50, 100])
    parser.add_argument("--opus", type=int, nargs="*", default=[10, 25])
    parser.add_argument(
        "--naive", action="store_true", help="measure the baseline aiortc-tracks bridge instead"
    )
    args = parser.parse_args()
    if args.role == "load":
        load_main()
    else:
        with ice_host_addresses([HOST]):
            asyncio.run(main(args))
