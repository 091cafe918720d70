"""REGISTER client state machine (RFC 3261 §10.2), sans-I/O.

:class:`Registration` builds REGISTER requests and consumes their final responses; whoever owns it
(the user agent) sends the requests through a transaction layer and calls back with the outcome:

    request = reg.register(now)              # send it; later:
    retry = reg.handle_response(now, resp)   # maybe a new request to send (auth, 423)
    reg.handle_timeout(now)                  # transaction timed out
    request = reg.handle_timer(now)          # at reg.next_timer(): refresh or retry
    reg.events                               # RegistrationStateChanged items to drain

The owner may know more than the REGISTER transactions tell: a keepalive that goes unanswered
means the registrar is gone long before a refresh would notice. It says so with
``reg.unreachable(now)`` (FAILED at once, quick re-REGISTERs with backoff) and, when the
registrar answers anything again, sends what ``reg.reachable(now)`` returns right away.
"""

from __future__ import annotations

import enum
import random
import secrets
from dataclasses import dataclass

from .auth import DigestAuth
from .message import Headers, SipRequest, SipResponse, generate_tag
from .uri import Address, SipUri

# The reason of FAILED when the registrar does not answer at all (transaction timeout, lost
# keepalives): one wording, so that both paths report a single state change.
NO_RESPONSE = "no response from the PBX"


class RegistrationState(enum.Enum):
    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    UNREGISTERING = "unregistering"
    FAILED = "failed"


@dataclass(slots=True)
class RegistrationStateChanged:
    state: RegistrationState
    reason: str = ""
    expires: int | None = None


@dataclass(slots=True)
class RegistrationSettings:
    expires: int = 3600
    # Backoff after failure: base doubling up to max, then 50-100 % of that at random, so that
    # the lines of a worker that all failed together (a PBX restart) do not retry in lockstep
    # (the flow-recovery wait time of RFC 5626 §4.5).
    retry_base: float = 30.0
    retry_max: float = 1800.0
    # Backoff of the re-REGISTERs while the registrar is unreachable (see ``unreachable``):
    # short, because the keepalive has told us the outage is what is wrong, not our request.
    reregister_base: float = 1.0
    reregister_max: float = 8.0
    user_agent: str | None = "BrowserPhone"
    # Refresh up to this fraction of the interval early, at random, so that lines registered
    # together (a worker starting up with many users) do not all refresh in the same instant.
    refresh_jitter: float = 0.0


