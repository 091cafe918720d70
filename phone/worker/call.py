"""One call as the line sees it: a single state machine derived from what the user agent
reports, plus the facts the page, the history and the webhooks need (design.md §7 "actors").

The UA's CallState says where the SIP dialog is; HoldChanged says whether the far end accepted
our hold. This module folds both into the one vocabulary the page and the history read, so
there is no second opinion anywhere: a call is "held" when the re-INVITE's 2xx arrived, not
when the button was pressed.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from phone.numbers import display_number
from phone.quality import QualityTracker
from phone.signalling.schema import server_message
from phone.sip.sdp import SessionDescription
from phone.sip.useragent import CallState
from portal import metrics

if TYPE_CHECKING:
    from phone.worker.db import CallOpened
    from phone.worker.media import CallMedia


class Phase(enum.StrEnum):
    """The call states the page shows (status data-state maps them, design.md §5)."""

    DIALING = "dialing"  # our INVITE is out, nothing back yet
    RINGING = "ringing"  # the far end rings (18x)
    INCOMING = "incoming"  # their INVITE rings here
    INCALL = "incall"
    HELD = "held"  # we put it on hold and the far end accepted
    ENDED = "ended"


# Where the UA's dialog state leads (None: no change of phase).
_FROM_UA: dict[CallState, Phase | None] = {
    CallState.CALLING: None,
    CallState.RINGING: Phase.RINGING,
    CallState.INCOMING: Phase.INCOMING,
    CallState.CONNECTED: Phase.INCALL,
    CallState.TERMINATED: Phase.ENDED,
}

# Bounds of what we store and show, whatever a remote INVITE carried (CallRecord's columns).
MAX_NUMBER = 64
MAX_NAME = 100
MAX_CALL_ID = 255


def _clip(text: str, limit: int) -> str:
    """At most `limit` characters and no control characters (PostgreSQL refuses NUL in text;
    a remote INVITE may carry anything its parser let through)."""
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else "\ufffd" for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


@dataclass
class LineCall:
    id: str
    direction: str  # out | in
    remote: str
    called: str
    remote_name: str = ""
    phase: Phase = Phase.DIALING
    pending: str | None = None  # "hold" | "unhold": our re-INVITE awaits its answer
    reason: str = ""
    status: int | None = None  # the SIP status that ended it, when there is one
    started_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    # The browser session whose WebRTC audio is bridged to this call: the one place that says
    # so (the line routes media from it; nothing else keeps a copy).
    session: str | None = None
    media: CallMedia | None = None
    rejected: bool = False
    consult_of: str | None = None  # attended transfer: the held call this consultation is for
    offer: SessionDescription | None = None  # an incoming call's SDP offer, until answered
    record_id: int | None = None  # its history row, opened when the call starts
    # The database job that opens that row (and looks up the name) while the call proceeds;
    # None once the line folded its result in (phone.worker.line.Line._record_id).
    opening: asyncio.Task[CallOpened] | None = field(default=None, repr=False, compare=False)
    line: str = ""  # the line button (seed 6-1) it came in on / went out with
    ring: str = ""  # that line's ring tone
    park_slot: int | None = None  # parked in this slot of the user's park group
    early_media: bool = False  # the far end sends progress audio (183 with SDP)
    referred_from: str | None = None  # placed on a REFER received on this call (RFC 3515)
    park_group: int | None = None
    recalling: bool = False  # a parked call nobody took rings its parker again
    # The worker's own leg to a colleague picking up a parked call: not the user's call (no
    # row, not on the page); when it is answered the worker joins it with the parked one.
    picks_up: str | None = None
    # browserphone_calls{state}: follows `phase` (the worker's own pickup legs not counted).
    meter: metrics.StateMeter = field(default_factory=metrics.call_meter, repr=False, compare=False)
    # Call quality samples (phone.quality): the leg's RTCP and the page's WebRTC stats.
    quality: QualityTracker = field(default_factory=QualityTracker, repr=False, compare=False)
    quality_from_page_at: float = 0.0  # monotonic time of the page's last stats (rate limit)
    quality_report: object = field(default=None, repr=False, compare=False)  # the last RR folded

    @property
    def internal(self) -> bool:
        return self.picks_up is not None

    def __post_init__(self) -> None:
        self.remote = _clip(self.remote, MAX_NUMBER)
        self.called = _clip(self.called, MAX_NUMBER)
        self.remote_name = _clip(self.remote_name, MAX_NAME)
        self.meter.set(None if self.internal else self.phase.value)

    def _set_phase(self, phase: Phase) -> None:
        if self.phase is Phase.DIALING and phase in (Phase.RINGING, Phase.INCALL):
            # Post-dial delay: dial → the far side's first answer (18x, or 2xx without one).
            metrics.call_setup(time.time() - self.started_at, "outgoing")
        self.phase = phase
        self.meter.set(None if phase is Phase.ENDED or self.internal else phase.value)

    @property
    def ended(self) -> bool:
        return self.phase is Phase.ENDED

    @property
    def live(self) -> bool:
        """Answered and not ended: hold, hang-up and transfer make sense."""
        return self.phase in (Phase.INCALL, Phase.HELD)

    # -- transitions (the only writers of `phase`) ------------------------------------------

    def on_ua_state(self, state: CallState, status: int | None, reason: str) -> bool:
        """The UA reports the dialog moved; True if the page should hear of it."""
        if self.ended:
            return False
        phase = _FROM_UA[state]
        if phase is None:
            return False
        if phase is Phase.ENDED:
            self.end(reason or "ended", status)
            return True
        if phase is Phase.INCALL:
            if self.answered_at is None:
                self.answered_at = time.time()
            if self.phase is Phase.HELD:
                return False  # a re-INVITE's 2xx does not unhold the call
        if phase is self.phase:
            return False
        self._set_phase(phase)
        return True

    def request_hold(self, hold: bool) -> None:
        self.pending = "hold" if hold else "unhold"

    def on_hold_result(self, held: bool, ok: bool) -> None:
        """The far end answered our hold/unhold re-INVITE (RFC 3264 §8.4)."""
        self.pending = None
        if self.live:  # refused (ok=False): `held` is the state the call stays in
            self._set_phase(Phase.HELD if held else Phase.INCALL)

    def end(self, reason: str, status: int | None = None) -> None:
        if self.ended:
            return
        self._set_phase(Phase.ENDED)
        self.pending = None
        self.reason = reason
        self.status = status
        self.ended_at = time.time()

    # -- what others read ---------------------------------------------------------------------

    def message(self) -> dict[str, Any]:
        return server_message(
            "call",
            id=self.id,
            state=self.phase.value,
            direction=self.direction,
            remote=self.remote,
            remote_display=display_number(self.remote),
            remote_name=self.remote_name,
            called=self.called,
            called_display=display_number(self.called),
            held=self.phase is Phase.HELD,
            pending=self.pending,
            reason=self.reason,
            answered_at=_iso(self.answered_at),
            transfer={"of": self.consult_of} if self.consult_of else None,
            line=self.line,
            ring=self.ring,
            park=self.park_slot,
        )

    def incoming_message(self) -> dict[str, Any]:
        """`incoming`: to the one tab that should ring (seed 1-4)."""
        return server_message(
            "incoming",
            id=self.id,
            remote=self.remote,
            remote_display=display_number(self.remote),
            remote_name=self.remote_name,
            called=self.called,
            called_display=display_number(self.called),
        )

    @property
    def history_direction(self) -> str:
        if self.direction == "out":
            return "out"
        if self.answered_at:
            return "in"
        return "rejected" if self.rejected else "missed"

    def history_fields(self, user_id: int, user_name: str) -> dict[str, Any]:
        """The CallRecord columns for this call as it stands (opened, then completed)."""
        kind = self.history_direction
        return {
            "direction": kind,
            "remote_number": self.remote,
            "remote_name": self.remote_name,
            "called_number": self.called,
            "started_at": _dt(self.started_at),
            "answered_at": _dt(self.answered_at),
            "ended_at": _dt(self.ended_at),
            "end_reason": _clip(self.reason, 32),
            "sip_call_id": _clip(self.id, MAX_CALL_ID),
            # 応答者 (seed 4-1): who took an incoming call; the line's user here (park pick-ups
            # by a colleague would name them).
            "answered_by_id": user_id if kind == "in" else None,
            "answered_by_name": user_name if kind == "in" else "",
            **self.quality_fields(),
        }

    def quality_fields(self) -> dict[str, float | None]:
        """quality_mos/loss/jitter/rtt of the history row: over the call, once it has samples."""
        summary = self.quality.summary()
        if summary is None:
            return {}
        return summary.as_fields()
