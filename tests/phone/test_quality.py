"""Call quality (issue 13, item 5): the E-model score, RTCP receiver reports read from real
bytes, the folding of a call's samples, the history row, the history panel and the admin's
"poor quality" filter (tenant-scoped)."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from phone.media.rtp import report_quality
from phone.models import CallRecord
from phone.quality import QualityTracker, mos, quality_state, r_factor

# -- the E-model (phone.quality's module doc) ------------------------------------------------


def test_it_rates_a_clean_g711_call_near_the_g711_ceiling():
    # d = 0/2 + 0 + 20 ms: Id = 0.48, Ie_eff = 0 → R = 92.72, MOS ≈ 4.40.
    assert r_factor(0.0, 0.0, 0.0) == pytest.approx(92.72)
    assert mos(0.0, 0.0, 0.0) == pytest.approx(4.40, abs=0.01)
    assert quality_state(mos(0.0, 0.0, 0.0)) == "good"


@pytest.mark.parametrize(
    ("loss", "jitter", "rtt", "r", "score", "state"),
    [
        # 5 % random loss, Bpl 25.1: Ie_eff = 95 * 5 / 30.1 = 15.78 → R = 76.94
        (0.05, 0.0, 0.0, 76.94, 3.90, "fair"),
        # 10 %: Ie_eff = 27.07 → R = 65.65
        (0.10, 0.0, 0.0, 65.65, 3.38, "poor"),
        # 1 %, 20 ms jitter, 100 ms RTT: d = 50 + 40 + 20 = 110 → Id = 2.64, Ie_eff = 3.64
        (0.01, 20.0, 100.0, 86.92, 4.26, "good"),
        # 400 ms RTT: d = 220 → Id = 5.28 + 0.11 * 42.7 = 9.98
        (0.0, 0.0, 400.0, 83.22, 4.14, "good"),
    ],
)
def test_it_scores_known_inputs(loss, jitter, rtt, r, score, state):
    assert r_factor(loss, jitter, rtt) == pytest.approx(r, abs=0.01)
    assert mos(loss, jitter, rtt) == pytest.approx(score, abs=0.01)
    assert quality_state(mos(loss, jitter, rtt)) == state


def test_it_bounds_the_score_whatever_the_input():
    assert mos(1.0, 5000.0, 60000.0) == 1.0
    assert mos(float("nan"), float("inf"), None) >= 1.0
    assert mos(-3.0, -1.0, -5.0) == mos(0.0, 0.0, 0.0)


# -- RTCP receiver reports (RFC 3550 §6.4.2), literal bytes --------------------------------

OUR_SSRC = 0xDEADBEEF
RR = bytes.fromhex(
    "81c90007"  # V=2, RC=1, PT=201 (RR), length 7 words (+1)
    "11223344"  # reporter's SSRC
    "deadbeef"  # report block about our SSRC
    "40000010"  # fraction lost 0x40 (25 %), cumulative lost 16
    "00010064"  # extended highest sequence number
    "000000a0"  # interarrival jitter: 160 timestamp units = 20 ms at 8 kHz
    "12345678"  # LSR
    "00008000"  # DLSR: 0.5 s
    # SDES CNAME chunk, as a compound packet must carry (RFC 3550 §6.1)
    "81ca0003" "11223344" "01036162" "63000000"
)  # fmt: skip
# Arrival 50 ms after LSR + DLSR (0x0ccd / 65536 s), as NTP (middle 32 bits = A).
ARRIVAL_NTP = (0x12345678 + 0x8000 + 0x0CCD) << 16


def test_it_reads_loss_jitter_and_rtt_from_a_receiver_report():
    report = report_quality(RR, OUR_SSRC, ARRIVAL_NTP)
    assert report is not None
    assert report.loss == 0.25
    assert report.jitter_ms == 20.0
    assert report.rtt_ms == pytest.approx(50.0, abs=0.1)
    assert report.cumulative_lost == 16
    assert quality_state(mos(report.loss, report.jitter_ms, report.rtt_ms)) == "poor"


def test_it_ignores_reports_about_others_and_garbage():
    assert report_quality(RR, 0x01020304, ARRIVAL_NTP) is None
    assert report_quality(b"\x81\xc9\x00\x06garbage", OUR_SSRC, ARRIVAL_NTP) is None
    no_sr_yet = RR[:24] + b"\0\0\0\0" + RR[28:]  # LSR 0: no round trip to compute
    report = report_quality(no_sr_yet, OUR_SSRC, ARRIVAL_NTP)
    assert report is not None and report.rtt_ms is None


def test_it_reads_the_report_block_of_a_sender_report():
    sr = bytes.fromhex(
        "81c8000c" "11223344"  # SR, RC=1, length 12 words
        "e7a1b2c3" "00000000" "00001234" "00000064" "00003e80"
    )  # fmt: skip
    sr += RR[8:32]  # the same report block
    report = report_quality(sr, OUR_SSRC, ARRIVAL_NTP)
    assert report is not None and report.loss == 0.25


# -- folding ---------------------------------------------------------------------------------


def test_the_call_is_as_good_as_its_worst_direction():
    tracker = QualityTracker()
    assert tracker.current() is None and tracker.summary() is None
    for _ in range(5):
        tracker.add("pbx-rx", 0.0, 2.0, None)
        tracker.add("pbx-tx", 0.0, 3.0, 40.0)
        tracker.add("browser", 0.0, 5.0, 10.0)
    assert tracker.current().state == "good"
    tracker.add("pbx-tx", 0.20, 3.0, 40.0)  # the far end starts losing a fifth of our packets
    assert tracker.current().state == "poor"
    summary = tracker.summary()
    assert summary.loss_pct == pytest.approx(20 / 6)  # the mean over the call's samples
    assert summary.jitter_ms == 5.0 and summary.rtt_ms == 40.0
    fields = summary.as_fields()
    assert set(fields) == {"quality_mos", "quality_loss", "quality_jitter", "quality_rtt"}


def test_it_keeps_a_bounded_number_of_sources():
    tracker = QualityTracker()
    for i in range(100):
        tracker.add(f"s{i}", 0.0, 0.0, None)
    assert len(tracker.series) == QualityTracker.MAX_SOURCES


# -- history and admin -----------------------------------------------------------------------


def _record(user, mos_value, number="0312345678"):
    started = timezone.now() - timedelta(minutes=5)
    return CallRecord.objects.create(
        tenant=user.profile.tenant, user=user, direction="out", remote_number=number,
        started_at=started, answered_at=started + timedelta(seconds=2),
        ended_at=started + timedelta(seconds=60), quality_mos=mos_value, quality_loss=1.5,
        quality_jitter=12.0, quality_rtt=80.0,
    )  # fmt: skip


def test_it_stores_the_calls_quality_on_its_history_row(cast):
    from phone import actions
    from phone.worker.call import LineCall

    call = LineCall(id="q1@test", direction="out", remote="0312345678", called="")
    call.quality.add("pbx-tx", 0.10, 30.0, 120.0)
    fields = call.history_fields(cast.alice.pk, "Alice")
    record = actions.do_close_call(cast.alice.pk, None, fields)
    record.refresh_from_db()
    assert record.quality_loss == 10.0 and record.quality_jitter == 30.0
    assert record.quality_rtt == 120.0
    assert record.quality_mos == pytest.approx(mos(0.10, 30.0, 120.0), abs=0.01)
    assert record.quality_state == "poor"
    # No samples (never connected): the columns stay empty.
    silent = LineCall(id="q2@test", direction="out", remote="0312345678", called="")
    assert "quality_mos" not in silent.history_fields(cast.alice.pk, "Alice")


def test_the_history_panel_shows_the_quality(cast, login):
    _record(cast.alice, 3.1)
    html = login(cast.alice).get(reverse("phone:history")).content.decode()
    assert 'data-testid="history-quality" data-state="poor"' in html


def test_the_admin_lists_poor_calls_of_its_own_tenant_only(cast, login):
    poor = _record(cast.alice, 3.1, "0311111111")
    _record(cast.bob, 4.3, "0322222222")
    _record(cast.charlie, 2.0, "0333333333")  # tenant B: never in tenant A's admin
    url = reverse("admin:phone_callrecord_changelist")
    response = login(cast.admin_a).get(url, {"quality": "poor"})
    assert response.status_code == 200
    listed = list(response.context["cl"].result_list)
    assert listed == [poor]
    everything = login(cast.superuser).get(url, {"quality": "poor"})
    assert len(everything.context["cl"].result_list) == 2


# -- the leg's RTCP, end to end on a socket ----------------------------------------------------


async def test_a_calls_quality_folds_the_far_ends_receiver_reports():
    """Literal RR bytes (with the leg's SSRC and an LSR 50 ms before now) sent to a real
    RtpLeg's RTCP port: the call's tracker gets loss, jitter and RTT from them, once each."""
    import asyncio
    import socket
    import struct
    import time

    from phone.media.leg import RtpLeg
    from phone.media.rtp import ntp_from_unix, ntp_middle32
    from phone.worker.call import LineCall
    from phone.worker.diagnostics import sample_leg
    from phone.worker.media import CallMedia

    leg = await RtpLeg.open("127.0.0.1", (41000, 41999))
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    try:
        leg.set_remote("127.0.0.1", 9)  # discard: the far end's RTP is not needed here
        call = LineCall(id="rr@test", direction="out", remote="1002", called="")
        call.media = CallMedia(leg)

        def send_rr(fraction, dlsr=0x8000):
            # DLSR 0.5 s, LSR = the NTP time 0.55 s ago: RTT = 50 ms (RFC 3550 §6.4.1).
            lsr = ntp_middle32(ntp_from_unix(time.time() - 0.55))
            block = struct.pack("!IB3sIIII", leg.sender.ssrc, fraction, b"\0\0\x10", 0x10064,
                                0xA0, lsr, dlsr)  # fmt: skip
            far.sendto(bytes.fromhex("81c90007") + bytes.fromhex("11223344") + block,
                       ("127.0.0.1", leg.local_rtcp_port))  # fmt: skip

        send_rr(0x40)
        for _ in range(100):
            if leg.remote_report is not None:
                break
            await asyncio.sleep(0.01)
        sample_leg(call)
        sample_leg(call)  # the same report again: folded once
        series = call.quality.series["pbx-tx"]
        assert series.count == 1
        assert series.last.loss == 0.25 and series.last.jitter_ms == 20.0
        assert series.last.rtt_ms == pytest.approx(50.0, abs=10.0)
        assert call.quality.current().state == "poor"
        assert call.quality_fields()["quality_loss"] == 25.0
    finally:
        far.close()
        await leg.aclose()
