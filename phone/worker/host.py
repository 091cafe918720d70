"""The sipworker host: runs one SIP line (UserAgent + transport) per user with an open phone page,
and that user's calls (SIP dialog + RTP leg + the browser's media bridge) — design.md §1-§2.

Consumers talk to the host only through the channel layer:

    consumer → host  (channel WORKER_CHANNEL)
        worker.attach   {user_id, session, opened_at}     a phone page opened
        worker.detach   {user_id, session}                it closed
        worker.command  {user_id, session, command, data} a validated browser message
        worker.reload   {user_id}                         the user's SIP account changed
    host → consumer  (the session's channel)
        phone.message   {message}                         a server message (schema)

Calls live here, not in the browser: a reload re-attaches the page to the running call, and a
closed tab does not drop it. The embedded default runs this host inside the web process
(phone.worker.embedded); production runs `manage.py sipworker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import ValidationError

from phone import actions
from phone.numbers import clean_number
from phone.signalling.schema import error_message, server_message
from phone.sip.registration import RegistrationState, RegistrationStateChanged
from phone.sip.sdp import build_offer, negotiate_answer
from phone.sip.transport import SipTransport
from phone.sip.useragent import (
    CallState,
    CallStateChanged,
    IncomingCall,
    MediaUpdated,
    MessageSummary,
    TransferProgress,
    UserAgent,
    UserAgentConfig,
)
from phone.worker import db
from phone.worker.media import CallMedia

log = logging.getLogger(__name__)

WORKER_CHANNEL = "sipworker"
# After a failed channel-layer receive, wait this long before the next one (no busy loop).
RECEIVE_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class _Announce:
    """Queued behind the SIP events, so every call message leaves from one task, in order."""

    call_id: str


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


@dataclass
class WorkerCall:
    id: str
    direction: str  # out | in
    remote: str
    called: str
    remote_name: str = ""
    state: str = "dialing"  # dialing | ringing | incoming | incall | held | ended
    held: bool = False
    reason: str = ""
    started_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    media: CallMedia | None = None
    session: str | None = None  # the browser session whose audio is bridged to this call
    rejected: bool = False
    consult_of: str | None = None  # attended transfer: the held call this consultation is for
    offer: object | None = None  # an incoming call's SDP offer, answered in cmd_answer

    def message(self) -> dict:
        return server_message(
            "call",
            id=self.id,
            state=self.state,
            direction=self.direction,
            remote=self.remote,
            remote_name=self.remote_name,
            called=self.called,
            held=self.held,
            reason=self.reason,
            answered_at=_iso(self.answered_at),
            transfer={"of": self.consult_of} if self.consult_of else None,
        )

    def history_record(self, user_id: int, user_name: str) -> dict:
        if self.direction == "out":
            kind = "out"
        elif self.answered_at:
            kind = "in"
        else:
            kind = "rejected" if self.rejected else "missed"
        return {
            "direction": kind,
            "remote_number": self.remote,
            "remote_name": self.remote_name,
            "called_number": self.called,
            "started_at": datetime.fromtimestamp(self.started_at, UTC),
            "answered_at": datetime.fromtimestamp(self.answered_at, UTC)
            if self.answered_at
            else None,
            "ended_at": datetime.fromtimestamp(self.ended_at or time.time(), UTC),
            "sip_call_id": self.id,
            # 応答者 (seed 4-1): who took an incoming call; the line's user here (park pick-ups
            # by a colleague would name them).
            "answered_by_id": user_id if kind == "in" else None,
            "answered_by_name": user_name if kind == "in" else "",
        }


class Line:
    """One user's SIP presence: registration, calls, and the open pages (sessions)."""

    def __init__(self, host: SipWorkerHost, user_id: int):
        self.host = host
        self.user_id = user_id
        self.sessions: dict[str, float] = {}  # channel → opened_at
        self.calls: dict[str, WorkerCall] = {}
        self.config: db.LineConfig | None = None
        self.transport: SipTransport | None = None
        self.registration = ("unregistered", "")
        self._events: asyncio.Queue = asyncio.Queue()
        self._runner = asyncio.create_task(self._run_events(), name=f"line-{user_id}")
        # Messages from this user's pages, handled in order here, so that one user's slow
        # command (a database lookup, opening an RTP leg) never holds up another user's.
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._inbox_runner = asyncio.create_task(self._run_inbox(), name=f"inbox-{user_id}")
        self._release: asyncio.TimerHandle | None = None
        self._mwi_subscribed = False

    # -- sessions ---------------------------------------------------------------------------

    @property
    def newest_session(self) -> str | None:
        """The most recently opened page rings (seed 1-4)."""
        if not self.sessions:
            return None
        return max(self.sessions.items(), key=lambda item: item[1])[0]

    async def attach(self, session: str, opened_at: float) -> None:
        self.sessions[session] = opened_at
        if self._release is not None:
            self._release.cancel()
            self._release = None
        if self.transport is None:
            await self.start()
        await self.send(session, self.registration_message())
        await self.send(
            session, server_message("calls", calls=[c.message() for c in self.calls.values()])
        )

    async def detach(self, session: str) -> None:
        self.sessions.pop(session, None)
        for call in self.calls.values():
            if call.session == session and call.media is not None:
                call.media.detach_browser()
                call.session = None
        await self.host.media.drop_session(session)
        if not self.sessions:
            loop = asyncio.get_running_loop()
            # Registered a little longer, so a reload does not unregister and re-register (and
            # a call arriving in between still reaches the user); then released (seed 1-4).
            self._release = loop.call_later(
                settings.SIPWORKER_RELEASE_SECONDS, self.post, {"type": "line.release"}
            )

    async def release_if_idle(self) -> None:
        if self.sessions or self.calls or not self._inbox.empty():
            return
        await self.stop()
        if self.host.lines.get(self.user_id) is self:
            del self.host.lines[self.user_id]
        # Last: this very coroutine may be running inside the inbox runner.
        self._runner.cancel()
        if asyncio.current_task() is not self._inbox_runner:
            self._inbox_runner.cancel()

    def post(self, message: dict) -> None:
        self._inbox.put_nowait(message)

    async def _run_inbox(self) -> None:
        while True:
            message = await self._inbox.get()
            try:
                await self._handle(message)
            except Exception:
                log.exception("line %s: %s failed", self.user_id, message.get("type"))

    async def _handle(self, message: dict) -> None:
        kind = message["type"]
        if kind == "worker.attach":
            await self.attach(message["session"], float(message["opened_at"]))
        elif kind == "worker.detach":
            await self.detach(message["session"])
        elif kind == "worker.command":
            if message["session"] not in self.sessions:
                await self.attach(message["session"], time.time())
            await self.command(message["session"], message["command"], message["data"])
        elif kind == "worker.reload":
            await self.reload()
        elif kind == "line.release":
            await self.release_if_idle()

    # -- registration -----------------------------------------------------------------------

    def registration_message(self) -> dict:
        state, reason = self.registration
        extension = self.config.extension if self.config else ""
        return server_message("registration", state=state, reason=reason, extension=extension)

    async def start(self) -> None:
        # Only ever called from this line's inbox, so two starts cannot overlap.
        self.config = await database_sync_to_async(db.load_line)(self.user_id)
        if self.config is None:
            self.registration = ("failed", "no SIP account")
            await self.broadcast(self.registration_message())
            return
        config = self.config
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                config.proxy_hostport[0], config.proxy_hostport[1], type=socket.SOCK_DGRAM
            )
            proxy_addr = (str(infos[0][4][0]), int(infos[0][4][1]))
        except OSError as exc:
            self.registration = ("failed", f"DNS: {exc.strerror or exc}")
            await self.broadcast(self.registration_message())
            return

        def make_ua(local_addr):
            return UserAgent(
                UserAgentConfig(
                    username=config.extension,
                    domain=config.domain,
                    local_addr=local_addr,
                    password=config.password,
                    auth_username=config.auth_user,
                    display_name=config.display_name or None,
                    transport=config.transport.upper() if config.transport != "tls" else "TCP",
                    proxy_addr=proxy_addr,
                    expires=settings.SIP_REGISTER_EXPIRES,
                    refresh_jitter=0.2,
                )
            )

        bind = settings.SIP_BIND_ADDRESS
        if config.transport == "tcp":
            self.transport = await SipTransport.tcp(bind, 0, make_ua, self._events.put_nowait)
        else:
            self.transport = await SipTransport.udp(bind, 0, make_ua, self._events.put_nowait)
        self.registration = ("registering", "")
        await self.broadcast(self.registration_message())
        self._sip("register")

    def _sip(self, command: str, *args, **kwargs):
        """Run a UserAgent command (its first argument is `now`) and send what it produced."""
        transport = self.transport
        method = getattr(transport.core, command)
        return transport.execute(lambda now: method(now, *args, **kwargs))

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            self._hangup(call)
            await self._end(call, "local-bye")
        if self.transport is not None:
            transport = self.transport
            with contextlib.suppress(Exception):
                self._sip("unregister")
            # Give the REGISTER with Expires: 0 a moment to leave before the socket closes.
            await asyncio.sleep(0.2)
            await transport.close()
            self.transport = None
            self._mwi_subscribed = False
        self.registration = ("unregistered", "")

    async def reload(self) -> None:
        """The SIP account changed in settings: register the new one now (no reload needed)."""
        if self.calls:
            return  # never cut a call; the next attach after the calls end picks it up
        await self.stop()
        if self.sessions:
            await self.start()

    # -- SIP events -------------------------------------------------------------------------

    async def _run_events(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self._on_event(event)
            except Exception:
                log.exception("line %s: handling %r failed", self.user_id, event)

    def _announce(self, call: WorkerCall) -> None:
        self._events.put_nowait(_Announce(call.id))

    async def _on_event(self, event) -> None:
        log.debug("line %s: %r", self.user_id, event)
        if isinstance(event, _Announce):
            call = self.calls.get(event.call_id)
            if call is not None:
                await self.broadcast(call.message())
        elif isinstance(event, RegistrationStateChanged):
            state = {
                RegistrationState.REGISTERED: "registered",
                RegistrationState.REGISTERING: "registering",
                RegistrationState.FAILED: "failed",
            }.get(event.state, "unregistered")
            self.registration = (state, event.reason or "")
            await self.broadcast(self.registration_message())
            if state == "registered" and not self._mwi_subscribed and self.transport is not None:
                # Voicemail waiting (RFC 3842) lights 留守電状態; unsolicited NOTIFYs work too.
                self._mwi_subscribed = True
                self._sip("subscribe_mwi")
        elif isinstance(event, IncomingCall):
            await self._incoming(event)
        elif isinstance(event, CallStateChanged):
            await self._call_state(event)
        elif isinstance(event, MediaUpdated):
            call = self.calls.get(event.call_id)
            if call is not None and call.media is not None and event.media is not None:
                call.media.update_remote(event.media)
        elif isinstance(event, TransferProgress):
            call = self.calls.get(event.call_id)
            if call is not None and event.final and 200 <= event.status < 300:
                # The transfer completed (blind or attended): our part of the call is over.
                self._hangup(call)
                await self._end(call, "transferred")
                consult = self._consultation()
                if consult is not None and consult.consult_of == call.id:
                    self._hangup(consult)
                    await self._end(consult, "transferred")
        elif isinstance(event, MessageSummary):
            await self.broadcast(
                server_message("vm.status", waiting=event.waiting, new=event.new, old=event.old)
            )

    async def _incoming(self, event: IncomingCall) -> None:
        remote = event.caller.uri.user or str(event.caller.uri)
        called = event.request_uri.user or (self.config.extension if self.config else "")
        call = WorkerCall(
            id=event.call_id, direction="in", remote=remote, called=called, state="incoming"
        )
        call.offer = event.offer
        self.calls[call.id] = call
        self._sip("ring", call.id)
        # The phonebook name after the 180 has left: the caller hears ringing without waiting
        # on the database.
        call.remote_name = await database_sync_to_async(db.display_name_for)(self.user_id, remote)
        await self.broadcast(call.message())
        target = self.newest_session
        if target is not None:
            await self.send(
                target,
                server_message(
                    "incoming",
                    id=call.id,
                    remote=call.remote,
                    remote_name=call.remote_name,
                    called=call.called,
                ),
            )
            await self.send(target, self._cti(call, "ring"))
        await database_sync_to_async(actions.do_call_event)(
            self.user_id, "call.ringing", {"call_id": call.id, "from": remote, "to": called}
        )

    def _cti(self, call: WorkerCall, phase: str) -> dict:
        return server_message(
            "cti.popup", number=call.remote, called=call.called, call_id=call.id, phase=phase
        )

    async def _call_state(self, event: CallStateChanged) -> None:
        call = self.calls.get(event.call_id)
        if call is None:
            return
        if event.state == CallState.RINGING:
            call.state = "ringing"
        elif event.state == CallState.CONNECTED:
            if call.answered_at is None:
                call.answered_at = time.time()
                if call.direction == "out":
                    await database_sync_to_async(actions.do_call_event)(
                        self.user_id, "call.answered", {"call_id": call.id, "to": call.remote}
                    )
            call.state = "held" if call.held else "incall"
            if call.media is not None and not call.held:
                call.media.connected()
        elif event.state == CallState.TERMINATED:
            await self._end(call, event.reason or "ended")
            return
        await self.broadcast(call.message())

    async def _end(self, call: WorkerCall, reason: str) -> None:
        if call.state == "ended":
            return
        log.info("line %s: call %s (%s) ended: %s", self.user_id, call.id, call.direction, reason)
        call.state, call.reason, call.ended_at = "ended", reason, time.time()
        if call.media is not None:
            await call.media.close()
        self.calls.pop(call.id, None)
        if self.transport is not None:
            self.transport.core.forget(call.id)
        name = self.config.display_name if self.config else ""
        try:
            # History first: a page that refreshes its 履歴 on "ended" then finds the call.
            await database_sync_to_async(actions.do_log_call)(
                self.user_id, call.history_record(self.user_id, name)
            )
        except Exception:
            log.exception("line %s: could not log call %s", self.user_id, call.id)
        await self.broadcast(call.message())
        if not self.sessions and not self.calls:
            self.post({"type": "line.release"})

    # -- browser commands -------------------------------------------------------------------

    def _active_call(self, call_id: str | None = None) -> WorkerCall | None:
        if call_id:
            return self.calls.get(call_id)
        for state in ("incall", "held", "ringing", "dialing", "incoming"):
            for call in self.calls.values():
                if call.state == state:
                    return call
        return None

    async def command(self, session: str, kind: str, data: dict) -> None:
        handler = getattr(self, "cmd_" + kind.replace(".", "_"), None)
        if handler is None:
            await self.send(
                session, error_message("not_allowed", f"{kind} is not available yet", kind)
            )
            return
        if self.transport is None and kind != "webrtc.offer":
            await self.send(session, error_message("no_account", request=kind))
            return
        await handler(session, data)

    async def cmd_webrtc_offer(self, session: str, data: dict) -> None:
        answer = await self.host.media.browser_offer(session, data["sdp"])
        await self.send(session, server_message("webrtc.answer", sdp=answer))
        # A reloaded page gets its running call's audio back at once.
        for call in self.calls.values():
            if call.session == session or (call.session is None and call.state == "incall"):
                call.session = session
                if call.media is not None:
                    call.media.attach_browser(self.host.media.bridge_for(session))

    async def cmd_dial(self, session: str, data: dict) -> None:
        try:
            number = clean_number(data["number"])
        except ValidationError:
            await self.send(session, error_message("bad_number", request="dial"))
            return
        if any(c.state in ("dialing", "ringing", "incall") for c in self.calls.values()):
            await self.send(session, error_message("bad_state", "already in a call", "dial"))
            return
        line = data.get("line") or ""
        if line and line not in await database_sync_to_async(db.line_numbers)(self.user_id):
            await self.send(session, error_message("not_allowed", "no such line", "dial"))
            return
        # Dialling while a call is held starts a consultation, as 転送 does (seed 3-3).
        held = next((c for c in self.calls.values() if c.state == "held"), None)
        await self._place_call(session, number, consult_of=held.id if held else None, line=line)

    def _caller_id(self, number: str, line: str) -> tuple[str, dict]:
        """How a line button's number reaches the PBX (発番号選択, seed 1-2 and 6-1): the dialled
        number and the keyword arguments of UserAgent.call for the tenant's method."""
        if not line:
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
        self, session: str, number: str, consult_of: str | None = None, line: str = ""
    ):
        media = await CallMedia.open()
        offer = build_offer(media.address, media.port, session_id=str(secrets.randbelow(10**9)))
        target, options = self._caller_id(number, line)
        call_id, _out = self._sip("call", target, offer, **options)
        # Registered before the next await: the line's event runner may already be handling
        # this call's 180/200 (a quick far end answers within milliseconds).
        call = WorkerCall(
            id=call_id,
            direction="out",
            remote=number,
            called=self.config.extension,
            media=media,
            session=session,
            consult_of=consult_of,
        )
        self.calls[call_id] = call
        media.attach_browser(self.host.media.bridge_for(session))
        media.ringback()
        # The phonebook name once the INVITE is on its way (not before: no database on that path).
        call.remote_name = await database_sync_to_async(db.display_name_for)(self.user_id, number)
        self._announce(call)
        return call

    # Attended transfer (seed 3-3): hold → number → 転送 calls the target → 転送実行 hands the held
    # caller over (REFER with Replaces, RFC 3515 + RFC 3891); 保留 instead gives up the attempt.

    def _consultation(self) -> WorkerCall | None:
        return next((c for c in self.calls.values() if c.consult_of), None)

    async def cmd_transfer_start(self, session: str, data: dict) -> None:
        try:
            number = clean_number(data["number"])
        except ValidationError:
            await self.send(session, error_message("bad_number", request="transfer.start"))
            return
        held = next((c for c in self.calls.values() if c.state == "held"), None)
        if held is None or self._consultation() is not None:
            await self.send(session, error_message("bad_state", request="transfer.start"))
            return
        await self._place_call(session, number, consult_of=held.id)

    async def cmd_transfer_complete(self, session: str, data: dict) -> None:
        consult = self._consultation()
        held = self.calls.get(consult.consult_of) if consult else None
        if consult is None or held is None or consult.state != "incall":
            await self.send(session, error_message("bad_state", request="transfer.complete"))
            return
        self._sip("refer", held.id, consult.remote, replaces_call=consult.id)

    async def cmd_transfer_cancel(self, session: str, data: dict) -> None:
        consult = self._consultation()
        if consult is None:
            await self.send(session, error_message("bad_state", request="transfer.cancel"))
            return
        self._hangup(consult)
        await self._end(consult, "transfer-cancelled")

    async def cmd_answer(self, session: str, data: dict) -> None:
        call = self._active_call(data.get("call_id"))
        if call is None or call.state != "incoming":
            await self.send(session, error_message("no_call", request="answer"))
            return
        media = await CallMedia.open()
        try:
            answer = negotiate_answer(
                call.offer, media.address, media.port, session_id=str(secrets.randbelow(10**9))
            )
        except Exception:
            await media.close()
            self._sip("reject", call.id, 488)
            return
        call.media = media
        call.session = session
        media.attach_browser(self.host.media.bridge_for(session))
        self._sip("answer", call.id, answer)
        call.answered_at = time.time()
        call.state = "incall"
        media.connected()
        self._announce(call)
        await self.send(session, self._cti(call, "answer"))
        await database_sync_to_async(actions.do_call_event)(
            self.user_id, "call.answered", {"call_id": call.id, "from": call.remote}
        )

    async def cmd_reject(self, session: str, data: dict) -> None:
        call = self._active_call(data.get("call_id"))
        if call is None or call.state != "incoming":
            await self.send(session, error_message("no_call", request="reject"))
            return
        call.rejected = True
        self._sip("reject", call.id, 486)
        await self._end(call, "rejected")

    async def cmd_hangup(self, session: str, data: dict) -> None:
        call = self._active_call(data.get("call_id"))
        if call is None:
            await self.send(session, error_message("no_call", request="hangup"))
            return
        if call.state == "incoming":
            call.rejected = True
        self._hangup(call)
        await self._end(call, "local-bye")

    def _hangup(self, call: WorkerCall) -> None:
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self._sip("hangup", call.id)

    async def cmd_hold(self, session: str, data: dict) -> None:
        call = self._active_call()
        if call is None or call.state != "incall":
            await self.send(session, error_message("bad_state", request="hold"))
            return
        self._sip("hold", call.id)
        call.held, call.state = True, "held"
        if call.media is not None:
            call.media.hold()
        self._announce(call)

    async def cmd_unhold(self, session: str, data: dict) -> None:
        call = self._active_call()
        if call is None or call.state != "held":
            await self.send(session, error_message("bad_state", request="unhold"))
            return
        self._sip("unhold", call.id)
        call.held, call.state = False, "incall"
        call.session = session
        if call.media is not None:
            call.media.attach_browser(self.host.media.bridge_for(session))
            call.media.resume()
        self._announce(call)

    async def cmd_dtmf(self, session: str, data: dict) -> None:
        call = self._active_call()
        digits = "".join(ch for ch in data["digits"].upper() if ch in "0123456789*#ABCD")
        if call is None or call.state != "incall" or call.media is None or not digits:
            await self.send(session, error_message("bad_state", request="dtmf"))
            return
        call.media.dtmf(digits)

    async def cmd_transfer_blind(self, session: str, data: dict) -> None:
        call = self._active_call()
        try:
            number = clean_number(data["number"])
        except ValidationError:
            await self.send(session, error_message("bad_number", request="transfer.blind"))
            return
        if call is None or call.state not in ("incall", "held"):
            await self.send(session, error_message("bad_state", request="transfer.blind"))
            return
        self._sip("refer", call.id, number)

    # -- output -----------------------------------------------------------------------------

    async def send(self, session: str, message: dict) -> None:
        await self.host.layer.send(session, {"type": "phone.message", "message": message})

    async def broadcast(self, message: dict) -> None:
        for session in list(self.sessions):
            await self.send(session, message)


