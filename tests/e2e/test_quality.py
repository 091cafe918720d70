"""通話品質 on the phone page (issue 13, item 5): a call from Chromium through Kamailio to a far
end (our own UA, tests/e2e/far_end.py). While it is up the page shows `quality` good; when
the far end's RTCP receiver reports say it loses a quarter of our packets (RFC 3550 §6.4.2,
sent by the test as the far end) the indicator turns poor; after hang-up the history row
carries mos / loss / jitter and the history panel shows them."""

import asyncio

import pytest
from playwright.sync_api import expect

from phone.media.rtp import ReportBlock, RtcpReceiverReport, build_compound
from phone.models import CallRecord
from tests.e2e.conftest import login, wait_until
from tests.support.tones import write_tone

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def browser_args(folder):
    wav = write_tone(folder / "mic.wav", 1000, 60, rate=48000)
    return [f"--use-file-for-fake-audio-capture={wav}"]


def lossy_reports(phone, call_id):
    """Every 0.2 s, an RR from the far end saying 25 % of the worker's packets are lost."""
    leg = phone.phone.calls[call_id].leg

    async def report():
        block = ReportBlock(leg._remote_stats.ssrc, 64, 500, 0x10000 + 400, 80)
        packet = build_compound(RtcpReceiverReport(0x0BADF00D, [block]))
        while True:
            leg._rtcp_transport.sendto(packet, leg.remote_rtcp)
            await asyncio.sleep(0.2)

    return asyncio.run_coroutine_threadsafe(report(), phone.loop)


def test_the_page_shows_call_quality_and_history_keeps_it(
    cast, on_pbx, portal_server, page, far_phone
):
    bob = far_phone("1002")
    login(page, portal_server, "alice", cast.password)
    expect(page.get_by_test_id("reg-lamp")).to_have_attribute("data-state", "ok", timeout=15000)
    wait_until(page, "document.body.dataset.media === 'connected'", timeout=15)
    quality = page.get_by_test_id("quality")
    expect(quality).to_be_hidden()
    page.get_by_test_id("dial-input").fill("1002")
    page.get_by_test_id("call-btn").click()
    call_id = bob.answer_next_call()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall", timeout=10000)
    expect(quality).to_be_visible(timeout=10000)
    expect(quality).to_have_attribute("data-state", "good")
    expect(quality).to_contain_text("通話品質: 良好")

    # The page measures its own leg too (getStats) and tells the server (quality.stats).
    wait_until(page, "window.browserPhone.quality.local?.state === 'good'", timeout=10)

    reporting = lossy_reports(bob, call_id)
    try:
        expect(quality).to_have_attribute("data-state", "poor", timeout=10000)
        expect(quality).to_contain_text("通話品質: 不良")
    finally:
        reporting.cancel()
    page.get_by_test_id("hangup-btn").click()
    bob.wait_ended(call_id)
    expect(quality).to_be_hidden()

    def closed_row():
        return CallRecord.objects.filter(user=cast.alice, ended_at__isnull=False).first()

    row = closed_row()  # written before the pages hear "ended" (phone.worker.line._finish)
    assert row is not None
    assert row.quality_mos is not None and 1.0 <= row.quality_mos <= 4.5
    assert row.quality_loss is not None and row.quality_loss > 1
    assert row.quality_jitter is not None and row.quality_rtt is not None
    page.get_by_test_id("history-toggle").click()
    badge = page.get_by_test_id("history-quality").first
    expect(badge).to_be_visible()
    expect(badge).to_have_attribute("data-state", row.quality_state)


def test_the_page_scores_like_the_server(cast, portal_server, page):
    """static/phone/quality.js and phone/quality.py are the same E-model."""
    from phone.quality import mos

    login(page, portal_server, "alice", cast.password)
    inputs = [(0.0, 0.0, 0.0), (0.05, 10.0, 80.0), (0.1, 0.0, 0.0), (0.02, 40.0, 400.0)]
    scores = page.evaluate(
        """async (inputs) => {
          const { mos } = await import("/static/phone/quality.js");
          return inputs.map(([loss, jitter, rtt]) => mos(loss, jitter, rtt));
        }""",
        inputs,
    )
    assert scores == pytest.approx([mos(*i) for i in inputs], abs=1e-9)