class Registration:
    """One binding of ``contact`` for ``aor`` at ``registrar``."""

    def __init__(
        self,
        *,
        aor: SipUri,
        registrar: SipUri,
        contact: SipUri,
        auth: DigestAuth | None = None,
        settings: RegistrationSettings | None = None,
        call_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.aor = aor
        self.registrar = registrar
        self.contact = contact
        self.auth = auth
        self.settings = settings or RegistrationSettings()
        self._rng = rng or random.Random()
        self.expires = self.settings.expires
        # RFC 3261 §10.2: one Call-ID for all REGISTERs of this UA to this registrar.
        self.call_id = call_id or f"{secrets.token_hex(10)}@browserphone"
        self.from_tag = generate_tag()
        self.cseq = secrets.randbelow(2**16) + 1
        self.state = RegistrationState.UNREGISTERED
        self.reason = ""
        self.granted: int | None = None
        self.events: list[RegistrationStateChanged] = []
        self.pending: SipRequest | None = None
        self._timer: float | None = None
        self._timer_kind: str | None = None  # "refresh" | "retry" | "reregister"
        self._failures = 0
        self._unregistering = False
        self.lost = False  # the owner reported the registrar unreachable (and not back yet)
        self._reregisters = 0

    # -- public API -------------------------------------------------------------------------
    def register(self, now: float) -> SipRequest:
        """Start (or restart) registering; returns the REGISTER to send."""
        self._unregistering = False
        self.lost = False
        self._set_state(RegistrationState.REGISTERING)
        self._timer = None
        return self._build(self.expires)

    def unregister(self, now: float) -> SipRequest | None:
        """Remove our binding (Expires: 0, RFC 3261 §10.2.2); None if nothing is registered."""
        self._timer = None
        self.lost = False
        if self.state not in (RegistrationState.REGISTERED, RegistrationState.REGISTERING):
            self._set_state(RegistrationState.UNREGISTERED)
            return None
        self._unregistering = True
        self._set_state(RegistrationState.UNREGISTERING)
        return self._build(0)

    def unreachable(self, now: float, reason: str = NO_RESPONSE) -> None:
        """The registrar stopped answering (the owner's keepalive): FAILED now, retry soon.

        Reported once per outage. Until the registrar answers again, ``handle_timer`` returns a
        REGISTER every ``reregister_base * 2**n`` seconds (capped, jittered) even while an
        earlier one is unanswered: the owner abandons that one. RFC 3261 §10.2 wants a new
        REGISTER only after the previous one's final response or timeout; our own deadline is
        that timeout, and the binding sent again is the same one.
        """
        if self.lost or self.state in (
            RegistrationState.UNREGISTERED,
            RegistrationState.UNREGISTERING,
        ):
            return
        self.lost = True
        self._reregisters = 0
        self._set_state(RegistrationState.FAILED, reason)
        self._schedule_reregister(now)

    def reachable(self, now: float) -> SipRequest | None:
        """The registrar answered something again: the REGISTER to send at once, if it was lost.

        The state stays FAILED until that REGISTER gets its 2xx.
        """
        if not self.lost:
            return None
        self.lost = False
        self._timer = None
        return self._build(self.expires)

    def next_timer(self) -> float | None:
        return self._timer

    def handle_timer(self, now: float) -> SipRequest | None:
        if self._timer is None or now < self._timer:
            return None
        self._timer = None
        if self._timer_kind == "reregister":
            # Sent whether or not the previous one is pending (see ``unreachable``); the state
            # stays FAILED: a line flickering between registering and failed every few seconds
            # of an outage tells the user nothing new.
            self._reregisters += 1
            self._schedule_reregister(now)
            return self._build(self.expires)
        if self.pending is not None:
            return None
        if self._timer_kind == "retry":
            self._set_state(RegistrationState.REGISTERING)
        # A refresh keeps state REGISTERED while it is in flight.
        return self._build(self.expires)

    def handle_timeout(self, now: float) -> None:
        """The REGISTER transaction timed out (Timer F) or the transport failed."""
        self.pending = None
        if self._unregistering:
            self._set_state(RegistrationState.UNREGISTERED, NO_RESPONSE)
            return
        if self.lost:
            return  # already FAILED, and the re-REGISTER timer is running
        self._fail(now, NO_RESPONSE, None)

    def handle_response(self, now: float, response: SipResponse) -> SipRequest | None:
        """Feed a final response to our pending REGISTER; returns a request to send, if any."""
        if response.status < 200 or self.pending is None:
            return None
        request = self.pending
        self.pending = None
        if self.lost:
            # Any answer ends the outage; what it says is handled below like any other.
            self.lost = False
            self._timer = None
        code = response.status
        if code in (401, 407) and self.auth is not None:
            if self.auth.handle_challenge(response):
                return self._build(0 if self._unregistering else self.expires, auth_from=request)
            self._fail(now, f"{code} authentication failed", response)
            return None
        if self.auth is not None:
            self.auth.accepted()
        if code == 423 and not self._unregistering:
            # RFC 3261 §10.2.8: retry with at least Min-Expires.
            value = (response.headers.get("min-expires") or "").strip()
            if value.isdigit() and int(value) > self.expires:
                self.expires = int(value)
                return self._build(self.expires)
            self._fail(now, "423 Interval Too Brief", response)
            return None
        if 200 <= code < 300:
            if self._unregistering:
                self._unregistering = False
                self.granted = None
                self._set_state(RegistrationState.UNREGISTERED, "")
                return None
            granted = self._granted_expires(response)
            self.granted = granted
            self._failures = 0
            delay = _refresh_delay(granted)
            if self.settings.refresh_jitter:
                delay -= delay * self.settings.refresh_jitter * self._rng.random()
            self._timer = now + max(1.0, delay)
            self._timer_kind = "refresh"
            self._set_state(RegistrationState.REGISTERED, "", granted)
            return None
        if self._unregistering:
            self._unregistering = False
            self._set_state(RegistrationState.UNREGISTERED, f"{code} {response.reason}")
            return None
        self._fail(now, f"{code} {response.reason}".strip(), response)
        return None

    # -- internals --------------------------------------------------------------------------
    def _set_state(
        self, state: RegistrationState, reason: str = "", expires: int | None = None
    ) -> None:
        if (
            state is self.state
            and reason == self.reason
            and state is not RegistrationState.REGISTERED
        ):
            return
        self.state = state
        self.reason = reason
        self.events.append(RegistrationStateChanged(state, reason, expires))

    def _fail(self, now: float, reason: str, response: SipResponse | None) -> None:
        self._failures += 1
        delay = min(self.settings.retry_base * 2 ** (self._failures - 1), self.settings.retry_max)
        delay *= self._rng.uniform(0.5, 1.0)
        if response is not None:
            retry_after = (response.headers.get("retry-after") or "").split(";")[0].strip()
            if retry_after.isdigit():
                delay = max(1.0, float(retry_after))  # RFC 3261 §20.33
        self._timer = now + delay
        self._timer_kind = "retry"
        self._set_state(RegistrationState.FAILED, reason)

    def _schedule_reregister(self, now: float) -> None:
        # Same shape as _fail (RFC 5626 §4.5), on a scale of seconds.
        settings = self.settings
        delay = min(settings.reregister_max, settings.reregister_base * 2**self._reregisters)
        self._timer = now + delay * self._rng.uniform(0.5, 1.0)
        self._timer_kind = "reregister"

    def _granted_expires(self, response: SipResponse) -> int:
        # RFC 3261 §10.2.4: the registrar's answer; our contact's expires param wins.
        for contact in response.contacts:
            if contact.uri == self.contact and contact.expires is not None:
                return contact.expires
        try:
            header = response.expires
        except ValueError:
            header = None
        return header if header is not None else self.expires

    def _build(self, expires: int, auth_from: SipRequest | None = None) -> SipRequest:
        self.cseq += 1
        headers = Headers()
        headers.add("max-forwards", "70")
        headers.add("from", f"{Address(self.aor)};tag={self.from_tag}")
        headers.add("to", str(Address(self.aor)))
        headers.add("call-id", self.call_id)
        headers.add("cseq", f"{self.cseq} REGISTER")
        headers.add("contact", str(Address(self.contact)))
        headers.add("expires", str(expires))
        headers.add("allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REFER, NOTIFY, INFO")
        if self.settings.user_agent:
            headers.add("user-agent", self.settings.user_agent)
        request = SipRequest("REGISTER", self.registrar.copy(), headers)
        if self.auth is not None and self.auth.challenges:
            self.auth.apply(request)
        self.pending = request
        return request


def _refresh_delay(expires: int) -> float:
    """Refresh at half the granted time, and never later than 32 s before expiry."""
    if expires <= 2:
        return 1.0
    return max(1.0, min(expires / 2, expires - 32))
