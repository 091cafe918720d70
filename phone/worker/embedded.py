"""The embedded default: the sipworker host runs inside the web process (no Redis, one process).

Started with the ASGI application (`StartsEmbeddedWorker` wraps it in portal.asgi): the first
request or WebSocket of the process starts the host on the server's own event loop, so the same
in-memory channel layer carries consumer ↔ host messages, and a restarted server closes the
calls its previous run left open before any page re-attaches. With REDIS_URL set the host runs
in `manage.py sipworker` processes instead and this module never imports the SIP or media
stack.
"""

import asyncio
import logging
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
    _hosts[loop] = loop.create_task(SipWorkerHost().run(), name="sipworker")


class StartsEmbeddedWorker:
    """ASGI middleware: the embedded sipworker starts with the application, not with a page."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] in ("http", "websocket"):
            ensure_started()
        return await self.app(scope, receive, send)
