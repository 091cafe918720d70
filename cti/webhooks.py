"""Call events to tenants' webhook URLs: signed JSON, sent by Celery with retries (issue 5).

Signature (Stripe-style, so receivers find it familiar):
    X-BrowserPhone-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
Receivers recompute it and refuse stale timestamps; the event name is also in
X-BrowserPhone-Event and every delivery has a stable X-BrowserPhone-Delivery id.
"""

import hashlib
import hmac
import json
import time

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from cti.models import WebhookDelivery, WebhookEndpoint


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, tolerance: int = 300, now=None) -> bool:
    """What a receiver does; used by our tests and documented for CRM vendors."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return hmac.compare_digest(expected, header)


def encode(payload: dict) -> bytes:
    return json.dumps(payload, cls=DjangoJSONEncoder, ensure_ascii=False, sort_keys=True).encode()


def queue_call_event(tenant_id: int, event: str, payload: dict) -> list[WebhookDelivery]:
    """Log a delivery per interested endpoint and queue each once the transaction commits.

    Called on the call path (phone.actions, on the sipworker's database thread): after the
    commit it only queues a task (portal.background), it never waits for a receiver, and a
    broker that cannot take the task is logged, not raised into the call."""
    from cti.tasks import deliver_webhook

    # Deliveries run in parallel and each is retried on its own schedule, so a receiver may get
    # call.ended before call.answered; occurred_at (microseconds, unlike the encoder's other
    # times) is what it orders one call's events by.
    occurred_at = timezone.now().isoformat()
    deliveries = []
    for endpoint in WebhookEndpoint.objects.filter(tenant_id=tenant_id, active=True):
        if not endpoint.wants(event):
            continue
        body = {
            "event": event,
            "tenant": endpoint.tenant.code,
            "occurred_at": occurred_at,
            **payload,
        }
        delivery = WebhookDelivery.objects.create(
            tenant_id=tenant_id, endpoint=endpoint, event=event,
            payload=json.loads(encode(body)),
        )  # fmt: skip
        transaction.on_commit(lambda pk=delivery.pk: deliver_webhook.delay(pk), robust=True)
        deliveries.append(delivery)
    return deliveries
