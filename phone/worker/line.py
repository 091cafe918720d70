"""One user's SIP line as an actor (design.md §7): registration, calls and the open pages.

Everything that changes a line reaches it as a message in its one queue, handled in order by
its one task: commands from the pages (phone.signalling.protocol), events of its UserAgent
(the transport posts them; the sans-I/O core never runs our code), and its own timers. No other
task touches `calls`, so a CANCEL that lands while an answer waits for its RTP port is simply
the next message; after every await the handler checks again what the UA says before acting.

Every command names the call it acts on. A call's state lives in phone.worker.call.LineCall,
derived from the UA's reports; which browser session hears which call is decided in one place,
`route_media`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.exceptions import ValidationError

from phone import actions, presence
from phone.media.join import LegJoin
from phone.media.tones import JapaneseBusy, ToneSource
from phone.numbers import clean_number
from phone.signalling import owners, protocol
from phone.signalling.protocol import (
    Answer,
    Attach,
    Command,
    Detach,
    Dial,
    Dtmf,
    Hangup,
    Hold,
    LineTestStart,
    LineTestStop,
    Park,
    ParkPickup,
    PickupGroup,
    PickupRinging,
    QualityStats,
    Reject,
    Reload,
    SetDnd,
    Swap,
    TransferBlind,
    TransferCancel,
    TransferComplete,
    TransferStart,
    Unhold,
    WebrtcOffer,
)
from phone.signalling.schema import error_message, server_message
from phone.sip.errors import SipError, SipParseError
from phone.sip.registration import RegistrationState, RegistrationStateChanged
from phone.sip.sdp import (
    OfferRefusal,
    SdpNegotiationError,
    SessionDescription,
    offer_refusal,
)
from phone.sip.transaction import Addr, MalformedMessage
from phone.sip.transport import TransportFailure
from phone.sip.uri import SipUri, parse_address
from phone.sip.useragent import (
    CallRedirected,
    CallState,
    CallStateChanged,
    HoldChanged,
    IncomingCall,
    MediaUpdated,
    MessageSummary,
    TransferProgress,
    TransferRequested,
    UntrustedRequests,
    UserAgent,
    UserAgentConfig,
    WatchedLamp,
)
from phone.worker import blf, db
from phone.worker.call import LineCall, Phase
from phone.worker.diagnostics import Diagnostics, LineTestTick, QualityTick, sample_leg
from phone.worker.media import CallMedia, MediaHub, carry
from portal import metrics

log = logging.getLogger(__name__)

_REGISTRATION = {
    RegistrationState.REGISTERED: "registered",
    RegistrationState.REGISTERING: "registering",
    RegistrationState.FAILED: "failed",
}
_DTMF = set("0123456789*#ABCD")


@dataclass(frozen=True, slots=True)
class Release:
    """The grace after the last page closed ran out: unregister if still idle (seed 1-4)."""


@dataclass(frozen=True, slots=True)
class ToneDone:
    """A page's transient tone (the busy tone after a failed call) has played long enough."""

    session: str
    tone: ToneSource


@dataclass(frozen=True, slots=True)
class TransferDeadline:
    """転送実行 was asked this long ago and the peers have not completed the transfer."""

    held_id: str


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """Another sipworker owns this user's line now, or this one could not prove it still does
    (phone.signalling.owners): stop at once, without another SIP message (fencing)."""


@dataclass(frozen=True, slots=True)
class EndDialog:
    """Hang up a dialog the user is already done with, if its peer has not."""

    call_id: str


@dataclass
class Joined:
    """Two calls the worker relays between after the user handed them over (a transfer the
    peers could not complete): the user is done with them; the line hangs up one when the
    other ends."""

    a: LineCall
    b: LineCall
    join: LegJoin


@dataclass(frozen=True, slots=True)
class Opened:
    """A call's start-up database job (history row, phonebook name, line button) finished:
    the line folds its result into the call and tells the pages (Line._open)."""

    call_id: str
    job: asyncio.Task[db.CallOpened]
    ring: bool  # an incoming call: the pages ring now that the name and ring tone are known


@dataclass(frozen=True, slots=True)
class ParkTimeout:
    call_id: str
    slot: int


@dataclass(frozen=True, slots=True)
class HandingOver:
    """A call ringing here that we answered for a colleague (代理応答): the Handover that asked
    for it and the colleague's user id (history names them as the one who answered)."""

    handover: protocol.Handover
    by: int


@dataclass(frozen=True, slots=True)
class Pickup:
    """A park pickup this line asked for: the owner's line will call us with `token`."""

    slot: int
    session: str
    remote: str
    remote_name: str


# The header that marks the owner line's call to a picking colleague (never from outside:
# out-of-dialog requests come only from the PBX, and the token is random per pickup).
PICKUP_HEADER = "X-BrowserPhone-Pickup"
# With a ringing-call pickup (代理応答): the number of the caller the picker takes over.
PICKUP_CALLER_HEADER = "X-BrowserPhone-Caller"
# How long a ringing-call pickup's token waits for the owner's call.
PICKUP_TOKEN_SECONDS = 30.0

LineInput = (
    protocol.ToWorker
    | Release
    | ToneDone
    | TransferDeadline
    | ParkTimeout
    | Opened
    | EndDialog
    | LeaseLost
    | Any  # Any: the UserAgent's events
)

# 転送実行: how long the peers get to complete a transfer themselves before the worker joins
# the two calls (the user always sees the transfer succeed).
TRANSFER_GRACE_SECONDS = 4.0
# After we completed a transfer as the transferee: how long the transferor gets to BYE us.
TRANSFERRED_BYE_SECONDS = 5.0
# A stopping line waits at most this long for its un-REGISTER's answer, and keeps its
# transport at least LINGER_SECONDS (Line.stop).
UNREGISTER_WAIT_SECONDS = 2.0
LINGER_SECONDS = 0.2

# A failed outgoing call, by SIP final status (RFC 3261 §21): what the page tells the user
# (seed 3-2), and whether the busy tone (話中音) plays.
_FAILURES: dict[int, str] = {
    486: "busy",
    600: "busy",
    404: "not-found",
    484: "not-found",
    604: "not-found",
    408: "no-answer",
    480: "no-answer",
    603: "declined",
}
_BUSY_TONE_FOR = {"busy", "declined", "unavailable", "failed"}
BUSY_TONE_SECONDS = 3.0


def caller_number(event: IncomingCall) -> str:
    """Who calls: the identity the PBX asserts (RFC 3325 §9.1; out-of-dialog INVITEs reach us
    from the PBX only), else the From user."""
    asserted = event.headers.get("p-asserted-identity") if event.headers is not None else None
    if asserted:
        try:
            user = parse_address(asserted.split(",")[0]).uri.user
        except SipParseError:
            user = None
        if user:
            return user
    return event.caller.uri.user or str(event.caller.uri)


def failure_code(status: int | None, *, with_line: bool = False) -> str:
    if status is None:
        return "failed"
    if status == 403 and with_line:
        return "line-refused"  # the PBX refused the number we presented (seed 6-1)
    if status in _FAILURES:
        return _FAILURES[status]
    return "unavailable" if status >= 500 else "failed"


class SipPort(Protocol):
    """What a line needs of its SIP transport (phone.sip.transport.SipTransport, or the
    in-memory one of the tests)."""

    local_addr: Addr

    @property
    def core(self) -> UserAgent: ...

    def execute(self, command: Callable[[float], Any]) -> Any: ...

    async def close(self) -> None: ...


OpenSip = Callable[
    [db.LineConfig, Callable[[Addr], UserAgent], Callable[[Any], None]], Awaitable[SipPort]
]


class LineHost(Protocol):
    """What a line needs of the process hosting it (phone.worker.host.SipWorkerHost)."""

    worker_id: str
    media: MediaHub
    open_sip: OpenSip
    open_media: Callable[[], Awaitable[CallMedia]]

    async def send(self, session: str, message: dict[str, Any]) -> None: ...

    async def to_worker(self, message: protocol.ToWorker) -> None: ...

    def forget(self, line: Line) -> None: ...


