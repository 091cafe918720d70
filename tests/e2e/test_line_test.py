"""回線テスト on the phone page (issue 13, item 4): Debian's Chromium with a fake microphone
playing 1000 Hz, the real server (daphne, embedded sipworker), Kamailio as the PBX. The page
hears its own tone back and shows the Japanese result; an unregistered line says so plainly.
(A silent microphone: test_line_test_silent.py, another Chromium with another wav.)"""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ANALYSE, login, wait_until
from tests.support.tones import write_tone

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PAGE_TONE = 1000


def browser_args(folder):
    wav = write_tone(folder / "mic.wav", PAGE_TONE, 30, rate=48000)
    return [
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]


def test_the_page_hears_itself_and_says_everything_works(cast, on_pbx, portal_server, page):
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    wait_until(page, "document.body.dataset.media === 'connected'", timeout=15)
    button = page.get_by_test_id("line-test-btn")
    expect(button).to_have_text("回線テスト")
    button.click()
    result = page.get_by_test_id("line-test-result")
    expect(result).to_have_attribute("data-state", "running")
    expect(result).to_contain_text("約1秒後に自分の声が聞こえます")
    page.wait_for_timeout(1200)
    heard = page.evaluate(ANALYSE, 2000)
    assert abs(heard - PAGE_TONE) < 30, f"the page heard {heard:.0f} Hz"
    level = page.get_by_test_id("line-test-level")
    assert int(level.evaluate("(m) => m.value")) >= 40
    expect(button).to_have_attribute("data-state", "on")
    button.click()  # テスト終了
    expect(result).to_have_attribute("data-state", "ok", timeout=5000)
    expect(result).to_have_text("正常です。マイク・スピーカー・サーバへの接続に問題はありません。")
    expect(button).to_have_attribute("data-state", "off")


def test_an_unregistered_account_is_named_plainly(cast, portal_server, page):
    # Tenant B's PBX does not exist: the lamp never turns green, the audio path still works.
    login(page, portal_server, "charlie", cast.password)
    wait_until(page, "document.body.dataset.media === 'connected'", timeout=15)
    expect(page.get_by_test_id("reg-lamp")).not_to_have_attribute("data-state", "ok")
    page.get_by_test_id("line-test-btn").click()
    page.wait_for_timeout(2000)
    page.get_by_test_id("line-test-btn").click()
    result = page.get_by_test_id("line-test-result")
    expect(result).to_have_attribute("data-state", "not_registered", timeout=5000)
    expect(result).to_contain_text("SIPアカウントが登録されていません")


def test_it_is_refused_during_a_call(cast, on_pbx, portal_server, page, far_phone):
    bob = far_phone("1002")
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    wait_until(page, "document.body.dataset.media === 'connected'", timeout=15)
    page.get_by_test_id("dial-input").fill("1002")
    page.get_by_test_id("call-btn").click()
    call_id = bob.answer_next_call()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=10000)
    page.get_by_test_id("line-test-btn").click()
    result = page.get_by_test_id("line-test-result")
    expect(result).to_have_attribute("data-state", "in_call", timeout=5000)
    expect(result).to_have_text("通話中は回線テストを実行できません。")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall")
    page.get_by_test_id("hangup-btn").click()
    bob.wait_ended(call_id)


DENY_MICROPHONE = """
navigator.mediaDevices.getUserMedia = () =>
  Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
"""


def test_a_refused_microphone_is_named(cast, on_pbx, portal_server, page):
    page.add_init_script(DENY_MICROPHONE)  # what the browser answers once the user said no
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("permission-help")).to_be_visible(timeout=10000)
    page.get_by_test_id("line-test-btn").click()
    result = page.get_by_test_id("line-test-result")
    expect(result).to_have_attribute("data-state", "no_permission", timeout=5000)
    expect(result).to_contain_text("マイクの使用が許可されていません")


def test_an_unreachable_server_is_named(cast, on_pbx, portal, page):
    login(page, portal.url, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    wait_until(page, "document.body.dataset.media === 'connected'", timeout=15)
    portal.kill()
    expect(page.get_by_test_id("reg-lamp")).not_to_have_attribute("data-state", "ok", timeout=5000)
    page.get_by_test_id("line-test-btn").click()
    result = page.get_by_test_id("line-test-result")
    expect(result).to_have_attribute("data-state", "ws_down", timeout=5000)
    expect(result).to_have_text("サーバに接続できません。ネットワーク接続を確認してください。")