class SipWorkerHost:
    """Hosts the Lines of every user with an open phone page (many per process)."""

    def __init__(self, channel: str = WORKER_CHANNEL):
        from phone.worker.media import MediaHub

        self.channel = channel
        self.layer = get_channel_layer()
        self.lines: dict[int, Line] = {}
        self.media = MediaHub()

    def line(self, user_id: int) -> Line:
        line = self.lines.get(user_id)
        if line is None:
            line = self.lines[user_id] = Line(self, user_id)
        return line

    async def run(self) -> None:
        log.info("sipworker listening on channel %s", self.channel)
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except Exception:
                # A channel-layer error (Redis restarting, a read timeout) must not end this
                # loop: the process would stay up holding its lines and never hear a command.
                log.exception("sipworker: receiving on %s failed; retrying", self.channel)
                await asyncio.sleep(RECEIVE_RETRY_SECONDS)
                continue
            try:
                await self.dispatch(message)
            except Exception:
                log.exception("sipworker: %s failed", message.get("type"))

    async def dispatch(self, message: dict) -> None:
        """Hand a message to its user's line; each line works through its own in order."""
        kind = message.get("type")
        user_id = int(message["user_id"])
        if kind in ("worker.detach", "worker.reload") and user_id not in self.lines:
            return  # nothing runs for this user: nothing to detach or reload
        if kind in ("worker.attach", "worker.detach", "worker.command", "worker.reload"):
            self.line(user_id).post(message)
        else:
            log.warning("sipworker: unknown message type %r", kind)

    async def shutdown(self) -> None:
        # Every line at once: each waits ~0.2 s for its un-REGISTER to leave, so one after the
        # other 100 lines took 20 s, past a service manager's stop timeout (then SIGKILL, and
        # the rest stay registered); and one line failing must not keep the others registered.
        lines = list(self.lines.values())
        results = await asyncio.gather(*(line.stop() for line in lines), return_exceptions=True)
        for line, result in zip(lines, results, strict=True):
            if isinstance(result, Exception):
                log.error("line %s: stopping failed", line.user_id, exc_info=result)
        await self.media.close()