class Line:
    def __init__(self, host: LineHost, user_id: int) -> None:
        self.host = host
        self.user_id = user_id
        self.sessions: dict[str, float] = {}  # channel → opened_at
        self.calls: dict[str, LineCall] = {}
        self.config: db.LineConfig | None = None
        self.transport: SipPort | None = None
        self.registration = ("unregistered", "")
        self.meter = metrics.line_meter()  # browserphone_registrations{state}
        # Why the connection to the PBX failed ("certificate"): the lamp's reason while failed.
        self.transport_failure: str | None = None
        self.inbox: asyncio.Queue[LineInput] = asyncio.Queue()
        self.closed = False
        self._release: asyncio.TimerHandle | None = None
        self._mwi_subscribed = False
        self._user_name = ""
        # A tone a page hears with no call to carry (the busy tone after a failed call).
        self.tones: dict[str, ToneSource] = {}
        self.transferring: dict[str, str] = {}  # held call → its consultation, REFER sent
        self.joined: dict[str, Joined] = {}  # call id → the pair the worker relays
        self.pickups: dict[str, Pickup] = {}  # token → a park pickup we asked for
        self.diagnostics = Diagnostics(self)  # line test and call quality
        self.dnd = False  # 応答不可 (loaded with the line's config)
        self._presence: presence.Entry | None = None  # what we last published
        # Lamps to publish, in order, by `_presence_sender` (not in the actor's turn).
        self._presence_out: list[tuple[int, presence.Entry]] = []
        self._presence_sender: asyncio.Task[None] | None = None
        # Lamps of the tenant's PBX extensions, while this line is the one that watches them.
        self.watch: blf.LineWatch | None = None
        # Our ringing calls answered for a colleague (代理応答): call id → who takes them.
        self.handing_over: dict[str, HandingOver] = {}
        self.task = asyncio.create_task(self._run(), name=f"line-{user_id}")

    def post(self, item: LineInput) -> None:
        self.inbox.put_nowait(item)

    @property
    def ua(self) -> UserAgent:
        if self.transport is None:
            raise SipError("the line is not started")
        return self.transport.core

    def _sip(self, command: Callable[[float], Any]) -> Any:
        """Run a UserAgent command (`lambda now: self.ua.hold(now, call_id)`) and send what
        it produced."""
        if self.transport is None:
            raise SipError("the line is not started")
        return self.transport.execute(command)

    # -- the actor loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        while not self.closed:
            item = await self.inbox.get()
            try:
                await self._handle(item)
            except Exception:
                log.exception("line %s: handling %s failed", self.user_id, type(item).__name__)
            await self._presence_check()
        if self._presence_sender is not None:
            await self._presence_sender  # the last lamp (offline) goes out before the line ends

    async def _handle(self, item: LineInput) -> None:
        match item:
            case Attach(session=session, opened_at=opened_at):
                await self._attach(session, opened_at)
            case Detach(session=session):
                await self._detach(session)
            case Command(session=session, command=command):
                if session not in self.sessions:
                    await self._attach(session, time.time())
                await self._command(session, command)
            case Reload():
                await self._reload()
            case Release():
                await self._release_if_idle()
            case ToneDone(session=session, tone=tone):
                if self.tones.get(session) is tone:
                    del self.tones[session]
                    self.route_media()
            case RegistrationStateChanged():
                await self._on_registration(item)
            case IncomingCall():
                await self._on_incoming(item)
            case CallStateChanged():
                await self._on_call_state(item)
            case CallRedirected(call_id=call_id, status=status, target=target):
                # Our call was redirected (a colleague's 応答不可 forward): the UA follows it.
                log.info("line %s: call %s %s to %s", self.user_id, call_id, status, target)
            case MediaUpdated(call_id=call_id, media=media, early=early):
                pair = self.joined.get(call_id)
                call = self.calls.get(call_id)
                if pair is not None:  # a joined call's far end re-INVITEs: follow it
                    call = pair.a if pair.a.id == call_id else pair.b
                if call is not None and call.media is not None and media is not None:
                    call.media.update_remote(media)
                    if early and not call.early_media:
                        # The PBX plays its own progress (183 with SDP): the caller hears
                        # that instead of our ringback (seed 3-2).
                        call.early_media = True
                        self.route_media()
                elif call is not None and call.media is not None and call.media.leg.srtp_required:
                    # An answer without the SRTP our offer required (RFC 4568 §7.1.3): hang
                    # up rather than talk in plain RTP, and say why, as for a 488.
                    self._hangup(call)
                    await self._finish(call, "insecure-media", 488)
                    await self._failed(call, 488)
            case HoldChanged():
                await self._on_hold_changed(item)
            case TransferProgress():
                await self._on_transfer_progress(item)
            case TransferRequested():
                await self._on_refer(item)
            case protocol.Handover(slot=0):
                await self._hand_over_ringing(item)
            case protocol.Handover():
                await self._hand_over(item)
            case ParkTimeout(call_id=call_id, slot=slot):
                await self._park_timeout(call_id, slot)
            case Opened(call_id=call_id, job=job, ring=ring):
                await self._on_opened(call_id, job, ring)
            case LeaseLost():
                await self._fenced()
            case LineTestTick(test=test):
                await self.diagnostics.on_tick(test)
            case QualityTick():
                await self.diagnostics.on_quality_tick()
            case EndDialog(call_id=call_id):
                if self.transport is not None and call_id not in self.calls:
                    with contextlib.suppress(SipError):
                        self._sip(lambda now: self.ua.hangup(now, call_id))
                    self.ua.forget(call_id)
            case TransferDeadline(held_id=held_id):
                consult_id = self.transferring.pop(held_id, None)
                if consult_id is not None:
                    await self._join(held_id, consult_id)
            case blf.WatchTick():
                if self.watch is not None:
                    await self.watch.tick()
            case WatchedLamp(extension=extension, state=state):
                if self.watch is not None:
                    await self.watch.publish(extension, state)
            case MessageSummary(waiting=waiting, new=new, old=old):
                await self.broadcast(server_message("vm.status", waiting=waiting, new=new, old=old))
            case UntrustedRequests(count=count, last_source=source, last_method=method):
                # Bounded by the UA: at most one such report a minute, whatever the flood.
                log.warning(
                    "line %s: refused %d out-of-dialog request(s) from outside the PBX "
                    "(last: %s from %s:%s)",
                    self.user_id,
                    count,
                    method,
                    *source,
                )
            case MalformedMessage():
                pass  # logged by the transport; the transaction layer answered 400
            case TransportFailure(kind=kind):
                # Logged by the transport; the REGISTER waiting for it fails with 503 next.
                self.transport_failure = kind
                await self._set_registration("failed", kind)
            case _:
                log.warning("line %s: unexpected %r", self.user_id, item)

    # -- pages ------------------------------------------------------------------------------

    @property
    def newest_session(self) -> str | None:
        """The most recently opened page rings (seed 1-4)."""
        if not self.sessions:
            return None
        return max(self.sessions.items(), key=lambda item: item[1])[0]

    async def _attach(self, session: str, opened_at: float) -> None:
        self.sessions[session] = opened_at
        if self._release is not None:
            self._release.cancel()
            self._release = None
        if self.transport is None:
            await self._start()
        await self.send(session, self._registration_message())
        await self.send(session, server_message("dnd", on=self.dnd))
        calls = [c.message() for c in self.calls.values() if not c.internal]
        await self.send(session, server_message("calls", calls=calls))

    async def _detach(self, session: str) -> None:
        self.sessions.pop(session, None)
        for call in self.calls.values():
            if call.session == session:
                call.session = None
        await self.diagnostics.session_gone(session)
        await self.host.media.drop_session(session)
        self.route_media()
        if not self.sessions:
            # Registered a little longer, so a reload does not unregister and re-register (and
            # a call arriving in between still reaches the user); then released (seed 1-4).
            self._schedule_release(settings.SIPWORKER_RELEASE_SECONDS)

    def _schedule_release(self, delay: float) -> None:
        if self._release is not None:
            self._release.cancel()
        self._release = asyncio.get_running_loop().call_later(delay, self.post, Release())

    async def _release_if_idle(self) -> None:
        self._release = None
        if self.sessions or self.calls or self.joined or not self.inbox.empty():
            return
        # Forgotten first: a page opening meanwhile gets a new line, not this closing one.
        self.host.forget(self)
        self.closed = True
        await self.stop()
        if owners.enabled():
            with contextlib.suppress(Exception):
                await owners.release(self.host.worker_id, self.user_id)

    async def _fenced(self) -> None:
        """The lease is gone: not one more SIP message for this account (the new owner may be
        registering it already); the calls end for the user here and the pages look for the
        new owner."""
        self.host.forget(self)
        self.closed = True
        await self._stop_watching(unsubscribe=False)
        for call in list(self.calls.values()):
            await self._finish(call, "lease lost")
        for pair in list(self.joined.values()):
            await self._unjoin(pair, hang_up=False)
        if self.transport is not None:
            await self.transport.close()  # no un-REGISTER: that is the new owner's binding now
            self.transport = None
        await self.broadcast(
            server_message("worker", state="lost", reason="the line moved to another worker")
        )

    # -- registration -----------------------------------------------------------------------

    def _registration_message(self) -> dict[str, Any]:
        state, reason = self.registration
        extension = self.config.extension if self.config else ""
        return server_message("registration", state=state, reason=reason, extension=extension)

    async def _set_registration(self, state: str, reason: str = "") -> None:
        self.registration = (state, reason)
        self.meter.set(state)
        await self.broadcast(self._registration_message())

    async def _start(self) -> None:
        self.config = config = await database_sync_to_async(db.load_line)(self.user_id)
        if config is None:
            await self._set_registration("failed", "no SIP account")
            return
        self._user_name = config.display_name
        self.dnd = (await database_sync_to_async(db.dnd_for)(self.user_id)).on
        try:
            host, port = config.proxy_hostport
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            proxy_addr = (str(infos[0][4][0]), int(infos[0][4][1]))
        except OSError as exc:
            await self._set_registration("failed", f"DNS: {exc.strerror or exc}")
            return

        def make_ua(local_addr: Addr) -> UserAgent:
            return UserAgent(
                UserAgentConfig(
                    username=config.extension,
                    domain=config.domain,
                    local_addr=local_addr,
                    password=config.password,
                    auth_username=config.auth_user,
                    display_name=config.display_name or None,
                    transport=config.transport.upper(),
                    proxy_addr=proxy_addr,
                    expires=settings.SIP_REGISTER_EXPIRES,
                    refresh_jitter=0.2,
                    # Out-of-dialog requests only from the PBX we register with: no ghost
                    # calls or spoofed caller ids from anyone who finds our port.
                    trusted_sources=frozenset({proxy_addr}),
                    ring_timeout=float(config.ring_timeout),
                    keepalive_interval=float(settings.SIP_KEEPALIVE_SECONDS) or None,
                    keepalive_timeout=float(settings.SIP_KEEPALIVE_TIMEOUT),
                    reregister_max=float(settings.SIP_REREGISTER_MAX_SECONDS),
                    register_retry_max=float(settings.SIP_REREGISTER_MAX_SECONDS),
                )
            )

        self.transport = await self.host.open_sip(config, make_ua, self.post)
        if owners.enabled():
            log.info(
                "line %s: owned by %s (fence %s)",
                self.user_id,
                self.host.worker_id,
                await owners.fence_token(self.user_id),
            )
        await self._set_registration("registering")
        self._sip(self.ua.register)

    async def _on_registration(self, event: RegistrationStateChanged) -> None:
        reason = event.reason
        if event.state is RegistrationState.REGISTERED:
            self.transport_failure = None
        elif event.state is RegistrationState.FAILED and self.transport_failure:
            reason = self.transport_failure  # "certificate", not the 503 that followed it
        await self._set_registration(_REGISTRATION.get(event.state, "unregistered"), reason)
        if event.state is RegistrationState.REGISTERED and not self._mwi_subscribed:
            # Voicemail waiting (RFC 3842) lights 留守電状態; unsolicited NOTIFYs work too.
            self._mwi_subscribed = True
            self._sip(self.ua.subscribe_mwi)
        if event.state is RegistrationState.REGISTERED:
            watchers = getattr(self.host, "blf", None)
            if watchers is not None:
                watchers.line_registered(self)  # the tenant's PBX lamps (phone.worker.blf)

    async def _stop_watching(self, *, unsubscribe: bool = True) -> None:
        """This line no longer watches PBX extensions: the next line of its tenant does."""
        watch, self.watch = self.watch, None
        if watch is None:
            return
        await watch.stop(unsubscribe=unsubscribe)
        watchers = getattr(self.host, "blf", None)
        if watchers is not None:
            watchers.line_stopped(self, list(getattr(self.host, "lines", {}).values()))

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            self._hangup(call)
            await self._finish(call, "local-bye")
        for pair in list(self.joined.values()):
            await self._unjoin(pair)
        await self._stop_watching()  # un-SUBSCRIBE while the transport is still there
        if self.transport is not None:
            transport = self.transport
            with contextlib.suppress(Exception):
                self._sip(self.ua.unregister)
            # Keep the socket until the REGISTER with Expires: 0 is answered: a PBX challenges
            # it first (401, RFC 3261 §22.2), so it takes two round trips; bounded, for a PBX
            # that does not answer. And at least LINGER_SECONDS: a notifier answers our
            # un-SUBSCRIBE with a last NOTIFY (RFC 6665 §4.1.2.3), which gets its 200 too.
            started = time.monotonic()
            while (now := time.monotonic()) < started + LINGER_SECONDS or (
                self.ua.registration.state is RegistrationState.UNREGISTERING
                and now < started + UNREGISTER_WAIT_SECONDS
            ):
                await asyncio.sleep(0.02)
            await transport.close()
            self.transport = None
            self._mwi_subscribed = False
        self.registration = ("unregistered", "")
        self.meter.set(None)
        self.transport_failure = None

    async def _reload(self) -> None:
        """The SIP account changed in settings: register the new one now (no reload needed)."""
        if self.calls:
            return  # never cut a call; the next attach after the calls end picks it up
        await self.stop()
        if self.sessions:
            await self._start()

    # -- calls: SIP events ------------------------------------------------------------------

    async def _on_incoming(self, event: IncomingCall) -> None:
        await self.diagnostics.interrupt("incoming")
        remote = caller_number(event)
        # 着信番号: the number the caller dialled is in To; the PBX rewrote the Request-URI to
        # our registered Contact (RFC 3261 §16.6 keeps To as the caller wrote it).
        called = (
            event.callee.uri.user
            or event.request_uri.user
            or (self.config.extension if self.config else "")
        )
        call = LineCall(
            id=event.call_id, direction="in", remote=remote, called=called, phase=Phase.INCOMING
        )
        call.offer = event.offer
        self.calls[call.id] = call
        token = event.headers.get(PICKUP_HEADER) if event.headers is not None else None
        pickup = self.pickups.pop(token, None) if token else None
        if pickup is not None:
            if pickup.slot == 0:  # a ringing call (代理応答): the caller comes with the token
                pickup = await self._ringing_pickup(pickup, event)
            await self._picked_up(call, pickup)
            return
        old = self.calls.get(event.replaces) if event.replaces else None
        if old is not None:
            # RFC 3891: this INVITE takes the place of one of our calls (the far end of an
            # attended transfer): no ringing, it continues where the old one was.
            await self._replace(old, call)
            return
        if self.dnd:
            await self._reject_dnd(call)
            return
        refusal = self._offer_refusal(call)
        if refusal is not None:
            # RFC 3261 §13.3.1.1: an offer we could never answer is refused now, with 488,
            # not after the user picked up (RFC 3261 §13.3.1.3).
            log.info("line %s: refused %s: %s", self.user_id, call.id, refusal.reason)
            reason = "insecure-media" if refusal.insecure else "unacceptable-media"
            await self._refuse_on_arrival(call, 488, reason)
            return
        self._sip(lambda now: self.ua.ring(now, call.id))
        # The history row, the line and the phonebook name after the 180 has left, and off
        # this turn: a CANCEL meanwhile is the next message, not queued behind the database.
        # The pages ring when they are known (Opened), so the first ring has the caller's name
        # and the line's ring tone.
        self._open(call, name_of=call.remote, line_of=call.called, ring=True)

    async def _ring(self, call: LineCall) -> None:
        """An incoming call's name and line are known: the pages show it, the newest rings."""
        await self.broadcast(call.message())
        if call.phase is not Phase.INCOMING or call.media is not None:
            return  # answered (a page that attached meanwhile saw it) or being answered
        if call.id in self.handing_over:
            return  # a colleague takes it (代理応答): nothing rings here any more
        target = self.newest_session
        if target is not None:
            await self.send(target, call.incoming_message())
            metrics.call_setup(time.time() - call.started_at, "incoming")
            await self.send(target, self._cti(call, "ring"))
        await database_sync_to_async(actions.do_call_event)(
            self.user_id,
            "call.ringing",
            {"call_id": call.id, "from": call.remote, "to": call.called},
        )

    async def _on_call_state(self, event: CallStateChanged) -> None:
        call = self.calls.get(event.call_id)
        if call is None:
            pair = self.joined.get(event.call_id)
            if pair is not None and event.state is CallState.TERMINATED:
                await self._unjoin(pair)
            elif event.state is CallState.TERMINATED and self.transport is not None:
                # A call we already ended locally (hang-up before any answer): now the UA
                # is done with it too.
                self.ua.forget(event.call_id)
            return
        first_answer = event.state is CallState.CONNECTED and call.answered_at is None
        if call.referred_from is not None:
            await self._referral_progress(call, event)
        if call.picks_up is not None:
            await self._pickup_progress(call, event)
            return
        if call.id in self.handing_over:
            await self._handing_over_progress(call, event)
            return
        if not call.on_ua_state(event.state, event.status, event.reason):
            return
        if call.ended:
            await self._finish(call, call.reason, event.status)
            if call.direction == "out" and call.answered_at is None and event.status != 487:
                await self._failed(call, event.status)
            return
        self.route_media()
        await self.broadcast(call.message())
        if call.phase is Phase.INCALL:
            self.diagnostics.watch_quality()
        if first_answer:
            # After the broadcast: the page hears the answer without waiting for the row.
            record_id = await self._record_id(call)
            if record_id is not None:
                fields = call.history_fields(self.user_id, self._user_name)
                await database_sync_to_async(actions.do_mark_answered)(
                    self.user_id, record_id, fields["answered_at"]
                )
            if call.direction == "in" and call.session is not None:
                await self.send(call.session, self._cti(call, "answer"))
            await database_sync_to_async(actions.do_call_event)(
                self.user_id,
                "call.answered",
                {"call_id": call.id, ("from" if call.direction == "in" else "to"): call.remote},
            )

    async def _on_hold_changed(self, event: HoldChanged) -> None:
        call = self.calls.get(event.call_id)
        if call is None:
            return
        asked = call.pending or "hold"
        call.on_hold_result(event.held, event.ok)
        self.route_media()
        await self.broadcast(call.message())
        if not event.ok:
            reason = f"{event.status} {event.reason}".strip()
            await self.broadcast(
                error_message("hold_refused", f"the other party refused ({reason})", asked)
            )

    async def _on_transfer_progress(self, event: TransferProgress) -> None:
        call = self.calls.get(event.call_id)
        if call is None or not event.final:
            return
        consult_id = self.transferring.pop(call.id, None)
        if not 200 <= event.status < 300 and consult_id is not None:
            # The peers refused or failed (no REFER, no Replaces...): the worker joins the two
            # calls itself, so 転送実行 still succeeds for the user (seed 3-3).
            log.info("line %s: transfer refused (%s); joining", self.user_id, event.status)
            await self._join(call.id, consult_id)
            return
        if 200 <= event.status < 300:
            # The transfer completed (blind or attended): our part of the call is over.
            self._hangup(call)
            await self._finish(call, "transferred")
            for consult in [c for c in self.calls.values() if c.consult_of == call.id]:
                self._hangup(consult)
                await self._finish(consult, "transferred")
        else:
            text = f"{event.status} {event.reason}".strip()
            await self.broadcast(
                server_message("notice", level="error", code="transfer-failed", text=text)
            )

    # -- calls: commands --------------------------------------------------------------------

    async def _command(self, session: str, command: protocol.BrowserCommand) -> None:
        # The line test needs no SIP account: the page reports "not registered" itself.
        if self.transport is None and not isinstance(
            command, (WebrtcOffer, LineTestStart, LineTestStop)
        ):
            await self._refuse(session, "no_account", command)
            return
        if isinstance(command, (Dial, ParkPickup)):
            await self.diagnostics.interrupt()  # a call starts: the line test gives way
        match command:
            case Dial(number=number, line=line):
                await self._dial(session, number, line)
            case Answer(call_id=call_id):
                await self._answer(session, call_id)
            case Reject(call_id=call_id):
                await self._reject(session, call_id)
            case Hangup(call_id=call_id):
                await self._hangup_command(session, call_id)
            case Hold(call_id=call_id):
                await self._hold(session, call_id, True)
            case Unhold(call_id=call_id):
                await self._hold(session, call_id, False)
            case Dtmf(call_id=call_id, digits=digits):
                await self._dtmf(session, call_id, digits)
            case TransferStart(call_id=call_id, number=number):
                await self._transfer_start(session, call_id, number)
            case TransferComplete(call_id=call_id):
                await self._transfer_complete(session, call_id)
            case TransferCancel(call_id=call_id):
                await self._transfer_cancel(session, call_id)
            case TransferBlind(call_id=call_id, number=number):
                await self._transfer_blind(session, call_id, number)
            case Swap(call_id=call_id):
                await self._swap(session, call_id)
            case Park(call_id=call_id, slot=slot):
                await self._park(session, call_id, slot)
            case ParkPickup(slot=slot):
                await self._park_pickup(session, slot)
            case WebrtcOffer(sdp=sdp):
                await self._webrtc_offer(session, sdp)
            case LineTestStart():
                await self.diagnostics.start_test(session)
            case LineTestStop():
                await self.diagnostics.stop_test(session)
            case QualityStats():
                await self.diagnostics.page_stats(session, command)
            case SetDnd(on=on):
                await self._set_dnd(on)
            case PickupRinging() | PickupGroup():
                await self._pickup_ringing(session, command)

    async def _refuse(
        self, session: str, code: str, command: protocol.BrowserCommand, text: str | None = None
    ) -> None:
        await self.send(session, error_message(code, text, protocol.command_name(command)))

    async def _webrtc_offer(self, session: str, sdp: str) -> None:
        await self.diagnostics.media_replaced(session)
        answer = await self.host.media.browser_offer(session, sdp)
        await self.send(session, server_message("webrtc.answer", sdp=answer))
        # A reloaded page gets its running call's audio back at once.
        for call in self.calls.values():
            if call.session is None or call.session not in self.sessions:
                call.session = session
        self.route_media()

    async def _dial(self, session: str, number: str, line: str) -> None:
        command = Dial(number, line)
        try:
            number = clean_number(number)
        except ValidationError as exc:
            await self._refuse(session, "bad_number", command, " ".join(exc.messages))
            return
        if any(
            c.phase in (Phase.DIALING, Phase.RINGING, Phase.INCALL) for c in self.calls.values()
        ):
            await self._refuse(session, "bad_state", command, "already in a call")
            return
        if line and line not in await database_sync_to_async(db.line_numbers)(self.user_id):
            await self._refuse(session, "not_allowed", command, "no such line")
            return
        # Dialling while a call is held starts a consultation, as 転送 does (seed 3-3).
        held = next((c for c in self.calls.values() if c.phase is Phase.HELD), None)
        await self._place_call(session, number, consult_of=held.id if held else None, line=line)

    def _caller_id(self, number: str, line: str) -> tuple[str, dict[str, Any]]:
        """How a line button's number reaches the PBX (発番号選択, seed 1-2 and 6-1): the dialled
        number and the keyword arguments of UserAgent.call for the tenant's method."""
        if not line or self.config is None:
            return number, {}
        method, domain = self.config.caller_id_method, self.config.domain
        if method == "ppi":  # RFC 3325 §9.3
            return number, {"headers": [("P-Preferred-Identity", f"<sip:{line}@{domain}>")]}
        if method == "pai":  # RFC 3325 §9.1, for PBXs that trust us
            return number, {"headers": [("P-Asserted-Identity", f"<sip:{line}@{domain}>")]}
        if method == "prefix":  # e.g. a PBX that reads "<line>#<number>"
            return f"{line}#{number}", {}
        return number, {"from_user": line}

    async def _place_call(
        self,
        session: str | None,
        number: str,
        *,
        consult_of: str | None = None,
        line: str = "",
        target: SipUri | None = None,
        headers: list[tuple[str, str]] | None = None,
        referred_from: str | None = None,
        picks_up: str | None = None,
    ) -> LineCall | None:
        media = await self.host.open_media()
        if self.transport is None or self.config is None:
            await media.close()  # the line stopped while the port opened
            return None
        offer = media.offer(self.config.media_encryption)
        dialled, options = self._caller_id(number, line)
        destination: str | SipUri = target if target is not None else dialled
        if headers:
            options["headers"] = [*options.get("headers", []), *headers]
        call_id = f"{secrets.token_hex(12)}@{self.transport.local_addr[0]}"
        call = LineCall(
            id=call_id,
            direction="out",
            remote=number,
            called=self.config.extension,
            media=media,
            session=session,
            consult_of=consult_of,
            line=line,
            referred_from=referred_from,
            picks_up=picks_up,
        )
        self.calls[call_id] = call
        try:
            self._sip(lambda now: self.ua.call(now, destination, offer, call_id=call_id, **options))
        except SipError as exc:
            log.warning("line %s: dial %s failed: %s", self.user_id, number, exc)
            await self._finish(call, "failed")
            return None
        if call.internal:
            return call
        self.route_media()
        # The history row and the phonebook name once the INVITE is on its way, and off this
        # turn: the far end's answer is handled as soon as it arrives, not after the database.
        # The page hears "dialling" now and the name with the next snapshot (Opened).
        self._open(call, name_of=number)
        await self.broadcast(call.message())
        return call

    async def _answer(self, session: str, call_id: str) -> None:
        command = Answer(call_id)
        call = self.calls.get(call_id)
        if call is not None and call.recalling and call.phase is Phase.HELD:
            call.recalling = False  # the parker answers the park recall: the call comes back
            await self._hold(session, call_id, False)
            return
        if call is None or call.phase is not Phase.INCOMING:
            await self._refuse(session, "no_call", command)
            return
        answering = await self._prepare_answer(call)
        if answering is None:  # the caller gave up, or their offer could not be answered
            await self._refuse(session, "no_call", command)
            return
        call.media, call.session = answering[0], session
        # Call waiting (seed 3-3 ③): the call that is up goes on hold; the far end hears music.
        await self._hold_others(call)
        # The UA reports CONNECTED next (and MediaUpdated); the call's phase follows that.
        self._sip(lambda now: self.ua.answer(now, call_id, answering[1]))

    async def _prepare_answer(self, call: LineCall) -> tuple[CallMedia, SessionDescription] | None:
        """An RTP port and our SDP for answering `call`, if it can still be answered. The
        caller may have given up while the port opened: the UA has ended the call and its end
        is the next message in our queue, so check the UA, not our copy. An offer we cannot
        answer gets 488 (RFC 3261 §13.3.1.3)."""
        media = await self.host.open_media()
        ua_call = self.ua.calls.get(call.id) if self.transport is not None else None
        if call.ended or ua_call is None or ua_call.state is not CallState.INCOMING:
            await media.close()
            return None
        try:
            return media, self._answer_sdp(call.offer, media)
        except SdpNegotiationError as exc:
            await media.close()
            log.info("line %s: cannot answer %s: %s", self.user_id, call.id, exc)
            self._sip(lambda now: self.ua.reject(now, call.id, 488))
            return None

    def _answer_sdp(self, offer: SessionDescription | None, media: CallMedia) -> SessionDescription:
        # The tenant's SRTP setting (RFC 4568) decides what we accept; no offer gets ours.
        return media.answer(offer, self.config.media_encryption if self.config else "none")

    async def _hold_others(self, keep: LineCall) -> None:
        for other in list(self.calls.values()):
            if other is keep or other.phase is not Phase.INCALL or other.pending is not None:
                continue
            try:
                self._sip(functools.partial(self._ua_hold, call_id=other.id))
            except SipError as exc:
                log.info("line %s: could not hold %s: %s", self.user_id, other.id, exc)
                continue
            other.request_hold(True)
            await self.broadcast(other.message())

    def _ua_hold(self, now: float, *, call_id: str) -> Any:
        return self.ua.hold(now, call_id)

    async def _swap(self, session: str, call_id: str) -> None:
        """Resume a held call and hold the one that is up (seed 3-3: 切替)."""
        call = self.calls.get(call_id)
        if call is None or call.phase is not Phase.HELD or call.pending is not None:
            await self._refuse(session, "bad_state", Swap(call_id))
            return
        await self._hold_others(call)
        await self._hold(session, call_id, False)

    async def _reject(self, session: str, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is None or call.phase is not Phase.INCOMING:
            await self._refuse(session, "no_call", Reject(call_id))
            return
        call.rejected = True
        self._sip(lambda now: self.ua.reject(now, call_id, 486))

    async def _hangup_command(self, session: str, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is None:
            await self._refuse(session, "no_call", Hangup(call_id))
            return
        if call.phase is Phase.INCOMING:
            call.rejected = True
        self._hangup(call)
        # Ended for the user now, whatever the far end takes to confirm (a CANCEL waits for
        # a provisional, RFC 3261 §9.1); the UA's late TERMINATED finds no call and is dropped.
        await self._finish(call, "local-bye")

    def _hangup(self, call: LineCall) -> None:
        if self.transport is not None:
            try:
                self._sip(lambda now: self.ua.hangup(now, call.id))
            except SipError as exc:
                log.info("line %s: hang-up of %s: %s", self.user_id, call.id, exc)

    async def _hold(self, session: str, call_id: str, hold: bool) -> None:
        command: protocol.BrowserCommand = Hold(call_id) if hold else Unhold(call_id)
        call = self.calls.get(call_id)
        wanted_from = Phase.INCALL if hold else Phase.HELD
        if call is None or call.phase is not wanted_from or call.pending is not None:
            await self._refuse(session, "bad_state", command)
            return
        try:
            self._sip(
                (lambda now: self.ua.hold(now, call_id))
                if hold
                else (lambda now: self.ua.unhold(now, call_id))
            )
        except SipError:
            await self._refuse(session, "bad_state", command)
            return
        call.request_hold(hold)
        if not hold:
            call.session = session  # the page that takes the call back hears it
        await self.broadcast(call.message())

    async def _dtmf(self, session: str, call_id: str, digits: str) -> None:
        call = self.calls.get(call_id)
        tones = "".join(ch for ch in digits.upper() if ch in _DTMF)
        if call is None or call.phase is not Phase.INCALL or call.media is None or not tones:
            await self._refuse(session, "bad_state", Dtmf(call_id, digits))
            return
        call.media.dtmf(tones)

    # Attended transfer (seed 3-3): hold → number → 転送 calls the target → 転送実行 hands the held
    # caller over (REFER with Replaces, RFC 3515 + RFC 3891); 保留 instead gives up the attempt.

    def _consultation_for(self, held_id: str) -> LineCall | None:
        return next((c for c in self.calls.values() if c.consult_of == held_id), None)

    async def _transfer_start(self, session: str, call_id: str, number: str) -> None:
        command = TransferStart(call_id, number)
        try:
            number = clean_number(number)
        except ValidationError as exc:
            await self._refuse(session, "bad_number", command, " ".join(exc.messages))
            return
        held = self.calls.get(call_id)
        if held is None or held.phase is not Phase.HELD or self._consultation_for(call_id):
            await self._refuse(session, "bad_state", command)
            return
        await self._place_call(session, number, consult_of=held.id)

    async def _transfer_complete(self, session: str, call_id: str) -> None:
        consult = self.calls.get(call_id)
        held = self.calls.get(consult.consult_of) if consult and consult.consult_of else None
        if consult is None or held is None or consult.phase is not Phase.INCALL:
            await self._refuse(session, "bad_state", TransferComplete(call_id))
            return
        try:
            self._sip(
                lambda now: self.ua.refer(now, held.id, consult.remote, replaces_call=consult.id)
            )
        except SipError:
            # No REFER possible on this dialog: the worker joins the calls straight away.
            await self._join(held.id, consult.id)
            return
        self.transferring[held.id] = consult.id
        asyncio.get_running_loop().call_later(
            TRANSFER_GRACE_SECONDS, self.post, TransferDeadline(held.id)
        )

    async def _transfer_cancel(self, session: str, call_id: str) -> None:
        consult = self.calls.get(call_id)
        if consult is None or consult.consult_of is None:
            await self._refuse(session, "bad_state", TransferCancel(call_id))
            return
        self._hangup(consult)
        await self._finish(consult, "transfer-cancelled")

    async def _transfer_blind(self, session: str, call_id: str, number: str) -> None:
        command = TransferBlind(call_id, number)
        try:
            number = clean_number(number)
        except ValidationError as exc:
            await self._refuse(session, "bad_number", command, " ".join(exc.messages))
            return
        call = self.calls.get(call_id)
        if call is None or not call.live:
            await self._refuse(session, "bad_state", command)
            return
        try:
            self._sip(lambda now: self.ua.refer(now, call_id, number))
        except SipError:
            await self._refuse(session, "bad_state", command)

    # -- the end of a call ------------------------------------------------------------------

    async def _finish(self, call: LineCall, reason: str, status: int | None = None) -> None:
        """Close a call's media, complete its history row, then tell the pages (in that
        order: a page that refreshes 履歴 on "ended" finds the row)."""
        if self.calls.get(call.id) is not call:
            return
        call.end(reason, status)
        log.info("line %s: call %s (%s) ended: %s", self.user_id, call.id, call.direction, reason)
        del self.calls[call.id]
        if call.media is not None:
            sample_leg(call)  # the last RTCP view, for the history row's quality
            await call.media.close()
        if self.transport is not None:
            self.ua.forget(call.id)
        await self._ended_for_the_user(call)

    async def _ended_for_the_user(self, call: LineCall) -> None:
        if call.park_slot is not None:
            await self._unpark(call)
        self.route_media()
        if call.internal:
            return
        # A call that ended before its row was opened waits for it here, so the row is
        # completed, never written a second time (do_close_call writes it whole only if the
        # opening failed).
        record_id = await self._record_id(call)
        try:
            await database_sync_to_async(actions.do_close_call)(
                self.user_id, record_id, call.history_fields(self.user_id, self._user_name)
            )
        except Exception:
            log.exception("line %s: could not log call %s", self.user_id, call.id)
        await self.broadcast(call.message())
        if not self.sessions and not self.calls:
            self.post(Release())

    # -- transfers: the peers do it (REFER, Replaces) or the worker joins the calls ----------

    async def _on_refer(self, event: TransferRequested) -> None:
        """Someone transfers us (RFC 3515): call the target, with Replaces for an attended
        transfer (RFC 3891), and report progress; the page moves to the new call."""
        old = self.calls.get(event.call_id)
        if old is None or not old.live:
            self._sip(lambda now: self.ua.transfer_progress(now, event.call_id, 481))
            return
        headers = []
        if event.replaces:
            headers.append(("Replaces", event.replaces))
        if event.referred_by:
            headers.append(("Referred-By", event.referred_by))
        target = event.target
        number = target.user or str(target)
        new = await self._place_call(
            old.session, number, target=target, headers=headers, referred_from=old.id
        )
        if new is None:
            self._sip(lambda now: self.ua.transfer_progress(now, event.call_id, 500))

    async def _referral_progress(self, call: LineCall, event: CallStateChanged) -> None:
        """Our call to a REFER's target moved on: NOTIFY the transferor (RFC 3515 §2.4.5); once
        it is answered the old call is over."""
        old_id = call.referred_from
        assert old_id is not None
        status = {CallState.RINGING: 180, CallState.CONNECTED: 200}.get(event.state)
        if event.state is CallState.TERMINATED:
            status = event.status or 487
        if status is None:
            return
        with contextlib.suppress(SipError):
            self._sip(lambda now: self.ua.transfer_progress(now, old_id, status))
        if status >= 200:
            call.referred_from = None
        old = self.calls.get(old_id)
        if status == 200 and old is not None:
            # Over for the user now. The transferor ends the old dialog (RFC 5589 §6.1: its BYE
            # follows our NOTIFY; sending ours too could overtake the NOTIFY at the PBX and
            # make the transfer look failed); if it never does, we do, a little later.
            await self._finish(old, "transferred")
            asyncio.get_running_loop().call_later(
                TRANSFERRED_BYE_SECONDS, self.post, EndDialog(old_id)
            )

    async def _replace(self, old: LineCall, new: LineCall) -> None:
        """Answer an INVITE with Replaces at once and end the call it replaces (RFC 3891 §3)."""
        answering = await self._prepare_answer(new)
        if answering is None:
            return
        new.media, new.session = answering[0], old.session
        self._open(new)
        self._sip(lambda now: self.ua.answer(now, new.id, answering[1]))
        self._hangup(old)
        await self._finish(old, "replaced")

    async def _join(self, held_id: str, consult_id: str, reason: str = "transferred") -> None:
        held, consult = self.calls.get(held_id), self.calls.get(consult_id)
        if (
            held is None
            or consult is None
            or not held.live
            or not consult.live
            or held.media is None
            or consult.media is None
        ):
            await self.broadcast(
                server_message("notice", level="error", code="transfer-failed", text="")
            )
            return
        if held.phase is Phase.HELD:
            try:  # the far end hears the target, not music
                self._sip(lambda now: self.ua.unhold(now, held.id))
            except SipError as exc:
                log.info("line %s: could not take %s off hold: %s", self.user_id, held.id, exc)
        pair = Joined(held, consult, LegJoin(held.media.leg, consult.media.leg))
        log.info("line %s: joined %s and %s", self.user_id, held.id, consult.id)
        for call in (held, consult):
            self.joined[call.id] = pair
            del self.calls[call.id]
            call.end(reason)
            await self._ended_for_the_user(call)

    async def _unjoin(self, pair: Joined, *, hang_up: bool = True) -> None:
        """One side of a joined pair hung up: so does the other, and the relay ends. Fenced
        (`hang_up=False`): the relay and media end without a SIP message."""
        pair.join.close()
        for call in (pair.a, pair.b):
            self.joined.pop(call.id, None)
            if hang_up:
                self._hangup(call)
            if call.media is not None:
                await call.media.close()
            if self.transport is not None:
                self.ua.forget(call.id)
        if not self.closed and not self.sessions and not self.calls and not self.joined:
            self.post(Release())

    # -- park (seed 3-4): slots shared by a park group, state in the database ----------------

    async def _park(self, session: str, call_id: str, slot: int) -> None:
        command = Park(call_id, slot)
        call = self.calls.get(call_id)
        if call is None or not call.live or call.consult_of or call.park_slot is not None:
            await self._refuse(session, "bad_state", command)
            return
        info = await database_sync_to_async(db.park_group_for)(self.user_id)
        if info is None:
            await self._refuse(session, "not_allowed", command, "not in a park group")
            return
        if not 1 <= slot <= info.slot_count:
            await self._refuse(session, "no_slot", command)
            return
        parked = await database_sync_to_async(actions.do_park)(
            self.user_id,
            info.group_id,
            slot,
            call.id,
            self.host.worker_id,
            call.remote,
            call.remote_name,
        )
        if not parked:
            await self._refuse(session, "slot_busy", command)
            return
        if call.phase is Phase.INCALL and call.pending is None:
            try:  # the far end hears music on hold while the call waits in the slot
                self._sip(functools.partial(self._ua_hold, call_id=call.id))
                call.request_hold(True)
            except SipError as exc:
                log.info("line %s: hold for park failed: %s", self.user_id, exc)
        call.park_slot, call.park_group = slot, info.group_id
        call.session = None  # nobody's page hears it until someone takes it
        self.route_media()
        asyncio.get_running_loop().call_later(info.timeout, self.post, ParkTimeout(call.id, slot))
        await self.broadcast(call.message())

    async def _unpark(self, call: LineCall) -> None:
        if call.park_slot is None or call.park_group is None:
            return
        slot, call.park_slot = call.park_slot, None
        await database_sync_to_async(actions.do_unpark)(call.park_group, slot, call.id)
        if not call.ended:
            await self.broadcast(call.message())

    async def _park_pickup(self, session: str, slot: int) -> None:
        command = ParkPickup(slot)
        info = await database_sync_to_async(db.park_group_for)(self.user_id)
        if info is None:
            await self._refuse(session, "not_allowed", command, "not in a park group")
            return
        parked = (
            await database_sync_to_async(db.parked_in)(info.group_id, slot)
            if 1 <= slot <= info.slot_count
            else None
        )
        if parked is None or self.config is None:
            await self._refuse(session, "no_slot", command)
            return
        if parked.owner_id == self.user_id:
            call = self.calls.get(parked.call_id)
            if call is None:
                await self._refuse(session, "no_slot", command)
                return
            # The parker takes it back: off hold, into this page.
            await self._unpark(call)
            call.recalling = False
            await self._hold(session, call.id, False)
            return
        token = secrets.token_urlsafe(16)
        self.pickups[token] = Pickup(slot, session, parked.remote, parked.remote_name)
        handover = protocol.Handover(
            user_id=parked.owner_id,
            call_id=parked.call_id,
            slot=slot,
            to_extension=self.config.extension,
            to_session=session,
            token=token,
        )
        await self.host.to_worker(handover)

    async def _hand_over(self, handover: protocol.Handover) -> None:
        """A colleague takes our parked call: call their line with the token; once answered the
        worker joins the two calls (the far end is not re-INVITEd anywhere: it works whatever
        the far end supports, and wherever the colleague's line runs)."""
        call = self.calls.get(handover.call_id)
        if call is None or call.park_slot != handover.slot:
            await self.send(handover.to_session, error_message("no_slot", request="park.pickup"))
            return
        await self._unpark(call)
        pick = await self._place_call(
            None,
            handover.to_extension,
            headers=[(PICKUP_HEADER, handover.token)],
            picks_up=call.id,
        )
        if pick is None:
            await self._recall(call)

    async def _pickup_progress(self, pick: LineCall, event: CallStateChanged) -> None:
        parked_id = pick.picks_up
        assert parked_id is not None
        if event.state is CallState.CONNECTED and pick.answered_at is None:
            pick.on_ua_state(event.state, event.status, event.reason)
            self.calls[pick.id] = pick
            handing = self.handing_over.pop(parked_id, None)
            parked = self.calls.get(parked_id)
            await self._join(parked_id, pick.id, reason="picked-up")
            if handing is not None and parked is not None:
                record_id = await self._record_id(parked)
                await database_sync_to_async(db.set_answered_by)(record_id, handing.by)
        elif event.state is CallState.TERMINATED and pick.id in self.calls:
            await self._finish(pick, event.reason, event.status)
            parked = self.calls.get(parked_id)
            if parked is not None and self.handing_over.pop(parked_id, None) is not None:
                await self._pickup_failed(parked)
            elif parked is not None:
                await self._recall(parked)  # the colleague never got it: back to us

    async def _picked_up(self, call: LineCall, pickup: Pickup) -> None:
        """The owner's line calls us for a park pickup we asked for: answer at once; the page
        that clicked the slot hears the parked caller."""
        call.remote, call.remote_name = pickup.remote, pickup.remote_name
        answering = await self._prepare_answer(call)
        if answering is None:
            return
        call.media, call.session = answering[0], pickup.session
        await self._hold_others(call)
        self._open(call)
        self._sip(lambda now: self.ua.answer(now, call.id, answering[1]))

    # -- 代理応答 (issue 13): a colleague takes a call ringing here --------------------------------
    # The same path as a park pickup: the ringing line answers the INVITE itself, calls the
    # picker's extension through the PBX with a one-time token (Handover, slot 0), the picker's
    # line answers that at once, and this worker joins the two legs. Works across sipworkers.

    async def _pickup_ringing(self, session: str, command: PickupRinging | PickupGroup) -> None:
        config = self.config
        if config is None:
            await self._refuse(session, "no_account", command)
            return
        if isinstance(command, PickupGroup):
            members = await database_sync_to_async(db.pickup_group_members)(self.user_id)
            entry = await presence.oldest_ringing(config.tenant_id, members - {self.user_id})
            if entry is None:
                await self._refuse(session, "no_call", command, "nothing rings in your group")
                return
            owner_id: int | None = entry.user_id
        else:
            owner_id = await database_sync_to_async(db.colleague_with_extension)(
                self.user_id, command.extension
            )
            if owner_id == self.user_id:
                await self._refuse(session, "bad_state", command, "that is your own line")
                return
            if owner_id is None:
                # Not on the portal (a desk phone, another PBX user): the PBX picks up for us.
                code = await database_sync_to_async(db.pickup_code)(self.user_id, command.extension)
                await self._dial(session, code, "")
                return
            entries = await presence.snapshot(config.tenant_id)
            if not any(e.user_id == owner_id and e.state == presence.RINGING for e in entries):
                await self._refuse(session, "no_call", command, "nothing rings there")
                return
        assert owner_id is not None
        token = secrets.token_urlsafe(16)
        self.pickups[token] = Pickup(0, session, "", "")
        # A token the owner never uses (the caller gave up, the owner refused) does not stay.
        asyncio.get_running_loop().call_later(PICKUP_TOKEN_SECONDS, self.pickups.pop, token, None)
        await self.host.to_worker(
            protocol.Handover(
                user_id=owner_id,
                call_id="",
                slot=0,
                to_extension=config.extension,
                to_session=session,
                token=token,
            )
        )

    async def _hand_over_ringing(self, handover: protocol.Handover) -> None:
        """A colleague takes the call ringing here longest: answer it (our page stops ringing;
        the caller waits in silence for a moment), then call the colleague once it is up."""
        ringing = [
            c
            for c in self.calls.values()
            if c.phase is Phase.INCOMING
            and not c.internal
            and c.media is None
            and c.id not in self.handing_over
        ]
        call = min(ringing, key=lambda c: c.started_at, default=None)
        by = await database_sync_to_async(db.colleague_with_extension)(
            self.user_id, handover.to_extension
        )
        if call is None or by is None:
            await self.send(handover.to_session, error_message("no_call", request="pickup"))
            return
        answering = await self._prepare_answer(call)
        if answering is None:
            await self.send(handover.to_session, error_message("no_call", request="pickup"))
            return
        call.media = answering[0]
        self.handing_over[call.id] = HandingOver(handover, by)
        self._sip(lambda now: self.ua.answer(now, call.id, answering[1]))
        fields = {k: v for k, v in call.message().items() if k != "type"}
        fields.update(state="ended", reason="picked-up")
        await self.broadcast(server_message("call", **fields))
        self.route_media()

    async def _handing_over_progress(self, call: LineCall, event: CallStateChanged) -> None:
        handing = self.handing_over[call.id]
        if event.state is CallState.CONNECTED and call.answered_at is None:
            call.on_ua_state(event.state, event.status, event.reason)
            headers = [
                (PICKUP_HEADER, handing.handover.token),
                (PICKUP_CALLER_HEADER, call.remote),
            ]
            pick = await self._place_call(
                None, handing.handover.to_extension, headers=headers, picks_up=call.id
            )
            if pick is None:
                self.handing_over.pop(call.id, None)
                await self._pickup_failed(call)
        elif event.state is CallState.TERMINATED:
            # The caller gave up meanwhile: the colleague's leg (if placed) ends with it.
            self.handing_over.pop(call.id, None)
            for pick in [c for c in self.calls.values() if c.picks_up == call.id]:
                self._hangup(pick)
                await self._finish(pick, "caller-gone")
            await self._finish(call, event.reason or "remote-bye", event.status)

    async def _pickup_failed(self, call: LineCall) -> None:
        """The colleague's line did not take the call we answered for them: it is ours again,
        in the newest page (the caller is not dropped)."""
        call.session = self.newest_session
        self.route_media()
        await self.broadcast(call.message())
        await self.broadcast(
            server_message("notice", level="error", code="pickup-failed", text=call.remote)
        )

    async def _ringing_pickup(self, pickup: Pickup, event: IncomingCall) -> Pickup:
        """The picker's side: who calls comes with the owner's INVITE (the token vouches)."""
        number = event.headers.get(PICKUP_CALLER_HEADER) if event.headers is not None else None
        remote = (number or "")[:64]
        name = await database_sync_to_async(db.display_name_for)(self.user_id, remote)
        return Pickup(0, pickup.session, remote, name)

    # -- 応答不可 (issue 13) -------------------------------------------------------------------

    async def _set_dnd(self, on: bool) -> None:
        await database_sync_to_async(db.set_dnd)(self.user_id, on)
        self.dnd = on
        await self.broadcast(server_message("dnd", on=on))

    async def _reject_dnd(self, call: LineCall) -> None:
        """While 応答不可 is on a call is refused before any page rings: with 486 Busy Here
        (RFC 3261 §21.4.24), history 拒否 "DND"; or, when the user forwards, with 302 Moved
        Temporarily naming the number at the PBX (§21.3.3, the caller recurses, §8.1.3.4),
        history 拒否 "DND forward <number>"."""
        # Read now, not at start: the 設定 panel changes it without telling the line.
        try:
            setting = await database_sync_to_async(db.dnd_for)(self.user_id)
        except Exception:
            log.exception("line %s: could not read the DND setting; refusing", self.user_id)
            setting = db.DndSetting(on=True)
        if setting.forward_to and self.config is not None:
            target = SipUri(host=self.config.domain, user=setting.forward_to)
            await self._refuse_on_arrival(
                call, 302, f"DND forward {setting.forward_to}", redirect_to=target
            )
            return
        await self._refuse_on_arrival(call, 486, "DND")

    def _offer_refusal(self, call: LineCall) -> OfferRefusal | None:
        """Why the call's offer cannot be answered under the tenant's SRTP setting, or None
        (no offer: ours goes in the 200, RFC 3261 §13.2.1)."""
        if call.offer is None or self.config is None:
            return None
        return offer_refusal(call.offer, self.config.media_encryption)

    async def _refuse_on_arrival(
        self, call: LineCall, status: int, reason: str, *, redirect_to: SipUri | None = None
    ) -> None:
        """Refuse an incoming call before any page rang (応答不可, media we cannot take): the
        final response, then a 拒否 history row with `reason`; the pages hear nothing."""
        call.rejected = True
        # SipError: the caller gave up while we read the setting; it is logged all the same.
        with contextlib.suppress(SipError):
            if redirect_to is not None:
                self._sip(lambda now: self.ua.redirect(now, call.id, [redirect_to], status))
            else:
                self._sip(lambda now: self.ua.reject(now, call.id, status))
        call.end(reason, status)
        del self.calls[call.id]
        self.ua.forget(call.id)
        # Logged without telling the pages about the call: nothing rang there.
        call.remote_name = await database_sync_to_async(db.display_name_for)(
            self.user_id, call.remote
        )
        try:
            await database_sync_to_async(actions.do_close_call)(
                self.user_id, None, call.history_fields(self.user_id, self._user_name)
            )
        except Exception:
            log.exception("line %s: could not log call %s", self.user_id, call.id)

    # -- presence (BLF, issue 13) ---------------------------------------------------------------

    def _presence_state(self) -> str:
        phases = []
        for call in self.calls.values():
            if call.internal or call.id in self.handing_over:
                continue  # the worker's own legs, and calls a colleague is taking
            # An incoming call we are answering (port open, 200 on its way) no longer rings.
            answering = call.phase is Phase.INCOMING and call.media is not None
            phases.append("incall" if answering else call.phase.value)
        registered = self.registration[0] == "registered" and not self.closed
        return presence.line_state(registered=registered, phases=phases, dnd=self.dnd)

    async def _presence_check(self) -> None:
        """After every message: publish the user's lamp if it changed (phone.presence)."""
        config = self.config
        if config is None:
            return
        if self.closed and self.registration[0] == "registered":
            return  # fenced: the line's new owner publishes it now, not us
        state = self._presence_state()
        last = self._presence
        if last is None and state == presence.OFFLINE:
            return  # never published: pages show an unknown line offline already
        if last is not None and (last.state, last.extension) == (state, config.extension):
            return
        if last is not None and last.extension != config.extension:
            gone = presence.Entry(last.extension, presence.OFFLINE, self.user_id, time.time())
            self._publish(config.tenant_id, gone)
        self._presence = presence.Entry(
            config.extension, state, self.user_id, time.time(), self.host.worker_id
        )
        self._publish(config.tenant_id, self._presence)

    def _publish(self, tenant_id: int, entry: presence.Entry) -> None:
        """Publish a lamp without holding up the line: a publish is two Redis round trips, and
        the message after a dial is often the far end's answer, which the page should get at
        once (issue 11). One sender per line, first in first out, so the lamps go out in the
        order the line's state changed and the last one published is the current one."""
        self._presence_out.append((tenant_id, entry))
        if self._presence_sender is None or self._presence_sender.done():
            self._presence_sender = asyncio.create_task(
                self._send_presence(), name=f"presence-{self.user_id}"
            )

    async def _send_presence(self) -> None:
        # No await between the emptiness check and returning: `_publish` either finds this
        # task still looping (it takes the new lamp too) or done (it starts another).
        while self._presence_out:
            tenant_id, entry = self._presence_out.pop(0)
            try:
                await presence.publish(tenant_id, entry)
            except Exception:
                log.exception("line %s: publishing presence failed", self.user_id)

    async def _park_timeout(self, call_id: str, slot: int) -> None:
        call = self.calls.get(call_id)
        if call is None or call.park_slot != slot:
            return
        await self._unpark(call)
        await self._recall(call)

    async def _recall(self, call: LineCall) -> None:
        """A parked call nobody took rings its parker again (seed 3-4)."""
        call.recalling = True
        await self.broadcast(call.message())
        await self.broadcast(
            server_message("notice", level="info", code="park-timeout", text=call.remote)
        )
        target = self.newest_session
        if target is not None:
            await self.send(
                target,
                call.incoming_message(),
            )

    async def _failed(self, call: LineCall, status: int | None) -> None:
        """Tell the user why the call did not go through, in words and (where it fits) with the
        busy tone for a few seconds (seed 3-2)."""
        code = failure_code(status, with_line=bool(call.line))
        text = f"{status} {call.reason}" if status else call.reason
        await self.broadcast(server_message("notice", level="error", code=code, text=text))
        if code in _BUSY_TONE_FOR and call.session in self.sessions:
            tone = self.tones[call.session] = JapaneseBusy()
            self.route_media()
            asyncio.get_running_loop().call_later(
                BUSY_TONE_SECONDS, self.post, ToneDone(call.session, tone)
            )

    # -- a call's start-up database work, off the actor's turn -------------------------------
    # Call setup must not wait for the database: the INVITE (or 180) leaves first, and the far
    # end's answer is the next message. So the history row (and the name, and an incoming
    # call's line) is one job on the database thread (db.open_call) that runs while the line
    # goes on. The job returns its result and writes nothing of the call: the line folds it in,
    # either when its Opened message comes round or, earlier, in a handler that needs the row
    # (`_record_id`); both run in the actor, so the actor stays the only writer of call state.
    # Those handlers await the job before their own database call: that call goes to the same
    # single database thread and would queue behind the INSERT anyway, so the wait is ordered
    # by the data it needs, not by when asyncio happens to start a task.

    def _open(
        self,
        call: LineCall,
        *,
        name_of: str | None = None,
        line_of: str | None = None,
        ring: bool = False,
    ) -> None:
        fields = call.history_fields(self.user_id, self._user_name)  # the row as it starts
        job = asyncio.create_task(
            database_sync_to_async(db.open_call)(
                self.user_id,
                self.host.worker_id,
                fields,
                tenant_id=self.config.tenant_id if self.config is not None else None,
                name_of=name_of,
                line_of=line_of,
            ),
            name=f"open-{call.id}",
        )
        call.opening = job
        call_id = call.id
        job.add_done_callback(lambda done: self.post(Opened(call_id, done, ring)))

    def _fold(self, call: LineCall, job: asyncio.Task[db.CallOpened]) -> db.CallOpened | None:
        """The finished job's result, folded into `call` the first time (idempotent)."""
        if job.cancelled() or job.exception() is not None:
            if call.opening is job:
                call.opening = None
                log.error("line %s: opening %s failed: %r", self.user_id, call.id, job)
            return None  # the row is written whole when the call ends
        opened = job.result()
        if call.opening is job:
            call.opening = None
            call.record_id = opened.record_id
            if opened.name:
                call.remote_name = opened.name
            if opened.line is not None:  # the button of the number called (seed 6-1)
                call.line, call.ring = call.called, opened.line.ring
        return opened

    async def _record_id(self, call: LineCall) -> int | None:
        """The call's history row, once its opening job is done (None: it could not be
        opened; do_close_call then writes it whole)."""
        job = call.opening
        if job is not None:
            await asyncio.wait([job])  # never raises: a failed job is _fold's to report
            self._fold(call, job)
        return call.record_id

    async def _on_opened(self, call_id: str, job: asyncio.Task[db.CallOpened], ring: bool) -> None:
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return  # over already: _finish waited for the job, completed the row, told the pages
        opened = self._fold(call, job)
        if ring:
            await self._ring(call)
        elif opened is not None and opened.name:
            await self.broadcast(call.message())  # a snapshot again, now with the name

    # -- media routing: the one place that says who hears what -----------------------------

    def route_media(self) -> None:
        """Apply the calls' state to the media: music on hold to held far ends, and to each
        page's bridge the one call it should carry (live audio, or ringback while dialling)."""
        for call in self.calls.values():
            if call.media is not None:
                call.media.far_end_hears_music(call.phase is Phase.HELD)
        for session in self.sessions:
            bridge = self.host.media.bridge_for(session)
            if bridge is None:
                continue
            audible = self._audible_call(session)
            if audible is None:
                carry(bridge, None, live=False, tone=self.tones.get(session))
                continue
            ringing = audible.phase in (Phase.DIALING, Phase.RINGING)
            carry(
                bridge,
                audible.media,
                live=audible.phase is Phase.INCALL or (ringing and audible.early_media),
                tone=audible.media.ringback if ringing and audible.media else None,
            )

    def _audible_call(self, session: str) -> LineCall | None:
        mine = [
            c
            for c in self.calls.values()
            if c.session == session and c.media is not None and c.pending != "hold"
        ]
        for phase in (Phase.INCALL, Phase.RINGING, Phase.DIALING):
            for call in mine:
                if call.phase is phase:
                    return call
        return None

    # -- output -----------------------------------------------------------------------------

    def _cti(self, call: LineCall, phase: str) -> dict[str, Any]:
        return server_message(
            "cti.popup", number=call.remote, called=call.called, call_id=call.id, phase=phase
        )

    async def send(self, session: str, message: dict[str, Any]) -> None:
        await self.host.send(session, message)

    async def broadcast(self, message: dict[str, Any]) -> None:
        for session in list(self.sessions):
            await self.send(session, message)
