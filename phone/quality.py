"""Call quality: a MOS-style score from loss, jitter and round-trip time, and the folding of
the samples a call collects (the RTP leg's RTCP towards the PBX, the page's WebRTC stats).

The score is a simplified ITU-T G.107 E-model for G.711 (the Cole & Rosenbluth reduction,
"Voice over IP performance monitoring", ACM SIGCOMM CCR 31(2), 2001), with every factor the
network does not change left at its G.107 default:

    R   = 93.2 - Id - Ie_eff                       (R0 - Is = 93.2, A = 0, G.107 §7.1 defaults)
    d   = rtt/2 + 2 * jitter + 20 ms               (one-way mouth-to-ear delay: half the RTT, a
                                                    jitter buffer of twice the jitter, one frame)
    Id  = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)  (H: 1 above 177.3 ms, else 0)
    Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl + Bpl)    (G.107 §7.4 with BurstR = 1, random loss;
                                                    G.711 with PLC: Ie = 0, Bpl = 25.1, G.113)
    MOS = 1 + 0.035 R + R (R - 60) (100 - R) 7e-6  (G.107 Annex B; 1 below R = 0, 4.5 above 100)

The thresholds of good / fair / poor follow the usual reading of G.107 Table B.1 ("users
satisfied" from R 80 ≈ MOS 4.0; "many users dissatisfied" below R 70 ≈ MOS 3.6).

Nothing here imports Django or the media stack: the worker, the tests and the admin's filter
threshold read it (a web process must not load phone.media: tests/phone/test_boundaries.py).
What an RTCP report block says is read in phone.media.rtp (report_quality).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = [
    "FAIR_MOS",
    "GOOD_MOS",
    "QualitySample",
    "QualityTracker",
    "mos",
    "quality_state",
    "r_factor",
]

GOOD_MOS = 4.0
FAIR_MOS = 3.6  # below: "poor" (the admin's "poor quality" filter uses the same bound)
_IE_G711 = 0.0
_BPL_G711_PLC = 25.1
_FRAME_MS = 20.0
# Bounds of what a sample may say (a page sends its own; nothing beyond these is physical).
MAX_JITTER_MS = 10_000.0
MAX_RTT_MS = 60_000.0


def _clamp(value: float, low: float, high: float) -> float:
    if math.isnan(value):
        return low
    return max(low, min(high, value))


def r_factor(loss: float, jitter_ms: float, rtt_ms: float | None) -> float:
    """The E-model's transmission rating R (module doc). loss: 0..1 of packets lost."""
    loss_pct = _clamp(loss, 0.0, 1.0) * 100
    jitter = _clamp(jitter_ms, 0.0, MAX_JITTER_MS)
    rtt = _clamp(rtt_ms or 0.0, 0.0, MAX_RTT_MS)
    delay = rtt / 2 + 2 * jitter + _FRAME_MS
    id_ = 0.024 * delay + (0.11 * (delay - 177.3) if delay > 177.3 else 0.0)
    ie_eff = _IE_G711 + (95 - _IE_G711) * loss_pct / (loss_pct + _BPL_G711_PLC)
    return 93.2 - id_ - ie_eff


def mos(loss: float, jitter_ms: float, rtt_ms: float | None) -> float:
    """MOS (1..4.5) from R, G.107 Annex B (module doc)."""
    r = r_factor(loss, jitter_ms, rtt_ms)
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6


def quality_state(score: float | None) -> str:
    """good | fair | poor for the page's `quality` indicator (module doc)."""
    if score is None or score >= GOOD_MOS:
        return "good"
    return "fair" if score >= FAIR_MOS else "poor"


# -- RTCP receiver reports (RFC 3550 §6.4) ----------------------------------------------------


# -- folding a call's samples -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QualitySample:
    loss: float  # 0..1
    jitter_ms: float
    rtt_ms: float | None


@dataclass(slots=True)
class _Series:
    count: int = 0
    loss: float = 0.0
    jitter: float = 0.0
    rtt: float = 0.0
    rtt_count: int = 0
    last: QualitySample | None = None

    def add(self, sample: QualitySample) -> None:
        self.count += 1
        self.loss += sample.loss
        self.jitter += sample.jitter_ms
        if sample.rtt_ms is not None:
            self.rtt += sample.rtt_ms
            self.rtt_count += 1
        self.last = sample


@dataclass(frozen=True, slots=True)
class QualitySummary:
    mos: float
    loss_pct: float
    jitter_ms: float
    rtt_ms: float | None
    state: str

    def as_fields(self) -> dict[str, float | None]:
        """The CallRecord columns (rounded: a score, not a measurement log)."""
        return {
            "quality_mos": round(self.mos, 2),
            "quality_loss": round(self.loss_pct, 2),
            "quality_jitter": round(self.jitter_ms, 1),
            "quality_rtt": None if self.rtt_ms is None else round(self.rtt_ms, 1),
        }


@dataclass
class QualityTracker:
    """A call's samples per source ("pbx-rx": what we receive from the PBX, "pbx-tx": the far
    end's receiver reports about our stream, "browser": the page's own WebRTC stats).

    The call is as good as its worst direction: loss, jitter and RTT are each the worst of the
    sources (averaged over the call for the summary, the latest sample for the live state).
    Bounded: a fixed set of sources, running sums only."""

    MAX_SOURCES = 8
    series: dict[str, _Series] = field(default_factory=dict)

    def add(self, source: str, loss: float, jitter_ms: float, rtt_ms: float | None) -> None:
        if source not in self.series and len(self.series) >= self.MAX_SOURCES:
            return
        sample = QualitySample(
            _clamp(loss, 0.0, 1.0),
            _clamp(jitter_ms, 0.0, MAX_JITTER_MS),
            None if rtt_ms is None else _clamp(rtt_ms, 0.0, MAX_RTT_MS),
        )
        self.series.setdefault(source, _Series()).add(sample)

    @property
    def empty(self) -> bool:
        return not self.series

    def _fold(self, samples: list[QualitySample]) -> QualitySummary | None:
        if not samples:
            return None
        loss = max(s.loss for s in samples)
        jitter = max(s.jitter_ms for s in samples)
        rtts = [s.rtt_ms for s in samples if s.rtt_ms is not None]
        rtt = max(rtts) if rtts else None
        score = mos(loss, jitter, rtt)
        return QualitySummary(score, loss * 100, jitter, rtt, quality_state(score))

    def current(self) -> QualitySummary | None:
        """From the latest sample of each source: what the page shows now."""
        return self._fold([s.last for s in self.series.values() if s.last is not None])

    def summary(self) -> QualitySummary | None:
        """Over the whole call: what the history row keeps."""
        means = [
            QualitySample(
                s.loss / s.count,
                s.jitter / s.count,
                s.rtt / s.rtt_count if s.rtt_count else None,
            )
            for s in self.series.values()
            if s.count
        ]
        return self._fold(means)
