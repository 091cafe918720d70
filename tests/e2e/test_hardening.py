"""Issue 10 in the real browser and the real server: a strict Content-Security-Policy that no page
breaks, a stored javascript: CTI URL that never runs, and daphne answering an overlong address."""

import socket
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from cti.models import CtiSettings
from tests.e2e.conftest import htmx_settled, login

pytestmark = pytest.mark.e2e


def watch_csp(page) -> list[str]:
    """Every Content-Security-Policy violation Chromium reports on this page, across navigations."""
    violations = []

    def on_console(message):
        text = message.text
        if "Content Security Policy" in text or "Refused to" in text:
            violations.append(f"{page.url}: {text}")

    page.on("console", on_console)
    return violations


def test_it_sends_a_strict_csp_that_no_page_breaks(cast, portal_server, page):
    violations = watch_csp(page)
    response = page.goto(f"{portal_server}/login/")
    policy = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"

    login(page, portal_server, "admin_a", cast.password)
    assert "content-security-policy" in page.request.get(f"{portal_server}/").headers
    # Every side panel loads and works (htmx fragments, the moved inline handlers).
    page.get_by_test_id("phonebook-toggle").click()
    page.get_by_test_id("contact-add").wait_for()
    htmx_settled(page)
    page.get_by_test_id("contact-add").click()
    expect(page.get_by_test_id("contact-form")).to_be_visible()
    page.get_by_test_id("contact-cancel").click()  # was an onclick attribute
    expect(page.get_by_test_id("contact-form")).to_have_count(0)
    page.get_by_test_id("history-toggle").click()
    expect(page.get_by_test_id("history-panel")).to_be_visible()
    page.get_by_test_id("settings-toggle").click()
    for tab in ("devices", "cti", "other", "account"):
        page.get_by_test_id(f"settings-tab-{tab}").click()
        expect(page.get_by_test_id("settings-panel")).to_have_attribute("data-tab", tab)
    page.get_by_test_id("external-toggle").click()
    page.get_by_test_id("cti-toggle").click()
    # Stand-alone pages, the CRM and the admin.
    for path in ("/phonebook/", "/history/", "/settings/", "/cti/crm/customers/",
                 "/cti/crm/directory/", "/cti/crm/receptions/", "/cti/crm/receptions/new/",
                 "/admin/", "/admin/cti/customer/", "/admin/cti/customer/add/"):  # fmt: skip
        assert page.goto(f"{portal_server}{path}").status == 200, path
    # The language menu submits on change (was an onchange attribute).
    page.goto(f"{portal_server}/")
    page.get_by_test_id("language-select").select_option("en")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.wait_for_timeout(300)  # let late console messages arrive
    assert violations == []


def test_it_never_runs_a_stored_javascript_cti_url(cast, portal_server, page):
    CtiSettings.objects.create(
        tenant=cast.tenant_a, user=cast.alice, target="url", show_on="answer",
        customer_list_url="https://crm.example.jp/?tel={number}",
    )  # fmt: skip
    # Forced into the database around validation, as an old row or a raw update could be.
    CtiSettings.objects.filter(user=cast.alice).update(
        customer_list_url="javascript:localStorage.setItem('pwned','1');alert('pwned')//{number}"
    )
    dialogs, console = [], []
    page.context.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.context.on("console", lambda message: console.append(message.text))
    login(page, portal_server, "alice", cast.password)
    # What the call path does on a ring: ask for the caller's popup.
    page.evaluate(
        "document.dispatchEvent(new CustomEvent('phone:cti', {detail: {number: '0311112222'}}))"
    )
    button = page.get_by_test_id("cti-customers-btn")
    expect(button).to_be_visible()
    assert not (button.get_attribute("href") or "").lower().startswith("javascript")
    button.click()
    page.wait_for_timeout(1500)
    assert dialogs == []
    assert page.evaluate("localStorage.getItem('pwned')") is None
    assert not any("pwned" in text for text in console)

    # And were a javascript: link ever to reach the page, the policy refuses to run it.
    page.evaluate(
        """() => {
          const link = document.createElement("a");
          link.href = "javascript:localStorage.setItem('pwned2','1')";
          link.textContent = "x";
          link.dataset.testid = "injected-link";
          document.body.append(link);
        }"""
    )
    page.get_by_test_id("injected-link").click()
    page.wait_for_timeout(500)
    assert page.evaluate("localStorage.getItem('pwned2')") is None
    assert any("Content Security Policy" in text for text in console)


@pytest.mark.parametrize("size", [10_000, 100_000])
def test_it_answers_an_overlong_address_instead_of_failing(portal_server, size):
    # 10 KB: past any link the portal makes, within what daphne (Twisted) hands to Django;
    # 100 KB: past Twisted's own line limit (portal/http_limits.py makes it answer too).
    address = urlsplit(portal_server)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        request = f"GET /login/?q={'a' * size} HTTP/1.1\r\nHost: {address.netloc}\r\n"
        sock.sendall((request + "Connection: close\r\n\r\n").encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 414 ")
