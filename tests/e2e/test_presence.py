"""Colleague lamps, 代理応答 and 応答不可 (issue 13) in Chromium against the real server, PBX and
an outside phone (our UA, tests/e2e/far_end.py). The pages' fake microphones play 1000 Hz, the
outside phone 700 Hz."""

import pytest
from playwright.sync_api import expect

from phone.models import CallRecord, Contact, LineButton, Phonebook
from tests.e2e.conftest import ANALYSE, login, wait_until
from tests.support import analysis
from tests.support.tones import write_tone

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PAGE_TONE = 1000
LAMP = '[data-testid="presence-lamp"][data-extension="1002"]'

# Every state the lamps of 1002 take in the page, in order, without repeats (a MutationObserver:
# no polling can miss a short state).
WATCH_LAMPS = """() => {
  window.lampStates = [];
  const record = (state) => {
    if (window.lampStates[window.lampStates.length - 1] !== state) window.lampStates.push(state);
  };
  new MutationObserver((changes) => changes.forEach((c) => {
    if (c.target.matches?.('[data-testid="presence-lamp"][data-extension="1002"]')) {
      record(c.target.dataset.state);
    }
  })).observe(document.body, { subtree: true, attributes: true, attributeFilter: ["data-state"] });
}"""


def browser_args(folder):
    wav = write_tone(folder / "mic.wav", PAGE_TONE, 60, rate=48000)
    return [
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]


@pytest.fixture
def office(cast, office):
    """The office (alice and bob on the test PBX, one park = pickup group); bob is in the
    tenant's phonebook and on a one-touch button of alice's pad."""
    book = Phonebook.objects.create(tenant=cast.tenant_a, name="社内")
    Contact.objects.create(tenant=cast.tenant_a, phonebook=book, name="Bob", number="1002")
    LineButton.objects.create(
        tenant=cast.tenant_a, user=cast.alice, kind="onetouch", number="1002", label="Bob"
    )
    return book


