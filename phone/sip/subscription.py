"""One subscription we hold as subscriber (RFC 6665 §4.1), sans-I/O.

The user agent keeps one `Subscription` per event package and resource (message-summary of
our own mailbox, RFC 3842; dialog of a colleague's extension, RFC 4235). This object says
which SUBSCRIBE to send and when, and what a response or a NOTIFY means for the subscription;
the user agent sends, authenticates and reads the bodies.

Life cycle:
- `subscribe(now)` builds the initial SUBSCRIBE (out of dialog, no To tag, Expires bounded).
- a 2xx (or a NOTIFY that races it, §4.1.2.4) creates the dialog; refreshes are in-dialog
  SUBSCRIBEs sent before the subscription expires (§4.1.2.2), half-way.
- `unsubscribe(now)` sends Expires: 0 in the dialog (§4.1.2.3); the subscription is done.
- NOTIFY's Subscription-State (§4.1.3): active/pending keep it (a shorter expires moves the
  refresh earlier); terminated ends the dialog and, per its reason and retry-after, starts a
  new subscription later, at once, or never.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from .dialog import Dialog
from .message import Headers, SipRequest, SipResponse
from .uri import Address, SipUri

# Bounds on what we ask for: a notifier may shorten it (§4.1.2.1), never lengthen it past this.
MIN_EXPIRES = 60
MAX_EXPIRES = 3600
# A failed or refused subscription is tried again after this long (unless told otherwise).
RETRY_AFTER = 300.0
# "Subscribe again later" without a retry-after (§4.1.3 probation/giveup, no reason).
DEFAULT_RETRY = 60.0

PENDING, ACTIVE, TERMINATED = "pending", "active", "terminated"


def refresh_delay(expires: float) -> float:
    """When to refresh a subscription granted for ``expires`` seconds (§4.1.2.2): half-way,
    which leaves a long one far more than a transaction's 32 s to get its answer."""
    return max(1.0, expires / 2)


def parse_subscription_state(value: str | None) -> tuple[str, dict[str, str]]:
    """Subscription-State: substate and its parameters, lowered (§8.2.3)."""
    text = (value or "").strip()
    head, *params = text.split(";")
    parsed: dict[str, str] = {}
    for param in params:
        name, _, val = param.partition("=")
        parsed[name.strip().lower()] = val.strip().strip('"').lower()
    return head.strip().lower(), parsed


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class NotifyVerdict:
    """What the user agent does with a NOTIFY of this subscription."""

    status: int  # the response: 200, or 489 for another event package
    state: str  # substate after it: pending | active | terminated
    deliver: bool  # hand the body to the package's parser


