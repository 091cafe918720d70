"""Real calls from the page: Chromium ↔ daphne (embedded sipworker) ↔ Kamailio ↔ baresip."""

import pytest
from playwright.sync_api import expect

from phone.models import CallRecord
from portal.models import SipAccount
from tests.e2e.conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_it_registers_the_page_and_lights_the_lamp(cast, on_pbx, portal_server, page):
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    assert on_pbx.wait_registered("1001", timeout=5)


def test_it_shows_a_red_lamp_and_the_reason_for_a_wrong_password(cast, on_pbx, portal_server, page):
    account = SipAccount.objects.get(user=cast.alice)
    account.password = "wrong"
    account.save()
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "fail", timeout=15000)
    expect(page.get_by_test_id("reg-reason")).to_contain_text("403")


def test_it_calls_out_and_hangs_up_and_writes_history(
    cast, on_pbx, portal_server, page, make_baresip
):
    bob = make_baresip("1002", auto_answer=True, tone_hz=700)
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    page.get_by_test_id("key-1").click()
    page.keyboard.type("002")
    page.get_by_test_id("call-btn").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=15000)
    expect(page.get_by_test_id("status")).to_have_text("通話中")
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    page.wait_for_timeout(1500)
    page.get_by_test_id("hangup-btn").click()
    bob.wait_event("CALL_CLOSED", timeout=10)
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "idle", timeout=10000)
    record = CallRecord.objects.get(user=cast.alice)
    assert record.direction == "out" and record.remote_number == "1002"
    assert record.talk_seconds is not None and record.talk_seconds >= 1


def test_it_rings_for_an_incoming_call_and_answers_with_the_call_button(
    cast, on_pbx, portal_server, page, make_baresip
):
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    carol = make_baresip("1003", tone_hz=700)
    carol.dial("1001")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "ringing", timeout=15000)
    expect(page.get_by_test_id("status")).to_have_text("着信中")
    expect(page.get_by_test_id("display")).to_have_text("1003")
    page.get_by_test_id("call-btn").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=10000)
    carol.wait_event("CALL_ESTABLISHED", timeout=10)
    page.wait_for_timeout(1000)
    carol.hangup()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "idle", timeout=10000)
    record = CallRecord.objects.get(user=cast.alice)
    assert record.direction == "in" and record.remote_number == "1003"
    assert record.answered_at is not None


def test_it_logs_a_missed_call_when_the_caller_gives_up(
    cast, on_pbx, portal_server, page, make_baresip
):
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    carol = make_baresip("1003")
    carol.dial("1001")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "ringing", timeout=15000)
    carol.hangup()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "idle", timeout=10000)
    page.wait_for_timeout(500)
    record = CallRecord.objects.get(user=cast.alice)
    assert record.direction == "missed" and record.answered_at is None
