"""Background work (design.md §2): Celery tasks, never on the call path nor inside a request.

With REDIS_URL, `celery -A portal worker` processes consume the tasks from Redis.

In the embedded default (no REDIS_URL) a real Celery worker runs inside this process, on the
in-memory broker, in daemon threads: a consumer thread, a timer thread for countdowns and a small
thread pool (BACKGROUND_THREADS) that runs the tasks.  It is started by the first task published
in the process (`before_task_publish`), so any process that queues work (daphne with the
embedded sipworker, a management command, a test) also runs it, and a process that never queues
anything never starts threads.

Why a Celery worker rather than our own executor: the tasks, their retry policy (countdown,
backoff, max retries) and their progress reports (celery-progress) are the same code and the same
Celery machinery in both deployments; an own executor would need its own retry scheduler and
its own result store, tested separately.  Why threads rather than a prefork pool: a pool would
fork the web process with its event loop, sockets and the sipworker inside.  What the threads
share with the call path is the GIL: tasks give it up while they wait on the network or the
database, and the long CPU-bound one (a CSV import) yields between chunks.

What the embedded worker cannot do: survive the process.  Tasks waiting in the in-memory
broker (a webhook retry due in 30 s) are lost when the process stops; their delivery log rows
stay "pending".  Deployments that need more run Redis and `celery worker`.
"""

import logging
import os
import socket
import threading

from celery import signals
from django.conf import settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_thread: threading.Thread | None = None
_ready = threading.Event()
_external_worker = False  # this process is a `celery worker`: it needs no embedded one


def embedded() -> bool:
    """True when this process runs its own Celery worker (the embedded default)."""
    return bool(getattr(settings, "BACKGROUND_EMBEDDED_WORKER", False)) and not _external_worker


def ensure_worker() -> None:
    """Start the embedded worker unless it runs already (or this deployment has none).
    Returns at once: the broker keeps what is published until the consumer is up."""
    global _thread
    if not embedded():
        return
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        _ready.clear()
        _thread = threading.Thread(target=_run, name="celery-embedded", daemon=True)
        _thread.start()


def wait_until_ready(timeout: float = 10.0) -> bool:
    """For tests and benchmarks: block until the embedded worker consumes."""
    ensure_worker()
    return _ready.wait(timeout)


def _run() -> None:
    """The worker's own thread.  The WorkController is built here, not in the thread that
    published: Celery's Django fixup closes the database connections of the thread that starts
    a worker, which must not be a request's or the sipworker's."""
    from celery.worker import WorkController

    from portal.celery import app

    class EmbeddedWorker(WorkController):
        def on_consumer_ready(self, consumer):
            _ready.set()

    try:
        worker = EmbeddedWorker(
            app=app,
            hostname=f"embedded-{os.getpid()}@{socket.gethostname()}",
            pool="threads",
            concurrency=settings.BACKGROUND_THREADS,
            # One worker, nobody to talk to: no heartbeats, no startup sync (and no remote
            # control: CELERY_WORKER_ENABLE_REMOTE_CONTROL).
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
        )
        log.info("embedded Celery worker started (%d threads)", settings.BACKGROUND_THREADS)
        # No signal handlers are installed: that is celery.apps.worker.Worker's job (the
        # `celery worker` command), and only the main thread may install them.
        worker.start()
    except Exception:
        log.exception("the embedded Celery worker stopped")


@signals.before_task_publish.connect(dispatch_uid="portal.background.start_on_publish")
def _start_on_publish(**kwargs) -> None:
    ensure_worker()


@signals.worker_init.connect(dispatch_uid="portal.background.note_worker")
def _note_worker(**kwargs) -> None:
    global _external_worker
    if threading.current_thread() is not _thread:
        _external_worker = True
