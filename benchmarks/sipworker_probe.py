"""`manage.py sipworker` for benchmarks/bridge_fullstack.py, with SIP timestamps (benchmark only).

Production code unchanged: before the worker starts, this wraps `SipTransport._send` and
`SipTransport._feed` (phone.sip.transport, class attributes, this process only) so that every
INVITE the worker sends and every final response to an INVITE it receives is written to the
file named by $SIP_TIMES as `<event> <From user> <time.monotonic()>`:

    invite 1003 12345.678901      (sent: the dial, or again after a 401/407 challenge)
    final 1003 12345.701234 200   (received, before the worker handles it)

and, on the channel layer (channels_redis, also wrapped), when a page's `dial` command came
out of Redis and when the `call` message with state incall went into it, by session channel:

    dial <channel> 12345.600000
    incall <channel> 12345.705000

time.monotonic() is CLOCK_MONOTONIC, the clock the benchmark's own timestamps use, so the
benchmark splits dial -> `call incall` at the page into the PBX's part (each INVITE until its
final response: Kamailio, its digest challenge, SIPp) and the worker's own (everything else:
the channel layer to the worker, the line's actor, building and parsing SIP, the 200 OK back
to the page).

    SIP_TIMES=/tmp/x.log python benchmarks/sipworker_probe.py   (same environment as sipworker)

It also watches the worker's event loop: a callback due every 20 ms that runs more than 20 ms
late writes `lag <time.monotonic()> <seconds late> <CPU seconds the loop used meanwhile>` - a
stall of the loop that carries every call, i.e. a gap in the gateway's own output whatever its
input did; the CPU figure tells the worker's own blocking from being descheduled.

And the garbage collector: a collection taking over 5 ms writes
`gc <time.monotonic()> <seconds> <generation>` (the usual suspect for such a stall).

LINE_TRACE=<file> also writes what each line's actor did, to that file (a diagnosis of call
setup, not read by the benchmark): `post <message> <t>` when a message is queued, `handle
<message> <start> <end>` for its handler and `presence <start> <end>` for the check after it.

The worker runs on the loop production chooses (phone.worker.loop, SIPWORKER_EVENT_LOOP).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_FROM_USER = re.compile(rb"\r\n(?:From|f)\s*:[^\r]*?sips?:([^@;>\s]+)@", re.IGNORECASE)
_CSEQ_INVITE = re.compile(rb"\r\nCSeq\s*:\s*\d+\s+INVITE\r\n", re.IGNORECASE)


def install(path: str) -> None:
    from phone.sip import transport

    out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    cls: Any = transport.SipTransport
    send, feed = cls._send, cls._feed

    def user(data: bytes) -> str:
        m = _FROM_USER.search(data)
        return m.group(1).decode(errors="replace") if m else "?"

    def _send(self: Any, data: bytes, addr: Any) -> None:
        if data.startswith(b"INVITE "):
            out.write(f"invite {user(data)} {time.monotonic():.6f}\n")
        send(self, data, addr)

    def _feed(self: Any, data: Any, source: Any) -> None:
        if isinstance(data, bytes):
            if data.startswith(b"SIP/2.0 ") and data[8:9] in b"23456" and _CSEQ_INVITE.search(data):
                out.write(f"final {user(data)} {time.monotonic():.6f} {data[8:11].decode()}\n")
        elif getattr(data, "status", 0) >= 200 and data.cseq.method == "INVITE":
            # The shared socket hands its lines messages it parsed already (to route them).
            who = data.from_addr.uri.user or "?"
            out.write(f"final {who} {time.monotonic():.6f} {data.status}\n")
        feed(self, data, source)

    cls._send, cls._feed = _send, _feed

    from portal.channel_layer import RedisChannelLayer  # production's layer (settings.py)

    layer: Any = RedisChannelLayer
    layer_send, layer_receive = layer.send, layer.receive

    async def send_(self: Any, channel: str, message: dict[str, Any]) -> None:
        inner = message.get("message")
        state = (inner.get("type"), inner.get("state")) if isinstance(inner, dict) else None
        if state == ("call", "incall"):
            out.write(f"incall {channel} {time.monotonic():.6f}\n")
        await layer_send(self, channel, message)

    async def receive_(self: Any, channel: str) -> dict[str, Any]:
        message = await layer_receive(self, channel)
        if message.get("type") == "worker.command" and message.get("command") == "dial":
            out.write(f"dial {message.get('session')} {time.monotonic():.6f}\n")
        return message

    layer.send, layer.receive = send_, receive_


def use_loop(monitor: Any = None) -> None:
    """`manage.py sipworker` makes its loop with phone.worker.loop.new_event_loop: wrap that
    (this process only) so that `monitor(loop)` watches each new loop."""
    from phone.worker import loop as worker_loop

    make = worker_loop.new_event_loop

    def new_event_loop(kind: str) -> Any:
        loop = make(kind)
        if monitor is not None:
            monitor(loop)
        return loop

    worker_loop.new_event_loop = new_event_loop  # type: ignore[assignment]


# The stall monitor's period: a stall over 20 ms is seen whatever the period; a shorter one only
# costs the worker (at 5 ms, about 0.3 % of a core on uvloop: part of every CPU figure).
PERIOD = 0.020


def watch_loop(path: str) -> None:
    """The worker's event loop gets the stall monitor (module doc)."""
    import asyncio

    out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    def monitor(loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + PERIOD

        cpu = time.thread_time()

        def tick() -> None:
            nonlocal due, cpu
            now, used = loop.time(), time.thread_time()
            if now - due > 0.020:
                # With the CPU the loop's thread used meanwhile: near the stall's length, the
                # worker was busy (its own code blocked the loop); near zero, the kernel
                # ran something else (another process on a shared core).
                out.write(f"lag {time.monotonic():.6f} {now - due:.6f} {used - cpu:.6f}\n")
            due, cpu = now + PERIOD, used
            loop.call_at(due, tick)

        loop.call_at(due, tick)

    use_loop(monitor)

    import gc

    started = [0.0]

    def collected(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        if took > 0.005:
            out.write(f"gc {time.monotonic():.6f} {took:.6f} {info.get('generation')}\n")

    gc.callbacks.append(collected)


def trace_lines(path: str) -> None:
    """LINE_TRACE (module doc): time every line's messages and handlers."""
    import django

    django.setup()
    from phone.worker.line import Line

    out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    cls: Any = Line
    post, handle, presence = cls.post, cls._handle, cls._presence_check

    def post_(self: Any, item: Any) -> None:
        out.write(f"post {type(item).__name__} {time.monotonic():.6f}\n")
        post(self, item)

    async def handle_(self: Any, item: Any) -> None:
        start = time.monotonic()
        try:
            await handle(self, item)
        finally:
            out.write(f"handle {type(item).__name__} {start:.6f} {time.monotonic():.6f}\n")

    async def presence_(self: Any) -> None:
        start = time.monotonic()
        await presence(self)
        out.write(f"presence {start:.6f} {time.monotonic():.6f}\n")

    cls.post, cls._handle, cls._presence_check = post_, handle_, presence_

    # And the steps of call setup inside those handlers: `step <name> <start> <end>`.
    import inspect

    from phone.worker import host, media

    def timed(owner: Any, name: str, *, static: bool = False) -> None:
        inner = getattr(owner, name)
        if inspect.iscoroutinefunction(inner):

            async def wrapped(*args: Any, **kwargs: Any) -> Any:
                start = time.monotonic()
                try:
                    return await inner(*args, **kwargs)
                finally:
                    out.write(f"step {name} {start:.6f} {time.monotonic():.6f}\n")
        else:

            def wrapped(*args: Any, **kwargs: Any) -> Any:
                start = time.monotonic()
                try:
                    return inner(*args, **kwargs)
                finally:
                    out.write(f"step {name} {start:.6f} {time.monotonic():.6f}\n")

        setattr(owner, name, staticmethod(wrapped) if static else wrapped)

    for name in ("_sip", "route_media", "_open", "broadcast", "_record_id", "_place_call"):
        timed(cls, name)
    timed(host.SipWorkerHost, "send")
    timed(media.CallMedia, "open", static=True)  # before the host takes it as open_media

    # The database thread's side: wall and CPU time of each job the line gives it.
    from phone.worker import db

    def db_timed(name: str) -> None:
        inner = getattr(db, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            start, cpu = time.monotonic(), time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                took = time.thread_time() - cpu
                out.write(f"db {name} {start:.6f} {time.monotonic():.6f} cpu {took:.6f}\n")

        setattr(db, name, wrapped)

    for name in ("open_call", "display_name_for", "lines_for"):
        db_timed(name)


def main() -> None:
    path = os.environ.get("SIP_TIMES")
    if path:
        install(path)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    if os.environ.get("LINE_TRACE"):
        trace_lines(os.environ["LINE_TRACE"])
    from django.core.management import execute_from_command_line

    if path:
        watch_loop(path)
    else:
        use_loop()

    execute_from_command_line([str(ROOT / "manage.py"), "sipworker"])


if __name__ == "__main__":
    main()
