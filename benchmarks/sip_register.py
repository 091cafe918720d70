"""Concurrent REGISTER throughput and memory of our UserAgent against a real Kamailio 5.6.

Prints figures; no assertions. Each configuration runs in a fresh Python process (so RSS deltas
are not polluted by an earlier run) that starts its own Kamailio (tests/support/pbx.py, the
project's deploy/kamailio/kamailio.cfg) with one user per account, then from one event loop:

1. creates N UserAgents and starts all their REGISTERs at once (digest auth: 401 then 200);
2. reports registrations/s, time until all are registered, p50/p95/max of register() -> REGISTERED
   (the whole REGISTER/401/REGISTER/200 exchange), kernel UDP receive-buffer drops on the host,
   and RSS per registered account (VmRSS delta / N);
3. waits for every account to refresh once (short Expires) and checks Kamailio still holds
   exactly N bindings; reports RSS once idle;
4. unregisters everything (Expires: 0) and checks Kamailio holds none.

Two ways to put N accounts on sockets:

- ``per-account``: one ``SipTransport`` (UDP socket + timer) per UserAgent — what the API
  offers directly (a transport drives exactly one core);
- ``shared``: one ``SipTransport`` whose core is a small demultiplexer defined here that owns N
  UserAgents (same Via/Contact host:port, told apart by the user part) and keeps one timer heap;
- ``shared-4m``: the same with SO_RCVBUF raised to 4 MiB (the default 208 KiB buffer holds only
  a few hundred datagrams: a burst of 1000 401s overflows it).

    .venv/bin/python benchmarks/sip_register.py                 # 1000 and 100 accounts, both modes
    .venv/bin/python benchmarks/sip_register.py --accounts 1000 --modes shared --expires 40
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import heapq
import json
import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from phone.sip.transaction import Addr  # noqa: E402
from phone.sip.transport import SipTransport  # noqa: E402
from phone.sip.useragent import (  # noqa: E402
    RegistrationState,
    RegistrationStateChanged,
    UaOutput,
    UserAgent,
    UserAgentConfig,
)
from tests.support.pbx import Kamailio  # noqa: E402

FIRST_EXT = 3000


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def udp_rcvbuf_errors() -> int:
    """Host-wide UDP datagrams dropped because a socket's receive buffer was full."""
    with open("/proc/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RcvbufErrors")])


def socket_drops(port: int) -> int:
    """Datagrams dropped at the UDP socket(s) bound to ``port`` (last column of /proc/net/udp)."""
    total = 0
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if int(cols[1].split(":")[1], 16) == port:
                total += int(cols[-1])
    return total


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ------------------------------------------------------------------ shared-socket core


@dataclass(slots=True)
class Tagged:
    """An event of one UserAgent behind the shared core."""

    index: int
    event: Any


@dataclass(slots=True)
class MuxOutput:
    send: list[Any] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)


_RURI_USER = re.compile(rb"^[A-Z]+ sips?:([^@;>\s]+)@")
_FROM_USER = re.compile(rb"\r\n(?:From|f)\s*:[^\r\n]*?sips?:([^@;>\s]+)@", re.IGNORECASE)


