"""Small screens (issue 13, item 6): every page and panel fits a 360 px wide phone without
horizontal scrolling, with keys big enough to touch (44 px), and still looks right on a laptop.

Each state is saved as a screenshot under the test's tmp path (look at them after a change:
`pytest tests/e2e/test_layout.py --basetemp=/tmp/layout`)."""

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from cti.models import Customer, CustomerContact, CustomerPhone, Reception
from phone.models import CallRecord, Contact, LineButton, Phonebook
from phone.signalling.schema import server_message
from tests.e2e.conftest import login, wait_until

pytestmark = pytest.mark.e2e

SIZES = {"phone": (360, 740), "laptop": (1366, 768)}
TOUCH_PX = 44
PANELS = ["phonebook", "history", "settings", "external", "cti"]
SETTINGS_TABS = ["account", "devices", "cti", "other"]

FITS = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
# What sticks out on the right, for the failure message.
WIDEST = """() => {
  const width = document.documentElement.clientWidth;
  return [...document.querySelectorAll("body *")]
    .filter((el) => el.getBoundingClientRect().right > width + 0.5 && el.getClientRects().length)
    .slice(0, 8)
    .map((el) => `${el.tagName.toLowerCase()}.${el.className}[${el.dataset.testid || ""}]`
      + ` right=${Math.round(el.getBoundingClientRect().right)}`);
}"""


@pytest.fixture
def content(cast):
    """Enough rows that every panel and CRM page has something to lay out, with long texts."""
    now = timezone.now()
    book = Phonebook.objects.create(tenant=cast.tenant_a, owner=cast.alice, name="個別")
    for n, (name, kana, number) in enumerate(
        [
            ("オフィス太郎 (本社内線/総務部)", "オフィスタロウ", "9220"),
            ("株式会社テスト 代表", "カブシキガイシャテスト", "0359890925"),
            ("オフィス花子", "オフィスハナコ", "09044110011"),
        ]
    ):
        Contact.objects.create(
            tenant=cast.tenant_a, phonebook=book, name=name, kana=kana, number=number
        )
        CallRecord.objects.create(
            tenant=cast.tenant_a, user=cast.alice, direction=["out", "in", "missed"][n],
            remote_number=number, remote_name=name, called_number="0312345678",
            answered_by_name="Alice" if n < 2 else "", started_at=now - timedelta(hours=n),
            answered_at=now - timedelta(hours=n) if n < 2 else None,
            ended_at=now - timedelta(hours=n) + timedelta(seconds=75),
        )  # fmt: skip
    customer = Customer.objects.create(
        tenant=cast.tenant_a, name="株式会社テストホールディングス 東日本営業本部",
        kana="カブシキガイシャテスト", owner1=cast.bob, owner2=cast.admin_a, notes="月末締め",
    )  # fmt: skip
    CustomerPhone.objects.create(customer=customer, number="0359890925", label="代表")
    CustomerPhone.objects.create(customer=customer, number="09044110011", label="携帯")
    CustomerContact.objects.create(
        tenant=cast.tenant_a, customer=customer, name="営業 山田太郎", kana="ヤマダタロウ",
        department="東日本営業本部 第二営業部", number="0312340000",
    )  # fmt: skip
    Reception.objects.create(
        tenant=cast.tenant_a, customer=customer, caller_number="0359890925",
        taken_by=cast.alice, memo="折り返しお願いします。見積書の件で、明日の午前中に" * 3,
    )  # fmt: skip
    for position, (kind, number, label) in enumerate(
        [("line", "0312345678", "本社代表"), ("onetouch", "1002", "ボブ"), ("vm_start", "", "")],
        start=1,
    ):
        LineButton.objects.create(
            tenant=cast.tenant_a, user=cast.alice, position=position, kind=kind,
            number=number, label=label,
        )  # fmt: skip
    return {"customer": customer}


def check(page, shots, name):
    """Screenshot, then: nothing wider than the viewport (collected, so that one run shows
    every page that does not fit)."""
    path = shots.dir / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if not page.evaluate(FITS):
        shots.overflows.append(f"{name} scrolls sideways: {page.evaluate(WIDEST)} ({path})")
    return path


