"""Signalling latency through the real stack: browser WebSocket -> daphne (embedded sipworker)
-> Kamailio -> far end, and back. Prints figures; no assertions.

    WebSocket client  --/ws/phone/-->  daphne subprocess  --SIP/UDP-->  sniff hop --> Kamailio
    (this process)                     (PhoneConsumer +                 (this        (tests/support
                                        SipWorkerHost, SQLite)          process)      /pbx.py)
                                                                                  \\-> far end Phone
                                                                                      (this process)

Setup: a temporary directory with its own SQLite database (migrated in this process), one tenant
on a fresh Kamailio, N users (1001, 1003, ...) each paired with a far end (1002, 1004, ...: our
own UserAgent, tests/support/ua.py `Phone`), a session cookie per user, a daphne subprocess with
DEBUG=true and no REDIS_URL (so the sipworker runs inside daphne, the embedded default). Each
user's SIP account points its outbound proxy at a small UDP hop in this process (LossyUdpProxy,
dropping nothing) that timestamps datagrams as they leave the worker; each far end sends through
one too. All timestamps are time.perf_counter() of this one process.

What is measured, per call (hang-up between calls, a short pause as a person would make):

0. Baseline: `ping` -> `pong`, answered by PhoneConsumer itself (WebSocket + daphne + consumer,
   no channel layer, no sipworker).
1. dial -> INVITE. t0 = just before `{"type":"dial"}` is written to the WebSocket.
   - "on the wire": the worker's first INVITE passes the sniff hop, i.e. it has left daphne
     (Kamailio then answers it 407, the worker re-sends it with credentials);
   - "at far end": the far end's UserAgent reports IncomingCall, i.e. the INVITE went through
     the digest challenge and Kamailio and was parsed by 1002's SIP stack.
   The far end answers, the browser sends hangup (BYE).
2. INVITE -> incoming. t0 = the far end's first INVITE passes its sniff hop (it is on the wire).
   Reported up to the `incoming` message at the WebSocket, and from the authorised (second)
   INVITE, i.e. without the PBX's challenge of the caller. The browser answers (no WebRTC:
   the worker bridges nothing), the far end hangs up (BYE).
3. Optionally the same with U users at once (random pauses, so the calls interleave).

The sniff hops add one pass through this process's event loop to each datagram of the worker's
own transactions (tens of microseconds on an idle loop). Everything on the client side runs in
one event loop; with 10 users that loop is busier, which inflates the concurrent figures a
little.

Needs kamailio (Debian package) and the `websockets` PyPI package in .venv
(`.venv/bin/pip install websockets`: it is not among the project's dependencies).

    .venv/bin/python benchmarks/signalling.py                      # 50 calls, then 10 users x 20
    .venv/bin/python benchmarks/signalling.py --calls 100 --users 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:
    from websockets.asyncio.client import ClientConnection, connect
except ImportError:  # pragma: no cover - a hint instead of a traceback
    sys.exit("this benchmark needs `websockets`: .venv/bin/pip install websockets")

from phone.sip.useragent import CallState, CallStateChanged, IncomingCall  # noqa: E402
from tests.support import children  # noqa: E402
from tests.support.pbx import Kamailio, kamailio_binary  # noqa: E402
from tests.support.ports import free_port, release_ports  # noqa: E402
from tests.support.ua import Datagram, LossyUdpProxy, Phone  # noqa: E402

WAIT = 10.0  # seconds for any one step of a call
_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)


def now() -> float:
    return time.perf_counter()


# ------------------------------------------------------------------ setup (synchronous)


def setup_django(tmp: Path) -> str:
    """Point this process at a fresh SQLite database in ``tmp``, migrated; return its URL."""
    url = f"sqlite:///{tmp / 'db.sqlite3'}"
    os.environ.update(
        DATABASE_URL=url,
        DEBUG="true",
        VAR_DIR=str(tmp),
        DJANGO_SETTINGS_MODULE="portal.settings",
    )
    os.environ.pop("REDIS_URL", None)
    import django
    from django.core.management import call_command

    django.setup()
    from django.db import connections

    call_command("migrate", verbosity=0)
    connections.close_all()
    return url


def create_cast(pairs: list[tuple[str, str]], pbx: Kamailio, proxies: list[str]) -> list[str]:
    """A tenant on ``pbx`` and one user per pair (the first extension); return session cookies.

    Each user's account sends through its own sniff hop (``proxies[i]``, host:port).
    """
    from django.contrib.auth import get_user_model
    from django.db import connections

    from portal.models import Profile, SipAccount, Tenant
    from tests.phone.ws import session_cookie

    tenant = Tenant.objects.create(
        code="bench", name="Bench", pbx_domain=pbx.domain, outbound_proxy=pbx.hostport
    )
    cookies = []
    for (ext, _far), proxy in zip(pairs, proxies, strict=True):
        user = get_user_model()(username=f"user{ext}")
        user.set_unusable_password()  # a session cookie logs in; no hashing needed
        user.save()
        Profile.objects.create(user=user, tenant=tenant, display_name=f"User {ext}")
        SipAccount.objects.create(
            tenant=tenant,
            user=user,
            slot=1,
            extension=ext,
            password=pbx.users[ext],
            outbound_proxy=proxy,
        )
        cookies.append(session_cookie(user))
    connections.close_all()  # leave the SQLite file to daphne
    return cookies


def start_daphne(port: int, database_url: str, tmp: Path) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "DATABASE_URL": database_url, "DEBUG": "true", "VAR_DIR": str(tmp)}
    env.pop("REDIS_URL", None)
    log_path = tmp / "daphne.log"
    with open(log_path, "wb") as log:
        cmd = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
        proc = subprocess.Popen(
            children.command([*cmd, "portal.asgi:application"], "TERM"),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    children.track(proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, log_path
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process(proc)
                sys.exit(f"daphne did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.1)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    children.untrack(proc)


# ------------------------------------------------------------------ the parts


class Sniffer:
    """A UDP hop (LossyUdpProxy, dropping nothing) that stamps the INVITEs going upstream."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.invites: dict[str, list[tuple[float, bool]]] = {}  # Call-ID -> [(t, authorised)]
        self.proxy = LossyUdpProxy(upstream, drop=self._stamp)

    def _stamp(self, d: Datagram) -> bool:
        if d.direction == "up" and d.method == "INVITE":
            t = now()
            m = _CALL_ID.search(d.data)
            if m:
                call_id = m.group(1).strip().decode(errors="replace")
                self.invites.setdefault(call_id, []).append((t, d.authorized))
        self.proxy.log.clear()  # its log is not needed; keep memory flat
        return False

    @property
    def hostport(self) -> str:
        return f"{self.proxy.addr[0]}:{self.proxy.addr[1]}"

    def first_invite(self, call_id: str, authorized: bool = False) -> float | None:
        return next((t for t, a in self.invites.get(call_id, []) if a == authorized), None)


