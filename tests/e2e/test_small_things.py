"""Small things users hit (issue 13, item 8), in the real browser against the real server:
deleting a contact asks first, the empty-list text goes when rows appear (and comes back), and a
tel: link in a CRM window dials on the phone page open in the same browser."""

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from cti.models import Customer, CustomerPhone
from phone.models import CallRecord, Contact, Phonebook
from phone.signalling.schema import server_message
from tests.e2e.conftest import RECORD_SENT, login, wait_until

pytestmark = pytest.mark.e2e


def open_phone(page, server, cast):
    login(page, server, "alice", cast.password)
    wait_until(page, "window.browserPhone && window.browserPhone.ui.synced")
    page.evaluate(RECORD_SENT)


def test_it_asks_before_deleting_a_contact_and_keeps_the_empty_text_true(cast, portal_server, page):
    open_phone(page, portal_server, cast)
    page.get_by_test_id("phonebook-toggle").click()
    empty = page.get_by_test_id("phonebook-empty")
    expect(empty).to_be_visible()
    expect(empty).to_have_text("連絡先はまだ登録されていません。")

    # Adding a contact: the text goes as soon as the new row is there.
    page.get_by_test_id("contact-add").click()
    expect(page.get_by_test_id("contact-form")).to_be_visible()
    expect(empty).to_be_hidden()
    form = page.get_by_test_id("contact-form")
    form.locator("input[name=name]").fill("オフィス花子")
    form.locator("input[name=number]").fill("03-1234-5678")
    page.get_by_test_id("contact-save").click()
    row = page.get_by_test_id("contact-row")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("03-1234-5678")
    expect(empty).to_be_hidden()

    # Delete asks with the page's dialog; No keeps the contact.
    row.get_by_test_id("contact-delete").click()
    dialog = page.get_by_test_id("confirm-dialog")
    expect(dialog).to_be_visible()
    question = "オフィス花子 を電話帳から削除しますか?"
    expect(page.get_by_test_id("confirm-message")).to_have_text(question)
    page.get_by_test_id("confirm-no").click()
    expect(dialog).to_be_hidden()
    expect(row).to_have_count(1)
    assert Contact.objects.filter(name="オフィス花子").exists()

    # Yes deletes it, and the empty text is back.
    row.get_by_test_id("contact-delete").click()
    page.get_by_test_id("confirm-yes").click()
    expect(row).to_have_count(0)
    expect(empty).to_be_visible()
    assert not Contact.objects.filter(name="オフィス花子").exists()


def test_an_open_history_panel_shows_a_new_call_without_the_empty_text(cast, portal_server, page):
    open_phone(page, portal_server, cast)
    page.get_by_test_id("history-toggle").click()
    expect(page.get_by_test_id("history-empty")).to_be_visible()
    CallRecord.objects.create(
        tenant=cast.tenant_a, user=cast.alice, direction="in", remote_number="+81312345678",
        started_at=timezone.now(), ended_at=timezone.now(),
    )  # fmt: skip
    # What the server sends when it logged a call (phone.actions → consumer).
    message = server_message("settings.changed", what="history")
    page.evaluate("m => window.browserPhone.socket.emit(m.type, m)", message)
    expect(page.get_by_test_id("history-row")).to_have_count(1)
    expect(page.get_by_test_id("history-row")).to_contain_text("03-1234-5678")
    expect(page.get_by_test_id("history-empty")).to_have_count(0)


def test_a_tel_link_in_a_crm_window_dials_on_the_phone_page(cast, portal_server, page):
    customer = Customer.objects.create(tenant=cast.tenant_a, name="株式会社テスト")
    CustomerPhone.objects.create(customer=customer, number="0359890925", label="代表")
    Phonebook.objects.create(tenant=cast.tenant_a, owner=cast.alice, name="個別")
    open_phone(page, portal_server, cast)

    crm = page.context.new_page()  # another tab of the same browser, as the popup opens
    crm.goto(f"{portal_server}/cti/crm/customers/")
    link = crm.get_by_test_id("crm-tel")
    expect(link).to_have_text("03-5989-0925")
    expect(link).to_have_attribute("href", "tel:0359890925")
    link.click()
    expect(crm.get_by_test_id("confirm-message")).to_have_text("株式会社テストに発信しますか?")
    crm.get_by_test_id("confirm-yes").click()
    wait_until(page, "window.sent.some((m) => m.type === 'dial')")
    assert page.evaluate("window.sent") == [{"type": "dial", "number": "0359890925"}]
    expect(crm.get_by_test_id("page-notice")).to_contain_text("発信します")

    # Without a phone page the CRM says so (and nothing dials).
    page.close()
    crm.reload()
    crm.get_by_test_id("crm-tel").click()
    crm.get_by_test_id("confirm-yes").click()
    expect(crm.get_by_test_id("page-notice")).to_contain_text("開いていません", timeout=5000)