class SharedCore:
    """Many UserAgents behind one socket. Requests go to the Request-URI user (our Contact
    user), responses to the From user (we only originate requests from our own AoR)."""

    def __init__(self, local_addr: Addr) -> None:
        self.local_addr = local_addr
        self.uas: list[UserAgent] = []
        self.by_user: dict[bytes, int] = {}
        self._heap: list[tuple[float, int]] = []
        self.unrouted = 0

    def add(self, ua: UserAgent) -> int:
        index = len(self.uas)
        self.uas.append(ua)
        self.by_user[ua.config.username.encode()] = index
        return index

    def _touch(self, index: int) -> None:
        when = self.uas[index].next_timer()
        if when is not None:
            heapq.heappush(self._heap, (when, index))

    def _tag(self, index: int, out: UaOutput, into: MuxOutput) -> None:
        into.send.extend(out.send)
        into.events.extend(Tagged(index, e) for e in out.events)
        self._touch(index)

    def run(self, index: int, command: Callable[[UserAgent, float], UaOutput], now: float) -> Any:
        into = MuxOutput()
        self._tag(index, command(self.uas[index], now), into)
        return into

    def receive(self, now: float, data: bytes, source: Addr) -> MuxOutput:
        into = MuxOutput()
        match = _FROM_USER.search(data) if data.startswith(b"SIP/2.0") else _RURI_USER.match(data)
        index = self.by_user.get(match.group(1)) if match else None
        if index is None:
            self.unrouted += 1
            return into
        self._tag(index, self.uas[index].receive(now, data, source), into)
        return into

    def next_timer(self) -> float | None:
        # Lazy heap: entries may be stale (the UA's timer moved); handle_timer sorts it out.
        return self._heap[0][0] if self._heap else None

    def handle_timer(self, now: float) -> MuxOutput:
        into = MuxOutput()
        due: set[int] = set()
        while self._heap and self._heap[0][0] <= now:
            due.add(heapq.heappop(self._heap)[1])
        for index in due:
            ua = self.uas[index]
            when = ua.next_timer()
            if when is not None and when <= now:
                self._tag(index, ua.handle_timer(now), into)
            elif when is not None:
                heapq.heappush(self._heap, (when, index))
        return into


# ------------------------------------------------------------------ one run (child process)


def config(ext: str, pbx: Kamailio, addr: Addr, expires: int) -> UserAgentConfig:
    return UserAgentConfig(
        username=ext,
        domain=pbx.domain,
        local_addr=addr,
        password=f"pw{ext}",
        proxy_addr=(pbx.host, pbx.port),
        expires=expires,
    )


class Accounts:
    """N accounts on either transport layout, with per-account registration bookkeeping."""

    def __init__(self, n: int, mode: str, pbx: Kamailio, expires: int) -> None:
        self.n = n
        self.mode = mode
        self.pbx = pbx
        self.expires = expires
        self.exts = [str(FIRST_EXT + i) for i in range(n)]
        self.started: list[float] = [0.0] * n
        self.registered_at: list[float | None] = [None] * n
        self.registered_count = [0] * n  # REGISTERED events (1 = initial, 2 = after a refresh)
        self.unregistered: list[bool] = [False] * n
        self.failed: list[str] = []
        self.transports: list[SipTransport[Any]] = []
        self.shared: SipTransport[SharedCore] | None = None
        self.changed = asyncio.Event()

    def _on_state(self, index: int, event: Any) -> None:
        if not isinstance(event, RegistrationStateChanged):
            return
        if event.state is RegistrationState.REGISTERED:
            self.registered_count[index] += 1
            if self.registered_at[index] is None:
                self.registered_at[index] = time.perf_counter()
        elif event.state is RegistrationState.FAILED:
            self.failed.append(f"{self.exts[index]}: {event.reason}")
        elif event.state is RegistrationState.UNREGISTERED and self.registered_count[index]:
            self.unregistered[index] = True
        self.changed.set()

    async def open(self) -> None:
        if self.mode == "per-account":
            for i, ext in enumerate(self.exts):

                def factory(addr: Addr, ext: str = ext) -> UserAgent:
                    return UserAgent(config(ext, self.pbx, addr, self.expires))

                t = await SipTransport.udp(
                    "127.0.0.1", 0, factory, lambda e, i=i: self._on_state(i, e)
                )
                self.transports.append(t)
        else:

            def on_event(tagged: Any) -> None:
                if isinstance(tagged, Tagged):
                    self._on_state(tagged.index, tagged.event)

            self.shared = await SipTransport.udp("127.0.0.1", 0, SharedCore, on_event)
            if self.mode == "shared-4m":
                # The kernel doubles the value (bookkeeping); net.core.rmem_max caps it.
                sock = self.shared._udp.get_extra_info("socket")  # type: ignore[union-attr]
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 * 1024 * 1024)
            core = self.shared.core
            for ext in self.exts:
                core.add(UserAgent(config(ext, self.pbx, self.shared.local_addr, self.expires)))

    def command(self, index: int, method: Callable[[UserAgent, float], UaOutput]) -> None:
        if self.shared is not None:
            shared = self.shared
            shared.execute(lambda now: shared.core.run(index, method, now))
        else:
            t = self.transports[index]
            t.execute(lambda now: method(t.core, now))

    def register_all(self) -> None:
        for i in range(self.n):
            self.started[i] = time.perf_counter()
            self.command(i, lambda ua, now: ua.register(now))

    def unregister_all(self) -> None:
        for i in range(self.n):
            self.command(i, lambda ua, now: ua.unregister(now))

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

    async def close(self) -> None:
        for t in self.transports:
            await t.close()
        if self.shared is not None:
            await self.shared.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


