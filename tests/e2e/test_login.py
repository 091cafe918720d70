"""A user logs in through the real server in a real browser and sees the phone page."""

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def test_it_logs_alice_in_to_the_phone_page(cast, portal_server, page):
    page.goto(f"{portal_server}/")
    assert page.url.startswith(f"{portal_server}/login/")
    page.get_by_test_id("login-username").fill("alice")
    page.get_by_test_id("login-password").fill(cast.password)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(f"{portal_server}/")
    assert page.get_by_test_id("status").inner_text() == "待機中"
    # Tenant A's PBX (a.pbx.test) does not exist: the lamp turns red and says why (seed 7-1).
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "fail", timeout=10000)
    expect(page.get_by_test_id("reg-reason")).to_contain_text("DNS")
    # The keypad and the PC keyboard both dial into the input (seed 3-1 ④).
    page.get_by_test_id("key-0").click()
    page.get_by_test_id("key-star").click()
    page.keyboard.type("12#")
    assert page.get_by_test_id("dial-input").input_value() == "0*12#"
    page.get_by_test_id("dial-clear").click()
    assert page.get_by_test_id("dial-input").input_value() == ""
    # Side panels open one at a time.
    page.get_by_test_id("external-toggle").click()
    assert page.get_by_test_id("external-pad").is_visible()
    page.get_by_test_id("history-toggle").click()
    assert not page.get_by_test_id("external-pad").is_visible()


def test_it_shows_a_wrong_password_and_stays_on_login(cast, portal_server, page):
    page.goto(f"{portal_server}/login/")
    page.get_by_test_id("login-username").fill("alice")
    page.get_by_test_id("login-password").fill("wrong")
    page.get_by_test_id("login-submit").click()
    assert page.get_by_test_id("login-error").is_visible()
    assert "/login/" in page.url
