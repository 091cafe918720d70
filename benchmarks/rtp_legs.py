"""RTP leg scaling: N legs in pairs on loopback, one shared 20 ms ticker, for a few seconds.

Prints, per N: CPU seconds per leg per second of call, packets sent/received, receive gaps
longer than 60 ms (3 frames: what a listener would hear as a dropout), ticks the loop missed,
and RSS growth per leg. Figures only; no asserts.

    .venv/bin/python benchmarks/rtp_legs.py [--seconds 5] [--mode passthrough|pcm] [N ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from phone.media import g711
from phone.media.leg import MediaTicker, PortRange, RtpLeg
from phone.media.tones import SineTone

GAP = 0.060


class TimedLeg(RtpLeg):
    """Records inter-arrival gaps of RTP packets (the only instrumentation added)."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.last_arrival: float | None = None
        self.gaps = 0
        self.max_gap = 0.0

    def _on_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        if self.last_arrival is not None:
            gap = now - self.last_arrival
            self.max_gap = max(self.max_gap, gap)
            if gap > GAP:
                self.gaps += 1
        self.last_arrival = now
        super()._on_rtp(data, addr)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def run(n: int, seconds: float, mode: str, ports: PortRange) -> dict[str, float]:
    ticker = MediaTicker()
    rss0 = rss_bytes()
    legs = [await TimedLeg.open("127.0.0.1", ports, ticker=ticker) for _ in range(n)]
    for a, b in zip(legs[::2], legs[1::2], strict=True):
        a.set_remote("127.0.0.1", b.local_port)
        b.set_remote("127.0.0.1", a.local_port)
    # Passthrough: pre-encoded frames as a WebRTC bridge would hand them over.
    # pcm: a tone generated, encoded, received, decoded every frame.
    frames = [g711.ulaw_encode(f) for f in SineTone(1000).frames(50)]
    if mode == "pcm":
        for i, leg in enumerate(legs):
            leg.source = SineTone(1000 if i % 2 else 700)

    stop = False

    async def drive() -> None:
        # Stand-in for the bridge: hand over / pull one frame per leg every 20 ms.
        k = 0
        while not stop:
            for leg in legs:
                if mode == "pcm":
                    while leg.pull_pcm() is not None:
                        pass
                else:
                    leg.send_payload(frames[k % len(frames)])
                    while leg.pull_frame() is not None:
                        pass
            k += 1
            await asyncio.sleep(0.02)

    await asyncio.sleep(0.5)  # warm up: latching, playout fill
    for leg in legs:
        leg.gaps, leg.max_gap = 0, 0.0
    sent0 = sum(leg.stats.packets_sent for leg in legs)
    recv0 = sum(leg.stats.packets_received for leg in legs)
    missed0 = ticker.missed_slots
    cpu0, wall0 = time.process_time(), time.monotonic()
    driver = asyncio.create_task(drive())
    await asyncio.sleep(seconds)
    stop = True
    await driver
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    rss1 = rss_bytes()
    result = {
        "n": n,
        "cpu_per_leg_s": cpu / wall / n,
        "cpu_total": cpu / wall,
        "sent": sum(leg.stats.packets_sent for leg in legs) - sent0,
        "received": sum(leg.stats.packets_received for leg in legs) - recv0,
        "gaps": sum(leg.gaps for leg in legs),
        "max_gap_ms": max(leg.max_gap for leg in legs) * 1000,
        "missed_ticks": ticker.missed_slots - missed0,
        "rss_per_leg_kib": (rss1 - rss0) / n / 1024,
        "expected": n * wall / 0.02,
    }
    for leg in legs:
        await leg.aclose()
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("counts", nargs="*", type=int, default=[10, 50, 100, 200])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--mode", choices=["passthrough", "pcm"], default="passthrough")
    parser.add_argument("--ports", default="30000-31999")
    args = parser.parse_args()
    lo, hi = (int(p) for p in args.ports.split("-"))
    ports = PortRange(lo, hi)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * max(args.counts) + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    print(f"mode={args.mode} seconds={args.seconds} python={sys.version.split()[0]}")
    print(
        f"{'legs':>5} {'cpu/leg/s':>10} {'cpu total':>9} {'sent':>8} {'recv':>8} {'expect':>8}"
        f" {'gaps>60ms':>9} {'max gap':>8} {'missed':>6} {'RSS/leg':>9}"
    )
    for n in args.counts:
        r = await run(n, args.seconds, args.mode, ports)
        print(
            f"{r['n']:>5} {r['cpu_per_leg_s'] * 1000:>8.2f}ms {r['cpu_total'] * 100:>8.1f}%"
            f" {r['sent']:>8} {r['received']:>8} {r['expected']:>8.0f} {r['gaps']:>9}"
            f" {r['max_gap_ms']:>6.1f}ms {r['missed_ticks']:>6} {r['rss_per_leg_kib']:>6.1f}KiB"
        )


if __name__ == "__main__":
    asyncio.run(main())
