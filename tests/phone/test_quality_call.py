"""Call quality on the real stack (issue 13, item 5): a call from an outside phone through
Kamailio to alice's page (the phone WebSocket, the embedded sipworker, an aiortc peer as the
page). The page gets `quality` messages while the call is up; the history row carries the
call's mos / loss / jitter after hang-up. When the far end's RTCP receiver reports say a
quarter of our packets are lost (sent by the test as the far end, RFC 3550 §6.4.2), the
indicator turns poor and so does the row."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from phone.media.rtp import ReportBlock, RtcpReceiverReport, build_compound
from phone.models import CallRecord
from phone.worker import diagnostics
from tests.integration.test_line_test import Page

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("loopback_ice"),
]


@pytest.fixture(autouse=True)
def fast_quality(monkeypatch):
    monkeypatch.setattr(diagnostics, "QUALITY_SECONDS", 0.5)


@pytest.fixture
async def outside(on_pbx):
    from tests.support.ua import Phone

    phone = await Phone.open(on_pbx, "1003", tone_hz=700)
    await phone.register()
    yield phone
    await phone.close()


async def call_alice(cast, outside):
    page = await Page.open(cast.alice)
    call_id = await outside.call("1001")
    incoming = await page.next("incoming")
    await page.send("answer", call_id=incoming["id"])
    await page.next("call", id=incoming["id"], state="incall")
    return page, call_id, incoming["id"]


async def quality_until(page, call_id, state, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen = []
    while loop.time() < deadline:
        message = await page.next("quality", call_id=call_id, timeout=deadline - loop.time())
        seen.append(message["state"])
        if message["state"] == state:
            return message
    raise AssertionError(f"quality never {state}: {seen}")


async def row_of(call_id):
    def read():
        return CallRecord.objects.get(sip_call_id=call_id)

    for _ in range(50):
        row = await database_sync_to_async(read)()
        if row.ended_at is not None:
            return row
        await asyncio.sleep(0.1)
    raise AssertionError("the history row was not closed")


async def test_a_clean_call_shows_good_quality_and_logs_it(cast, outside):
    page, _far_id, call_id = await call_alice(cast, outside)
    try:
        good = await quality_until(page, call_id, "good")
        assert good["mos"] > 4.0 and good["loss"] < 1
        # The page's own stats are folded in too (bounded, rate-limited).
        await page.send("quality.stats", call_id=call_id, loss=0.0, jitter=4.0, rtt=2.0)
        await asyncio.sleep(1.0)
        await page.send("hangup", call_id=call_id)
        await page.next("call", id=call_id, state="ended")
        row = await row_of(call_id)
        assert row.quality_mos is not None and row.quality_mos > 4.0
        assert row.quality_loss is not None and row.quality_loss < 1
        assert row.quality_jitter is not None and row.quality_jitter >= 4.0
    finally:
        await page.close()


async def test_reported_packet_loss_turns_the_call_poor(cast, outside):
    page, far_id, call_id = await call_alice(cast, outside)
    leg = outside.calls[far_id].leg
    try:
        await quality_until(page, call_id, "good")
        # The far end (the test) reports losing 25 % of what the worker sends it.
        our_ssrc = leg._remote_stats.ssrc
        lossy = build_compound(
            RtcpReceiverReport(0x0BAD_F00D, [ReportBlock(our_ssrc, 64, 500, 0x10000 + 400, 80)])
        )

        async def report_loss():
            while True:
                leg._rtcp_transport.sendto(lossy, leg.remote_rtcp)  # the worker's RTP port + 1
                await asyncio.sleep(0.2)

        reporter = asyncio.ensure_future(report_loss())
        try:
            poor = await quality_until(page, call_id, "poor")
        finally:
            reporter.cancel()
        assert poor["loss"] == pytest.approx(25.0, abs=0.5)
        assert poor["mos"] < 3.6
        await page.send("hangup", call_id=call_id)
        await page.next("call", id=call_id, state="ended")
        row = await row_of(call_id)
        assert row.quality_mos is not None and row.quality_loss > 1
        assert row.quality_jitter is not None
    finally:
        await page.close()


async def test_the_pages_stats_are_rate_limited_and_bounded(cast, outside):
    page, _far_id, call_id = await call_alice(cast, outside)
    try:
        await page.send("quality.stats", call_id=call_id, loss=0.0, jitter=3.0, rtt=5.0)
        # A flood within the same second: dropped, whatever it says.
        for _ in range(50):
            await page.send("quality.stats", call_id=call_id, loss=1.0, jitter=9e9, rtt=-1)
        for _ in range(3):
            message = await page.next("quality", call_id=call_id)
            assert message["state"] == "good"
        # Out of range or not a number at all: clamped or ignored; the call goes on.
        await page.send("quality.stats", call_id=call_id, loss=10**400, jitter=1, rtt=None)
        await page.send("quality.stats", call_id=call_id, loss="x", jitter=1)
        assert (await page.next("error", request="quality.stats"))["code"] == "bad_field"
        await asyncio.sleep(1.1)
        await page.send("quality.stats", call_id=call_id, loss=10**400, jitter=1, rtt=None)
        await page.next("quality", call_id=call_id)
        await page.send("hangup", call_id=call_id)
        await page.next("call", id=call_id, state="ended")
        row = await row_of(call_id)
        assert row.quality_mos > 4.0 and row.quality_jitter < 100
    finally:
        await page.close()


class LossyLink:
    """The far end's RTP sends, dropping every third datagram: real packet loss on the way to
    the worker, which its own receiver statistics see (RFC 3550 §A.3). (It wraps the leg's
    send function, RtpLeg._rtp_sendto, which every RTP packet of the leg leaves through.)"""

    def __init__(self, sendto):
        self.inner = sendto
        self.sent = 0
        self.dropped = 0

    def __call__(self, data, addr):
        self.sent += 1
        if self.sent % 3 == 0:
            self.dropped += 1
            return
        self.inner(data, addr)


async def test_real_packet_loss_towards_the_worker_turns_the_call_poor(cast, outside):
    page, far_id, call_id = await call_alice(cast, outside)
    leg = outside.calls[far_id].leg
    try:
        await quality_until(page, call_id, "good")
        link = leg._rtp_sendto = LossyLink(leg._rtp_sendto)
        # The worker's receiver statistics report a third lost at its next RTCP report
        # (every 2.5-7.5 s), then the indicator follows.
        poor = await quality_until(page, call_id, "poor", timeout=20)
        assert link.dropped > 0
        # A third is dropped; the first report that says so may also cover packets from
        # before the link began to drop (fraction lost since the last report, RFC 3550
        # §6.4.1), so it says a little less.
        assert 20 <= poor["loss"] <= 38, poor
        await page.send("hangup", call_id=call_id)
        await page.next("call", id=call_id, state="ended")
        row = await row_of(call_id)
        assert row.quality_loss > 1 and row.quality_mos < 4.3
    finally:
        await page.close()
