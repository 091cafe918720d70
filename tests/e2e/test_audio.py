"""Audio through the whole call path, proven by tone frequency at both ends (design.md §6):
the page's fake microphone plays 1000 Hz, baresip plays 700 Hz."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ANALYSE, login, wait_until
from tests.support.tones import dominant_frequency, tone_windows, write_tone

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PAGE_TONE, FAR_TONE = 1000, 700


def browser_args(folder):
    wav = write_tone(folder / "mic.wav", PAGE_TONE, 30, rate=48000)
    return [
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]


def test_it_carries_audio_both_ways_on_an_outgoing_call(
    cast,
    on_pbx,
    portal_server,
    page,
    make_baresip,
):
    bob = make_baresip("1002", auto_answer=True, tone_hz=FAR_TONE)
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    wait_until(page, "document.body.dataset.media === 'connected'", timeout=15)
    page.get_by_test_id("dial-input").fill("1002")
    page.get_by_test_id("call-btn").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=15000)
    heard = page.evaluate(ANALYSE, 2500)
    page.get_by_test_id("hangup-btn").click()
    bob.wait_event("CALL_CLOSED", timeout=10)
    assert abs(heard - FAR_TONE) < 30, f"the page heard {heard:.0f} Hz"
    received = bob.received_wavs()[-1]
    assert abs(dominant_frequency(received) - PAGE_TONE) < 20


def test_it_carries_audio_both_ways_on_an_incoming_call(
    cast,
    on_pbx,
    portal_server,
    page,
    make_baresip,
):
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    wait_until(page, "document.body.dataset.media === 'connected'", timeout=15)
    carol = make_baresip("1003", tone_hz=FAR_TONE)
    carol.dial("1001")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "ringing", timeout=15000)
    page.get_by_test_id("call-btn").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=10000)
    heard = page.evaluate(ANALYSE, 2500)
    carol.hangup()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "idle", timeout=10000)
    assert abs(heard - FAR_TONE) < 30, f"the page heard {heard:.0f} Hz"
    carol.wait_event("CALL_CLOSED", timeout=10)
    assert abs(dominant_frequency(carol.received_wavs()[-1]) - PAGE_TONE) < 20


def test_it_keeps_the_call_and_its_audio_across_a_reload(
    cast, on_pbx, portal_server, page, make_baresip, make_tone
):
    bob = make_baresip("1002", auto_answer=True, tone=make_tone(FAR_TONE, seconds=40))
    login(page, portal_server, "alice", cast.password)
    wait_until(page, "document.body.dataset.media === 'connected'", timeout=15)
    page.get_by_test_id("dial-input").fill("1002")
    page.get_by_test_id("call-btn").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=15000)
    page.reload()
    # The call lives on the server: the reloaded page finds it and gets its audio back.
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=15000)
    expect(page.get_by_test_id("display")).to_have_text("1002")
    wait_until(page, "document.body.dataset.media === 'connected'", timeout=15)
    heard = page.evaluate(ANALYSE, 2500)
    assert abs(heard - FAR_TONE) < 30, f"after the reload the page heard {heard:.0f} Hz"
    page.get_by_test_id("hangup-btn").click()
    bob.wait_event("CALL_CLOSED", timeout=10)
    assert abs(dominant_frequency(bob.received_wavs()[-1]) - PAGE_TONE) < 20


def test_it_plays_ringback_then_music_on_hold_to_the_far_end(
    cast, on_pbx, portal_server, page, far_phone
):
    bob = far_phone("1002")
    login(page, portal_server, "alice", cast.password)
    wait_until(page, "document.body.dataset.media === 'connected'", timeout=15)
    page.get_by_test_id("dial-input").fill("1002")
    page.get_by_test_id("call-btn").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "dialing", timeout=10000)
    # Not answered yet: the page hears Japanese ringback, 400 Hz (made by the sipworker).
    ringback = page.evaluate(ANALYSE, 1500)
    assert abs(ringback - 400) < 30, f"ringback at {ringback:.0f} Hz"
    call_id = bob.answer_next_call()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=10000)
    page.wait_for_timeout(2000)
    page.get_by_test_id("hold-btn").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "held", timeout=10000)
    expect(page.get_by_test_id("status")).to_have_text("保留中")
    expect(page.get_by_test_id("hold-btn")).to_have_attribute("data-state", "on")
    page.wait_for_timeout(3000)
    page.get_by_test_id("hold-btn").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=10000)
    page.wait_for_timeout(2000)
    page.get_by_test_id("hangup-btn").click()
    bob.wait_ended(call_id)
    windows = tone_windows(bob.heard(call_id))
    voice = [i for i, hz in enumerate(windows) if hz is not None and abs(hz - PAGE_TONE) < 20]
    music = [i for i, hz in enumerate(windows) if hz is not None and abs(hz - PAGE_TONE) >= 20]
    # The page's 1000 Hz before and after the hold, music on hold (other notes) in between.
    assert voice and music, windows
    assert min(voice) < min(music) and max(voice) > max(music), windows
