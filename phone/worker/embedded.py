"""The embedded default: the sipworker host runs inside the web process (no Redis, one process).

Started with the ASGI application (`StartsEmbeddedWorker` wraps it in portal.asgi): the first
request or WebSocket of the process starts the host on the server's own event loop, so the same
in-memory channel layer carries consumer ↔ host messages, and a restarted server closes the
calls its previous run left open before any page re-attaches. With REDIS_URL set the host runs
in `manage.py sipworker` processes instead and this module never imports the SIP or media
stack.
"""

import asyncio
import contextlib
import logging
import sys
import weakref
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)
_hosts: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]]" = (
    weakref.WeakKeyDictionary()
)


def ensure_started() -> None:
    if not settings.SIPWORKER_EMBEDDED:
        return
    loop = asyncio.get_running_loop()
    task = _hosts.get(loop)
    if task is not None and not task.done():
        return
    from phone.worker.host import SipWorkerHost

    log.info("starting the embedded sipworker host")
    host = SipWorkerHost()
    _hosts[loop] = task = loop.create_task(host.run(), name="sipworker")
    _stop_with_the_server(host, task)


# Long enough for every line's un-REGISTER (they stop together, 0.2-2 s each: Line.stop) and
# the media to close; short of a service manager's stop timeout.
STOP_SECONDS = 5.0


def _stop_with_the_server(host: Any, task: "asyncio.Task[None]") -> None:
    """Under daphne, stop the host before the server's loop stops, as `manage.py sipworker`
    does on SIGTERM: lines send their un-REGISTERs and the pages' peer connections close.
    Without it the process never exits after SIGTERM once a page has had WebRTC media: each
    aiortc receiver runs a decoder thread that is not a daemon and only ends when its peer
    connection closes, and Python's exit waits for such threads forever."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not hasattr(reactor, "addSystemEventTrigger"):
        return  # not under Twisted (a test's own loop): whoever runs the loop stops the host
    from twisted.internet.defer import Deferred

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        try:
            await asyncio.wait_for(host.shutdown(), STOP_SECONDS)
        except Exception:
            log.exception("the embedded sipworker did not stop cleanly")
        await _finish_other_tasks(STOP_SECONDS)

    # "before" triggers that return a Deferred hold the shutdown until it fires (daphne stops
    # its application instances the same way).
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromFuture(asyncio.ensure_future(stop()))
    )


class StartsEmbeddedWorker:
    """ASGI middleware: the embedded sipworker starts with the application, not with a page."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] in ("http", "websocket"):
            ensure_started()
        return await self.app(scope, receive, send)


async def _finish_other_tasks(timeout: float) -> None:
    """Cancel the tasks still running and let them finish, as asyncio.run does before it
    closes its loop; daphne's loop just stops. The pages' peer connections just closed, and
    a task they woke (an asyncio.Queue.get after its put) but that never ran again is closed
    at interpreter exit instead: CPython 3.11 then formats the repr of its Future after the
    asyncio module is gone and the process dies with SIGSEGV (seen, core dump, in
    tests/e2e/test_recovery.py)."""
    current = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for other in rest:
        other.cancel()
    if rest:
        await asyncio.wait(rest, timeout=timeout)
