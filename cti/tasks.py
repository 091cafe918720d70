import time

import requests
from celery import shared_task
from django.utils import timezone

from cti.models import WebhookDelivery
from cti.webhooks import encode, signature

TIMEOUT_SECONDS = 10
MAX_RETRIES = 6  # with backoff 1, 2, 4, 8, 16, 32 s (capped at 10 minutes)


class DeliveryFailed(Exception):
    """The receiver answered, but not with 2xx: worth trying again later."""


@shared_task(
    bind=True,
    autoretry_for=(DeliveryFailed, requests.ConnectionError, requests.Timeout),
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=MAX_RETRIES,
)
def deliver_webhook(self, delivery_id: int) -> str:
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    if delivery.status == WebhookDelivery.Status.DELIVERED:
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
    last_try = self.request.retries >= MAX_RETRIES
    try:
        response = requests.post(
            delivery.endpoint.url, data=body, headers=headers, timeout=TIMEOUT_SECONDS,
            allow_redirects=False,
        )  # fmt: skip
    except (requests.ConnectionError, requests.Timeout) as exc:
        _record_failure(delivery, None, repr(exc), final=last_try)
        raise
    if 200 <= response.status_code < 300:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.response_code = response.status_code
        delivery.error = ""
        delivery.delivered_at = timezone.now()
        delivery.save()
        return delivery.status
    _record_failure(delivery, response.status_code, response.text[:500], final=last_try)
    if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
        return delivery.status  # the receiver refuses this request; retrying will not help
    raise DeliveryFailed(f"HTTP {response.status_code}")


def _record_failure(delivery, code, error, *, final):
    delivery.response_code = code
    delivery.error = error
    if final or (code is not None and 400 <= code < 500 and code not in (408, 429)):
        delivery.status = WebhookDelivery.Status.FAILED
    delivery.save()
