"""Prometheus metrics (prometheus_client), served by the web process at /metrics (portal.health).

The numbers are made where things happen — SIP lines and calls in the sipworkers, webhook
deliveries in the Celery workers — and read in the web process. How they get there:
prometheus_client's multiprocess mode. Every process that sets PROMETHEUS_MULTIPROC_DIR to the
same directory (a volume shared by the containers of one host in compose.yaml) writes its values
to memory-mapped files there, and /metrics merges them. Chosen over a metrics port per sipworker
because /metrics must show the whole deployment in one scrape with no service discovery: the
sipworkers scale up and down, and the webhook counters live in Celery's pool processes, which
no scraper can address. Without PROMETHEUS_MULTIPROC_DIR (the embedded default,
one process) the values simply live in this process.

Files are named after a process id of ours, "<hostname>-<pid>-<token>" (`process_id`), not the
bare pid: containers sharing the directory each have their own pid 1, 7, ... Gauges of the
sipworkers are "live" gauges: a worker's values leave the sum when it stops (`process_exit`),
and /metrics leaves out those of a worker that died without stopping (no heartbeat,
portal.health).

Instrumentation (call these where things happen; each is cheap and never raises):

    line_meter() / call_meter()         a StateMeter per line / call: meter.set(state), set(None)
                                        (or registration_changed / call_state_changed(old, new))
    call_setup(seconds, direction)      setup time (what is measured: CALL_SETUP's help)
    set_leases(n)                       SIP accounts this sipworker holds a lease on
    sample_bridge_cpu(calls)            every heartbeat: CPU per bridged call since the last one
    webhook_failed(code, final=...)     a webhook attempt failed (code: HTTP status or None)
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

_LIVE_FILE = re.compile(r"^gauge_live[a-z]+_(?P<id>[^_]+)\.db$")


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


# Containers on the host network share the host's name, and each may run its Python as pid 1:
# a token drawn once per interpreter keeps their files apart. A forked child (Celery's pool)
# inherits the token but not the pid.
_BOOT = secrets.token_hex(3)


def process_id() -> str:
    """This process's name in the multiprocess directory: unique across the containers that
    share it and across forks (the pid is read on every call). No "_": prometheus_client
    splits file names on it."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:30] or "host"
    return f"{host}-{os.getpid()}-{_BOOT}"


if multiprocess_dir():
    # Before any metric exists: prometheus_client would name the files by pid alone.
    values.ValueClass = values.MultiProcessValue(process_identifier=process_id)

PREFIX = "browserphone"
REGISTRATION_STATES = ("registered", "registering", "failed", "unregistered")

