"""Webhook delivery: one attempt per task run, retried by Celery with backoff (cti.webhooks).

Every attempt is bounded as a whole (ATTEMPT_SECONDS: DNS, connect, TLS, request, status line and
headers together; a socket timeout alone bounds each read, and a receiver answering a byte at a
time would hold the worker for ever), checks the URL again right before it connects (what a host
name resolves to may have changed since it was saved: portal.urlsafety) and logs a short reason,
never what the receiver sent back.
"""

import http.client
import random
import socket
import ssl
import threading
import time
from contextlib import suppress
from urllib.parse import urlsplit

from celery import shared_task
from django.utils import timezone

from cti.models import WebhookDelivery, short_reason
from cti.webhooks import encode, signature
from portal import metrics
from portal.urlsafety import HostNotResolved, UnsafeURL, check_delivery_url

ATTEMPT_SECONDS = 5.0
MAX_RETRIES = 6  # 7 attempts, the retries after about 1, 2, 4, 8, 16, 32 s
BACKOFF_MAX_SECONDS = 600


class AttemptTimedOut(TimeoutError):
    """The attempt as a whole took longer than ATTEMPT_SECONDS."""


def backoff(retries: int) -> float:
    """Seconds before the next attempt after `retries` retries: exponential (1, 2, 4 … capped at
    10 minutes) with "equal jitter", between half and all of it, so that many deliveries failing
    at once do not all come back at the same instant, and none comes back sooner than half the
    schedule (Celery's own full jitter may retry at once)."""
    ceiling = min(BACKOFF_MAX_SECONDS, 2**retries)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def post(url: str, body: bytes, headers: dict[str, str], *, limit: float) -> int:
    """POST `body` to `url` and return the status code, all within `limit` seconds, or raise
    AttemptTimedOut (or the OSError / HTTPException of a failed connection).

    The request runs in a thread of its own that we stop waiting for at the deadline; its socket
    is then shut down, which ends a send or read it was blocked in at once (a connect or a TLS
    handshake ends at its own socket timeout, a second later).
    """
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname or ""  # an IPv6 literal without its brackets
    port = parts.port or (443 if parts.scheme == "https" else 80)  # given, so never parsed
    # Each socket operation may take a little longer than the whole attempt: the deadline below
    # is what ends a slow attempt; the socket timeout only ends the thread we stopped waiting for
    # should its socket outlive the shutdown (during a TLS handshake).
    per_operation = limit + 1.0
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            host, port, timeout=per_operation, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=per_operation)
    outcome: dict[str, object] = {}

    def attempt() -> None:
        try:
            connection.request("POST", path, body=body, headers=headers)
            outcome["status"] = connection.getresponse().status  # the body is never read
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=attempt, name="webhook-attempt", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        sock = connection.sock
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        raise AttemptTimedOut(f"no answer within {limit:g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["status"]  # type: ignore[return-value]


@shared_task(bind=True, max_retries=MAX_RETRIES, ignore_result=True)
def deliver_webhook(self, delivery_id: int) -> str:
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None:
        return "gone"  # deleted with its endpoint meanwhile
    if delivery.status != WebhookDelivery.Status.PENDING:
        return delivery.status
    body = encode(delivery.payload)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "BrowserPhone-Webhook/1",
        "X-BrowserPhone-Event": delivery.event,
        "X-BrowserPhone-Delivery": str(delivery.pk),
        "X-BrowserPhone-Signature": signature(delivery.endpoint.secret, int(time.time()), body),
    }
    delivery.attempts += 1
    try:
        check_delivery_url(delivery.endpoint.url)
        status = post(delivery.endpoint.url, body, headers, limit=ATTEMPT_SECONDS)
    except HostNotResolved:
        # Often temporary (DNS): retried like a connection that failed.
        return _retry_or_give_up(self, delivery, None, "host not resolved")
    except UnsafeURL as exc:
        # The host now resolves inside the network: never called, never retried.
        _record_failure(delivery, None, f"refused: {exc}", final=True)
        return delivery.status
    except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, garbage
        return _retry_or_give_up(self, delivery, None, type(exc).__name__)
    if 200 <= status < 300:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.response_code = status
        delivery.error = ""
        delivery.delivered_at = timezone.now()
        _save(delivery)
        return delivery.status
    if 400 <= status < 500 and status not in (408, 429):
        # The receiver refuses this request; retrying will not help.
        _record_failure(delivery, status, f"HTTP {status}", final=True)
        return delivery.status
    return _retry_or_give_up(self, delivery, status, f"HTTP {status}")


def _retry_or_give_up(task, delivery: WebhookDelivery, code: int | None, reason: str) -> str:
    last_try = task.request.retries >= MAX_RETRIES
    _record_failure(delivery, code, reason, final=last_try)
    if last_try:
        return delivery.status
    # Celery queues the task again with this countdown (a timer in the worker, not a sleep).
    raise task.retry(countdown=backoff(task.request.retries))


def _record_failure(delivery: WebhookDelivery, code: int | None, reason: str, *, final: bool):
    """Log a short reason only: the receiver's body may be a page from a machine the tenant
    should not read (WebhookDelivery.save caps and escapes it as well)."""
    metrics.webhook_failed(code, final=final)
    delivery.response_code = code
    delivery.error = reason
    if final:
        delivery.status = WebhookDelivery.Status.FAILED
    _save(delivery)


def _save(delivery: WebhookDelivery) -> None:
    """An UPDATE of this attempt's columns only, and none if the row was deleted meanwhile
    (save() would INSERT it again)."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=delivery.status,
        attempts=delivery.attempts,
        response_code=delivery.response_code,
        error=short_reason(delivery.error),  # as WebhookDelivery.save() keeps it
        delivered_at=delivery.delivered_at,
    )
