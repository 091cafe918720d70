"""Webhooks are delivered in the background, never on the call path (issue 10, item 1).

- The embedded default (no REDIS_URL): a Celery worker in threads of this process; a receiver
  that accepts the connection and never answers does not slow a call down.
- With Redis: a real `celery -A portal worker` process on a throwaway redis-server.
- Every attempt is bounded as a whole; retries keep their backoff schedule.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from cti import tasks
from cti.models import WebhookDelivery, WebhookEndpoint
from cti.webhooks import queue_call_event, verify
from phone import actions
from phone.models import CallRecord
from phone.signalling import protocol
from phone.worker.host import SipWorkerHost
from portal import background
from tests.support.memsip import PBX, FarEnd, MemoryNetwork, Page
from tests.support.servers import database_url, free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec-background"
pytestmark = pytest.mark.django_db(transaction=True)  # the worker's threads read committed rows


class Blackhole:
    """A webhook receiver that accepts every connection and never answers a byte."""

    def __init__(self, trickle: float | None = None):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.connections: list[socket.socket] = []
        self.trickle = trickle  # or: answer one byte of a status line every `trickle` seconds
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _addr = self.server.accept()
            except OSError:
                return
            self.connections.append(conn)
            if self.trickle:
                threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        try:
            while True:
                conn.sendall(b"H")
                time.sleep(self.trickle)
        except OSError:
            return

    def close(self):
        self.server.close()
        for conn in self.connections:
            conn.close()


class Receiver:
    """A real HTTP receiver answering the queued status codes in turn; it notes when each
    request arrived."""

    def __init__(self, *statuses):
        self.statuses = list(statuses)
        self.requests: list[tuple[float, dict, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((time.monotonic(), dict(self.headers), body))
                self.send_response(outer.statuses.pop(0) if outer.statuses else 200)
                self.end_headers()
                self.wfile.write(b"<html>the receiver's own page</html>")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _loopback_receivers_allowed(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]


@pytest.fixture
def embedded_worker():
    """The embedded default's worker.  It lives on, as it would in daphne: retries of this
    test's deliveries find their rows gone and end."""
    assert background.embedded()
    assert background.wait_until_ready()


@pytest.fixture
def blackhole():
    hole = Blackhole()
    yield hole
    hole.close()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- the call path does not wait ------------------------------------------------------------------


@pytest.fixture
def hooked_tenant(cast, settings, blackhole):
    """Tenant A on the in-memory PBX, with every call event going to the blackhole."""
    settings.SIP_KEEPALIVE_SECONDS = 0  # no OPTIONS probes in memory: nothing answers them
    settings.SIPWORKER_RELEASE_SECONDS = 30
    cast.tenant_a.outbound_proxy = f"{PBX[0]}:{PBX[1]}"
    cast.tenant_a.save()
    WebhookEndpoint.objects.create(tenant=cast.tenant_a, url=blackhole.url, secret=SECRET)
    return cast.tenant_a


async def test_it_keeps_calls_ringing_answering_and_logging_while_a_webhook_never_answers(
    embedded_worker, hooked_tenant, blackhole, cast
):
    """The real line actor (SIP in memory): three calls in a row ring, are answered, end and are
    logged while every one of their nine webhook deliveries hangs on a receiver that never
    answers (inline, each would have held the call for at least ATTEMPT_SECONDS)."""
    net = MemoryNetwork()
    far = FarEnd.open(net, PBX)
    host = SipWorkerHost("sipworker-test")
    host.open_sip = net.open_sip
    page = await Page.open(host, cast.alice)
    await page.wait("calls")
    line = host.lines[cast.alice.pk]
    took = []
    try:
        for _ in range(3):
            started = time.monotonic()
            call_id = far.call(line.transport.local_addr)
            await page.wait("call", id=call_id, state="incoming", timeout=2)
            page.send(protocol.Answer(call_id))
            await page.wait("call", id=call_id, state="incall", timeout=2)
            far.execute(lambda now, call_id=call_id: far.ua.hangup(now, call_id))
            await page.wait("call", id=call_id, state="ended", timeout=2)
            row = await database_sync_to_async(CallRecord.objects.get)(sip_call_id=call_id)
            assert row.ended_at is not None and row.answered_at is not None and row.worker == ""
            took.append(time.monotonic() - started)
        deliveries = await database_sync_to_async(
            lambda: list(WebhookDelivery.objects.values_list("event", "status"))
        )()
    finally:
        page.close()
        await host.shutdown()
    assert sorted(deliveries) == sorted(
        [(event, "pending") for event in ("call.ringing", "call.answered", "call.ended") * 3]
    )
    assert blackhole.connections, "the deliveries were under way meanwhile"
    # Figures, not a benchmark: each whole call took a fraction of one delivery attempt.
    assert max(took) < tasks.ATTEMPT_SECONDS, took


