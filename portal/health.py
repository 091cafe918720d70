"""Health and metrics endpoints, and the sipworkers' "I am alive" record they read.

    GET /healthz        200 {"status": "ok", "checks": {...}} or 503 {"status": "fail", ...}:
                        the database answers, a message goes round the channel layer, and at
                        least one sipworker beat within SIPWORKER_ALIVE_SECONDS.
    GET /healthz/live   200 while the web process serves requests (a container's own probe:
                        it must not fail because a sipworker or the database is down).
    GET /metrics        Prometheus text format (portal.metrics), only from METRICS_ALLOWED_NETWORKS
                        or with "Authorization: Bearer METRICS_TOKEN"; 403 otherwise.

The sipworkers already tell every page they are alive through the channel layer (the group
phone.signalling.protocol.WORKERS_GROUP); a web request cannot listen to a group cheaply, so each
beat also lands in Django's cache (Redis with REDIS_URL, else this process's memory, where the
embedded sipworker runs): `worker_alive(worker_id)` from the worker's heartbeat loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from portal import metrics

log = logging.getLogger(__name__)

ALIVE_KEY = "sipworker:alive:"  # + worker id → {"at": unix time, "metrics_id": ...}
INDEX_KEY = "sipworker:index"  # → [worker ids] that may be alive
CHECK_SECONDS = 2.0  # each check of /healthz gives up after this long

# -- the sipworker side --------------------------------------------------------------------------

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health-beat")
_inflight: Future[None] | None = None


def worker_alive(worker_id: str) -> None:
    """Record that the sipworker `worker_id` is alive; call it on every heartbeat.

    Returns at once: the cache write runs on a thread of its own, never on the worker's event
    loop (a slow Redis must not delay SIP or media), and a beat is skipped while the previous
    write is still under way. Never raises."""
    global _inflight
    if _inflight is not None and not _inflight.done():
        return
    with contextlib.suppress(RuntimeError):  # interpreter shutting down
        _inflight = _executor.submit(record_worker_alive, worker_id, time.time())


def record_worker_alive(worker_id: str, at: float) -> None:
    """The write behind worker_alive (synchronous; tests call it directly)."""
    try:
        ttl = max(10, settings.SIPWORKER_ALIVE_SECONDS * 4)
        cache.set(ALIVE_KEY + worker_id, {"at": at, "metrics_id": metrics.process_id()}, ttl)
        index = cache.get(INDEX_KEY) or []
        if worker_id not in index:
            # Workers that are gone drop out of the index whenever a new one joins it. Two
            # workers joining at once may overwrite each other: each re-adds itself next beat.
            known = cache.get_many([ALIVE_KEY + w for w in index])
            index = [w for w in index if ALIVE_KEY + w in known] + [worker_id]
            cache.set(INDEX_KEY, index, None)
        if settings.SIPWORKER_HEARTBEAT_FILE:
            Path(settings.SIPWORKER_HEARTBEAT_FILE).touch()
    except Exception:
        log.warning("sipworker %s: could not record the heartbeat", worker_id, exc_info=True)


def worker_gone(worker_id: str) -> None:
    """The sipworker stops cleanly: it no longer counts as alive, nor do its gauges."""
    try:
        cache.delete(ALIVE_KEY + worker_id)
    except Exception:
        log.warning("sipworker %s: could not clear the heartbeat", worker_id, exc_info=True)
    metrics.process_exit()


def live_workers(now: float | None = None) -> dict[str, dict[str, Any]]:
    """Worker id → its last record, for the sipworkers that beat within SIPWORKER_ALIVE_SECONDS."""
    now = time.time() if now is None else now
    index = cache.get(INDEX_KEY) or []
    records = cache.get_many([ALIVE_KEY + w for w in index])
    horizon = now - settings.SIPWORKER_ALIVE_SECONDS
    return {
        key.removeprefix(ALIVE_KEY): record
        for key, record in records.items()
        if isinstance(record, dict) and record.get("at", 0) >= horizon
    }


# -- /healthz ------------------------------------------------------------------------------------


def _database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {}


async def _channel_layer() -> dict[str, Any]:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    channel = await layer.new_channel("healthz.")
    token = secrets.token_hex(8)
    await layer.send(channel, {"type": "healthz.ping", "token": token})
    message = await layer.receive(channel)
    if message.get("token") != token:
        raise RuntimeError("the channel layer returned another message")
    return {}


def _sipworkers() -> dict[str, Any]:
    alive = live_workers()
    if not alive:
        raise LookupError(f"no sipworker heartbeat within {settings.SIPWORKER_ALIVE_SECONDS}s")
    return {"alive": len(alive)}


async def _check(run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            details = await run()
    except Exception as exc:
        # The kind of failure only: messages can carry host names, users or DSNs.
        log.warning("health check failed: %s: %s", type(exc).__name__, exc)
        result: dict[str, Any] = {"ok": False, "error": type(exc).__name__}
    else:
        result = {"ok": True, **details}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


@never_cache
@require_GET
async def healthz(request: HttpRequest) -> HttpResponse:
    checks = {
        # The request's own database thread and connection, as a sync view would use (Django
        # closes a connection that failed at the end of the request; the next probe reconnects).
        "database": await _check(sync_to_async(_database)),
        "channel_layer": await _check(_channel_layer),
        "sipworkers": await _check(sync_to_async(_sipworkers, thread_sensitive=False)),
    }
    ok = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "fail", "checks": checks}, status=200 if ok else 503
    )


@never_cache
@require_GET
def healthz_live(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


# -- /metrics ------------------------------------------------------------------------------------


def client_address(request: HttpRequest) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Who is asking: REMOTE_ADDR, or behind TRUSTED_PROXY_COUNT proxies the entry the outermost
    one appended to X-Forwarded-For (as for login throttling, portal.settings). Otherwise a
    proxy in an allowed network would let the whole internet in."""
    raw = request.META.get("REMOTE_ADDR", "")
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [a for a in forwarded if a]
        if len(forwarded) < proxies:
            return None
        raw = forwarded[-proxies]
    try:
        return ipaddress.ip_address(raw)
    except ValueError:
        return None


def metrics_allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
            return True
    client = client_address(request)
    if client is None:
        return False
    for network in settings.METRICS_ALLOWED_NETWORKS:
        try:
            if client in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:
            log.warning("METRICS_ALLOWED_NETWORKS: %r is not a network", network)
    return False


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    if not metrics_allowed(request):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    alive: list[str] | None = None
    if metrics.multiprocess_dir():
        try:
            alive = [str(r.get("metrics_id")) for r in live_workers().values()]
        except Exception:
            log.warning("metrics: sipworker heartbeats unreadable; keeping every gauge")
    return HttpResponse(generate_latest(metrics.registry(alive)), content_type=CONTENT_TYPE_LATEST)