class FarEnd(Phone):
    """A Phone that notes when each IncomingCall was reported (the INVITE was parsed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrived: dict[str, float] = {}

    def _on_event(self, event: Any) -> None:
        if isinstance(event, IncomingCall):
            self.arrived.setdefault(event.call_id, now())
        super()._on_event(event)


class Browser:
    """A logged-in phone page without WebRTC: the /ws/phone/ socket, every message stamped."""

    def __init__(self, name: str, ws: ClientConnection) -> None:
        self.name = name
        self.ws = ws
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self._consumed: set[int] = set()
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, name: str, port: int, cookie: str) -> Browser:
        ws = await connect(
            f"ws://127.0.0.1:{port}/ws/phone/",
            origin=f"http://127.0.0.1:{port}",
            additional_headers={"Cookie": cookie},
            open_timeout=WAIT,
        )
        return cls(name, ws)

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                self.messages.append((now(), json.loads(raw)))
                self._changed.set()
        self._changed.set()

    async def send(self, **message: Any) -> float:
        t = now()
        await self.ws.send(json.dumps(message))
        return t

    async def wait(
        self, kind: str, timeout: float = WAIT, after: float = 0.0, **match: Any
    ) -> tuple[float, dict]:
        """The oldest unreturned message of ``kind``, received at ``after`` or later, with fields
        equal to ``match``."""
        deadline = now() + timeout
        while True:
            for i, (t, msg) in enumerate(self.messages):
                if i in self._consumed or t < after or msg.get("type") != kind:
                    continue
                if all(msg.get(k) == v for k, v in match.items()):
                    self._consumed.add(i)
                    return t, msg
            if msg_error := self._error():
                raise RuntimeError(f"{self.name}: server error {msg_error}")
            remaining = deadline - now()
            if remaining <= 0 or self._reader.done():
                raise TimeoutError(f"{self.name}: no {kind} {match} within {timeout}s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def _error(self) -> dict | None:
        for i, (_t, msg) in enumerate(self.messages):
            if msg.get("type") == "error" and i not in self._consumed:
                self._consumed.add(i)
                return msg
        return None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


class Pair:
    """One logged-in user (browser + sniff hop) and its far end (+ its sniff hop)."""

    def __init__(self, ext: str, far_ext: str, pbx: Kamailio) -> None:
        self.ext, self.far_ext, self.pbx = ext, far_ext, pbx
        self.hop = Sniffer((pbx.host, pbx.port))  # worker -> Kamailio
        self.far_hop = Sniffer((pbx.host, pbx.port))  # far end -> Kamailio
        self.browser: Browser | None = None
        self.far: FarEnd | None = None
        self.failures: list[str] = []
        self.pings = 0

    async def start_hops(self) -> None:
        await self.hop.proxy.start()
        await self.far_hop.proxy.start()

    async def connect(self, port: int, cookie: str) -> None:
        # tone_hz=None: signalling only, its RTP legs send nothing.
        far = await FarEnd.open(
            self.pbx, self.far_ext, proxy_addr=self.far_hop.proxy.addr, tone_hz=None
        )
        self.far = far
        event = await far.register()
        if event.state.name != "REGISTERED":
            raise RuntimeError(f"far end {self.far_ext} did not register: {event}")
        self.browser = await Browser.open(f"user{self.ext}", port, cookie)
        await self.browser.wait("registration", 15, state="registered")

    async def close(self) -> None:
        if self.browser is not None:
            await self.browser.close()
        if self.far is not None:
            with contextlib.suppress(Exception):
                await self.far.close()
        self.hop.proxy.close()
        self.far_hop.proxy.close()

    # -- 0. baseline: the WebSocket and the consumer alone ------------------------------------

    async def ping(self, out: dict[str, list[float]]) -> None:
        assert self.browser is not None
        self.pings += 1
        t0 = await self.browser.send(type="ping", id=self.pings)
        t1, _ = await self.browser.wait("pong", id=self.pings)
        out["ping -> pong (consumer only, no sipworker)"].append(t1 - t0)

    # -- 1. dial -> INVITE ------------------------------------------------------------------

    async def outgoing(self, out: dict[str, list[float]]) -> None:
        browser, far = self.browser, self.far
        assert browser is not None and far is not None
        t0 = await browser.send(type="dial", number=self.far_ext)
        # (the page may get several `dialing` updates of one call: take this call's first)
        t_dialing, msg = await browser.wait("call", after=t0, state="dialing", direction="out")
        call_id = msg["id"]
        incoming = await far.wait_for(IncomingCall, WAIT, call_id=call_id)
        t_far = far.arrived[incoming.call_id]
        t_wire = self.hop.first_invite(call_id)
        t_auth = self.hop.first_invite(call_id, authorized=True)
        await far.answer(call_id)
        await browser.wait("call", id=call_id, state="incall")
        await browser.send(type="hangup", call_id=call_id)
        await far.wait_for(CallStateChanged, WAIT, call_id=call_id, state=CallState.TERMINATED)
        await browser.wait("call", id=call_id, state="ended")
        if t_wire is None or t_auth is None:
            raise RuntimeError(f"INVITE of {call_id} not seen at the sniff hop")
        out["dial -> call(dialing) at browser"].append(t_dialing - t0)
        out["dial -> INVITE leaves worker (on the wire)"].append(t_wire - t0)
        out["dial -> authorised INVITE leaves worker"].append(t_auth - t0)
        out["dial -> INVITE at far end (1002 parsed it)"].append(t_far - t0)

    # -- 2. INVITE -> incoming --------------------------------------------------------------

    async def inbound(self, out: dict[str, list[float]]) -> None:
        browser, far = self.browser, self.far
        assert browser is not None and far is not None
        call_id = await far.call(self.ext)
        t_incoming, _ = await browser.wait("incoming", id=call_id)
        t_call, _ = await browser.wait("call", id=call_id, state="incoming")
        t_first = self.far_hop.first_invite(call_id)
        t_auth = self.far_hop.first_invite(call_id, authorized=True)
        await browser.send(type="answer", call_id=call_id)
        await far.wait_for(CallStateChanged, WAIT, call_id=call_id, state=CallState.CONNECTED)
        await browser.wait("call", id=call_id, state="incall")
        far.hangup(call_id)
        await browser.wait("call", id=call_id, state="ended")
        await far.wait_for(CallStateChanged, WAIT, call_id=call_id, state=CallState.TERMINATED)
        if t_first is None or t_auth is None:
            raise RuntimeError(f"INVITE of {call_id} not seen at the far end's sniff hop")
        out["far end INVITE -> incoming at browser"].append(t_incoming - t_first)
        out["far end INVITE -> call(incoming) at browser"].append(t_call - t_first)
        out["authorised INVITE -> incoming at browser"].append(t_incoming - t_auth)

    async def run(self, scenario: str, calls: int, gap: float, out: dict[str, list[float]]):
        step = {"ping": self.ping, "out": self.outgoing, "in": self.inbound}[scenario]
        for _ in range(calls):
            try:
                await step(out)
            except (TimeoutError, RuntimeError) as exc:
                self.failures.append(f"{self.ext} {scenario}: {exc}")
                await self._recover()
            await asyncio.sleep(gap * random.uniform(0.5, 1.5))

    async def _recover(self) -> None:
        """After a failed call: hang up whatever is left on both sides, forget old messages."""
        assert self.browser is not None and self.far is not None
        with contextlib.suppress(Exception):
            await self.browser.send(type="hangup")
        for call_id, state in list(self.far.ua.calls.items()):
            if state.state is not CallState.TERMINATED:
                with contextlib.suppress(Exception):
                    self.far.hangup(call_id)
        await asyncio.sleep(1.0)
        self.browser._consumed.update(range(len(self.browser.messages)))
        self.far._consumed.update(range(len(self.far.events)))


# ------------------------------------------------------------------ report


def report(title: str, samples: dict[str, list[float]], failures: list[str]) -> None:
    print(f"\n{title}")
    print(f"  {'':47} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, values in samples.items():
        if not values:
            print(f"  {name:47} {0:>5}")
            continue
        ms = sorted(v * 1000 for v in values)
        p95 = statistics.quantiles(ms, n=20, method="inclusive")[18] if len(ms) > 1 else ms[0]
        p50 = statistics.median(ms)
        print(f"  {name:47} {len(ms):>5} {p50:>8.2f} {p95:>8.2f} {ms[-1]:>8.2f}")
    if failures:
        print(f"  failed calls: {len(failures)}")
        for line in failures[:5]:
            print(f"    {line}")


def new_samples(scenario: str) -> dict[str, list[float]]:
    names = {
        "ping": ["ping -> pong (consumer only, no sipworker)"],
        "out": [
            "dial -> call(dialing) at browser",
            "dial -> INVITE leaves worker (on the wire)",
            "dial -> authorised INVITE leaves worker",
            "dial -> INVITE at far end (1002 parsed it)",
        ],
        "in": [
            "far end INVITE -> incoming at browser",
            "far end INVITE -> call(incoming) at browser",
            "authorised INVITE -> incoming at browser",
        ],
    }[scenario]
    return {name: [] for name in names}


async def measure(pairs: list[Pair], calls: int, gap: float, label: str) -> None:
    for scenario, title in (
        ("ping", "0. baseline"),
        ("out", "1. dial -> INVITE"),
        ("in", "2. INVITE -> incoming"),
    ):
        for pair in pairs:
            pair.failures.clear()
        samples = new_samples(scenario)
        started = now()
        await asyncio.gather(*(p.run(scenario, calls, gap, samples) for p in pairs))
        took = now() - started
        failures = [f for p in pairs for f in p.failures]
        report(f"{title} — {label} ({took:.1f} s)", samples, failures)


# ------------------------------------------------------------------ main


async def run(args: argparse.Namespace, pbx: Kamailio, tmp: Path, database_url: str) -> None:
    count = max(1, args.users)
    pairs = [Pair(f"{1001 + 2 * i}", f"{1002 + 2 * i}", pbx) for i in range(count)]
    daphne: subprocess.Popen | None = None
    port = free_port()
    try:
        for pair in pairs:
            await pair.start_hops()
        cookies = await asyncio.to_thread(
            create_cast, [(p.ext, p.far_ext) for p in pairs], pbx, [p.hop.hostport for p in pairs]
        )
        daphne, log_path = start_daphne(port, database_url, tmp)
        t = now()
        await asyncio.gather(*(p.connect(port, c) for p, c in zip(pairs, cookies, strict=True)))
        print(f"{count} page(s) open, worker lines registered in {now() - t:.2f} s")

        await measure(pairs[:1], args.calls, args.gap, f"1 user x {args.calls}")
        if args.users > 1:
            label = f"{args.users} users at once x {args.concurrent_calls} each"
            await measure(pairs, args.concurrent_calls, args.gap, label)

        log = log_path.read_text(errors="replace")
        problems = [ln for ln in log.splitlines() if "Traceback" in ln or " ERROR " in ln]
        print(f"\ndaphne log: {len(problems)} error/traceback line(s)")
        for line in problems[:5]:
            print(f"  {line[:160]}")
    finally:
        for pair in pairs:
            await pair.close()
        if daphne is not None:
            stop_process(daphne)
        release_ports(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50, help="calls per scenario, one user")
    parser.add_argument("--users", type=int, default=10, help="concurrent users (<2: skip)")
    parser.add_argument("--concurrent-calls", type=int, default=20, help="calls per user")
    parser.add_argument("--gap", type=float, default=0.1, help="mean pause between calls, s")
    args = parser.parse_args()
    if kamailio_binary() is None:
        sys.exit("kamailio not installed (apt-get install -y kamailio)")

    random.seed(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-signalling-"))
    try:
        database_url = setup_django(tmp)
        exts = [str(1001 + i) for i in range(2 * max(1, args.users))]
        with Kamailio(users={ext: f"pw{ext}" for ext in exts}) as pbx:
            print(
                f"kamailio {pbx.hostport}; daphne (embedded sipworker, SQLite {tmp}); "
                f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
            )
            asyncio.run(run(args, pbx, tmp, database_url))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
