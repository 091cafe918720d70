"""The user agent: registration, calls, transfer and MWI on top of transactions and dialogs.

Sans-I/O like the rest of the package. The transport feeds it and asks it for timers; the worker
issues commands. Every method that can produce traffic returns a :class:`UaOutput` with the
datagrams to send and the events that happened::

    ua = UserAgent(UserAgentConfig(username="201", domain="pbx.example", password="...",
                                   local_addr=("192.0.2.10", 5060), proxy_addr=("192.0.2.1", 5060)))
    out = ua.register(now)
    out = ua.receive(now, datagram, source)
    out = ua.handle_timer(now)            # at ua.next_timer()
    call_id, out = ua.call(now, "0312345678", offer_sdp)

Calls are identified by their SIP Call-ID. Media is the caller's business: the user agent carries
SDP, performs the RFC 3264 offer/answer bookkeeping and reports :class:`MediaUpdated`.
"""

from __future__ import annotations

import enum
import random
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import demux
from .auth import DigestAuth
from .demux import LINE_PARAM
from .dialog import Dialog, DialogState, next_hop, request_dialog_id
from .dialoginfo import DialogInfoError, DialogInfoState, DialogInfoTooLarge, parse_dialog_info
from .errors import SipError, SipParseError
from .message import (
    Headers,
    SipMessage,
    SipRequest,
    SipResponse,
    Via,
    generate_tag,
    make_response,
)
from .registration import (
    NO_RESPONSE,
    Registration,
    RegistrationSettings,
    RegistrationState,
    RegistrationStateChanged,
)
from .sdp import (
    NegotiatedMedia,
    SdpNegotiationError,
    SessionDescription,
    is_hold,
    negotiate_answer,
    negotiated_media,
    parse_sdp,
    sdes_of,
)
from .subscription import TERMINATED, Subscription
from .transaction import (
    Addr,
    MalformedMessage,
    Outgoing,
    Output,
    RequestReceived,
    ResponseReceived,
    TimerSettings,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    make_cancel,
)
from .uri import Address, SipUri, parse_address, parse_uri

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REFER, NOTIFY, INFO, SUBSCRIBE"
SUPPORTED = "replaces, norefersub"
# RFC 3261 §21.3: what we put in a 3xx and how far we follow one (§8.1.3.4 lets a UAC recurse;
# a bound keeps two users forwarding to each other from ringing forever).
MAX_REDIRECT_CONTACTS = 5
MAX_REDIRECTS = 3

__all__ = [
    "CallRedirected",
    "CallState",
    "CallStateChanged",
    "HoldChanged",
    "IncomingCall",
    "MediaUpdated",
    "MessageSummary",
    "RegistrationState",
    "RegistrationStateChanged",
    "TransferProgress",
    "TransferRequested",
    "UaOutput",
    "UntrustedRequests",
    "UserAgent",
    "UserAgentConfig",
]


# ---------------------------------------------------------------- configuration and events


@dataclass(slots=True)
class UserAgentConfig:
    username: str  # user part of our AoR (the extension)
    domain: str  # registrar / PBX domain
    local_addr: Addr  # bound address: written into Via and Contact
    password: str = ""
    auth_username: str | None = None  # defaults to username
    display_name: str | None = None
    transport: str = "UDP"
    # Where every request goes (outbound proxy / PBX). Without it, only IP-literal targets work:
    # the core does no DNS (the transport adapter resolves names and passes an address here).
    proxy_addr: Addr | None = None
    expires: int = 3600
    refresh_jitter: float = 0.0  # see RegistrationSettings.refresh_jitter
    timers: TimerSettings = field(default_factory=TimerSettings)
    user_agent: str = "BrowserPhone"
    # Where out-of-dialog requests (new calls, OPTIONS, NOTIFY...) may come from: the PBX. None
    # takes them from anywhere. Over UDP a source matches on (ip, port); over TCP/TLS on the ip
    # alone, since the proxy connects from ephemeral ports. Others get 403 (see _on_request).
    trusted_sources: frozenset[tuple[str, int]] | None = None
    # An incoming call still unanswered this many seconds after its INVITE gets 480. None: the
    # caller (or the PBX) decides when to give up.
    ring_timeout: float | None = None
    # OPTIONS to the proxy every keepalive_interval seconds while registered (None: never). No
    # answer of any kind within keepalive_timeout: the PBX is reported lost (FAILED) and
    # re-REGISTERs follow with a backoff of reregister_base doubling up to reregister_max.
    keepalive_interval: float | None = None
    keepalive_timeout: float = 4.0
    reregister_base: float = 1.0
    reregister_max: float = 8.0
    # Backoff after a REGISTER failed (error response, timeout): RegistrationSettings.retry_*.
    register_retry_base: float = 30.0
    register_retry_max: float = 1800.0
    # Many lines on one shared socket (phone.sip.demux): this line's token. It goes into the
    # Contact URI (as the LINE_PARAM uri-parameter, which the registrar hands back as the
    # Request-URI of calls to us, RFC 3261 §10.3 step 7 / §16.5), into the branch of every Via
    # we send (responses find their way back by it, §17.1.3) and into every local tag (the To
    # tag of in-dialog requests to us, §12.2.2). None: a socket of our own, plain identifiers.
    line_token: str | None = None


class CallState(enum.Enum):
    CALLING = "calling"  # outgoing INVITE sent
    RINGING = "ringing"  # outgoing, 18x received
    INCOMING = "incoming"  # incoming INVITE not answered yet
    CONNECTED = "connected"
    TERMINATED = "terminated"


@dataclass(slots=True)
class CallStateChanged:
    call_id: str
    state: CallState
    status: int | None = None  # SIP status behind the change, when there is one
    reason: str = ""  # e.g. "busy", "declined", "cancelled", "remote-bye", "local-bye", "timeout"


@dataclass(slots=True)
class CallRedirected:
    """An outgoing call got a 3xx and now calls ``target`` instead (RFC 3261 §8.1.3.4)."""

    call_id: str
    status: int
    target: str


@dataclass(slots=True)
class IncomingCall:
    call_id: str
    caller: Address
    callee: Address
    request_uri: SipUri
    offer: SessionDescription | None
    replaces: str | None = None  # Call-ID of our call this INVITE replaces (RFC 3891)
    referred_by: str | None = None
    headers: Headers | None = None  # all of the INVITE's headers, for what the worker reads


@dataclass(slots=True)
class MediaUpdated:
    """An offer/answer exchange completed (or early media arrived)."""

    call_id: str
    local: SessionDescription
    remote: SessionDescription
    media: NegotiatedMedia | None
    remote_hold: bool
    early: bool = False


@dataclass(slots=True)
class TransferRequested:
    """The peer sent REFER (RFC 3515): call ``target`` (with ``replaces`` as Replaces header)."""

    call_id: str
    target: SipUri
    replaces: str | None
    referred_by: str | None


@dataclass(slots=True)
class TransferProgress:
    """Progress of our REFER: 202/error, then NOTIFY sipfrag statuses (RFC 3515 §2.4.5)."""

    call_id: str
    status: int
    reason: str
    final: bool


@dataclass(slots=True)
class HoldChanged:
    """Our hold/unhold re-INVITE got its final answer (RFC 3261 §14.1).

    ``held`` is the hold state we are in afterwards: the requested one when ``ok``, the previous
    one when the peer refused (the session stays as it was, §14.2).
    """

    call_id: str
    held: bool
    ok: bool
    status: int
    reason: str = ""


@dataclass(slots=True)
class UntrustedRequests:
    """Out-of-dialog requests refused since the previous report for coming from elsewhere than
    ``trusted_sources``. Reported at most once per minute, so a scanner cannot flood the log."""

    count: int
    last_source: Addr
    last_method: str


@dataclass(slots=True)
class WatchedLamp:
    """The dialogs of a watched extension (RFC 4235) changed its lamp: idle | ringing | busy,
    or offline when the subscription ended and nothing is known any more."""

    extension: str
    state: str


@dataclass(slots=True)
class MessageSummary:
    """Voicemail status from a message-summary NOTIFY (RFC 3842)."""

    waiting: bool
    new: int = 0
    old: int = 0
    account: str | None = None


UaEvent = (
    CallStateChanged
    | IncomingCall
    | MediaUpdated
    | TransferRequested
    | TransferProgress
    | MessageSummary
    | RegistrationStateChanged
    | MalformedMessage
    | HoldChanged
    | UntrustedRequests
    | CallRedirected
    | WatchedLamp
)

# At most one UntrustedRequests event per this many seconds.
UNTRUSTED_REPORT_INTERVAL = 60.0