def open_page(browser, server, user, password):
    context = browser.new_context(viewport={"width": 1200, "height": 850})
    page = context.new_page()
    page.set_default_timeout(10_000)
    login(page, server, user, password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    wait_until(page, "document.body.dataset.media === 'connected'", timeout=15)
    return page


def open_phonebook(page, book):
    page.get_by_test_id("phonebook-toggle").click()
    page.locator("#phonebook-panel").wait_for()
    page.evaluate(
        "(url) => window.htmx.ajax('GET', url, {target: '#phonebook-panel', swap: 'outerHTML'})",
        f"/phonebook/?book={book.pk}",
    )
    expect(page.locator(f"#phonebook-panel {LAMP}")).to_have_count(1)


def test_a_colleagues_lamp_follows_their_call_and_alice_picks_up_a_ringing_call(
    cast, office, portal_server, browser, far_phone, tmp_path
):
    bob = open_page(browser, portal_server, "bob", cast.password)
    alice = open_page(browser, portal_server, "alice", cast.password)
    open_phonebook(alice, office)
    lamps = alice.locator(LAMP)
    expect(lamps).to_have_count(2)  # phonebook row and one-touch button
    expect(lamps.first).to_have_attribute("data-state", "idle", timeout=5000)
    alice.evaluate(WATCH_LAMPS)

    # bob takes a call and hangs up: idle → ringing → busy → idle, in that order.
    carol = far_phone("1003")
    first = carol.run(carol.phone.call("1002"))
    expect(bob.get_by_test_id("status")).to_have_attribute("data-state", "ringing", timeout=15000)
    expect(lamps.first).to_have_attribute("data-state", "ringing", timeout=5000)
    pickup = alice.locator('#phonebook-panel [data-testid="pickup-btn"][data-extension="1002"]')
    expect(pickup).to_be_visible()
    bob.get_by_test_id("call-btn").click()
    expect(lamps.first).to_have_attribute("data-state", "busy", timeout=5000)
    expect(pickup).to_be_hidden()
    bob.get_by_test_id("hangup-btn").click()
    carol.wait_ended(first)
    expect(lamps.first).to_have_attribute("data-state", "idle", timeout=5000)
    assert alice.evaluate("window.lampStates") == ["ringing", "busy", "idle"]
    # The lamp is styled by state (ringing blinks: a CSS animation, not script).
    assert alice.evaluate(
        f"getComputedStyle(document.querySelector('{LAMP}')).backgroundColor"
    ) != alice.evaluate("getComputedStyle(document.body).backgroundColor")

    # The next call to bob: alice clicks 代理応答 next to the ringing lamp.
    second = carol.run(carol.phone.call("1002"))
    expect(bob.get_by_test_id("status")).to_have_attribute("data-state", "ringing", timeout=15000)
    expect(pickup).to_be_visible(timeout=5000)
    alice.screenshot(path=tmp_path / "presence-ringing.png")  # kept with --basetemp=DIR
    pickup.click()
    expect(alice.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=15000)
    expect(bob.get_by_test_id("status")).to_have_attribute("data-state", "idle", timeout=5000)
    before = len(carol.heard(second))
    assert abs(alice.evaluate(ANALYSE, 2500) - 700) < 20  # alice hears the caller
    pcm = carol.heard(second)[before:]
    sound = analysis.non_silent(pcm)
    assert len(sound) > 2000
    assert round(analysis.dominant_frequency(sound)) == pytest.approx(PAGE_TONE, abs=20)
    alice.get_by_test_id("hangup-btn").click()
    carol.wait_ended(second)
    row = CallRecord.objects.filter(user=cast.bob, sip_call_id__isnull=False).first()
    assert row is not None and row.answered_by_id == cast.alice.pk

    # bob's history says who answered.
    bob.get_by_test_id("history-toggle").click()
    expect(bob.get_by_test_id("history-row").first).to_contain_text("Alice", timeout=5000)


def keep_newest_binding(pbx, ext):
    """A previous test's server stopped without un-REGISTERing: Kamailio would fork to that
    dead binding too and answer 408 for it instead of our 486. Keep the newest one."""
    contacts = pbx.registered(ext)
    newest = max(contacts, key=lambda c: int(c.raw.get("Last-Modified", "0") or 0))
    for contact in contacts:
        if contact is not newest:
            pbx.kamcmd("ul.rm_contact", "location", f"{ext}@{pbx.domain}", contact.uri)


def test_do_not_disturb_refuses_calls_and_colleagues_see_it(
    cast, office, on_pbx, portal_server, browser, far_phone
):
    bob = open_page(browser, portal_server, "bob", cast.password)
    keep_newest_binding(on_pbx, "1002")
    alice = open_page(browser, portal_server, "alice", cast.password)
    dnd = bob.get_by_test_id("dnd-btn")
    expect(dnd).to_have_attribute("data-state", "off")
    expect(dnd).to_have_text("応答不可")
    dnd.click()
    expect(dnd).to_have_attribute("data-state", "on", timeout=5000)
    pad_lamp = alice.locator(f'[data-testid="external-pad"] {LAMP}')
    expect(pad_lamp).to_have_attribute("data-state", "dnd", timeout=5000)

    carol = far_phone("1003")
    call = carol.run(carol.phone.call("1002"))
    ended = carol.wait_ended(call)
    assert ended.status == 486
    expect(bob.get_by_test_id("status")).to_have_attribute("data-state", "idle")
    bob.get_by_test_id("history-toggle").click()
    row = bob.get_by_test_id("history-row").first
    expect(row).to_contain_text("拒否", timeout=5000)
    expect(row.get_by_test_id("history-reason")).to_contain_text("応答不可")

    # Stored for the user: a reload keeps it on.
    bob.reload()
    expect(bob.get_by_test_id("dnd-btn")).to_have_attribute("data-state", "on", timeout=15000)
    bob.get_by_test_id("dnd-btn").click()
    expect(pad_lamp).to_have_attribute("data-state", "idle", timeout=5000)
