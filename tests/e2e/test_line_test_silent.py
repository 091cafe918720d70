"""回線テスト with a silent microphone (issue 13, item 4): Chromium's fake capture plays a wav of
digital silence; the page says no sound comes from the microphone, in Japanese."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login, wait_until
from tests.support.tones import write_silence

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def browser_args(folder):
    wav = write_silence(folder / "silence.wav", 30)
    return [f"--use-file-for-fake-audio-capture={wav}"]


def test_a_silent_microphone_is_reported(cast, on_pbx, portal_server, page):
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    wait_until(page, "document.body.dataset.media === 'connected'", timeout=15)
    page.get_by_test_id("line-test-btn").click()
    page.wait_for_timeout(2500)
    page.get_by_test_id("line-test-btn").click()
    result = page.get_by_test_id("line-test-result")
    expect(result).to_have_attribute("data-state", "silent", timeout=5000)
    expect(result).to_have_text(
        "マイクから音が入っていません。マイクの接続・音量・ミュートを確認してください。"
    )
    assert int(page.get_by_test_id("line-test-level").evaluate("(m) => m.value")) == 0