@dataclass(slots=True)
class UaOutput:
    send: list[Outgoing] = field(default_factory=list)
    events: list[UaEvent] = field(default_factory=list)


# ---------------------------------------------------------------- internal bookkeeping


@dataclass(slots=True)
class _Pending:
    """A client transaction the UA is waiting on."""

    # register | invite | reinvite | bye | cancel | refer | notify | subscribe | keepalive
    kind: str
    request: SipRequest
    call_id: str | None = None
    auth_tries: int = 0


@dataclass(slots=True)
class _OkRetransmit:
    """2xx retransmission of the UAS core (RFC 3261 §13.3.1.4)."""

    response: SipResponse
    next_at: float
    interval: float
    give_up_at: float


@dataclass
class Call:
    id: str
    direction: str  # "outgoing" | "incoming"
    state: CallState
    invite: SipRequest
    dialog: Dialog | None = None
    invite_tid: str | None = None
    local_sdp: SessionDescription | None = None
    remote_sdp: SessionDescription | None = None
    got_provisional: bool = False
    cancel_requested: bool = False
    local_hold: bool = False
    hold_agreed: bool = False  # local_hold as of the last re-INVITE the peer accepted
    reinvite: SipRequest | None = None  # our pending re-INVITE
    reinvite_incoming: bool = False  # an incoming re-INVITE awaits ACK
    glare_retry_at: float | None = None
    glare_hold: bool | None = None
    ok: _OkRetransmit | None = None
    ack: SipRequest | None = None  # ACK we sent for the last 2xx, re-sent on retransmissions
    refer_pending: bool = False
    refer_subscription: bool = False  # we accepted a REFER and owe NOTIFYs
    ring_deadline: float | None = None  # incoming, unanswered: 480 at this time (ring_timeout)
    # Request-URIs this call's INVITEs went to before a 3xx sent it on (lowered), oldest first.
    redirected_from: list[str] = field(default_factory=list)


def _parse_sipfrag(body: bytes) -> tuple[int, str] | None:
    """Status line of a message/sipfrag body (RFC 3420)."""
    line = body.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()
    match = re.match(r"SIP/2\.0\s+(\d{3})\s*(.*)", line)
    if match is None:
        return None
    return int(match.group(1)), match.group(2)


def parse_message_summary(body: bytes) -> MessageSummary:
    """application/simple-message-summary (RFC 3842 §5.2)."""
    text = body.decode("utf-8", errors="replace")
    waiting = False
    account = None
    new = old = 0
    for line in text.splitlines():
        name, _, value = line.partition(":")
        key = name.strip().lower()
        value = value.strip()
        if key == "messages-waiting":
            waiting = value.lower() == "yes"
        elif key == "message-account":
            account = value
        elif key == "voice-message":
            match = re.match(r"(\d+)/(\d+)", value)
            if match:
                new, old = int(match.group(1)), int(match.group(2))
    return MessageSummary(waiting, new, old, account)


def _replaces_value(dialog: Dialog) -> str:
    """Replaces header naming ``dialog`` as the *peer* sees it (RFC 3891 §3, RFC 5589 §7)."""
    return f"{dialog.call_id};to-tag={dialog.remote_tag};from-tag={dialog.local_tag}"