def kamailio_bindings(pbx: Kamailio) -> tuple[int, int]:
    """(AoRs, contacts) in Kamailio's location table (usrloc statistics: ul.dump of 1000
    AoRs is more than kamcmd's reply buffer takes)."""
    stats = {}
    for line in pbx.kamcmd("stats.get_statistics", "usrloc:").splitlines():
        name, _, value = line.partition("=")
        stats[name.strip()] = int(value.strip() or 0)
    return stats["usrloc:location_users"], stats["usrloc:location_contacts"]


async def run_one(n: int, mode: str, expires: int) -> dict[str, Any]:
    users = {str(FIRST_EXT + i): f"pw{FIRST_EXT + i}" for i in range(n)}
    pbx = Kamailio(users=users, log_level=1)
    pbx.start()
    result: dict[str, Any] = {"mode": mode, "accounts": n}
    try:
        gc.collect()
        rss0 = rss_kib()
        fds0 = open_fds()
        accounts = Accounts(n, mode, pbx, expires)
        await accounts.open()
        gc.collect()
        result["rss_open_kib"] = rss_kib() - rss0
        drops0 = udp_rcvbuf_errors()
        pbx_drops0 = socket_drops(pbx.port)
        our_drops0 = socket_drops(accounts.shared.local_addr[1]) if accounts.shared else 0

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        accounts.register_all()
        result["send_all_s"] = time.perf_counter() - t0
        ok = await accounts.until(
            lambda: (
                all(c >= 1 for c in accounts.registered_count)
                or len(accounts.failed) + sum(c >= 1 for c in accounts.registered_count) >= n
            ),
            60,
        )
        t_all = max((t for t in accounts.registered_at if t is not None), default=t0) - t0
        latencies = [
            (t - s) * 1000
            for t, s in zip(accounts.registered_at, accounts.started, strict=True)
            if t
        ]
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu_s"] = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        gc.collect()
        registered = sum(c >= 1 for c in accounts.registered_count)
        result.update(
            all_registered=ok and registered == n,
            registered=registered,
            failed=accounts.failed[:5],
            time_to_all_s=t_all,
            per_second=registered / t_all if t_all else 0.0,
            p50_ms=percentile(latencies, 0.5) if latencies else None,
            p95_ms=percentile(latencies, 0.95) if latencies else None,
            max_ms=max(latencies) if latencies else None,
            udp_drops=udp_rcvbuf_errors() - drops0,
            pbx_socket_drops=socket_drops(pbx.port) - pbx_drops0,
            shared_socket_drops=(
                socket_drops(accounts.shared.local_addr[1]) - our_drops0 if accounts.shared else 0
            ),
            rss_registered_kib=rss_kib() - rss0,
            fds=open_fds() - fds0,
        )
        result["kamailio_after_register"] = kamailio_bindings(pbx)

        # Refresh: every account re-REGISTERs once at its refresh time (same Call-ID/Contact).
        t1 = time.perf_counter()
        refreshed = await accounts.until(
            lambda: all(c >= 2 for c in accounts.registered_count), expires + 30
        )
        result["all_refreshed"] = refreshed
        result["refreshed"] = sum(c >= 2 for c in accounts.registered_count)
        result["refresh_wait_s"] = time.perf_counter() - t1
        result["kamailio_after_refresh"] = kamailio_bindings(pbx)
        await asyncio.sleep(6)  # Timer K (T4 = 5 s): completed client transactions go away
        gc.collect()
        result["rss_idle_kib"] = rss_kib() - rss0

        # Unregister on stop.
        t2 = time.perf_counter()
        accounts.unregister_all()
        result["all_unregistered"] = await accounts.until(lambda: all(accounts.unregistered), 30)
        result["unregister_s"] = time.perf_counter() - t2
        result["kamailio_after_unregister"] = kamailio_bindings(pbx)
        if accounts.shared is not None:
            result["unrouted"] = accounts.shared.core.unrouted
        await accounts.close()
    finally:
        pbx.stop()
        pbx.remove_files()
    return result