def test_it_returns_from_logging_calls_at_once_from_many_threads(embedded_worker, cast, blackhole):
    """As the sipworker's database thread calls them: do_open_call / do_close_call (which
    queues call.ended for every endpoint) return while the receivers hang."""
    for _ in range(3):
        WebhookEndpoint.objects.create(tenant=cast.tenant_a, url=blackhole.url, secret=SECRET)
    durations: list[float] = []
    errors: list[BaseException] = []

    def calls(worker: int):
        from django.db import connection

        try:
            for n in range(5):
                started = time.monotonic()
                record_id = actions.do_open_call(
                    cast.alice.pk, "sipworker-test",
                    {"direction": "in", "remote_number": "0312345678",
                     "started_at": timezone.now(), "sip_call_id": f"t{worker}-{n}@test"},
                )  # fmt: skip
                actions.do_close_call(cast.alice.pk, record_id, {"ended_at": timezone.now()})
                durations.append(time.monotonic() - started)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=calls, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert CallRecord.objects.filter(worker="", ended_at__isnull=False).count() == 20
    assert WebhookDelivery.objects.filter(event="call.ended").count() == 60
    wait_for(lambda: blackhole.connections)  # the deliveries did start, and hang
    assert max(durations) < 1.0, sorted(durations)[-3:]


# --- each attempt is bounded as a whole -----------------------------------------------------------


@pytest.mark.parametrize("trickle", [None, 0.1], ids=["silent", "one-byte-at-a-time"])
def test_it_gives_up_an_attempt_after_its_time_limit(trickle):
    hole = Blackhole(trickle=trickle)
    try:
        started = time.monotonic()
        with pytest.raises(tasks.AttemptTimedOut):
            tasks.post(hole.url, b"{}", {"Content-Type": "application/json"}, limit=0.5)
        assert time.monotonic() - started < 2.0
        # A socket timeout alone would never fire for the trickle: each byte resets it.
    finally:
        hole.close()


def test_it_logs_a_timed_out_attempt_by_its_kind_and_retries_it(
    embedded_worker, cast, blackhole, monkeypatch
):
    monkeypatch.setattr(tasks, "ATTEMPT_SECONDS", 0.3)
    WebhookEndpoint.objects.create(tenant=cast.tenant_a, url=blackhole.url, secret=SECRET)
    [delivery] = queue_call_event(cast.tenant_a.pk, "call.ended", {"call_id": "slow"})
    wait_for(lambda: WebhookDelivery.objects.get(pk=delivery.pk).attempts >= 2)
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.error == "AttemptTimedOut"
    assert delivery.response_code is None


# --- backoff --------------------------------------------------------------------------------------


def test_it_retries_on_the_backoff_schedule(embedded_worker, cast):
    """503, 503, then 200: the second attempt comes 0.5-1 s after the first, the third 1-2 s
    after the second (exponential, equal jitter), timed by the worker, not by a sleep."""
    receiver = Receiver(503, 503, 200)
    try:
        WebhookEndpoint.objects.create(tenant=cast.tenant_a, url=receiver.url, secret=SECRET)
        [delivery] = queue_call_event(cast.tenant_a.pk, "call.ended", {"call_id": "c-backoff"})
        wait_for(lambda: WebhookDelivery.objects.get(pk=delivery.pk).status != "pending")
    finally:
        receiver.close()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 3, 200)
    first, second, third = (at for at, _headers, _body in receiver.requests)
    slack = 0.3  # the in-memory broker is polled every 50 ms, the timer ticks on its own
    assert 0.5 <= second - first <= 1.0 + slack, second - first
    assert 1.0 <= third - second <= 2.0 + slack, third - second


def test_it_keeps_only_the_status_never_the_receivers_page(embedded_worker, cast):
    receiver = Receiver(*([500] * 10))
    try:
        WebhookEndpoint.objects.create(tenant=cast.tenant_a, url=receiver.url, secret=SECRET)
        [delivery] = queue_call_event(cast.tenant_a.pk, "call.ended", {"call_id": "c-500"})
        wait_for(lambda: WebhookDelivery.objects.get(pk=delivery.pk).attempts >= 1)
    finally:
        receiver.close()
    delivery.refresh_from_db()
    assert (delivery.error, delivery.response_code) == ("HTTP 500", 500)


# --- with Redis: a real `celery worker` process ---------------------------------------------------


@pytest.mark.integration
def test_it_delivers_through_a_celery_worker_process_on_redis(cast, redis_url, tmp_path, settings):
    settings.BACKGROUND_EMBEDDED_WORKER = False  # this process only queues, as daphne does
    receiver = Receiver(200)
    log = open(tmp_path / "celery.log", "w+")  # noqa: SIM115
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
        "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool=solo",
         "--loglevel=INFO", "--without-mingle", "--without-gossip", "--without-heartbeat",
         "--hostname", f"test-{free_port()}@localhost"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        WebhookEndpoint.objects.create(tenant=cast.tenant_a, url=receiver.url, secret=SECRET)
        delivery = WebhookDelivery.objects.create(
            tenant=cast.tenant_a,
            endpoint=WebhookEndpoint.objects.get(),
            event="call.ringing",
            payload={"event": "call.ringing", "tenant": "tenant-a", "call_id": "redis-1"},
        )
        from portal.celery import app

        with app.connection_for_write(redis_url) as connection:
            tasks.deliver_webhook.apply_async((delivery.pk,), connection=connection)
        wait_for(lambda: receiver.requests, timeout=30)
        wait_for(lambda: WebhookDelivery.objects.get(pk=delivery.pk).status == "delivered")
    except BaseException:
        log.seek(0)
        print(log.read())
        raise
    finally:
        worker.terminate()
        worker.wait(15)
        log.close()
        receiver.close()
    _at, headers, body = receiver.requests[0]
    assert verify(SECRET, headers["X-BrowserPhone-Signature"], body)
    assert json.loads(body)["call_id"] == "redis-1"