class Subscription:
    def __init__(
        self,
        *,
        event: str,
        accept: str,
        target: SipUri,
        local: Address,
        contact: Address,
        expires: int,
        new_tag: Callable[[], str],
        call_id_host: str,
    ) -> None:
        self.event = event
        self.accept = accept
        self.target = target
        self.local = local
        self.contact = contact
        self.expires = max(MIN_EXPIRES, min(MAX_EXPIRES, expires))
        self._new_tag = new_tag  # callable → a From tag (a shared socket routes by it)
        self._host = call_id_host
        self.state = PENDING
        self.dialog: Dialog | None = None
        self.refresh_at: float | None = None  # next SUBSCRIBE (refresh, or a new one)
        self.stopped = False
        self.generation = 0  # bumps for every new subscription (new Call-ID)
        self._fresh()

    def _fresh(self) -> None:
        self.call_id = f"{secrets.token_hex(10)}@{self._host}"
        self.tag = self._new_tag()
        self.cseq = 0
        self.dialog = None
        self.state = PENDING
        self.generation += 1

    # -- requests -------------------------------------------------------------------------------
    def subscribe(self, now: float, expires: int | None = None) -> SipRequest:
        """The next SUBSCRIBE: in the dialog once there is one, else an initial one."""
        self.refresh_at = None
        value = self.expires if expires is None else expires
        extra = [
            ("event", self.event),
            ("accept", self.accept),
            ("expires", str(value)),
        ]
        if self.dialog is not None:
            request = self.dialog.create_request("SUBSCRIBE", headers=extra)
            self.cseq = self.dialog.local_seq
            return request
        self.cseq += 1
        local = self.local.copy()
        local.tag = self.tag
        h = Headers()
        h.add("max-forwards", "70")
        h.add("from", str(local))
        h.add("to", str(Address(self.target.copy())))
        h.add("call-id", self.call_id)
        h.add("cseq", f"{self.cseq} SUBSCRIBE")
        h.add("contact", str(self.contact))
        for name, val in extra:
            h.add(name, val)
        return SipRequest("SUBSCRIBE", self.target.copy(), h)

    def unsubscribe(self, now: float) -> SipRequest | None:
        """Expires: 0 (§4.1.2.3), or nothing when no subscription exists at the notifier."""
        self.stopped = True
        self.refresh_at = None
        if self.dialog is None and self.state != ACTIVE and self.cseq == 0:
            return None
        return self.subscribe(now, expires=0)

    def resent(self, seq: int) -> None:
        """The user agent re-sent our SUBSCRIBE with credentials under CSeq ``seq``."""
        self.cseq = seq
        if self.dialog is not None:
            self.dialog.local_seq = max(self.dialog.local_seq, seq)

    def matches(self, request: SipRequest) -> bool:
        """A NOTIFY of this subscription: its Call-ID and our tag in To (§4.1.3)."""
        return request.call_id == self.call_id and request.to_addr.tag == self.tag

    # -- what comes back ------------------------------------------------------------------------
    def on_response(self, now: float, request: SipRequest, response: SipResponse) -> None:
        """A final response to one of our SUBSCRIBEs (401/407 already handled)."""
        if response.status < 200:
            return
        unsubscribing = request.headers.get("expires") == "0"
        if 200 <= response.status < 300:
            if self.dialog is None and response.to_addr.tag:
                self.dialog = Dialog.from_uac(request, response)
            if unsubscribing or self.stopped:
                self.state = TERMINATED
                return
            if self.state != ACTIVE and response.status == 200:
                self.state = ACTIVE
            granted = response.expires if response.expires is not None else self.expires
            self._schedule(now, granted)
            return
        if unsubscribing or self.stopped:
            self.state = TERMINATED
            return
        if response.status == 423:
            # §4.1.2.1 / RFC 3261 §21.4.17: ask again with at least Min-Expires.
            minimum = _int(response.headers.get("min-expires"))
            if minimum is not None and minimum <= MAX_EXPIRES:
                self.expires = max(self.expires, minimum)
                self.refresh_at = now
                return
        if response.status == 481 and self.dialog is not None:
            # §4.1.2.2: the notifier no longer knows it: start a new subscription now.
            self._fresh()
            self.refresh_at = now
            return
        self.failed(now, _int(response.headers.get("retry-after")))

    def failed(self, now: float, retry_after: int | None = None) -> None:
        """No answer, or a refusal: a new subscription later, not a hammering one."""
        self._fresh()
        self.state = TERMINATED
        if not self.stopped:
            self.refresh_at = now + (retry_after if retry_after is not None else RETRY_AFTER)

    def on_notify(self, now: float, request: SipRequest) -> NotifyVerdict:
        """A NOTIFY that `matches` (§4.1.3)."""
        event = (request.headers.get("event") or "").split(";")[0].strip().lower()
        if event != self.event:
            return NotifyVerdict(489, self.state, False)  # §4.1.3: not our package
        if self.dialog is None and request.from_addr.tag:
            # §4.1.2.4: the NOTIFY may arrive before the 2xx; it establishes the dialog.
            self.dialog = Dialog.from_uas(request, self.tag, self.contact, confirmed=True)
            self.dialog.local_seq = self.cseq
        elif self.dialog is not None:
            self.dialog.remote_seq = request.cseq.seq
            if request.contacts:
                self.dialog.remote_target = request.contacts[0].uri  # §4.1.3 target refresh
        substate, params = parse_subscription_state(request.headers.get("subscription-state"))
        if substate in (ACTIVE, PENDING):
            if not self.stopped:
                self.state = substate
                expires = _int(params.get("expires"))
                if expires is not None:
                    due = now + refresh_delay(expires)
                    if self.refresh_at is None or due < self.refresh_at:
                        self.refresh_at = due
            return NotifyVerdict(200, self.state, True)
        if substate != TERMINATED:
            # A substate we do not know (§8.2.3 allows extensions): keep what we have.
            return NotifyVerdict(200, self.state, True)
        self._terminated(now, params.get("reason"), _int(params.get("retry-after")))
        return NotifyVerdict(200, TERMINATED, True)

    def _terminated(self, now: float, reason: str | None, retry_after: int | None) -> None:
        """§4.1.3: what the reason says about subscribing again."""
        self.refresh_at = None
        if self.stopped:
            self.state = TERMINATED  # the answer to our un-SUBSCRIBE
            return
        self._fresh()
        self.state = TERMINATED
        if reason in ("deactivated", "timeout"):
            self.refresh_at = now  # at once
        elif reason in ("probation", "giveup", None):
            self.refresh_at = now + (retry_after if retry_after is not None else DEFAULT_RETRY)
        # rejected, noresource, invariant (and reasons we do not know): never again.
        elif reason not in ("rejected", "noresource", "invariant") and retry_after is not None:
            self.refresh_at = now + retry_after

    def _schedule(self, now: float, granted: int) -> None:
        if granted <= 0:
            # Granted no time at all: treat it as over, and ask again later.
            self.failed(now)
            return
        self.refresh_at = now + refresh_delay(granted)

    def due(self, now: float) -> bool:
        return self.refresh_at is not None and now >= self.refresh_at
