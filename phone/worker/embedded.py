"""The embedded default: the sipworker host runs inside the web process (no Redis, one process).

Started by the first phone page that connects, on the server's own event loop, so the same
in-memory channel layer carries consumer ↔ host messages. With REDIS_URL set, the host runs in
`manage.py sipworker` processes instead and this does nothing.
"""

import asyncio
import logging
import weakref

from django.conf import settings

log = logging.getLogger(__name__)
_hosts: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = (
    weakref.WeakKeyDictionary()
)


def ensure_started() -> None:
    if not settings.SIPWORKER_EMBEDDED:
        return
    from phone.worker.host import SipWorkerHost

    loop = asyncio.get_running_loop()
    task = _hosts.get(loop)
    if task is not None and not task.done():
        return
    log.info("starting the embedded sipworker host")
    _hosts[loop] = loop.create_task(SipWorkerHost().run(), name="sipworker")
