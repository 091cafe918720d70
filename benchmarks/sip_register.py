"""Thousands of lines of one sipworker on one shared socket against a real Kamailio 5.6.

Prints figures; no assertions. Runs in one process that starts its own Kamailio
(tests/support/pbx.py with the project's deploy/kamailio/kamailio.cfg, one user per line, a
bigger users table and shared memory for thousands of them) and then, from one event loop:

1. opens N lines on one SharedSipSocket (phone.sip.transport), each its own UserAgent
   configured as phone.worker.line configures it (refresh jitter, trusted PBX, OPTIONS
   keepalive every --keepalive s, which the socket turns into one probe for all lines);
   counts file descriptors as lines are added;
2. starts all their REGISTERs at once (digest auth: 401 then 200; the socket lets at most
   REGISTER_WINDOW of them be in flight, so register() -> REGISTERED includes the wait) and
   reports the burst rate (registrations/s until the last one is registered), latency
   percentiles, CPU per registration (ours and Kamailio's: on a shared 2-core machine the
   rate is bounded by the CPU we get) and how many bindings Kamailio holds;
3. once completed transactions are gone (Timer K), RSS per line;
4. an idle window (--idle s, before any refresh is due): CPU per line in % of one core, and how
   often the event loop woke;
5. waits until every line has refreshed its registration (Expires --expires, refresh at about
   half of it) and reports the CPU that took, amortised per line for the production Expires;
6. unregisters everything (Expires: 0) and checks Kamailio holds no binding.

    .venv/bin/python benchmarks/sip_register.py                 # 5000 lines, ~90 s
    .venv/bin/python benchmarks/sip_register.py --lines 1000 --expires 80 --idle 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import os
import resource
import selectors
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from phone.sip.transaction import Addr  # noqa: E402
from phone.sip.transport import SharedSipSocket, SipTransport  # noqa: E402
from phone.sip.useragent import (  # noqa: E402
    RegistrationState,
    RegistrationStateChanged,
    UserAgent,
    UserAgentConfig,
)
from tests.support.pbx import Kamailio  # noqa: E402

FIRST_EXT = 100000
PRODUCTION_EXPIRES = 300  # portal.settings SIP_REGISTER_EXPIRES default


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def group_cpu_seconds(pgid: int) -> float:
    """CPU time of every process in group `pgid` (Kamailio and its children)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


class CountingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Counts the event loop's wake-ups (each select() call that returns)."""

    wakeups = 0

    def select(self, timeout: float | None = None) -> Any:
        CountingSelector.wakeups += 1
        return super().select(timeout)


def kamailio_bindings(pbx: Kamailio) -> tuple[int, int]:
    """(AoRs, contacts) in Kamailio's location table, from usrloc statistics (ul.dump of
    thousands of AoRs is more than kamcmd's reply buffer takes)."""
    stats = {}
    for line in pbx.kamcmd("stats.get_statistics", "usrloc:").splitlines():
        name, _, value = line.partition("=")
        stats[name.strip()] = int(value.strip() or 0)
    return stats["usrloc:location_users"], stats["usrloc:location_contacts"]


class Bench:
    def __init__(self, n: int, pbx: Kamailio, expires: int, keepalive: float) -> None:
        self.n = n
        self.pbx = pbx
        self.expires = expires
        self.keepalive = keepalive
        self.ports: list[SipTransport[Any]] = []
        self.started = [0.0] * n
        self.registered_at: list[float | None] = [None] * n
        self.registered_count = [0] * n
        self.unregistered = [False] * n
        self.failed: list[str] = []
        self.changed = asyncio.Event()
        self.on_registered: Callable[[], None] | None = None
        self.in_flight = 0

    def on_event(self, index: int, event: Any) -> None:
        if not isinstance(event, RegistrationStateChanged):
            return
        if event.state is RegistrationState.REGISTERED:
            self.registered_count[index] += 1
            if self.registered_at[index] is None:
                self.registered_at[index] = time.perf_counter()
                self.in_flight -= 1
                if self.on_registered is not None:
                    self.on_registered()
        elif event.state is RegistrationState.FAILED:
            self.failed.append(f"{FIRST_EXT + index}: {event.reason}")
        elif event.state is RegistrationState.UNREGISTERED and self.registered_count[index]:
            self.unregistered[index] = True
        self.changed.set()

    def open_line(self, shared: SharedSipSocket, index: int) -> None:
        ext = str(FIRST_EXT + index)
        pbx_addr = (self.pbx.host, self.pbx.port)

        def make(addr: Addr) -> UserAgent:
            return UserAgent(
                UserAgentConfig(
                    username=ext,
                    domain=self.pbx.domain,
                    local_addr=addr,
                    password=self.pbx.users[ext],
                    proxy_addr=pbx_addr,
                    expires=self.expires,
                    refresh_jitter=0.2,
                    trusted_sources=frozenset({pbx_addr}),
                    keepalive_interval=self.keepalive or None,
                )
            )

        self.ports.append(shared.open_line(make, lambda e: self.on_event(index, e)))

    async def until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        while not predicate():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))
        return True


