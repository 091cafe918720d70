"""The delay a LegJoin adds between two PBX legs, forwarded vs re-timed. Prints figures; no asserts.

    far end A (raw UDP)  --RTP-->  leg a  ==LegJoin==  leg b  --RTP-->  far end B (raw UDP)

Per join, far end A sends a 20 ms PCMU packet every 20 ms (one shared pacer on an absolute
grid) whose payload starts with (join index, counter); far end B timestamps what arrives, so
each packet's time through the join - a's socket, the join, b's socket, two loopback hops - is
measured exactly. Far end B sends too (A's direction carries the same load), unmeasured.

Modes: `direct` (LegJoin(a, b): each packet relayed the moment it arrives) and `retimed`
(LegJoin(a, b, direct=False): a's playout buffer - 40 ms, adaptive, since forwarding joins;
60 ms fixed before - releases a frame per 20 ms tick, the join queues it on b, b's next tick
sends it). Run from a checkout without `direct` (before forwarding joins) it measures that
checkout's join, whatever the mode says. All in this one process; the CPU
figure is this process's CPU per joined call-second (far ends included, so an upper bound).

    .venv/bin/python benchmarks/join_delay.py [--n 1,25] [--seconds 5] [--modes direct,retimed]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from phone.media import g711  # noqa: E402
from phone.media.join import LegJoin  # noqa: E402
from phone.media.leg import PortRange, RtpLeg  # noqa: E402
from phone.media.tones import SineTone  # noqa: E402

HOST = "127.0.0.1"
TAG = struct.Struct("!HI")
RTP = struct.Struct("!BBHII")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class FarEnd(asyncio.DatagramProtocol):
    def __init__(self, index: int, sent: dict[tuple[int, int], float], delays: list[float]):
        self.index = index
        self.sent = sent
        self.delays = delays
        self.transport: asyncio.DatagramTransport | None = None
        self.seq = 0
        self.ts = 0
        self.counter = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        if len(data) < 12 + TAG.size:
            return
        sent = self.sent.pop(TAG.unpack_from(data, 12), None)
        if sent is not None:
            self.delays.append(now - sent)

    def send(self, port: int, frame: bytes, tagged: bool) -> None:
        self.counter += 1
        payload = frame
        if tagged:
            payload = TAG.pack(self.index, self.counter) + frame[TAG.size :]
            self.sent[(self.index, self.counter)] = time.monotonic()
        data = RTP.pack(0x80, 0, self.seq, self.ts, 0x1000 + self.index) + payload
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 160) & 0xFFFFFFFF
        assert self.transport is not None
        self.transport.sendto(data, (HOST, port))


async def run(n: int, mode: str, seconds: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    ports = PortRange(48000, 48999)
    sent: dict[tuple[int, int], float] = {}
    delays: list[float] = []
    legs: list[RtpLeg] = []
    joins: list[LegJoin] = []
    ends: list[tuple[FarEnd, RtpLeg, FarEnd, RtpLeg]] = []
    for i in range(n):
        a = await RtpLeg.open(HOST, ports)
        b = await RtpLeg.open(HOST, ports)
        _, far_a = await loop.create_datagram_endpoint(
            lambda i=i: FarEnd(i, sent, []), local_addr=(HOST, 0)
        )
        _, far_b = await loop.create_datagram_endpoint(
            lambda i=i: FarEnd(i, sent, delays), local_addr=(HOST, 0)
        )
        a.set_remote(HOST, far_a.transport.get_extra_info("sockname")[1])
        b.set_remote(HOST, far_b.transport.get_extra_info("sockname")[1])
        legs += [a, b]
        if "direct" in inspect.signature(LegJoin).parameters:
            joins.append(LegJoin(a, b, direct=mode == "direct"))
        else:
            joins.append(LegJoin(a, b))  # a checkout from before forwarding joins: re-timed
        ends.append((far_a, a, far_b, b))
    frames = [g711.ulaw_encode(f) for f in SineTone(1000).frames(50)]
    stop = False

    async def pace() -> None:
        t0, k = loop.time(), 0
        while not stop:
            k += 1
            await asyncio.sleep(max(0.0, t0 + k * 0.02 - loop.time()))
            frame = frames[k % len(frames)]
            for far_a, a, far_b, b in ends:
                far_a.send(a.local_port, frame, tagged=True)
                far_b.send(b.local_port, frame, tagged=False)

    pacer = asyncio.ensure_future(pace())
    await asyncio.sleep(1.0)  # warm-up: playout buffers fill (re-timed)
    delays.clear()
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    measured = list(delays)
    stop = True
    await pacer
    for join in joins:
        join.close()
    for leg in legs:
        await leg.aclose()
    for far_a, _, far_b, _ in ends:
        far_a.transport.close()  # type: ignore[union-attr]
        far_b.transport.close()  # type: ignore[union-attr]
    expected = n * seconds / 0.02
    return {
        "n": n,
        "p50": percentile(measured, 0.5) * 1000,
        "p95": percentile(measured, 0.95) * 1000,
        "p99": percentile(measured, 0.99) * 1000,
        "max": max(measured, default=float("nan")) * 1000,
        "through": len(measured) / expected,
        "cpu": cpu / wall / n * 1000,
    }


async def main_async(args: argparse.Namespace) -> None:
    print(
        f"join delay: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f},"
        f" {args.seconds:.0f} s per run",
        flush=True,
    )
    print("   mode    N  delay p50/p95/p99/max ms      delivered  process CPU ms/join/s")
    for n in args.n:
        for mode in args.modes:
            r = await run(n, mode, args.seconds)
            print(
                f"{mode:>7} {n:>4}  {r['p50']:6.2f}/{r['p95']:6.2f}/{r['p99']:6.2f}/{r['max']:6.1f}"
                f"  {r['through'] * 100:9.1f}%  {r['cpu']:8.2f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 25])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--modes", type=lambda s: [x for x in s.split(",") if x], default=["direct", "retimed"]
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
