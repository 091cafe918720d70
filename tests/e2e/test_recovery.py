"""The embedded default survives a kill -9 of its server: the page reconnects by itself, shows
the interrupted call ended, and history keeps that call (closed as "worker restart")."""

import time

import pytest
from playwright.sync_api import expect

from phone.models import CallRecord
from tests.e2e.conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_it_keeps_the_call_in_history_and_reconnects_after_the_server_is_killed(
    cast, on_pbx, portal, page, make_baresip
):
    bob = make_baresip("1002", auto_answer=True, tone_hz=700)
    login(page, portal.url, "alice", cast.password)
    lamp = page.get_by_test_id("reg-lamp")
    expect(lamp).to_have_attribute("data-state", "ok", timeout=15000)
    page.get_by_test_id("dial-input").fill("1002")
    page.get_by_test_id("call-btn").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=15000)
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    # The row exists while the call goes on: a crash cannot lose it.
    row = CallRecord.objects.get(user=cast.alice)
    assert row.worker and row.ended_at is None

    portal.kill()
    expect(lamp).to_have_attribute("data-state", "pending", timeout=5000)
    portal.start()
    restarted = time.monotonic()
    expect(lamp).to_have_attribute("data-state", "ok", timeout=30000)
    print(f"\nserver restarted -> page registered again after {time.monotonic() - restarted:.2f} s")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "idle", timeout=5000)
    row.refresh_from_db()
    assert row.ended_at is not None and row.end_reason == "worker restart" and not row.worker
    assert row.direction == "out" and row.talk_seconds is not None


def test_a_stopped_server_ends_its_calls_unregisters_and_exits(
    cast, on_pbx, portal, page, make_baresip
):
    """SIGTERM (a service manager's stop, a deploy): the embedded sipworker stops with the
    server. The far end gets its BYE, history says the call ended, the PBX loses the binding,
    and the process exits: after a page had WebRTC media it used to hang until SIGKILL (aiortc's
    decoder threads are not daemons)."""
    bob = make_baresip("1002", auto_answer=True, tone_hz=700)
    # A binding an earlier test's killed server left behind stays until it expires.
    stale = {c.uri for c in on_pbx.registered("1001")}
    login(page, portal.url, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    assert on_pbx.wait_registered("1001", timeout=5)
    ours = {c.uri for c in on_pbx.registered("1001")} - stale
    assert ours
    page.get_by_test_id("dial-input").fill("1002")
    page.get_by_test_id("call-btn").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=15000)
    bob.wait_event("CALL_ESTABLISHED", timeout=10)

    stopped = time.monotonic()
    portal.proc.terminate()
    code = portal.proc.wait(timeout=15)  # raises if it hangs
    print(f"\nSIGTERM -> exited after {time.monotonic() - stopped:.2f} s")
    portal.logs[-1].seek(0)
    assert code == 0, portal.logs[-1].read()[-4000:]
    bob.wait_event("CALL_CLOSED", timeout=5)
    assert not ours & {c.uri for c in on_pbx.registered("1001")}
    row = CallRecord.objects.get(user=cast.alice)
    assert row.ended_at is not None and row.end_reason == "local-bye"