async def run(
    n: int, expires: int, idle: float, keepalive: float, window: int = 0, profile: str = ""
) -> None:
    users = {str(FIRST_EXT + i): f"pw{FIRST_EXT + i}" for i in range(n)}
    pbx = Kamailio(users=users, log_level=1, shm_mb=256, pkg_mb=16 + n // 200, users_htable_size=13)
    t = time.perf_counter()
    pbx.start()
    print(f"Kamailio with {n} users up in {time.perf_counter() - t:.1f} s")
    try:
        gc.collect()
        rss0, fds0 = rss_kib(), open_fds()
        shared = await SharedSipSocket.shared_udp("127.0.0.1", 0)
        bench = Bench(n, pbx, expires, keepalive)
        fds: list[tuple[int, int]] = [(0, open_fds() - fds0)]
        for i in range(n):
            bench.open_line(shared, i)
            if i + 1 in (1, 10, 100, 1000) or i + 1 == n:
                fds.append((i + 1, open_fds() - fds0))
        gc.collect()
        rss_open = rss_kib() - rss0
        print("file descriptors (lines opened: +fds): " + ", ".join(f"{k}: +{v}" for k, v in fds))

        # -- burst ------------------------------------------------------------------------
        assert pbx.proc is not None
        kam0 = group_cpu_seconds(pbx.proc.pid)
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        cpu0 = cpu_seconds()
        t0 = time.perf_counter()
        pending = list(range(n))
        pending.reverse()

        def start_more() -> None:
            # At most `window` REGISTERs waiting for their 200 (0: all at once).
            while pending and (not window or bench.in_flight < window):
                i = pending.pop()
                bench.started[i] = time.perf_counter()
                bench.in_flight += 1
                port = bench.ports[i]
                port.execute(port.core.register)  # as phone.worker.line does

        start_more()
        sent = time.perf_counter() - t0
        if window:
            bench.on_registered = start_more
        ok = await bench.until(lambda: all(bench.registered_count), 120)
        bench.on_registered = None
        done = max((t for t in bench.registered_at if t is not None), default=t0) - t0
        cpu_burst = cpu_seconds() - cpu0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        kam_burst = group_cpu_seconds(pbx.proc.pid) - kam0
        registered = sum(1 for c in bench.registered_count if c)
        lat = [
            (r - s) * 1000
            for r, s in zip(bench.registered_at, bench.started, strict=True)
            if r is not None
        ]
        print(
            f"\nburst: {registered}/{n} registered{'' if ok else ' (TIMED OUT)'} in {done:.2f} s"
            f" = {registered / done:.0f} registrations/s (REGISTER, 401, REGISTER, 200 each;"
            f" handing all to the socket took {sent * 1000:.0f} ms)"
        )
        if lat:
            print(
                f"  register() -> REGISTERED: p50 {percentile(lat, 0.5):.0f} ms, "
                f"p95 {percentile(lat, 0.95):.0f} ms, max {max(lat):.0f} ms; "
                f"our CPU {cpu_burst:.2f} s ({cpu_burst / done * 100:.0f}% of a core meanwhile)"
            )
            print(
                f"  CPU per registration: ours {cpu_burst / registered * 1000:.2f} ms (alone, one"
                f" core would register {registered / cpu_burst:.0f}/s), Kamailio's"
                f" {kam_burst / registered * 1000:.2f} ms; machine load average"
                f" {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
            )
        if bench.failed:
            print(f"  failures: {len(bench.failed)}, e.g. {bench.failed[:3]}")
        print(f"  Kamailio AoRs/contacts: {await asyncio.to_thread(kamailio_bindings, pbx)}")

        # -- memory once completed transactions are gone (Timer K = T4 = 5 s) -----------------
        await asyncio.sleep(6)
        gc.collect()
        rss_idle = rss_kib() - rss0
        per_line = rss_idle / n
        print(
            f"\nRSS: +{rss_open / 1024:.1f} MiB with {n} lines opened, +{rss_idle / 1024:.1f} MiB"
            f" registered and idle = {per_line:.1f} KiB = {per_line / 1024:.4f} MiB per line"
        )

        # -- idle window --------------------------------------------------------------------
        first_refresh = min((p.core.registration.next_timer() or float("inf")) for p in bench.ports)
        loop = asyncio.get_running_loop()
        window = min(idle, max(1.0, first_refresh - loop.time() - 1))
        wake0, cpu0, t0 = CountingSelector.wakeups, cpu_seconds(), time.perf_counter()
        await asyncio.sleep(window)
        wall = time.perf_counter() - t0
        cpu_idle = cpu_seconds() - cpu0
        wakeups = CountingSelector.wakeups - wake0
        counted = isinstance(getattr(loop, "_selector", None), CountingSelector)
        woke = f"{wakeups} loop wake-ups ({wakeups / wall:.1f}/s)" if counted else "wake-ups n/a"
        print(
            f"\nidle {wall:.1f} s (no refresh due; shared keepalive every {keepalive:g} s):"
            f" CPU {cpu_idle * 1000:.1f} ms = {cpu_idle / wall * 100:.3f}% of a core in all,"
            f" {cpu_idle / wall / n * 100:.6f}% per line; {woke}; keepalive probes answered:"
            f" {shared.demux.counts['keepalive-answer']}"
        )

        # -- refresh ------------------------------------------------------------------------
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        refreshed = await bench.until(
            lambda: all(c >= 2 for c in bench.registered_count), expires + 30
        )
        wall = time.perf_counter() - t0
        cpu_refresh = cpu_seconds() - cpu0
        count = sum(1 for c in bench.registered_count if c >= 2)
        per_refresh_ms = cpu_refresh / max(count, 1) * 1000
        production_interval = PRODUCTION_EXPIRES / 2 * 0.9  # mean jittered refresh delay
        amortised = per_refresh_ms / 1000 / production_interval * 100
        print(
            f"\nrefresh: {count}/{n} refreshed{'' if refreshed else ' (TIMED OUT)'} within"
            f" {wall:.1f} s (Expires {expires}); CPU over that time {cpu_refresh:.2f} s,"
            f" {per_refresh_ms:.2f} ms per refresh (idle time included)"
        )
        print(
            f"  amortised at Expires {PRODUCTION_EXPIRES} (a refresh every"
            f" ~{production_interval:.0f} s): {amortised:.6f}%"
            f" of a core per line, plus the idle figure above"
        )
        print(f"  Kamailio AoRs/contacts: {await asyncio.to_thread(kamailio_bindings, pbx)}")

        # -- unregister ---------------------------------------------------------------------
        t0 = time.perf_counter()
        for port in bench.ports:
            port.execute(lambda now, port=port: port.core.unregister(now))
        done_all = await bench.until(lambda: all(bench.unregistered), 60)
        print(
            f"\nunregister: all done={done_all} in {(time.perf_counter() - t0) * 1000:.0f} ms;"
            f" Kamailio AoRs/contacts {await asyncio.to_thread(kamailio_bindings, pbx)}"
        )
        print(f"shared socket routing: {dict(shared.demux.counts)}")
        await shared.close()
    finally:
        pbx.stop()
        pbx.remove_files()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--expires", type=int, default=120, help="short, so a refresh is seen")
    parser.add_argument("--idle", type=float, default=20.0, help="idle window, seconds")
    parser.add_argument("--keepalive", type=float, default=2.0, help="0: no OPTIONS keepalive")
    parser.add_argument(
        "--window", type=int, default=0, help="at most this many REGISTERs in flight (0: all)"
    )
    parser.add_argument(
        "--profile", default="", help="cProfile the burst into this file (pstats format)"
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop (production's sipworker default: uvloop); wake-ups are counted on "
        "asyncio's only",
    )
    args = parser.parse_args()
    print(
        f"{args.lines} lines on one UDP socket, Kamailio 5.6 (children=2) on 127.0.0.1, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.loop}'s event loop"
    )
    if args.loop == "asyncio":
        loop = asyncio.SelectorEventLoop(CountingSelector())
    else:
        from phone.worker.loop import new_event_loop

        loop = new_event_loop(args.loop)
    try:
        loop.run_until_complete(
            run(args.lines, args.expires, args.idle, args.keepalive, args.window, args.profile)
        )
    finally:
        loop.close()


if __name__ == "__main__":
    main()