class UserAgent:
    """One SIP account: registration plus any number of calls."""

    def __init__(self, config: UserAgentConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.layer = TransactionLayer(config.local_addr, config.transport, timers=config.timers)
        self.auth = DigestAuth(config.auth_username or config.username, config.password)
        self.calls: dict[str, Call] = {}
        self._pending: dict[str, _Pending] = {}
        self._rng = rng or random.Random()
        self.aor = SipUri(host=config.domain, user=config.username)
        self.registration = Registration(
            aor=self.aor,
            registrar=SipUri(host=config.domain),
            contact=self.contact_uri,
            auth=self.auth,
            settings=RegistrationSettings(
                expires=config.expires,
                user_agent=config.user_agent,
                refresh_jitter=config.refresh_jitter,
                retry_base=config.register_retry_base,
                retry_max=config.register_retry_max,
                reregister_base=config.reregister_base,
                reregister_max=config.reregister_max,
            ),
            rng=self._rng,
        )
        # Our subscriptions (RFC 6665) by key: "mwi", "dialog:<extension>".
        self.subscriptions: dict[str, Subscription] = {}
        self._watched: dict[str, DialogInfoState] = {}  # "dialog:<ext>" → its dialogs
        self._lamps: dict[str, str] = {}  # "dialog:<ext>" → the lamp last reported
        self._register_tid: str | None = None  # the REGISTER transaction in flight, if any
        self._keepalive_at: float | None = None  # next OPTIONS probe
        self._probes: dict[str, float] = {}  # unanswered probe transaction -> its deadline
        self.untrusted_requests = 0  # refused for their source, since start
        self._untrusted_unreported = 0
        self._untrusted_last: tuple[Addr, str] = (("", 0), "")
        self._untrusted_reported_at: float | None = None

    # -- addresses ------------------------------------------------------------------------------
    @property
    def local_addr(self) -> Addr:
        return self.config.local_addr

    @property
    def contact_uri(self) -> SipUri:
        host, port = self.config.local_addr
        params: dict[str, str | None] = {}
        if self.config.line_token is not None:
            # First, so ";transport=..." stays last where tools and people look for it.
            params[LINE_PARAM] = self.config.line_token
        if self.config.transport.upper() != "UDP":
            params["transport"] = self.config.transport.lower()
        return SipUri(host=host, user=self.config.username, port=port, params=params)

    @property
    def contact(self) -> Address:
        return Address(self.contact_uri)

    def use_line_token(self, token: str) -> None:
        """Put this user agent behind a shared socket as line `token` (see
        UserAgentConfig.line_token). Only before its first request: the registered Contact
        and every identifier minted afterwards carry the token."""
        self.config.line_token = token
        self.registration.contact = self.contact_uri
        self.registration.from_tag = self._new_tag()

    def _new_tag(self) -> str:
        token = self.config.line_token
        return generate_tag() if token is None else demux.make_tag(token)

    def _new_via(self) -> Via:
        token = self.config.line_token
        return self.layer.make_via(None if token is None else demux.make_branch(token))

    def _from_address(self) -> Address:
        return Address(self.aor.copy(), self.config.display_name)

    def target_uri(self, target: str | SipUri) -> SipUri:
        """A dialled string (number/extension) or a URI → request URI at our domain."""
        if isinstance(target, SipUri):
            return target
        text = target.strip()
        if text.startswith(("sip:", "sips:", "tel:")):
            return parse_uri(text)
        return SipUri(host=self.config.domain, user=text)

    def _destination(self, request: SipRequest) -> Addr:
        if self.config.proxy_addr is not None:
            return self.config.proxy_addr
        hop = next_hop(request)
        host = hop.host.strip("[]")
        if not _is_ip(host):
            raise SipError(f"no proxy_addr configured and {hop.host!r} is not an IP address")
        return (host, hop.port or 5060)

    # -- plumbing -------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        candidates = [
            self.layer.next_timer(),
            self.registration.next_timer(),
            *(s.refresh_at for s in self.subscriptions.values()),
            self._keepalive_at,
            *self._probes.values(),
        ]
        if self._untrusted_unreported and self._untrusted_reported_at is not None:
            candidates.append(self._untrusted_reported_at + UNTRUSTED_REPORT_INTERVAL)
        for call in self.calls.values():
            if call.ok is not None:
                candidates.append(call.ok.next_at)
            candidates.append(call.glare_retry_at)
            candidates.append(call.ring_deadline)
        times = [t for t in candidates if t is not None]
        return min(times) if times else None

    def receive(self, now: float, data: bytes | SipMessage, source: Addr) -> UaOutput:
        """A datagram / framed stream message, or the message a shared socket's demux already
        parsed to route it (parsing once is most of the cost of a registration burst)."""
        out = UaOutput()
        self._absorb(now, self.layer.receive(now, data, source), out)
        return out

    def handle_timer(self, now: float) -> UaOutput:
        out = UaOutput()
        self._absorb(now, self.layer.handle_timer(now), out)
        request = self.registration.handle_timer(now)
        if request is not None:
            self._send_register(now, request, out)
        self._drain_registration(out)
        self._keepalive_timers(now, out)
        self._report_untrusted(now, out)
        for key, sub in list(self.subscriptions.items()):
            if sub.due(now):
                self._send_subscribe(now, key, out)
        for call in list(self.calls.values()):
            self._call_timers(now, call, out)
        return out

    def _call_timers(self, now: float, call: Call, out: UaOutput) -> None:
        if call.ring_deadline is not None and now >= call.ring_deadline:
            call.ring_deadline = None
            if call.state is CallState.INCOMING:
                # Nobody answered: the UAS ends the INVITE with a final response of its own
                # (RFC 3261 §13.3.1.3); 480 says "not here now" rather than "busy" (§21.4.18).
                tag = call.dialog.local_tag if call.dialog else generate_tag()
                self._respond(now, make_response(call.invite, 480, to_tag=tag), out)
                self._end(call, out, 480, "no-answer")
        ok = call.ok
        if ok is not None and now >= ok.next_at:
            if now >= ok.give_up_at:
                # §13.3.1.4: no ACK for 64*T1: confirm, then end the session with BYE.
                call.ok = None
                if call.state is CallState.CONNECTED and not call.reinvite_incoming:
                    self._bye(now, call, out, reason="no-ack")
                call.reinvite_incoming = False
            else:
                self._absorb(now, self.layer.send_response(now, ok.response), out)
                ok.interval = min(ok.interval * 2, self.config.timers.t2)
                ok.next_at += ok.interval
        if call.glare_retry_at is not None and now >= call.glare_retry_at:
            call.glare_retry_at = None
            if call.state is not CallState.CONNECTED:
                return
            if call.reinvite is None and not call.reinvite_incoming:
                self._send_reinvite(now, call, bool(call.glare_hold), out)
            else:
                call.glare_retry_at = now + 0.1  # still one offer in flight (§14.1)

    def _send_request(
        self, now: float, request: SipRequest, kind: str, call_id: str | None, out: UaOutput
    ) -> str:
        request.headers.set("via", str(self._new_via()))
        if "user-agent" not in request.headers and self.config.user_agent:
            request.headers.add("user-agent", self.config.user_agent)
        tid, layer_out = self.layer.send_request(now, request, self._destination(request))
        self._pending[tid] = _Pending(kind, request, call_id)
        self._absorb(now, layer_out, out)
        return tid

    def _respond(self, now: float, response: SipResponse, out: UaOutput) -> None:
        if self.config.user_agent and "server" not in response.headers:
            response.headers.add("server", self.config.user_agent)
        self._absorb(now, self.layer.send_response(now, response), out)

    def _absorb(self, now: float, layer_out: Output, out: UaOutput) -> None:
        out.send.extend(layer_out.send)
        for event in layer_out.events:
            try:
                if isinstance(event, RequestReceived):
                    self._on_request(now, event, out)
                elif isinstance(event, ResponseReceived):
                    self._on_response(now, event, out)
                elif isinstance(event, TransactionTimeout):
                    self._on_timeout(now, event, out)
                elif isinstance(event, TransactionTerminated):
                    # Entries kept for 2xx retransmissions (Accepted state) end with Timer M.
                    self._pending.pop(event.transaction_id, None)
                elif isinstance(event, MalformedMessage):
                    out.events.append(event)
            except (SipParseError, SdpNegotiationError) as exc:
                # A message that parsed but carries nonsense (bad SDP, bad Refer-To...) must
                # never take the user agent down.
                out.events.append(MalformedMessage(b"", ("", 0), str(exc)))

    def _drain_registration(self, out: UaOutput) -> None:
        out.events.extend(self.registration.events)
        self.registration.events.clear()

    # -- registration ---------------------------------------------------------------------------
    def register(self, now: float) -> UaOutput:
        out = UaOutput()
        self._send_register(now, self.registration.register(now), out)
        self._drain_registration(out)
        interval = self.config.keepalive_interval
        if interval is not None and self._keepalive_at is None:
            self._keepalive_at = now + interval
        return out

    def unregister(self, now: float) -> UaOutput:
        out = UaOutput()
        self._stop_keepalive()
        request = self.registration.unregister(now)
        if request is not None:
            self._send_register(now, request, out)
        self._drain_registration(out)
        return out

    def _send_register(self, now: float, request: SipRequest, out: UaOutput) -> None:
        old = self._register_tid
        if old is not None and old in self._pending:
            # One REGISTER at a time (RFC 3261 §10.2): a new one replaces an unanswered one,
            # which is given up for good (its late answer is a stray response).
            self._forget_transaction(old)
        self._register_tid = self._send_request(now, request, "register", None, out)

    def _forget_transaction(self, tid: str) -> None:
        self._pending.pop(tid, None)
        self.layer.abandon(tid)

    # -- keepalive (registration liveness) -------------------------------------------------------
    def _keepalive_timers(self, now: float, out: UaOutput) -> None:
        for tid, deadline in list(self._probes.items()):
            if now >= deadline:
                # Not even a 100 within keepalive_timeout: the PBX is gone. Waiting for Timer F
                # (64*T1 = 32 s, RFC 3261 §17.1.2.2) would leave the line dead for half a minute.
                del self._probes[tid]
                self._forget_transaction(tid)
                self.registration.unreachable(now, NO_RESPONSE)
        self._drain_registration(out)
        if self._keepalive_at is None or now < self._keepalive_at:
            return
        if self.registration.state in (
            RegistrationState.UNREGISTERED,
            RegistrationState.UNREGISTERING,
        ):
            self._stop_keepalive()
            return
        assert self.config.keepalive_interval is not None
        self._keepalive_at = now + self.config.keepalive_interval
        self._send_keepalive(now, out)

    def _send_keepalive(self, now: float, out: UaOutput) -> None:
        """An out-of-dialog OPTIONS to the proxy (RFC 3261 §11.1), a fresh Call-ID each time."""
        local = Address(self.aor.copy())
        local.tag = self._new_tag()
        h = Headers()
        h.add("max-forwards", "70")
        h.add("from", str(local))
        h.add("to", str(Address(self.aor.copy())))
        h.add("call-id", f"{secrets.token_hex(10)}@{self.config.local_addr[0]}")
        h.add("cseq", "1 OPTIONS")
        h.add("accept", "application/sdp")
        request = SipRequest("OPTIONS", SipUri(host=self.config.domain), h)
        tid = self._send_request(now, request, "keepalive", None, out)
        self._probes[tid] = now + self.config.keepalive_timeout

    def proxy_lost(self, now: float) -> UaOutput:
        """The owner's keepalive (a shared socket probing for many lines) found the proxy gone:
        as if our own probe had timed out."""
        out = UaOutput()
        self.registration.unreachable(now, NO_RESPONSE)
        self._drain_registration(out)
        return out

    def proxy_answered(self, now: float) -> UaOutput:
        """The proxy answered the owner's keepalive again: re-REGISTER at once if lost."""
        out = UaOutput()
        self._proxy_answered(now, out)
        return out

    def _proxy_answered(self, now: float, out: UaOutput) -> None:
        """Any response at all, even 404/405/407/483, means the proxy is alive."""
        self._clear_probes()
        request = self.registration.reachable(now)
        if request is not None:
            # Back after an outage: register now instead of at the next backoff step.
            self._send_register(now, request, out)
        self._drain_registration(out)

    def _stop_keepalive(self) -> None:
        self._keepalive_at = None
        self._clear_probes()

    def _clear_probes(self) -> None:
        # Outstanding probes were sent before the answer just seen (or are no longer wanted):
        # they prove nothing more, and retransmitting them would only cost packets.
        for tid in self._probes:
            self._forget_transaction(tid)
        self._probes.clear()

    # -- outgoing calls -------------------------------------------------------------------------
    def call(
        self,
        now: float,
        target: str | SipUri,
        offer: SessionDescription,
        *,
        headers: Iterable[tuple[str, str]] = (),
        from_user: str | None = None,
        call_id: str | None = None,
    ) -> tuple[str, UaOutput]:
        """Place a call (RFC 3261 §13.2.1). Returns the Call-ID used as the call handle.

        ``from_user`` presents another number of ours in From (a line button's number, for
        PBXs that take the caller ID from there); authentication still uses our credentials.
        ``call_id`` lets the caller name the call before the INVITE exists (the worker shows
        a dialling call at once and sends the INVITE once its media port is open); it must be
        globally unique (RFC 3261 §8.1.1.4).
        """
        uri = self.target_uri(target)
        call_id = call_id or f"{secrets.token_hex(12)}@{self.config.local_addr[0]}"
        local = self._from_address()
        if from_user:
            local.uri.user = from_user
        local.tag = self._new_tag()
        h = Headers()
        h.add("max-forwards", "70")
        h.add("from", str(local))
        h.add("to", str(Address(uri.copy())))
        h.add("call-id", call_id)
        h.add("cseq", f"{secrets.randbelow(2**16) + 1} INVITE")
        h.add("contact", str(self.contact))
        h.add("allow", ALLOW)
        h.add("supported", SUPPORTED)
        for name, value in headers:
            h.add(name, value)
        h.add("content-type", "application/sdp")
        invite = SipRequest("INVITE", uri, h, offer.to_bytes())
        call = Call(call_id, "outgoing", CallState.CALLING, invite, local_sdp=offer)
        self.calls[call_id] = call
        out = UaOutput()
        call.invite_tid = self._send_request(now, invite, "invite", call_id, out)
        out.events.append(CallStateChanged(call_id, CallState.CALLING))
        return call_id, out

    def hangup(self, now: float, call_id: str) -> UaOutput:
        """End a call in whatever state: CANCEL, BYE, or 603 Decline for an unanswered one."""
        out = UaOutput()
        call = self.calls.get(call_id)
        if call is None or call.state is CallState.TERMINATED:
            return out
        if call.direction == "incoming" and call.state is CallState.INCOMING:
            return self.reject(now, call_id, 603)
        if call.state is CallState.CONNECTED:
            self._bye(now, call, out, reason="local-bye")
            return out
        # Outgoing, not answered: CANCEL, but only once a provisional arrived (§9.1).
        call.cancel_requested = True
        if call.got_provisional:
            self._send_cancel(now, call, out)
        return out

    def _send_cancel(self, now: float, call: Call, out: UaOutput) -> None:
        cancel = make_cancel(call.invite)
        # The CANCEL must carry the INVITE's Via (same branch), so bypass _send_request's Via.
        tid, layer_out = self.layer.send_request(now, cancel, self._destination(call.invite))
        self._pending[tid] = _Pending("cancel", cancel, call.id)
        self._absorb(now, layer_out, out)

    def _bye(self, now: float, call: Call, out: UaOutput, *, reason: str) -> None:
        if call.dialog is not None:
            bye = call.dialog.create_request("BYE")
            self._send_request(now, bye, "bye", call.id, out)
        self._end(call, out, None, reason)

    def _end(self, call: Call, out: UaOutput, status: int | None, reason: str) -> None:
        if call.state is CallState.TERMINATED:
            return
        call.state = CallState.TERMINATED
        call.ok = None
        call.glare_retry_at = None
        call.ring_deadline = None
        if call.dialog is not None:
            call.dialog.terminate()
        out.events.append(CallStateChanged(call.id, CallState.TERMINATED, status, reason))

    # -- incoming calls -------------------------------------------------------------------------
    def ring(self, now: float, call_id: str) -> UaOutput:
        """180 Ringing for an incoming call (creates the early dialog, §12.1.1)."""
        out = UaOutput()
        call = self._incoming(call_id)
        if call.dialog is None:
            return out
        response = make_response(call.invite, 180, to_tag=call.dialog.local_tag)
        response.headers.add("contact", str(self.contact))
        self._respond(now, response, out)
        return out

    def answer(self, now: float, call_id: str, sdp: SessionDescription) -> UaOutput:
        """200 OK with our SDP (the answer, or an offer if the INVITE had none)."""
        out = UaOutput()
        call = self._incoming(call_id)
        dialog = call.dialog
        if dialog is None:
            raise SipError("call has no dialog")
        response = make_response(
            call.invite,
            200,
            to_tag=dialog.local_tag,
            headers=[
                ("contact", str(self.contact)),
                ("allow", ALLOW),
                ("supported", SUPPORTED),
                ("content-type", "application/sdp"),
            ],
            body=sdp.to_bytes(),
        )
        call.local_sdp = sdp
        dialog.state = DialogState.CONFIRMED
        call.state = CallState.CONNECTED
        call.ring_deadline = None
        self._send_2xx(now, call, response, out)
        out.events.append(CallStateChanged(call.id, CallState.CONNECTED, 200))
        if call.remote_sdp is not None:
            self._media_updated(call, out)
        return out

    def reject(self, now: float, call_id: str, status: int = 486) -> UaOutput:
        """Refuse an incoming call: 486 Busy Here, 603 Decline, 480... (RFC 3261 §13.3.1.3)."""
        out = UaOutput()
        call = self._incoming(call_id)
        tag = call.dialog.local_tag if call.dialog else generate_tag()
        self._respond(now, make_response(call.invite, status, to_tag=tag), out)
        reason = {486: "busy", 603: "declined", 600: "busy"}.get(status, "rejected")
        self._end(call, out, status, reason)
        return out

    def redirect(
        self, now: float, call_id: str, targets: Iterable[SipUri], status: int = 302
    ) -> UaOutput:
        """Redirect an incoming call: a 3xx whose Contact header(s) name where to call instead
        (RFC 3261 §21.3, 302 Moved Temporarily: §21.3.3; the caller recurses, §8.1.3.4)."""
        if not 300 <= status < 400:
            raise ValueError(f"not a redirection status: {status}")
        uris = list(targets)
        if not 1 <= len(uris) <= MAX_REDIRECT_CONTACTS:
            raise ValueError(f"a redirect names 1 to {MAX_REDIRECT_CONTACTS} contacts")
        for uri in uris:
            if not isinstance(uri, SipUri) or uri.scheme not in ("sip", "sips") or not uri.host:
                raise ValueError(f"not a SIP URI to redirect to: {uri!r}")
        out = UaOutput()
        call = self._incoming(call_id)
        tag = call.dialog.local_tag if call.dialog else generate_tag()
        headers = [("contact", str(Address(uri.copy()))) for uri in uris]
        self._respond(now, make_response(call.invite, status, to_tag=tag, headers=headers), out)
        self._end(call, out, status, "redirected")
        return out

    def _incoming(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is None or call.direction != "incoming" or call.state is not CallState.INCOMING:
            raise SipError(f"no unanswered incoming call {call_id!r}")
        return call

    def _send_2xx(self, now: float, call: Call, response: SipResponse, out: UaOutput) -> None:
        t1 = self.config.timers.t1
        self._respond(now, response, out)
        call.ok = _OkRetransmit(response, now + t1, t1, now + 64 * t1)

    # -- hold / re-INVITE -----------------------------------------------------------------------
    def hold(self, now: float, call_id: str) -> UaOutput:
        return self._set_hold(now, call_id, True)

    def unhold(self, now: float, call_id: str) -> UaOutput:
        return self._set_hold(now, call_id, False)

    def _set_hold(self, now: float, call_id: str, hold: bool) -> UaOutput:
        out = UaOutput()
        call = self.calls.get(call_id)
        if call is None or call.state is not CallState.CONNECTED or call.local_sdp is None:
            raise SipError(f"no connected call {call_id!r}")
        if call.reinvite is not None or call.reinvite_incoming:
            # RFC 3261 §14.1: one offer at a time; retry once the pending one completes.
            call.glare_hold = hold
            call.glare_retry_at = now + 0.1
            return out
        self._send_reinvite(now, call, hold, out)
        return out

    def _send_reinvite(self, now: float, call: Call, hold: bool, out: UaOutput) -> None:
        assert call.dialog is not None and call.local_sdp is not None
        call.local_hold = hold
        call.glare_hold = hold
        sdp = _with_direction(call.local_sdp, "sendonly" if hold else "sendrecv")
        reinvite = call.dialog.create_request(
            "INVITE",
            headers=[("allow", ALLOW), ("content-type", "application/sdp")],
            body=sdp.to_bytes(),
        )
        call.reinvite = reinvite
        self._send_request(now, reinvite, "reinvite", call.id, out)

    # -- transfer (RFC 3515, RFC 5589) ----------------------------------------------------------
    def refer(
        self, now: float, call_id: str, target: str | SipUri, *, replaces_call: str | None = None
    ) -> UaOutput:
        """Blind transfer, or attended when ``replaces_call`` names our call with the target."""
        out = UaOutput()
        call = self.calls.get(call_id)
        if call is None or call.dialog is None or call.state is not CallState.CONNECTED:
            raise SipError(f"no connected call {call_id!r}")
        uri = self.target_uri(target).copy()
        if replaces_call is not None:
            other = self.calls.get(replaces_call)
            if other is None or other.dialog is None:
                raise SipError(f"no dialog for {replaces_call!r}")
            # The target's address of record at the PBX, not its Contact (RFC 5589 §7.2 allows
            # either): the transferee's INVITE must go through the PBX, and a proxy that only
            # relays for its own domain refuses one aimed at a phone's bare address.
            uri = other.dialog.remote_uri.uri.copy()
            uri.headers["Replaces"] = _replaces_value(other.dialog)
        refer_to = f"<{uri}>"
        request = call.dialog.create_request(
            "REFER",
            headers=[("refer-to", refer_to), ("referred-by", str(Address(self.aor.copy())))],
        )
        call.refer_pending = True
        self._send_request(now, request, "refer", call.id, out)
        return out

    def transfer_progress(
        self, now: float, call_id: str, status: int, reason: str = ""
    ) -> UaOutput:
        """NOTIFY the transferor of our progress calling the REFER target (RFC 3515 §2.4.5)."""
        out = UaOutput()
        call = self.calls.get(call_id)
        if call is None or call.dialog is None or not call.refer_subscription:
            return out
        final = status >= 200
        self._notify_refer(now, call, status, reason, final, out)
        if final:
            call.refer_subscription = False
        return out

    def _notify_refer(
        self, now: float, call: Call, status: int, reason: str, final: bool, out: UaOutput
    ) -> None:
        assert call.dialog is not None
        state = "terminated;reason=noresource" if final else "active;expires=60"
        notify = call.dialog.create_request(
            "NOTIFY",
            headers=[
                ("event", "refer"),
                ("subscription-state", state),
                ("content-type", "message/sipfrag;version=2.0"),
            ],
            body=f"SIP/2.0 {status} {reason or _reason(status)}\r\n".encode(),
        )
        self._send_request(now, notify, "notify", call.id, out)

    # -- subscriptions (RFC 6665): MWI (RFC 3842) and watched dialogs (RFC 4235) -----------
    def subscribe_mwi(self, now: float, expires: int = 3600) -> UaOutput:
        return self._subscribe(
            now, "mwi", "message-summary", "application/simple-message-summary", self.aor, expires
        )

    def watch_dialogs(self, now: float, extension: str, expires: int = 600) -> UaOutput:
        """Subscribe to the dialog event package of ``extension`` (RFC 4235): WatchedLamp
        events follow its NOTIFYs."""
        key = f"dialog:{extension}"
        self._watched.setdefault(key, DialogInfoState())
        target = self.target_uri(extension)
        return self._subscribe(now, key, "dialog", "application/dialog-info+xml", target, expires)

    def unwatch_dialogs(self, now: float, extension: str) -> UaOutput:
        """Un-SUBSCRIBE (Expires: 0, RFC 6665 §4.1.2.3) and forget the extension."""
        out = UaOutput()
        key = f"dialog:{extension}"
        sub = self.subscriptions.get(key)
        self._watched.pop(key, None)
        self._lamps.pop(key, None)
        if sub is None:
            return out
        request = sub.unsubscribe(now)
        if request is None:
            del self.subscriptions[key]
            return out
        self._send_subscription_request(now, key, request, out)
        return out

    @property
    def watched(self) -> list[str]:
        return [key.partition(":")[2] for key in self._watched]

    def _subscribe(
        self, now: float, key: str, event: str, accept: str, target: SipUri, expires: int
    ) -> UaOutput:
        out = UaOutput()
        sub = self.subscriptions.get(key)
        if sub is None or sub.stopped:
            sub = Subscription(
                event=event,
                accept=accept,
                target=target,
                local=Address(self.aor.copy()),
                contact=self.contact,
                expires=expires,
                new_tag=self._new_tag,
                call_id_host=self.config.local_addr[0],
            )
            self.subscriptions[key] = sub
        else:
            sub.expires = expires
        self._send_subscribe(now, key, out)
        return out

    def _send_subscribe(self, now: float, key: str, out: UaOutput) -> None:
        sub = self.subscriptions[key]
        if sub.stopped:
            return
        self._send_subscription_request(now, key, sub.subscribe(now), out)

    def _send_subscription_request(
        self, now: float, key: str, request: SipRequest, out: UaOutput
    ) -> None:
        if self.auth.challenges:
            self.auth.apply(request)
        # The key rides in call_id: no call is named "mwi" or "dialog:...".
        self._send_request(now, request, "subscribe", key, out)

    def _subscription_for(self, request: SipRequest) -> tuple[str, Subscription] | None:
        for key, sub in self.subscriptions.items():
            if sub.matches(request):
                return key, sub
        return None

    def _on_subscription_notify(
        self, now: float, key: str, sub: Subscription, request: SipRequest, out: UaOutput
    ) -> None:
        generation = sub.generation
        verdict = sub.on_notify(now, request)
        if verdict.status != 200:
            self._respond(now, make_response(request, verdict.status), out)
            return
        if key == "mwi":
            self._respond(now, make_response(request, 200), out)
            if request.body:
                out.events.append(parse_message_summary(request.body))
        else:
            self._on_dialog_notify(now, key, request, out)
        if sub.stopped and sub.state == TERMINATED:
            self.subscriptions.pop(key, None)
        elif sub.generation != generation and key in self._watched:
            # The subscription ended: a new one starts its versions over (RFC 4235 §4.1).
            self._watched[key].reset()
            if sub.refresh_at is None or sub.refresh_at > now:
                # Not subscribing again at once: what the lamp showed may be stale by then.
                self._report_lamp(key, "offline", out)
        if sub.refresh_at is not None and sub.refresh_at <= now and not sub.stopped:
            self._send_subscribe(now, key, out)

    def _on_dialog_notify(self, now: float, key: str, request: SipRequest, out: UaOutput) -> None:
        watched = self._watched.get(key)
        if not request.body or watched is None:
            self._respond(now, make_response(request, 200), out)  # pending: no state yet
            return
        content_type = (request.content_type or "").lower()
        if content_type != "application/dialog-info+xml":
            # RFC 3261 §21.4.13: not what our Accept asked for.
            resp = make_response(request, 415, headers=[("accept", "application/dialog-info+xml")])
            self._respond(now, resp, out)
            return
        try:
            info = parse_dialog_info(request.body)
        except DialogInfoTooLarge:
            # RFC 3261 §21.4.11: past what we are willing to process; our state stays.
            self._respond(now, make_response(request, 413), out)
            return
        except DialogInfoError:
            # RFC 3261 §21.4.1: a malformed body; our state stays.
            self._respond(now, make_response(request, 400), out)
            return
        self._respond(now, make_response(request, 200), out)
        if watched.apply(info):
            self._report_lamp(key, watched.lamp, out)

    def _report_lamp(self, key: str, state: str, out: UaOutput) -> None:
        if self._lamps.get(key) == state:
            return
        self._lamps[key] = state
        out.events.append(WatchedLamp(key.partition(":")[2], state))

    # -- incoming requests ----------------------------------------------------------------------
    def _on_request(self, now: float, event: RequestReceived, out: UaOutput) -> None:
        request = event.request
        method = request.method
        if not self._trusted(event.source) and not self._in_dialog(request):
            self._refuse_untrusted(now, request, event.source, out)
            return
        if method == "ACK":
            self._on_ack(now, request, out)
            return
        if method == "CANCEL":
            self._on_cancel(now, request, out)
            return
        to_tag = request.to_addr.tag
        if to_tag is None:
            self._out_of_dialog(now, request, out)
            return
        call = self._call_for_request(request)
        if call is None or call.dialog is None:
            found = self._subscription_for(request) if method == "NOTIFY" else None
            if found is not None:
                self._on_subscription_notify(now, *found, request, out)
                return
            # RFC 3261 §12.2.2: unknown dialog.
            self._respond(now, make_response(request, 481), out)
            return
        error = call.dialog.receive_request(request)
        if error is not None:
            self._respond(now, make_response(request, error), out)
            return
        if method == "INVITE":
            self._on_reinvite(now, call, request, out)
        elif method == "UPDATE":
            self._on_update(now, call, request, out)
        elif method == "BYE":
            self._respond(now, make_response(request, 200), out)
            self._end(call, out, None, "remote-bye")
        elif method == "REFER":
            self._on_refer(now, call, request, out)
        elif method == "NOTIFY":
            self._on_refer_notify(now, call, request, out)
        elif method in ("INFO", "OPTIONS"):
            self._respond(now, make_response(request, 200), out)
        else:
            self._respond(now, make_response(request, 501, headers=[("allow", ALLOW)]), out)

    def _trusted(self, source: Addr) -> bool:
        trusted = self.config.trusted_sources
        if trusted is None:
            return True
        if self.config.transport.upper() == "UDP":
            return source in trusted
        # A connection from the proxy comes from an ephemeral port: only its address counts.
        return any(source[0] == host for host, _port in trusted)

    def _in_dialog(self, request: SipRequest) -> bool:
        """Does ``request`` belong to something we have going (a dialog, an INVITE to cancel)?

        Those come through the proxy's Record-Route or straight from the peer's Contact
        (RFC 3261 §12.2.1.1), so their source says nothing; everything else is a new request.
        """
        if request.method == "CANCEL":
            return self.layer.invite_for_cancel(request) is not None  # §9.2
        if request.to_addr.tag is None:
            return False  # §12.2: no To tag, no dialog
        if self._call_for_request(request) is not None:
            return True
        return request.method == "NOTIFY" and self._subscription_for(request) is not None

    def _refuse_untrusted(
        self, now: float, request: SipRequest, source: Addr, out: UaOutput
    ) -> None:
        self.untrusted_requests += 1
        self._untrusted_unreported += 1
        self._untrusted_last = (source, request.method)
        if request.method != "ACK":  # ACK is the one request never answered (RFC 3261 §17)
            # §21.4.4: understood and refused; authenticating would not help.
            self._respond(now, make_response(request, 403, to_tag=generate_tag()), out)
        self._report_untrusted(now, out)

    def _report_untrusted(self, now: float, out: UaOutput) -> None:
        if not self._untrusted_unreported:
            return
        last = self._untrusted_reported_at
        if last is not None and now < last + UNTRUSTED_REPORT_INTERVAL:
            return  # the timer in next_timer() reports the rest
        source, method = self._untrusted_last
        out.events.append(UntrustedRequests(self._untrusted_unreported, source, method))
        self._untrusted_unreported = 0
        self._untrusted_reported_at = now

    def _call_for_request(self, request: SipRequest) -> Call | None:
        call = self.calls.get(request.call_id)
        if call is None or call.dialog is None:
            return None
        return call if call.dialog.id == request_dialog_id(request) else None

    def _out_of_dialog(self, now: float, request: SipRequest, out: UaOutput) -> None:
        method = request.method
        if method == "INVITE":
            self._on_invite(now, request, out)
        elif method == "OPTIONS":
            # RFC 3261 §11.2: capabilities.
            response = make_response(
                request,
                200,
                to_tag=generate_tag(),
                headers=[
                    ("allow", ALLOW),
                    ("accept", "application/sdp"),
                    ("supported", SUPPORTED),
                ],
            )
            self._respond(now, response, out)
        elif method == "NOTIFY":
            # Unsolicited MWI NOTIFY (common on PBXs) or one racing our SUBSCRIBE's 200.
            self._on_mwi_notify(now, request, out)
        elif method in ("BYE", "UPDATE", "REFER", "INFO", "PRACK"):
            self._respond(now, make_response(request, 481), out)
        else:
            status = 405 if method in ALLOW else 501
            self._respond(now, make_response(request, status, headers=[("allow", ALLOW)]), out)

    def _on_invite(self, now: float, request: SipRequest, out: UaOutput) -> None:
        if request.call_id in self.calls:
            # A forked/looped copy of a call we already handle (§8.2.2.2 merged request).
            self._respond(now, make_response(request, 482, to_tag=generate_tag()), out)
            return
        offer: SessionDescription | None = None
        if request.body:
            if request.content_type not in (None, "application/sdp"):
                resp = make_response(request, 415, headers=[("accept", "application/sdp")])
                self._respond(now, resp, out)
                return
            try:
                offer = parse_sdp(request.body)
            except SipParseError:
                self._respond(now, make_response(request, 400, to_tag=generate_tag()), out)
                return
        replaces: str | None = None
        replaces_header = request.headers.get("replaces")
        if replaces_header is not None:
            old = self._match_replaces(replaces_header)
            if old is None:
                # RFC 3891 §3: no matching dialog.
                self._respond(now, make_response(request, 481, to_tag=generate_tag()), out)
                return
            replaces = old.id
        local_tag = self._new_tag()
        call = Call(request.call_id, "incoming", CallState.INCOMING, request, remote_sdp=offer)
        call.dialog = Dialog.from_uas(request, local_tag, self.contact)
        if self.config.ring_timeout is not None:
            call.ring_deadline = now + self.config.ring_timeout
        self.calls[call.id] = call
        out.events.append(
            IncomingCall(
                call_id=call.id,
                caller=request.from_addr,
                callee=request.to_addr,
                request_uri=request.uri,
                offer=offer,
                replaces=replaces,
                referred_by=request.headers.get("referred-by"),
                headers=request.headers,
            )
        )
        out.events.append(CallStateChanged(call.id, CallState.INCOMING))

    def _match_replaces(self, value: str) -> Call | None:
        """RFC 3891 §3: to-tag is our local tag, from-tag the remote one."""
        call_id, _, rest = value.partition(";")
        params = {
            k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in rest.split(";"))
        }
        call = self.calls.get(call_id.strip())
        if call is None or call.dialog is None or call.state is CallState.TERMINATED:
            return None
        dialog = call.dialog
        if dialog.local_tag != params.get("to-tag") or dialog.remote_tag != params.get("from-tag"):
            return None
        if "early-only" in params and dialog.state is DialogState.CONFIRMED:
            return None
        return call

    def _on_ack(self, now: float, request: SipRequest, out: UaOutput) -> None:
        call = self.calls.get(request.call_id)
        if call is None or call.dialog is None or call.ok is None:
            return
        if request.cseq.seq != call.ok.response.cseq.seq:
            return
        call.ok = None
        call.reinvite_incoming = False
        if request.body and call.remote_sdp is None:
            # Late offer: the answer arrives in the ACK (RFC 3261 §13.2.1).
            call.remote_sdp = parse_sdp(request.body)
            self._media_updated(call, out)

    def _on_cancel(self, now: float, request: SipRequest, out: UaOutput) -> None:
        server = self.layer.invite_for_cancel(request)
        if server is None:
            self._respond(now, make_response(request, 481), out)
            return
        self._respond(now, make_response(request, 200), out)
        call = self.calls.get(request.call_id)
        if call is not None and call.state is CallState.INCOMING:
            # RFC 3261 §9.2: the INVITE gets 487 Request Terminated.
            tag = call.dialog.local_tag if call.dialog else generate_tag()
            self._respond(now, make_response(call.invite, 487, to_tag=tag), out)
            self._end(call, out, 487, "cancelled")

    def _on_reinvite(self, now: float, call: Call, request: SipRequest, out: UaOutput) -> None:
        assert call.dialog is not None
        if call.reinvite is not None or call.reinvite_incoming:
            # RFC 3261 §14.2: glare.
            response = make_response(request, 491)
            response.headers.add("retry-after", str(self._rng.randint(1, 2)))
            self._respond(now, response, out)
            return
        headers = [("contact", str(self.contact)), ("allow", ALLOW)]
        if not request.body:
            # Offer-less re-INVITE: our current SDP is the offer in the 2xx.
            if call.local_sdp is None:
                self._respond(now, make_response(request, 488), out)
                return
            call.remote_sdp = None
            body = call.local_sdp.to_bytes()
        else:
            offer = parse_sdp(request.body)
            try:
                answer = self._answer_reoffer(call, offer)
            except SdpNegotiationError:
                self._respond(now, make_response(request, 488), out)
                return
            call.remote_sdp = offer
            call.local_sdp = answer
            body = answer.to_bytes()
        headers.append(("content-type", "application/sdp"))
        response = make_response(request, 200, headers=headers, body=body)
        call.reinvite_incoming = True
        self._send_2xx(now, call, response, out)
        if call.remote_sdp is not None:
            self._media_updated(call, out)

    def _on_update(self, now: float, call: Call, request: SipRequest, out: UaOutput) -> None:
        if not request.body:
            # Session refresh / target refresh only (RFC 3311).
            self._respond(
                now, make_response(request, 200, headers=[("contact", str(self.contact))]), out
            )
            return
        if call.reinvite is not None:
            self._respond(now, make_response(request, 491), out)
            return
        offer = parse_sdp(request.body)
        try:
            answer = self._answer_reoffer(call, offer)
        except SdpNegotiationError:
            self._respond(now, make_response(request, 488), out)
            return
        call.remote_sdp = offer
        call.local_sdp = answer
        response = make_response(
            request,
            200,
            headers=[("contact", str(self.contact)), ("content-type", "application/sdp")],
            body=answer.to_bytes(),
        )
        self._respond(now, response, out)
        self._media_updated(call, out)

    def _answer_reoffer(self, call: Call, offer: SessionDescription) -> SessionDescription:
        """Answer a re-offer with our existing media address and codec list (RFC 3264 §8)."""
        if call.local_sdp is None or call.local_sdp.audio is None:
            raise SdpNegotiationError("no local media to answer with")
        ours = call.local_sdp
        audio = ours.audio
        assert audio is not None
        conn = ours.connection_of(audio)
        address = conn.address if conn else self.config.local_addr[0]
        codecs = [c for c in audio.codecs() if c.name.lower() != "telephone-event"]
        encryption, srtp_key = sdes_of(ours)  # an SRTP call stays SRTP (RFC 4568 §7.1.4)
        answer = negotiate_answer(
            offer,
            address,
            audio.port,
            session_id=ours.origin.session_id,
            version=ours.origin.version,
            codecs=codecs,
            direction="sendonly" if call.local_hold else "sendrecv",
            username=ours.origin.username,
            encryption=encryption,
            srtp_key=srtp_key,
        )
        return _bump_version(ours, answer)

    def _on_refer(self, now: float, call: Call, request: SipRequest, out: UaOutput) -> None:
        refer_to = request.headers.get("refer-to")
        if refer_to is None:
            self._respond(now, make_response(request, 400), out)
            return
        target = parse_address(refer_to).uri.copy()
        replaces = None
        for name in list(target.headers):
            if name.lower() == "replaces":
                replaces = target.headers.pop(name)
        self._respond(now, make_response(request, 202), out)
        call.refer_subscription = True
        # RFC 3515 §2.4.4: an immediate NOTIFY with the initial state.
        self._notify_refer(now, call, 100, "Trying", False, out)
        out.events.append(
            TransferRequested(call.id, target, replaces, request.headers.get("referred-by"))
        )

    def _on_refer_notify(self, now: float, call: Call, request: SipRequest, out: UaOutput) -> None:
        self._respond(now, make_response(request, 200), out)
        event = (request.headers.get("event") or "").split(";")[0].strip().lower()
        if event != "refer":
            return
        frag = _parse_sipfrag(request.body)
        if frag is None:
            return
        state = (request.headers.get("subscription-state") or "").lower()
        final = state.startswith("terminated") or frag[0] >= 200
        out.events.append(TransferProgress(call.id, frag[0], frag[1], final))

    def _on_mwi_notify(self, now: float, request: SipRequest, out: UaOutput) -> None:
        event = (request.headers.get("event") or "").split(";")[0].strip().lower()
        if event != "message-summary":
            self._respond(now, make_response(request, 489), out)
            return
        self._respond(now, make_response(request, 200), out)
        out.events.append(parse_message_summary(request.body))

    # -- responses to our requests --------------------------------------------------------------
    def _on_response(self, now: float, event: ResponseReceived, out: UaOutput) -> None:
        response = event.response
        if event.transaction_id is None:
            self._on_stray_response(now, response, out)
            return
        pending = self._pending.get(event.transaction_id)
        if pending is None:
            return
        if response.status >= 200 and not (
            200 <= response.status < 300 and pending.kind in ("invite", "reinvite")
        ):
            # 2xx to INVITE may come again (forking/retransmissions); keep the entry until Timer M
            # so that each copy is ACKed again (§13.2.2.4), re-INVITEs included.
            self._pending.pop(event.transaction_id, None)
        kind = pending.kind
        if kind == "keepalive":
            # Never authenticated: a challenge proves the proxy alive as well as a 200 does.
            self._proxy_answered(now, out)
            return
        if response.status in (401, 407) and kind != "register":
            if self._retry_with_auth(now, pending, response, out):
                return
        elif response.status >= 200 and kind != "register":
            self.auth.accepted()
        if kind == "register":
            if response.status >= 200:
                self._clear_probes()  # the proxy answered: no probe sent before can fail now
            retry = self.registration.handle_response(now, response)
            if retry is not None:
                self._send_register(now, retry, out)
            self._drain_registration(out)
        elif kind == "invite":
            self._on_invite_response(now, pending, response, out)
        elif kind == "reinvite":
            self._on_reinvite_response(now, pending, response, out)
        elif kind == "refer":
            call = self.calls.get(pending.call_id or "")
            if call is not None and response.status >= 200:
                call.refer_pending = False
                ok = 200 <= response.status < 300
                out.events.append(
                    TransferProgress(call.id, response.status, response.reason, final=not ok)
                )
        elif kind == "subscribe":
            self._on_subscribe_response(now, pending, response, out)

    def _on_subscribe_response(
        self, now: float, pending: _Pending, response: SipResponse, out: UaOutput
    ) -> None:
        key = pending.call_id or ""
        sub = self.subscriptions.get(key)
        if sub is None or sub.call_id != pending.request.call_id or response.status < 200:
            return  # a subscription since replaced by a newer one
        generation = sub.generation
        sub.on_response(now, pending.request, response)
        if sub.stopped:
            # Un-SUBSCRIBEd: the notifier's last NOTIFY (terminated) may follow and gets its
            # 200 from the entry, which goes then (or when the extension is watched again).
            if not 200 <= response.status < 300:
                self.subscriptions.pop(key, None)
            return
        if sub.generation != generation:
            self._subscription_gone(key, sub, out, again_now=sub.due(now))
        if sub.due(now):
            self._send_subscribe(now, key, out)

    def _subscription_gone(
        self, key: str, sub: Subscription, out: UaOutput, *, again_now: bool = False
    ) -> None:
        """A watched extension's subscription ended: a new one starts its versions over
        (RFC 4235 §4.1); unless it starts at once, nothing is known until it does."""
        watched = self._watched.get(key)
        if watched is not None:
            watched.reset()
            if not again_now:
                self._report_lamp(key, "offline", out)

    def _retry_with_auth(
        self, now: float, pending: _Pending, response: SipResponse, out: UaOutput
    ) -> bool:
        """Re-send a challenged request with credentials (RFC 3261 §22.2); False if hopeless."""
        if pending.auth_tries >= 2 or not self.auth.handle_challenge(response):
            return False
        old = pending.request
        request = SipRequest(old.method, old.uri.copy(), old.headers.copy(), old.body)
        call = self.calls.get(pending.call_id or "")
        seq = old.cseq.seq + 1
        if call is not None and call.dialog is not None and pending.kind != "invite":
            call.dialog.local_seq = max(call.dialog.local_seq + 1, seq)
            seq = call.dialog.local_seq
        request.headers.set("cseq", f"{seq} {old.method}")
        if pending.kind == "subscribe":
            sub = self.subscriptions.get(pending.call_id or "")
            if sub is not None:
                sub.resent(seq)
        self.auth.apply(request)
        tid = self._send_request(now, request, pending.kind, pending.call_id, out)
        self._pending[tid].auth_tries = pending.auth_tries + 1
        if call is not None:
            if pending.kind == "invite":
                call.invite = request
                call.invite_tid = tid
            elif pending.kind == "reinvite":
                call.reinvite = request
        return True

    def _on_invite_response(
        self, now: float, pending: _Pending, response: SipResponse, out: UaOutput
    ) -> None:
        call = self.calls.get(pending.call_id or "")
        if call is None:
            return
        code = response.status
        if code < 200:
            if call.state is CallState.TERMINATED:
                return
            first = not call.got_provisional
            call.got_provisional = True
            if call.cancel_requested and first:
                self._send_cancel(now, call, out)
                return
            if response.to_addr.tag and call.dialog is None:
                call.dialog = Dialog.from_uac(call.invite, response)
            if code in (180, 183) and call.state is CallState.CALLING:
                call.state = CallState.RINGING
                out.events.append(CallStateChanged(call.id, CallState.RINGING, code))
            if response.body and response.content_type == "application/sdp" and call.local_sdp:
                call.remote_sdp = parse_sdp(response.body)
                self._media_updated(call, out, early=True)
            return
        if 200 <= code < 300:
            self._on_invite_2xx(now, call, response, out)
            return
        if 300 <= code < 400 and self._follow_redirect(now, call, response, out):
            return
        if call.state is not CallState.TERMINATED:
            reason = {
                486: "busy",
                600: "busy",
                603: "declined",
                487: "cancelled",
                408: "timeout",
                480: "unavailable",
                404: "not-found",
            }.get(code, "failed")
            self._end(call, out, code, reason)

    def _follow_redirect(
        self, now: float, call: Call, response: SipResponse, out: UaOutput
    ) -> bool:
        """RFC 3261 §8.1.3.4: a UAC MAY recurse on a 3xx. We try its first SIP Contact we have
        not called yet in a new INVITE - same Call-ID, From (tag) and To, a new CSeq and
        branch - at most MAX_REDIRECTS times a call. False: the 3xx ends the call."""
        if call.state is CallState.TERMINATED or call.cancel_requested:
            return False
        if len(call.redirected_from) >= MAX_REDIRECTS:
            return False
        tried = {str(call.invite.uri).lower(), *call.redirected_from}
        target: SipUri | None = None
        for contact in response.contacts[:MAX_REDIRECT_CONTACTS]:
            uri = contact.uri
            if uri.scheme in ("sip", "sips") and uri.host and str(uri).lower() not in tried:
                target = uri.copy()
                target.headers = {}  # §19.1.5: ?headers= shape a request, never a Request-URI
                break
        if target is None:
            return False  # none, or only ones we called already: a loop (§8.1.3.4)
        old = call.invite
        invite = SipRequest("INVITE", target, old.headers.copy(), old.body)
        invite.headers.set("cseq", f"{old.cseq.seq + 1} INVITE")
        # Credentials were for the old Request-URI; a challenge for the new one is answered.
        invite.headers.remove("authorization")
        invite.headers.remove("proxy-authorization")
        try:
            self._destination(invite)
        except SipError:
            return False  # no proxy and a host we cannot reach by address: the 3xx stands
        call.redirected_from.append(str(old.uri).lower())
        call.invite = invite
        call.dialog = None  # an early dialog with the redirecting UAS is over
        call.got_provisional = False
        call.remote_sdp = None
        call.invite_tid = self._send_request(now, invite, "invite", call.id, out)
        out.events.append(CallRedirected(call.id, response.status, str(target)))
        return True

    def _on_invite_2xx(self, now: float, call: Call, response: SipResponse, out: UaOutput) -> None:
        # Retransmitted 2xx: re-send the same ACK (§13.2.2.4).
        if call.ack is not None and call.dialog is not None:
            if response.to_addr.tag == call.dialog.remote_tag:
                self._absorb(
                    now, self.layer.send_stateless(call.ack, self._destination(call.ack)), out
                )
                return
            # A second fork answered: ACK it and hang it up (§13.2.2.4).
            extra = Dialog.from_uac(call.invite, response)
            self._ack_2xx(now, extra, call.invite, response, out)
            self._send_request(now, extra.create_request("BYE"), "bye", None, out)
            return
        if call.dialog is None or call.dialog.remote_tag != response.to_addr.tag:
            call.dialog = Dialog.from_uac(call.invite, response)
        else:
            call.dialog.confirm(response)
        call.ack = self._ack_2xx(now, call.dialog, call.invite, response, out)
        if call.cancel_requested or call.state is CallState.TERMINATED:
            # The 2xx crossed our CANCEL (§9.1): ACK it, then BYE.
            self._send_request(now, call.dialog.create_request("BYE"), "bye", call.id, out)
            self._end(call, out, None, "cancelled")
            return
        if response.body:
            call.remote_sdp = parse_sdp(response.body)
        call.state = CallState.CONNECTED
        out.events.append(CallStateChanged(call.id, CallState.CONNECTED, response.status))
        if call.remote_sdp is not None and call.local_sdp is not None:
            self._media_updated(call, out)

    def _ack_2xx(
        self, now: float, dialog: Dialog, invite: SipRequest, response: SipResponse, out: UaOutput
    ) -> SipRequest:
        ack = dialog.create_ack(invite.cseq.seq, via=self._new_via())
        for name in ("authorization", "proxy-authorization"):
            for value in invite.headers.get_all(name):
                ack.headers.add(name, value)
        self._absorb(now, self.layer.send_stateless(ack, self._destination(ack)), out)
        return ack

    def _on_reinvite_response(
        self, now: float, pending: _Pending, response: SipResponse, out: UaOutput
    ) -> None:
        call = self.calls.get(pending.call_id or "")
        if call is None or call.dialog is None or response.status < 200:
            return
        request = pending.request
        if 200 <= response.status < 300:
            if call.reinvite is request:
                call.reinvite = None
                call.dialog.update_from_response(request, response)
                call.ack = self._ack_2xx(now, call.dialog, request, response, out)
                if response.body:
                    call.local_sdp = parse_sdp(request.body)
                    call.remote_sdp = parse_sdp(response.body)
                    self._media_updated(call, out)
                call.hold_agreed = call.local_hold
                if call.state is CallState.CONNECTED:
                    out.events.append(HoldChanged(call.id, call.local_hold, True, response.status))
            elif call.ack is not None and call.ack.cseq.seq == request.cseq.seq:
                # A retransmitted 2xx: our ACK was lost; send the same one again (§13.2.2.4).
                self._absorb(
                    now, self.layer.send_stateless(call.ack, self._destination(call.ack)), out
                )
            return
        call.reinvite = None
        if response.status == 491:
            # RFC 3261 §14.1: the Call-ID owner waits 2.1–4 s, the other side 0–2 s.
            if call.direction == "outgoing":
                delay = self._rng.uniform(2.1, 4.0)
            else:
                delay = self._rng.uniform(0.0, 2.0)
            # glare_hold already says what to send: this request's hold state, or a newer
            # one queued by hold()/unhold() meanwhile. The retry's outcome is what we report.
            call.glare_retry_at = now + delay
        elif response.status in (408, 481):
            # §14.1: the dialog is gone.
            self._bye(now, call, out, reason="failed")
        else:
            # The peer refused the change: the session stays as it was (§14.2), and so does
            # our hold state.
            call.local_hold = call.hold_agreed
            if call.state is CallState.CONNECTED:
                out.events.append(
                    HoldChanged(call.id, call.local_hold, False, response.status, response.reason)
                )

    def _on_stray_response(self, now: float, response: SipResponse, out: UaOutput) -> None:
        """A 2xx to INVITE after the transaction ended: re-ACK it (§13.2.2.4)."""
        if not 200 <= response.status < 300 or response.cseq.method != "INVITE":
            return
        call = self.calls.get(response.call_id)
        if call is not None and call.ack is not None:
            self._absorb(now, self.layer.send_stateless(call.ack, self._destination(call.ack)), out)

    def _on_timeout(self, now: float, event: TransactionTimeout, out: UaOutput) -> None:
        pending = self._pending.pop(event.transaction_id, None)
        if event.timer == "H":
            # Our error response was never ACKed; nothing more to do (§17.2.1).
            return
        if pending is None:
            return
        if pending.kind == "register":
            self.registration.handle_timeout(now)
            self._drain_registration(out)
            return
        if pending.kind == "keepalive":
            # Only when keepalive_timeout is longer than Timer F: the probe failed all the same.
            if self._probes.pop(event.transaction_id, None) is not None:
                self.registration.unreachable(now, NO_RESPONSE)
                self._drain_registration(out)
            return
        if pending.kind == "subscribe":
            key = pending.call_id or ""
            sub = self.subscriptions.get(key)
            if sub is not None and sub.call_id == pending.request.call_id:
                stopped = sub.stopped
                sub.failed(now)
                self._subscription_gone(key, sub, out)
                if stopped:
                    self.subscriptions.pop(key, None)
            return
        call = self.calls.get(pending.call_id or "")
        if call is None:
            return
        if pending.kind == "invite":
            self._end(call, out, 408, "timeout")
        elif pending.kind == "reinvite":
            call.reinvite = None
            self._bye(now, call, out, reason="timeout")

    # -- media bookkeeping ----------------------------------------------------------------------
    def _media_updated(self, call: Call, out: UaOutput, *, early: bool = False) -> None:
        if call.local_sdp is None or call.remote_sdp is None:
            return
        try:
            media: NegotiatedMedia | None = negotiated_media(call.local_sdp, call.remote_sdp)
        except SdpNegotiationError:
            media = None
        out.events.append(
            MediaUpdated(
                call.id,
                call.local_sdp,
                call.remote_sdp,
                media,
                remote_hold=is_hold(call.remote_sdp),
                early=early,
            )
        )

    def forget(self, call_id: str) -> None:
        """Drop a terminated call's state (the worker calls this once it has logged the call)."""
        call = self.calls.get(call_id)
        if call is not None and call.state is CallState.TERMINATED:
            del self.calls[call_id]


def _reason(status: int) -> str:
    from .message import reason_phrase

    return reason_phrase(status)


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _with_direction(sdp: SessionDescription, direction: str) -> SessionDescription:
    """A new version of our SDP with another direction on the audio stream (RFC 3264 §8.4)."""
    new = parse_sdp(sdp.to_bytes())
    for media in new.media:
        if media.media == "audio" and media.port != 0:
            media.set_direction(direction)
    new.origin.version = sdp.origin.version + 1
    return new


def _bump_version(old: SessionDescription, new: SessionDescription) -> SessionDescription:
    """RFC 3264 §8: o= version increments exactly when the session description changes."""

    def body(sdp: SessionDescription) -> str:
        return str(sdp).split("\r\n", 2)[2]

    new.origin.version = old.origin.version + (1 if body(old) != body(new) else 0)
    return new