@dataclass
class Shots:
    dir: Path
    overflows: list = field(default_factory=list)


def touch_sizes(page, selector):
    return page.evaluate(
        """(selector) => [...document.querySelectorAll(selector)]
             .filter((el) => el.getClientRects().length)
             .map((el) => [el.dataset.testid || el.textContent.trim(),
                           Math.round(el.getBoundingClientRect().width),
                           Math.round(el.getBoundingClientRect().height)])""",
        selector,
    )


def emit_calls(page):
    """Two calls in the list (one held, one ringing), as the server would send them."""
    base = {
        "remote_name": "", "called": "0312345678", "called_display": "03-1234-5678",
        "pending": None, "reason": "",
        "answered_at": None, "transfer": None, "line": "", "ring": "", "park": None,
    }  # fmt: skip
    for call in (
        {**base, "id": "c1", "state": "held", "direction": "out", "held": True,
         "remote": "0359890925", "remote_display": "03-5989-0925",
         "remote_name": "株式会社テストホールディングス 東日本営業本部",
         "answered_at": timezone.now().isoformat()},
        {**base, "id": "c2", "state": "incoming", "direction": "in", "held": False,
         "remote": "09044110011", "remote_display": "090-4411-0011"},
    ):  # fmt: skip
        message = server_message("call", **call)
        page.evaluate("m => window.browserPhone.socket.emit(m.type, m)", message)


@pytest.mark.parametrize("size", SIZES)
def test_it_fits_every_page_and_panel_on_the_screen(
    cast, content, portal_server, browser, tmp_path, size
):
    width, height = SIZES[size]
    shots = Shots(tmp_path / size)
    shots.dir.mkdir()
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{portal_server}/login/")
        check(page, shots, "login")
        login(page, portal_server, "alice", cast.password)
        wait_until(page, "window.browserPhone && window.browserPhone.ui.synced")
        check(page, shots, "phone")

        # Keys a finger presses: at least 44 px both ways.
        small = [
            each
            for each in touch_sizes(page, ".key, .call-btn, .dial-clear, .toggles button")
            if each[1] < TOUCH_PX or each[2] < TOUCH_PX
        ]
        if small:
            shots.overflows.append(f"too small to touch: {small}")

        for name in PANELS:
            page.get_by_test_id(f"{name}-toggle").click()
            if name == "phonebook":
                expect(page.get_by_test_id("contact-row")).to_have_count(3)
            elif name == "history":
                expect(page.get_by_test_id("history-row")).to_have_count(3)
            elif name == "settings":
                expect(page.get_by_test_id("settings-panel")).to_be_visible()
            check(page, shots, f"panel-{name}")
            if name == "settings":
                for tab in SETTINGS_TABS[1:]:
                    page.get_by_test_id(f"settings-tab-{tab}").click()
                    expect(page.get_by_test_id("settings-panel")).to_have_attribute("data-tab", tab)
                    check(page, shots, f"panel-settings-{tab}")
            if name == "phonebook":
                page.get_by_test_id("contact-add").click()
                expect(page.get_by_test_id("contact-form")).to_be_visible()
                check(page, shots, "panel-phonebook-add")
        page.get_by_test_id("cti-toggle").click()  # close the last one

        emit_calls(page)
        expect(page.get_by_test_id("call-row")).to_have_count(2)
        check(page, shots, "phone-two-calls")

        customer = content["customer"]
        for name, path in [
            ("crm-customers", "/cti/crm/customers/"),
            ("crm-customer", f"/cti/crm/customers/{customer.pk}/"),
            ("crm-directory", "/cti/crm/directory/"),
            ("crm-receptions", "/cti/crm/receptions/"),
            ("crm-reception-new", "/cti/crm/receptions/new/?number=0359890925"),
            ("page-phonebook", "/phonebook/"),
            ("page-history", "/history/"),
            ("page-settings", "/settings/?tab=other"),
        ]:
            page.goto(f"{portal_server}{path}")
            check(page, shots, name)
    finally:
        context.close()
    assert not shots.overflows, "\n".join(shots.overflows)
    assert not errors
