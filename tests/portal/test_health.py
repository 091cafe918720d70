"""/healthz, /healthz/live and /metrics (portal.health, portal.metrics).

/healthz is 503 until a sipworker's heartbeat is recorded (portal.health.worker_alive, called by
the worker every second) and 503 again once it is older than SIPWORKER_ALIVE_SECONDS. /metrics
is Prometheus text, only for allowed networks or the token; in multiprocess mode it merges the
values the sipworker and Celery processes wrote, leaving out the gauges of a dead worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.cache import cache
from prometheus_client.parser import text_string_to_metric_families

from portal import health, metrics

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


# -- /healthz ------------------------------------------------------------------------------------


def test_it_is_unhealthy_without_a_sipworker_heartbeat(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["channel_layer"]["ok"] is True
    assert body["checks"]["sipworkers"] == {
        "ok": False,
        "error": "LookupError",
        "ms": body["checks"]["sipworkers"]["ms"],
    }
    assert response["Cache-Control"].startswith("max-age=0")


def test_it_is_healthy_with_a_live_sipworker(client):
    health.record_worker_alive("host-a:41:cafe", time.time())
    response = client.get("/healthz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["sipworkers"]["alive"] == 1
    assert all(check["ok"] for check in body["checks"].values())


def test_it_counts_every_live_sipworker_and_forgets_a_silent_one(client, settings):
    settings.SIPWORKER_ALIVE_SECONDS = 5
    now = time.time()
    health.record_worker_alive("w1", now)
    health.record_worker_alive("w2", now - 1)
    health.record_worker_alive("w3", now - 30)  # stopped beating half a minute ago
    assert sorted(health.live_workers(now)) == ["w1", "w2"]
    assert client.get("/healthz").json()["checks"]["sipworkers"]["alive"] == 2

    health.worker_gone("w1")
    health.worker_gone("w2")
    assert client.get("/healthz").status_code == 503


def test_the_heartbeat_returns_at_once_and_writes_on_its_own_thread(client, tmp_path, settings):
    settings.SIPWORKER_HEARTBEAT_FILE = str(tmp_path / "alive")
    started = time.monotonic()
    health.worker_alive("w-async")
    assert time.monotonic() - started < 0.05
    assert health._inflight is not None
    health._inflight.result(timeout=5)
    assert "w-async" in health.live_workers()
    assert (tmp_path / "alive").exists()  # the container healthcheck reads its age
    assert client.get("/healthz").status_code == 200


def test_a_broken_cache_never_breaks_the_heartbeat(monkeypatch, caplog):
    def boom(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(cache, "set", boom)
    health.record_worker_alive("w-x", time.time())  # logged, not raised
    assert "could not record the heartbeat" in caplog.text


def test_it_reports_a_failed_check_by_kind_only(client, monkeypatch):
    def down():
        raise OSError("could not connect to server at db.internal:5432 as user 'browserphone'")

    monkeypatch.setattr(health, "_database", down)
    health.record_worker_alive("w1", time.time())
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"]["error"] == "OSError"
    assert b"db.internal" not in response.content


def test_liveness_needs_nothing_else(client):
    response = client.get("/healthz/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# -- /metrics ------------------------------------------------------------------------------------


def test_it_scrapes_the_metrics_from_an_allowed_network(client):
    metrics.registration_changed(None, "registering")
    metrics.registration_changed("registering", "registered")
    metrics.call_state_changed(None, "dialing")
    metrics.call_setup(0.3)
    metrics.set_leases(7)
    metrics.webhook_failed(503, final=False)
    metrics.webhook_failed(None, final=True)
    try:
        response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain; version=")
        found = samples(response.content.decode())
        assert found[("browserphone_registrations", (("state", "registered"),))] >= 1
        assert found[("browserphone_calls", (("state", "dialing"),))] >= 1
        assert found[("browserphone_call_setup_seconds_count", (("direction", "outgoing"),))] >= 1
        assert found[("browserphone_sipworker_leases", ())] == 7
        key = ("browserphone_webhook_failures_total", (("final", "false"), ("kind", "http_5xx")))
        assert found[key] >= 1
        key = ("browserphone_webhook_failures_total", (("final", "true"), ("kind", "connection")))
        assert found[key] >= 1
    finally:
        metrics.registration_changed("registered", None)
        metrics.call_state_changed("dialing", None)
        metrics.set_leases(0)


def test_a_meter_moves_one_thing_between_states(client):
    # Counted from what the gauge holds already: lines of earlier tests in this process (the
    # embedded sipworker on a test's own event loop) may still count in any state.
    def registrations(state: str) -> float:
        found = samples(client.get("/metrics").content.decode())
        return found.get(("browserphone_registrations", (("state", state),)), 0.0)

    before, failed_before = registrations("registered"), registrations("failed")
    meter = metrics.line_meter()
    meter.set("registering")
    meter.set("registered")
    meter.set("registered")  # no change, no double count
    assert registrations("registered") == before + 1
    meter.set("failed")
    assert registrations("registered") == before
    assert registrations("failed") == failed_before + 1
    meter.set(None)
    assert registrations("failed") == failed_before


def test_it_refuses_metrics_to_anyone_else(client, settings):
    settings.METRICS_TOKEN = ""
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 403
    assert b"browserphone" not in response.content


def test_the_token_opens_metrics_from_anywhere(client, settings):
    settings.METRICS_TOKEN = "s3cret-token-for-prometheus"
    outside = {"REMOTE_ADDR": "203.0.113.9"}
    assert client.get("/metrics", **outside).status_code == 403
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope", **outside)
    assert wrong.status_code == 403
    good = client.get(
        "/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token-for-prometheus", **outside
    )
    assert good.status_code == 200
    assert b"browserphone_registrations" in good.content


def test_behind_a_proxy_the_forwarded_client_counts_not_the_proxy(client, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    # The proxy (10.0.0.2) is in the allowed network; the client behind it is not.
    outside = client.get("/metrics", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert outside.status_code == 403
    inside = client.get("/metrics", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="10.1.2.3")
    assert inside.status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.2").status_code == 403  # no header


def test_bridge_cpu_is_a_share_of_a_core_per_call():
    metrics.sample_bridge_cpu(2)
    end = time.process_time() + 0.05
    while time.process_time() < end:  # burn some CPU
        pass
    per_call = metrics.sample_bridge_cpu(2)
    assert per_call is not None and 0 < per_call <= 0.5 + 0.01
    assert metrics.sample_bridge_cpu(0) == 0.0


# -- several processes -----------------------------------------------------------------------

WORKER = """
import json, sys
from portal import metrics
metrics.registration_changed(None, "registered")
metrics.registration_changed(None, "registered")
metrics.call_state_changed(None, "incall")
metrics.set_leases(int(sys.argv[1]))
metrics.call_setup(0.2)
metrics.webhook_failed(500, final=False)
print(json.dumps({"id": metrics.process_id()}))
"""


def run_process(directory: Path, *args: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    result = subprocess.run(
        [sys.executable, "-c", WORKER, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)["id"]


def test_metrics_of_other_processes_reach_the_scrape(client, tmp_path, monkeypatch):
    """Two sipworkers wrote their values to the shared directory; one died without stopping
    (no heartbeat, its files old): its gauges are left out, its counters still count."""
    alive = run_process(tmp_path, "3")
    dead = run_process(tmp_path, "5")
    assert alive != dead and "_" not in alive
    for path in tmp_path.glob(f"*_{dead}.db"):
        os.utime(path, (time.time() - 600, time.time() - 600))
    health.record_worker_alive("worker-alive", time.time())
    cache.set(health.ALIVE_KEY + "worker-alive", {"at": time.time(), "metrics_id": alive}, 60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    found = samples(client.get("/metrics").content.decode())
    assert found[("browserphone_registrations", (("state", "registered"),))] == 2
    assert found[("browserphone_calls", (("state", "incall"),))] == 1
    assert found[("browserphone_sipworker_leases", (("pid", alive),))] == 3
    assert ("browserphone_sipworker_leases", (("pid", dead),)) not in found
    # Counters and histograms are totals: a dead process's share stays in them.
    assert found[("browserphone_call_setup_seconds_count", (("direction", "outgoing"),))] == 2
    key = ("browserphone_webhook_failures_total", (("final", "false"), ("kind", "http_5xx")))
    assert found[key] == 2


def test_a_cleanly_stopped_worker_takes_its_gauges_along(client, tmp_path, monkeypatch):
    worker = run_process(tmp_path, "4")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    found = samples(client.get("/metrics").content.decode())
    assert found[("browserphone_sipworker_leases", (("pid", worker),))] == 4  # a new file counts

    monkeypatch.setattr(metrics, "process_id", lambda: worker)
    health.worker_gone("its-worker-id")
    found = samples(client.get("/metrics").content.decode())
    assert ("browserphone_sipworker_leases", (("pid", worker),)) not in found
    assert ("browserphone_registrations", (("state", "registered"),)) not in found