REGISTRATIONS = Gauge(
    f"{PREFIX}_registrations",
    "SIP lines hosted by the sipworkers, by registration state.",
    ["state"],
    multiprocess_mode="livesum",
)
CALLS = Gauge(
    f"{PREFIX}_calls",
    "Calls in the sipworkers, by state (dialing, ringing, incall, held ...).",
    ["state"],
    multiprocess_mode="livesum",
)
CALL_SETUP = Histogram(
    f"{PREFIX}_call_setup_seconds",
    "Outgoing: from the dial command to the first response of the far side (18x or 2xx, "
    "post-dial delay). Incoming: from the INVITE to the page being told it rings.",
    ["direction"],
    buckets=(0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
)


# Gauges without labels get their value (and in multiprocess mode their file) when they are
# made: these two are made by the first sipworker call, so web and Celery processes show none.
@functools.cache
def _leases() -> Gauge:
    return Gauge(
        f"{PREFIX}_sipworker_leases",
        "SIP accounts a sipworker holds the lease of (one sample per live sipworker, label pid).",
        multiprocess_mode="liveall",
    )


@functools.cache
def _bridge_cpu() -> Gauge:
    return Gauge(
        f"{PREFIX}_bridge_cpu_per_call_ratio",
        "Share of one CPU core a sipworker used per bridged call over its last heartbeat "
        "interval (process CPU time / wall time / calls; one sample per live sipworker, "
        "label pid).",
        multiprocess_mode="liveall",
    )


WEBHOOK_FAILURES = Counter(
    f"{PREFIX}_webhook_failures",
    "Failed webhook attempts: kind http_4xx / http_5xx / connection; final=true when no "
    "retry follows.",
    ["kind", "final"],
)


def registration_changed(old: str | None, new: str | None) -> None:
    """A line's registration state went from `old` to `new` (states of REGISTRATION_STATES;
    None when the line did not exist before / no longer exists)."""
    with contextlib.suppress(Exception):
        if old == new:
            return
        if old is not None:
            REGISTRATIONS.labels(old).dec()
        if new is not None:
            REGISTRATIONS.labels(new).inc()


def call_state_changed(old: str | None, new: str | None) -> None:
    """A call went from state `old` to `new` (None: it did not exist yet / it ended)."""
    with contextlib.suppress(Exception):
        if old == new:
            return
        if old is not None:
            CALLS.labels(old).dec()
        if new is not None:
            CALLS.labels(new).inc()


class StateMeter:
    """One counted thing — a line, a call — in a by-state gauge: `set(state)` moves it from
    its previous state to `state`, `set(None)` takes it out. Keeps the previous state itself,
    so the owner needs one attribute and one call per change."""

    __slots__ = ("_change", "state")

    def __init__(self, change: Callable[[str | None, str | None], None]) -> None:
        self._change = change
        self.state: str | None = None

    def set(self, state: str | None) -> None:
        if state != self.state:
            self._change(self.state, state)
            self.state = state


def line_meter() -> StateMeter:
    """For a line: `meter.set("registering")` ... `meter.set(None)` when it stops."""
    return StateMeter(registration_changed)


def call_meter() -> StateMeter:
    """For a call: `meter.set("dialing")` ... `meter.set(None)` when it ends."""
    return StateMeter(call_state_changed)


def call_setup(seconds: float, direction: str = "outgoing") -> None:
    with contextlib.suppress(Exception):
        CALL_SETUP.labels(direction).observe(max(0.0, seconds))


def set_leases(count: int) -> None:
    with contextlib.suppress(Exception):
        _leases().set(count)


_cpu_mark: tuple[float, float] | None = None


def sample_bridge_cpu(calls: int) -> float | None:
    """Call once per heartbeat with the number of calls whose media the worker bridges: sets
    the gauge to the CPU share per call since the previous call (0 with no calls) and returns
    it (None on the first call, which only sets the mark)."""
    global _cpu_mark
    now = (time.monotonic(), time.process_time())
    mark, _cpu_mark = _cpu_mark, now
    if mark is None or now[0] <= mark[0]:
        return None
    share = (now[1] - mark[1]) / (now[0] - mark[0])
    per_call = share / calls if calls > 0 else 0.0
    with contextlib.suppress(Exception):
        _bridge_cpu().set(per_call)
    return per_call


def webhook_failed(code: int | None, *, final: bool) -> None:
    """A webhook attempt failed with HTTP status `code` (None: no answer: DNS, connection,
    timeout, refused address)."""
    if code is None:
        kind = "connection"
    else:
        kind = "http_4xx" if 400 <= code < 500 else "http_5xx" if code >= 500 else "http_other"
    with contextlib.suppress(Exception):
        WEBHOOK_FAILURES.labels(kind, "true" if final else "false").inc()


def process_exit() -> None:
    """This process stops (the sipworker's shutdown): its live gauges leave the sums now."""
    path = multiprocess_dir()
    if path:
        with contextlib.suppress(OSError):
            mark_process_dead(process_id(), path)


# -- reading (the web process) -----------------------------------------------------------------

# A live gauge file younger than this counts even before its process's first heartbeat.
_NEW_FILE_SECONDS = 30.0


class _LiveFilteredCollector(MultiProcessCollector):
    """MultiProcessCollector that leaves out the live gauges of processes that died without
    `process_exit` (SIGKILL, OOM): their files stay, and their registrations would be counted
    twice once another worker takes the lines over. `alive_ids()` gives the process ids of the
    sipworkers with a recent heartbeat; None (unknown, e.g. the cache is down) keeps all."""

    def __init__(self, path: str, alive_ids: Iterable[str] | None) -> None:
        super().__init__(None, path)
        self._alive = set(alive_ids) if alive_ids is not None else None

    def collect(self):  # type: ignore[no-untyped-def]
        files = glob.glob(os.path.join(self._path, "*.db"))
        if self._alive is not None:
            files = [f for f in files if self._keep(f)]
        return self.merge(files, accumulate=True)

    def _keep(self, path: str) -> bool:
        match = _LIVE_FILE.match(os.path.basename(path))
        if match is None or match["id"] in (self._alive or ()):
            return True
        try:
            return time.time() - os.path.getmtime(path) < _NEW_FILE_SECONDS
        except OSError:
            return False


def registry(alive_ids: Iterable[str] | None = None) -> CollectorRegistry:
    """What /metrics exposes: every process's values in multiprocess mode, else this one's."""
    path = multiprocess_dir()
    if not path:
        from prometheus_client import REGISTRY

        return REGISTRY
    collecting = CollectorRegistry()
    collecting.register(_LiveFilteredCollector(path, alive_ids))
    return collecting
