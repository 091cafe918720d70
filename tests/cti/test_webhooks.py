"""Webhooks: signed JSON to a real local HTTP receiver, retried with backoff by Celery.

What one delivery does, run inline (Celery eager) so that no worker is needed; the background
path itself (threads, a `celery worker` process, timed retries) is tests/cti/test_webhook_delivery.
"""

import json
import re
import socket
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from cti import tasks
from cti.models import WebhookDelivery, WebhookEndpoint
from cti.webhooks import queue_call_event, signature, verify
from portal.urlsafety import HostNotResolved

SECRET = "whsec-test-123"


class Receiver:
    """A real HTTP server on 127.0.0.1 answering with the queued status codes in turn."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), body))
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _receivers_on_loopback_allowed(settings):
    # The test receivers listen on 127.0.0.1, which webhooks may only reach when allowed.
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]


@pytest.fixture(autouse=True)
def _deliveries_run_inline():
    from portal.celery import app

    before, app.conf.task_always_eager = app.conf.task_always_eager, True
    yield
    app.conf.task_always_eager = before


@pytest.fixture
def receiver():
    made = []

    def _make(*statuses):
        made.append(Receiver(statuses))
        return made[-1]

    yield _make
    for r in made:
        r.close()


@pytest.fixture
def no_backoff_sleep(monkeypatch):
    """Eager Celery runs retries at once; record the countdowns the task chose instead."""
    countdowns = []
    original = tasks.deliver_webhook.retry

    def retry(*args, **kwargs):
        countdowns.append(kwargs.get("countdown"))
        return original(*args, **kwargs)

    monkeypatch.setattr(tasks.deliver_webhook, "retry", retry)
    return countdowns


def endpoint(tenant, url, events=()):
    return WebhookEndpoint.objects.create(
        tenant=tenant, url=url, secret=SECRET, events=list(events)
    )


def test_it_signs_and_delivers_call_events(cast, receiver, django_capture_on_commit_callbacks):
    hook = receiver(200)
    endpoint(cast.tenant_a, hook.url)
    with django_capture_on_commit_callbacks(execute=True):
        queue_call_event(cast.tenant_a.pk, "call.ringing", {"call_id": "c1", "from": "0312345678"})
    headers, body = hook.requests[0]
    assert headers["X-BrowserPhone-Event"] == "call.ringing"
    assert verify(SECRET, headers["X-BrowserPhone-Signature"], body)
    assert not verify("wrong-secret", headers["X-BrowserPhone-Signature"], body)
    assert not verify(SECRET, headers["X-BrowserPhone-Signature"], body + b" ")
    event = json.loads(body)
    occurred_at = event.pop("occurred_at")  # e.g. 2026-11-26T09:00:00.123456+00:00
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", occurred_at)
    assert abs((timezone.now() - datetime.fromisoformat(occurred_at)).total_seconds()) < 60
    assert event == {
        "event": "call.ringing", "tenant": "tenant-a", "call_id": "c1", "from": "0312345678",
    }  # fmt: skip
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 1, 200)


def test_it_retries_with_backoff_until_the_receiver_recovers(
    cast, receiver, no_backoff_sleep, django_capture_on_commit_callbacks
):
    hook = receiver(500, 503, 200)
    endpoint(cast.tenant_a, hook.url)
    with django_capture_on_commit_callbacks(execute=True):
        queue_call_event(cast.tenant_a.pk, "call.ended", {"call_id": "c2"})
    assert len(hook.requests) == 3
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    # Exponential backoff with equal jitter: 0.5-1 s, then 1-2 s.
    assert len(no_backoff_sleep) == 2
    assert 0.5 <= no_backoff_sleep[0] <= 1 and 1 <= no_backoff_sleep[1] <= 2


def test_it_gives_up_after_the_last_retry_and_logs_the_failure(
    cast, receiver, no_backoff_sleep, django_capture_on_commit_callbacks
):
    hook = receiver(*([500] * 20))
    endpoint(cast.tenant_a, hook.url)
    with django_capture_on_commit_callbacks(execute=True):
        queue_call_event(cast.tenant_a.pk, "call.answered", {"call_id": "c3"})
    assert len(hook.requests) == tasks.MAX_RETRIES + 1
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.response_code) == ("failed", 500)
    assert delivery.error == "HTTP 500"  # never the receiver's page


def test_it_does_not_retry_a_refusal(cast, receiver, django_capture_on_commit_callbacks):
    hook = receiver(410)
    endpoint(cast.tenant_a, hook.url)
    with django_capture_on_commit_callbacks(execute=True):
        queue_call_event(cast.tenant_a.pk, "call.ended", {"call_id": "c4"})
    assert len(hook.requests) == 1
    assert WebhookDelivery.objects.get().status == "failed"


def test_it_sends_only_the_events_an_endpoint_wants_and_only_its_tenants(
    cast, receiver, django_capture_on_commit_callbacks
):
    a, b = receiver(), receiver()
    endpoint(cast.tenant_a, a.url, events=["call.ended"])
    endpoint(cast.tenant_b, b.url)
    with django_capture_on_commit_callbacks(execute=True):
        queue_call_event(cast.tenant_a.pk, "call.ringing", {"call_id": "c5"})
        queue_call_event(cast.tenant_a.pk, "call.ended", {"call_id": "c5"})
    assert [json.loads(body)["event"] for _h, body in a.requests] == ["call.ended"]
    assert b.requests == []


def test_it_checks_the_url_again_right_before_it_calls_it(
    cast, receiver, settings, django_capture_on_commit_callbacks
):
    # Saved while allowed; by the time of the delivery the host counts as internal.
    hook = receiver(200)
    endpoint(cast.tenant_a, hook.url)
    settings.WEBHOOK_ALLOWED_HOSTS = []
    with django_capture_on_commit_callbacks(execute=True):
        queue_call_event(cast.tenant_a.pk, "call.ended", {"call_id": "c6"})
    assert hook.requests == []
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("failed", 1)  # refused, not retried
    assert delivery.error.startswith("refused: 127.0.0.1 ")  # the reason, in any language


def test_it_retries_a_host_that_does_not_resolve_like_a_failed_connection(
    cast, no_backoff_sleep, monkeypatch, django_capture_on_commit_callbacks
):
    def unresolved(url):
        raise HostNotResolved("no such host")

    monkeypatch.setattr(tasks, "check_delivery_url", unresolved)
    endpoint(cast.tenant_a, "https://crm.example.jp/hook")
    with django_capture_on_commit_callbacks(execute=True):
        queue_call_event(cast.tenant_a.pk, "call.ended", {"call_id": "c7"})
    delivery = WebhookDelivery.objects.get()
    assert len(no_backoff_sleep) == tasks.MAX_RETRIES
    assert (delivery.status, delivery.attempts) == ("failed", tasks.MAX_RETRIES + 1)
    assert delivery.error == "host not resolved"


def test_it_logs_a_failed_connection_by_its_kind(
    cast, no_backoff_sleep, django_capture_on_commit_callbacks
):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    endpoint(cast.tenant_a, f"http://127.0.0.1:{port}/hook")
    with django_capture_on_commit_callbacks(execute=True):
        queue_call_event(cast.tenant_a.pk, "call.ended", {"call_id": "c8"})
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.error) == ("failed", "ConnectionRefusedError")
    assert len(no_backoff_sleep) == tasks.MAX_RETRIES


def test_it_refuses_stale_signatures():
    body = b"{}"
    header = signature(SECRET, 1_000_000, body)
    assert verify(SECRET, header, body, now=1_000_100)
    assert not verify(SECRET, header, body, now=1_000_000 + 301)
    assert not verify(SECRET, "garbage", body)


def test_it_keeps_the_secret_encrypted_at_rest(cast):
    from django.db import connection

    hook = endpoint(cast.tenant_a, "https://example.invalid/")
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM cti_webhookendpoint WHERE id = %s", [hook.pk])
        assert SECRET not in cursor.fetchone()[0]
