"""Call control as the manual describes it (seed 3-3, 3-4), driven through the pages' own
controls in Chromium: park from one user's page and pick up on a colleague's, and a second call
while in a call. Audio is checked by frequency: the pages' fake microphones play 1000 Hz, the
outside phones (our own UA, tests/e2e/far_end.py) 700 and 900 Hz."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ANALYSE, login, wait_until
from tests.support import analysis
from tests.support.tones import write_tone

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PAGE_TONE = 1000


def browser_args(folder):
    wav = write_tone(folder / "mic.wav", PAGE_TONE, 60, rate=48000)
    return [
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]


def open_page(browser, server, user, password):
    context = browser.new_context(viewport={"width": 1200, "height": 850})
    page = context.new_page()
    page.set_default_timeout(10_000)
    login(page, server, user, password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    wait_until(page, "document.body.dataset.media === 'connected'", timeout=15)
    return page


def heard_since(phone, call_id, samples_before):
    pcm = phone.heard(call_id)[samples_before:]
    sound = analysis.non_silent(pcm)
    return round(analysis.dominant_frequency(sound)) if len(sound) > 2000 else None


def test_a_call_parked_on_one_page_is_picked_up_on_a_colleagues_page(
    cast, office, portal_server, browser, far_phone
):
    bob = open_page(browser, portal_server, "bob", cast.password)
    alice = open_page(browser, portal_server, "alice", cast.password)
    carol = far_phone("1003")
    call_id = carol.run(carol.phone.call("1002"))
    expect(bob.get_by_test_id("status")).to_have_attribute("data-state", "ringing", timeout=15000)
    bob.get_by_test_id("call-btn").click()
    expect(bob.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=10000)

    bob.get_by_test_id("park-slot-1").click()
    slot = alice.get_by_test_id("park-slot-1")
    expect(slot).to_have_attribute("data-state", "parked", timeout=5000)
    expect(slot).to_have_attribute("data-caller", "1003")
    expect(bob.get_by_test_id("park-slot-1")).to_have_attribute("data-state", "mine")

    slot.click()
    expect(alice.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=15000)
    expect(alice.get_by_test_id("park-slot-1")).to_have_attribute("data-state", "free")
    expect(bob.get_by_test_id("park-slot-1")).to_have_attribute("data-state", "free")
    before = len(carol.heard(call_id))
    assert abs(alice.evaluate(ANALYSE, 2500) - 700) < 20  # alice hears carol
    assert heard_since(carol, call_id, before) == pytest.approx(PAGE_TONE, abs=20)
    alice.get_by_test_id("hangup-btn").click()
    carol.wait_ended(call_id)


def test_a_second_call_rings_and_the_user_answers_swaps_and_hangs_up_each(
    cast, office, portal_server, browser, far_phone
):
    alice = open_page(browser, portal_server, "alice", cast.password)
    carol, dave = far_phone("1003", tone_hz=700), far_phone("1004", tone_hz=900)
    first = carol.run(carol.phone.call("1001"))
    expect(alice.get_by_test_id("status")).to_have_attribute("data-state", "ringing", timeout=15000)
    alice.get_by_test_id("call-btn").click()
    expect(alice.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=10000)

    second = dave.run(dave.phone.call("1001"))
    rows = alice.get_by_test_id("call-row")
    expect(rows).to_have_count(2, timeout=10000)
    ringing = alice.locator('[data-testid="call-row"][data-state="ringing"]')
    expect(ringing).to_have_count(1)
    alice.get_by_test_id("dial-input").fill("1099")
    alice.get_by_test_id("call-btn").click()  # never dials while a call rings or is up
    ringing.get_by_test_id("call-answer").click()
    row = '[data-testid="call-row"][data-state="{}"]'
    expect(alice.locator(row.format("held"))).to_have_count(1, timeout=10000)
    expect(alice.locator(row.format("incall"))).to_have_count(1)
    assert abs(alice.evaluate(ANALYSE, 2000) - 900) < 20  # dave now
    before = len(carol.heard(first))
    alice.wait_for_timeout(1500)
    held_hears = heard_since(carol, first, before)
    assert held_hears is not None and abs(held_hears - PAGE_TONE) > 50  # music, not alice

    alice.get_by_test_id("call-swap").click()
    expect(alice.locator(row.format("incall"))).to_have_count(1, timeout=10000)
    wait_until(
        alice, "window.browserPhone.ui.call && window.browserPhone.ui.call.remote === '1003'"
    )
    assert abs(alice.evaluate(ANALYSE, 2000) - 700) < 20  # carol again
    alice.get_by_test_id("call-swap").click()
    # One row was held before this swap too: wait until dave is the call that is up, or the
    # hang-up below may land on carol's row while the swap is under way.
    wait_until(
        alice,
        "window.browserPhone.ui.call && window.browserPhone.ui.call.remote === '1004'"
        " && window.browserPhone.ui.call.state === 'incall'",
    )
    expect(alice.locator(row.format("held"))).to_have_count(1, timeout=10000)

    alice.locator(row.format("incall")).get_by_test_id("call-hangup").click()
    dave.wait_ended(second)
    expect(rows).to_have_count(1, timeout=10000)
    alice.locator(row.format("held")).get_by_test_id("call-hangup").click()
    carol.wait_ended(first)
    expect(rows).to_have_count(0, timeout=10000)