# ------------------------------------------------------------------ driver (parent process)


def report(r: dict[str, Any]) -> None:
    n = r["accounts"]
    print(f"\n== {n} accounts, {r['mode']} transport ==")
    print(
        f"  registered {r['registered']}/{n}"
        + (f"  failures: {r['failed']}" if r["failed"] else "")
    )
    print(f"  all REGISTERs handed to the socket in {r['send_all_s'] * 1000:.0f} ms")
    print(f"  time to all registered  {r['time_to_all_s']:.3f} s")
    print(f"  registrations/second    {r['per_second']:.0f}")
    print(
        f"  our CPU time until all registered: {r['cpu_s']:.3f} s "
        f"({r['cpu_s'] / r['time_to_all_s'] * 100:.0f}% of one core over that time)"
    )
    print(
        f"  register() -> REGISTERED (REGISTER, 401, REGISTER, 200): p50 {r['p50_ms']:.0f} ms, "
        f"p95 {r['p95_ms']:.0f} ms, max {r['max_ms']:.0f} ms"
    )
    print(
        f"  kernel UDP receive-buffer drops during the burst: {r['udp_drops']} "
        f"(Kamailio's socket {r['pbx_socket_drops']}, our shared socket "
        f"{r['shared_socket_drops']}); each one costs a Timer E/F retransmission"
    )
    print(f"  file descriptors: +{r['fds']}")
    mib = 1024
    print(
        f"  RSS: +{r['rss_open_kib'] / mib:.1f} MiB after creating, "
        f"+{r['rss_registered_kib'] / mib:.1f} MiB all registered "
        f"= {r['rss_registered_kib'] / n / mib:.4f} MiB/account; "
        f"idle after refresh +{r['rss_idle_kib'] / mib:.1f} MiB "
        f"= {r['rss_idle_kib'] / n / mib:.4f} MiB/account"
    )
    print(f"  Kamailio AoRs/contacts after register:   {r['kamailio_after_register']}")
    print(
        f"  refresh: {r['refreshed']}/{n} re-registered within {r['refresh_wait_s']:.1f} s; "
        f"Kamailio AoRs/contacts {r['kamailio_after_refresh']}"
    )
    print(
        f"  unregister: all done={r['all_unregistered']} in {r['unregister_s'] * 1000:.0f} ms; "
        f"Kamailio AoRs/contacts {r['kamailio_after_unregister']}"
    )
    if "unrouted" in r:
        print(f"  shared core: unrouted datagrams {r['unrouted']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[1000, 100])
    parser.add_argument("--modes", nargs="+", default=["per-account", "shared", "shared-4m"])
    parser.add_argument("--expires", type=int, default=40, help="short, so a refresh is seen")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = asyncio.run(run_one(args.accounts[0], args.modes[0], args.expires))
        print("RESULT " + json.dumps(result))
        return
    refresh = max(1.0, min(args.expires / 2, args.expires - 32))
    print(
        f"Kamailio 5.6 (deploy/kamailio/kamailio.cfg, children=2) on 127.0.0.1, "
        f"Expires {args.expires} (refresh after {refresh:.0f} s), "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    for n in args.accounts:
        for mode in args.modes:
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    "--accounts",
                    str(n),
                    "--modes",
                    mode,
                    "--expires",
                    str(args.expires),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"\n== {n} accounts, {mode}: run failed ==\n{proc.stdout}\n{proc.stderr}")
                continue
            report(json.loads(line[len("RESULT ") :]))
    print(
        "\nReference (issue): a well-known C gateway serializes registrations at ~10/s and "
        "uses ~0.08 MB per idle registration."
    )


if __name__ == "__main__":
    main()
