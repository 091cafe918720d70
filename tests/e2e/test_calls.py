"""Real calls from the page: Chromium ↔ daphne (embedded sipworker) ↔ Kamailio ↔ baresip."""

import time

import pytest
from playwright.sync_api import expect

from phone.models import CallRecord
from portal.models import SipAccount
from tests.e2e.conftest import login, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_it_registers_the_page_and_lights_the_lamp(cast, on_pbx, portal_server, page):
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    assert on_pbx.wait_registered("1001", timeout=5)


def test_it_unregisters_once_the_last_page_is_closed(cast, on_pbx, portal_server, page):
    # Earlier tests' servers were killed and may have left their contacts: watch this one's.
    stale = {c.uri for c in on_pbx.registered("1001")}
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    ours = {c.uri for c in on_pbx.registered("1001")} - stale
    assert ours
    page.close()
    deadline = time.monotonic() + 10  # the server's grace period is 2 s in these tests
    while ours & {c.uri for c in on_pbx.registered("1001")}:
        assert time.monotonic() < deadline, "1001 is still registered after the page closed"
        time.sleep(0.3)


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
    # The customer screen-pop opens on ring (the default), filled for this caller (seed 5-2).
    expect(page.get_by_test_id("cti-panel")).to_be_visible(timeout=5000)
    expect(page.get_by_test_id("cti-number")).to_have_text("1003")
    expect(page.get_by_test_id("cti-called")).to_have_text("1001")
    page.get_by_test_id("call-btn").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=10000)
    carol.wait_event("CALL_ESTABLISHED", timeout=10)
    page.wait_for_timeout(1000)
    carol.hangup()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "idle", timeout=10000)
    record = CallRecord.objects.get(user=cast.alice)
    assert record.direction == "in" and record.remote_number == "1003"
    assert record.answered_at is not None
    assert record.answered_by == cast.alice and record.answered_by_name == "Alice"


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


def test_it_keeps_the_call_when_the_tab_closes_and_still_writes_history(
    cast, on_pbx, portal_server, page, make_baresip, make_tone
):
    bob = make_baresip("1002", auto_answer=True, tone=make_tone(700, seconds=40))
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    page.get_by_test_id("dial-input").fill("1002")
    page.get_by_test_id("call-btn").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=15000)
    page.close()
    bob.wait_event("CALL_ESTABLISHED", timeout=5)
    # The browser is gone; the call is not (the far end would see CALL_CLOSED otherwise).
    with pytest.raises(TimeoutError):
        bob.wait_event("CALL_CLOSED", timeout=2)
    bob.hangup()
    deadline = time.monotonic() + 10
    # The row is opened when the call starts; wait for it to be completed.
    while not CallRecord.objects.filter(user=cast.alice, ended_at__isnull=False).exists():
        assert time.monotonic() < deadline, "no history row after the far end hung up"
        time.sleep(0.2)
    record = CallRecord.objects.get(user=cast.alice)
    assert record.direction == "out" and record.talk_seconds >= 2


def test_it_rings_only_the_most_recently_opened_tab(
    cast, on_pbx, portal_server, page, make_baresip
):
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    newer = page.context.new_page()
    newer.goto(f"{portal_server}/")
    expect(newer.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    carol = make_baresip("1003")
    carol.dial("1001")
    for tab in (page, newer):
        expect(tab.get_by_test_id("status")).to_have_attribute(
            "data-state", "ringing", timeout=15000
        )
    wait_until(newer, "window.browserPhone.ui.ringer !== null", timeout=5)
    assert page.evaluate("window.browserPhone.ui.ringer === null")
    newer.get_by_test_id("call-btn").click()
    for tab in (page, newer):
        expect(tab.get_by_test_id("status")).to_have_attribute(
            "data-state", "incall", timeout=10000
        )
    carol.hangup()
    expect(newer.get_by_test_id("status")).to_have_attribute("data-state", "idle", timeout=10000)


def test_it_dials_when_a_crm_asks_through_click_to_dial(
    cast, on_pbx, portal_server, page, make_baresip
):
    import json
    import urllib.request

    from cti.tokens import create_token

    _token, key = create_token(cast.tenant_a, "CRM")
    bob = make_baresip("1002", auto_answer=True, tone_hz=700)
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    request = urllib.request.Request(
        f"{portal_server}/cti/api/dial/",
        data=json.dumps({"user": "alice", "number": "1002"}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=15000)
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    page.get_by_test_id("hangup-btn").click()
    bob.wait_event("CALL_CLOSED", timeout=10)


def test_it_shows_the_phonebook_name_and_logs_a_rejected_call(
    cast, on_pbx, portal_server, page, make_baresip
):
    from phone.models import Contact, Phonebook

    book = Phonebook.objects.create(tenant=cast.tenant_a, name="共有")
    Contact.objects.create(tenant=cast.tenant_a, phonebook=book, name="オフィス花子", number="1003")
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    carol = make_baresip("1003")
    carol.dial("1001")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "ringing", timeout=15000)
    # The display shows the phonebook's name, not the number (seed 3-3 ②).
    expect(page.get_by_test_id("display")).to_have_text("オフィス花子")
    page.get_by_test_id("hangup-btn").click()  # 拒否
    carol.wait_event("CALL_CLOSED", timeout=10)
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "idle", timeout=10000)
    page.wait_for_timeout(500)
    record = CallRecord.objects.get(user=cast.alice)
    assert record.direction == "rejected" and record.remote_name == "オフィス花子"
    assert record.answered_at is None
