"""Phone-page features around calls, in the real browser against the real server and PBX:
settings that apply without a reload, permission guidance, desktop notifications, the
external CTI popup (and a blocked one), and webhooks on real call events."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect

from cti.models import CtiSettings, WebhookEndpoint
from cti.webhooks import verify
from tests.e2e.conftest import htmx_settled, login, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def lamp(page, state, timeout=15000):
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", state, timeout=timeout)


def test_it_applies_a_new_sip_password_without_a_reload(cast, on_pbx, portal_server, page):
    login(page, portal_server, "alice", cast.password)
    lamp(page, "ok")
    page.get_by_test_id("settings-toggle").click()
    page.get_by_test_id("acct-password").fill("not-the-password")
    htmx_settled(page)  # the form posts through htmx once wired
    page.get_by_test_id("acct-save").click()
    expect(page.get_by_test_id("settings-saved")).to_be_visible()
    lamp(page, "fail")  # re-registered at once with the new (wrong) password
    page.get_by_test_id("acct-password").fill("pw1001")
    htmx_settled(page)
    page.get_by_test_id("acct-save").click()
    lamp(page, "ok")


def test_it_explains_a_blocked_microphone(cast, on_pbx, portal_server, page):
    page.add_init_script(
        "navigator.mediaDevices.getUserMedia = () =>"
        " Promise.reject(new DOMException('blocked', 'NotAllowedError'));"
    )
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("permission-help")).to_be_visible(timeout=10000)
    expect(page.get_by_test_id("permission-help")).to_contain_text("マイク")
    lamp(page, "ok")  # signalling still works: calls ring, only sound is missing


def test_it_notifies_the_desktop_of_an_incoming_call(
    cast, on_pbx, portal_server, page, make_baresip
):
    # Record notifications instead of showing them (headless Chromium has no desktop).
    page.add_init_script(
        """
        window.shownNotifications = [];
        window.Notification = class {
          static permission = "granted";
          static requestPermission() { return Promise.resolve("granted"); }
          constructor(title, options) { window.shownNotifications.push({title, ...options}); }
        };
        """
    )
    login(page, portal_server, "alice", cast.password)
    lamp(page, "ok")
    expect(page.get_by_test_id("notify-help")).to_be_hidden()
    carol = make_baresip("1003")
    carol.dial("1001")
    wait_until(page, "window.shownNotifications.length > 0", timeout=15)
    shown = page.evaluate("window.shownNotifications[0]")
    # Who is calling, and which of our numbers they called (seed 3-3 ③).
    assert shown["title"] == "1003" and "1001" in shown["body"]
    carol.hangup()


def test_it_opens_the_external_crm_on_ring_or_explains_a_blocked_popup(
    cast, on_pbx, portal_server, page, make_baresip
):
    CtiSettings.objects.create(
        tenant=cast.tenant_a,
        user=cast.alice,
        show_on="ring",
        target="url",
        reception_url=f"{portal_server}/cti/crm/receptions/new/?number={{number}}&to={{called}}",
    )
    login(page, portal_server, "alice", cast.password)
    lamp(page, "ok")
    carol = make_baresip("1003")
    with page.context.expect_page(timeout=15000) as opened:
        carol.dial("1001")
    popup = opened.value
    popup.wait_for_load_state()
    assert "number=1003" in popup.url and "to=1001" in popup.url
    expect(popup.get_by_test_id("reception-number")).to_have_value("1003")
    carol.hangup()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "idle", timeout=10000)

    # Now with the browser blocking popups: the page says how to allow them (seed 5-2).
    page.evaluate("window.open = () => null")
    carol.dial("1001")
    expect(page.get_by_test_id("cti-popup-blocked")).to_be_visible(timeout=15000)
    carol.hangup()


class Receiver:
    def __init__(self):
        self.events = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.events.append((self.headers["X-BrowserPhone-Signature"], body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_it_sends_signed_webhooks_for_a_real_call(cast, on_pbx, portal_server, page, make_baresip):
    receiver = Receiver()
    WebhookEndpoint.objects.create(tenant=cast.tenant_a, url=receiver.url, secret="s3cret")
    login(page, portal_server, "alice", cast.password)
    lamp(page, "ok")
    carol = make_baresip("1003")
    carol.dial("1001")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "ringing", timeout=15000)
    page.get_by_test_id("call-btn").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=10000)
    carol.hangup()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "idle", timeout=10000)
    page.wait_for_timeout(1000)
    receiver.server.shutdown()
    # Deliveries run in parallel: arrival order is not promised, occurred_at orders them.
    received = sorted(
        (json.loads(body) for _sig, body in receiver.events), key=lambda e: e["occurred_at"]
    )
    assert [e["event"] for e in received] == ["call.ringing", "call.answered", "call.ended"]
    assert all(verify("s3cret", sig, body) for sig, body in receiver.events)
    ended = received[-1]
    assert ended["user"] == "alice" and ended["remote_number"] == "1003"
    assert ended["direction"] == "in"
