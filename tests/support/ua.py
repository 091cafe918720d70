"""Our own SIP user agent (phone/sip) on real sockets, with an RTP leg per call, for tests
against real programs (Kamailio, baresip, SIPp).

    phone = await Phone.open(pbx, "1001")              # SipTransport on a free port, UDP
    await phone.register()                             # -> RegistrationStateChanged(REGISTERED)
    call_id = await phone.call("1002")                 # RtpLeg opened, INVITE with its offer
    await phone.wait_for(CallStateChanged, call_id=call_id, state=CallState.CONNECTED)
    phone.heard(call_id)                               # decoded PCM received so far
    await phone.close()                                # unregister, close legs and socket

Every event of the user agent is kept in ``phone.events``; :meth:`Phone.wait_for` returns the
oldest one of a kind (with matching fields) not returned before, waiting for it if needed —
events that already happened count, so there is no race between a command and its outcome.

Media: each call owns an :class:`~phone.media.leg.RtpLeg` that plays ``tone_hz`` (a sine)
and records what it receives; ``MediaUpdated`` events point the leg at the far end. An
incoming call gets its leg in :meth:`Phone.answer`.

:class:`LossyUdpProxy` sits between a UA and the PBX, forwards datagrams both ways and drops
the ones its rule picks (e.g. the first REGISTER), so the tests see our retransmissions work.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phone.media.dtmf import DtmfEvent
from phone.media.leg import PortRange, RtpLeg
from phone.media.tones import SineTone
from phone.sip.sdp import build_offer, negotiate_answer
from phone.sip.transport import SipTransport
from phone.sip.useragent import (
    CallState,
    CallStateChanged,
    IncomingCall,
    MediaUpdated,
    RegistrationState,
    RegistrationStateChanged,
    UserAgent,
    UserAgentConfig,
)
from tests.support.analysis import dominant_frequency, non_silent
from tests.support.pbx import Kamailio

# RTP ports of our legs: above the kernel's ephemeral range (32768-60999), away from the SIP
# and control ports of tests/support/ports.py (20000-29999) and baresip's RTP (30000-32700).
RTP_PORTS = PortRange(61000, 61999)


@dataclass
class PhoneCall:
    """One call of a :class:`Phone` and its media leg."""

    call_id: str
    leg: RtpLeg | None = None
    received: list[np.ndarray] = field(default_factory=list)  # 20 ms frames, in order
    dtmf: str = ""  # digits received as RFC 4733 events
    media: list[MediaUpdated] = field(default_factory=list)
    incoming: IncomingCall | None = None
    recorder: asyncio.Task[None] | None = None


class Phone:
    """One of our UserAgents over a real SipTransport (UDP or TCP) on 127.0.0.1."""

    def __init__(
        self,
        ext: str,
        password: str,
        *,
        domain: str,
        proxy_addr: tuple[str, int],
        transport: str = "udp",
        tone_hz: float | None = 1000.0,
        expires: int = 300,
    ) -> None:
        self.ext = ext
        self.password = password
        self.domain = domain
        self.proxy_addr = proxy_addr
        self.transport_name = transport.upper()
        self.tone_hz = tone_hz
        self.expires = expires
        self.events: list[Any] = []
        self._consumed: set[int] = set()
        self._changed: asyncio.Event = asyncio.Event()
        self.calls: dict[str, PhoneCall] = {}
        self._transport: SipTransport[UserAgent] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        pbx: Kamailio,
        ext: str,
        password: str | None = None,
        *,
        proxy_addr: tuple[str, int] | None = None,
        **kwargs: Any,
    ) -> Phone:
        """A phone for ``ext`` at ``pbx`` (password from its users table), bound, not registered.

        ``proxy_addr`` overrides where requests go (e.g. a :class:`LossyUdpProxy`).
        """
        pw = password if password is not None else pbx.users[ext]
        phone = cls(
            ext, pw, domain=pbx.domain, proxy_addr=proxy_addr or (pbx.host, pbx.port), **kwargs
        )
        await phone.bind()
        return phone

    async def bind(self) -> None:
        opener = SipTransport.tcp if self.transport_name == "TCP" else SipTransport.udp
        self._transport = await opener("127.0.0.1", 0, self._make_core, self._on_event)

    def _make_core(self, addr: tuple[str, int]) -> UserAgent:
        return UserAgent(
            UserAgentConfig(
                username=self.ext,
                domain=self.domain,
                local_addr=addr,
                password=self.password,
                transport=self.transport_name,
                proxy_addr=self.proxy_addr,
                expires=self.expires,
            )
        )

    @property
    def transport(self) -> SipTransport[UserAgent]:
        if self._transport is None:
            raise RuntimeError("phone not bound")
        return self._transport

    @property
    def ua(self) -> UserAgent:
        return self.transport.core

    @property
    def local_addr(self) -> tuple[str, int]:
        return self.transport.local_addr

    def execute(self, command: Callable[[float], Any]) -> Any:
        return self.transport.execute(command)

    async def close(self, *, unregister: bool = True, timeout: float = 3.0) -> None:
        """Hang up what is still up, unregister (if registered) and release every socket."""
        if self._transport is None:
            return
        for call_id, call in list(self.calls.items()):
            state = self.ua.calls.get(call_id)
            if state is not None and state.state is not CallState.TERMINATED:
                with contextlib.suppress(Exception):
                    self.execute(lambda now, c=call_id: self.ua.hangup(now, c))
            self._close_leg(call)
        if unregister and self.ua.registration.state in (
            RegistrationState.REGISTERED,
            RegistrationState.REGISTERING,
        ):
            self.execute(self.ua.unregister)
            with contextlib.suppress(TimeoutError):
                await self.wait_for(
                    RegistrationStateChanged, timeout, state=RegistrationState.UNREGISTERED
                )
        # Let BYEs/CANCELs leave before the socket goes.
        await asyncio.sleep(0.05)
        for call in self.calls.values():
            if call.recorder is not None:
                call.recorder.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await call.recorder
        await self._transport.close()
        self._transport = None

    # -- events ----------------------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        self.events.append(event)
        try:
            if isinstance(event, MediaUpdated):
                self._on_media(event)
            elif isinstance(event, IncomingCall):
                self.calls.setdefault(event.call_id, PhoneCall(event.call_id)).incoming = event
            elif isinstance(event, CallStateChanged) and event.state is CallState.TERMINATED:
                call = self.calls.get(event.call_id)
                if call is not None:
                    self._close_leg(call)
        finally:
            # (an exception here is logged by SipTransport; waiters must still wake up)
            self._changed.set()

    def _on_media(self, event: MediaUpdated) -> None:
        call = self.calls.get(event.call_id)
        if call is None or call.leg is None:
            return
        call.media.append(event)
        media = event.media
        if media is None:
            return
        leg = call.leg
        if media.codec.payload_type != leg.payload_type:
            raise AssertionError(f"leg speaks PT {leg.payload_type}, SDP chose {media.codec}")
        if media.dtmf_payload_type is not None:
            leg.dtmf_payload_type = media.dtmf_payload_type
            leg.dtmf_receiver.payload_type = media.dtmf_payload_type
        if leg.remote != (media.remote_address, media.remote_port):
            leg.set_remote(media.remote_address, media.remote_port)

    async def wait_for(
        self,
        kind: type | tuple[type, ...],
        timeout: float = 5.0,
        where: Callable[[Any], bool] | None = None,
        **match: Any,
    ) -> Any:
        """The oldest not yet returned event of ``kind`` whose attributes equal ``match``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, event in enumerate(self.events):
                if i in self._consumed or not isinstance(event, kind):
                    continue
                if all(getattr(event, k, None) == v for k, v in match.items()) and (
                    where is None or where(event)
                ):
                    self._consumed.add(i)
                    return event
            remaining = deadline - loop.time()
            if remaining <= 0:
                names = [type(e).__name__ for e in self.events]
                raise TimeoutError(f"{self.ext}: no {kind} {match} within {timeout}s; saw {names}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def seen(self, kind: type, **match: Any) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and all(getattr(e, k, None) == v for k, v in match.items())
        ]

    # -- registration ----------------------------------------------------------------------

    async def register(self, timeout: float = 5.0) -> RegistrationStateChanged:
        """Send REGISTER; return the REGISTERED or FAILED state change."""
        self.execute(self.ua.register)
        event: RegistrationStateChanged = await self.wait_for(
            RegistrationStateChanged,
            timeout,
            where=lambda e: e.state in (RegistrationState.REGISTERED, RegistrationState.FAILED),
        )
        return event

    async def unregister(self, timeout: float = 5.0) -> RegistrationStateChanged:
        self.execute(self.ua.unregister)
        event: RegistrationStateChanged = await self.wait_for(
            RegistrationStateChanged, timeout, state=RegistrationState.UNREGISTERED
        )
        return event

    # -- calls -----------------------------------------------------------------------------

    async def _open_leg(self, call: PhoneCall) -> RtpLeg:
        def on_dtmf(event: DtmfEvent) -> None:
            call.dtmf += event.digit

        leg = await RtpLeg.open("127.0.0.1", RTP_PORTS, on_dtmf=on_dtmf)
        if self.tone_hz:
            leg.source = SineTone(self.tone_hz)
        call.leg = leg
        call.recorder = asyncio.ensure_future(self._record(call, leg))
        return leg

    @staticmethod
    async def _record(call: PhoneCall, leg: RtpLeg) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                call.received.append(await leg.recv_pcm())

    def _close_leg(self, call: PhoneCall) -> None:
        if call.leg is not None and not call.leg.closed:
            call.leg.close()

    async def call(self, target: str) -> str:
        """Dial ``target`` (an extension or URI) with a fresh leg; returns the Call-ID."""
        pending = PhoneCall("")
        leg = await self._open_leg(pending)
        offer = build_offer("127.0.0.1", leg.local_port, session_id=str(secrets.randbelow(10**9)))
        # The core emits MediaUpdated synchronously only for responses, never inside call():
        # registering the call under its id right after is early enough.
        call_id, _ = self.execute(lambda now: self.ua.call(now, target, offer))
        pending.call_id = call_id
        self.calls[call_id] = pending
        return str(call_id)

    def ring(self, call_id: str) -> None:
        self.execute(lambda now: self.ua.ring(now, call_id))

    async def answer(self, call_id: str) -> None:
        call = self.calls[call_id]
        assert call.incoming is not None and call.incoming.offer is not None
        leg = await self._open_leg(call)
        answer = negotiate_answer(
            call.incoming.offer,
            "127.0.0.1",
            leg.local_port,
            session_id=str(secrets.randbelow(10**9)),
        )
        self.execute(lambda now: self.ua.answer(now, call_id, answer))

    def hangup(self, call_id: str) -> None:
        self.execute(lambda now: self.ua.hangup(now, call_id))

    def hold(self, call_id: str) -> None:
        self.execute(lambda now: self.ua.hold(now, call_id))

    def unhold(self, call_id: str) -> None:
        self.execute(lambda now: self.ua.unhold(now, call_id))

    def refer(self, call_id: str, target: str) -> None:
        self.execute(lambda now: self.ua.refer(now, call_id, target))

    async def send_dtmf(self, call_id: str, digits: str) -> None:
        leg = self.calls[call_id].leg
        assert leg is not None
        await asyncio.wait_for(leg.send_dtmf(digits), 10)

    # -- audio -----------------------------------------------------------------------------

    def heard(self, call_id: str, skip_seconds: float = 0.3) -> np.ndarray:
        """What the leg received (int16 8 kHz), minus the first ``skip_seconds``."""
        frames = self.calls[call_id].received
        if not frames:
            return np.zeros(0, dtype=np.int16)
        pcm = np.concatenate(frames)
        return pcm[int(skip_seconds * 8000) :]

    def heard_frequency(self, call_id: str) -> float | None:
        sound = non_silent(self.heard(call_id))
        if len(sound) < 800:
            return None
        return dominant_frequency(sound)

    def heard_seconds(self, call_id: str) -> float:
        return len(non_silent(self.heard(call_id))) / 8000


# ------------------------------------------------------------------ a lossy UDP hop


@dataclass
class Datagram:
    direction: str  # "up" (client -> upstream) or "down"
    first_line: str
    data: bytes
    dropped: bool

    @property
    def method(self) -> str | None:
        return None if self.first_line.startswith("SIP/2.0") else self.first_line.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        if not self.first_line.startswith("SIP/2.0 "):
            return None
        return int(self.first_line.split(" ", 2)[1])

    @property
    def authorized(self) -> bool:
        head = self.data.split(b"\r\n\r\n", 1)[0].lower()
        return b"\nauthorization:" in head or b"\nproxy-authorization:" in head


class _ProxyProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: LossyUdpProxy) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.owner._received(data, (str(addr[0]), int(addr[1])))


class LossyUdpProxy:
    """A UDP hop between one client and ``upstream``; ``drop(datagram)`` picks losses.

    One socket: what comes from ``upstream`` goes to the last client seen, everything else
    goes upstream. Kamailio (``force_rport``) answers the hop, so responses come back through
    it; requests the PBX starts (INVITE to the client's Contact) bypass it. Every datagram is
    logged in ``log`` with whether it was dropped.
    """

    def __init__(
        self, upstream: tuple[str, int], drop: Callable[[Datagram], bool] | None = None
    ) -> None:
        self.upstream = upstream
        self.drop = drop or (lambda d: False)
        self.client: tuple[str, int] | None = None
        self.log: list[Datagram] = []
        self._transport: asyncio.DatagramTransport | None = None
        self.addr: tuple[str, int] = ("127.0.0.1", 0)

    async def start(self) -> LossyUdpProxy:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _ProxyProtocol(self), local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        sockname = transport.get_extra_info("sockname")
        self.addr = (str(sockname[0]), int(sockname[1]))
        return self

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _received(self, data: bytes, source: tuple[str, int]) -> None:
        if self._transport is None:
            return
        if source == self.upstream:
            direction, target = "down", self.client
        else:
            self.client = source
            direction, target = "up", self.upstream
        first = data.split(b"\r\n", 1)[0].decode(errors="replace")
        datagram = Datagram(direction, first, data, False)
        datagram.dropped = bool(self.drop(datagram))
        self.log.append(datagram)
        if not datagram.dropped and target is not None:
            self._transport.sendto(data, target)

    def exchanged(self, method: str | None = None) -> list[Datagram]:
        """Datagrams of ``method``'s transactions (requests and their responses), in order."""
        if method is None:
            return list(self.log)
        out = []
        for d in self.log:
            cseq = next(
                (
                    line
                    for line in d.data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                    if line.lower().startswith(b"cseq:")
                ),
                b"",
            )
            if cseq.split()[-1:] == [method.encode()]:
                out.append(d)
        return out


def drop_first(
    method: str, *, authorized: bool | None = None, count: int = 1
) -> Callable[..., bool]:
    """A drop rule: lose the first ``count`` requests of ``method`` going upstream.

    ``authorized`` restricts it to requests with (True) or without (False) credentials.
    """
    dropped = 0

    def rule(d: Datagram) -> bool:
        nonlocal dropped
        if d.direction != "up" or d.method != method or dropped >= count:
            return False
        if authorized is not None and d.authorized != authorized:
            return False
        dropped += 1
        return True

    return rule


def drop_once(predicate: Callable[[Datagram], bool]) -> Callable[[Datagram], bool]:
    """A drop rule: lose the first datagram (either direction) that ``predicate`` picks."""
    dropped = False

    def rule(d: Datagram) -> bool:
        nonlocal dropped
        if dropped or not predicate(d):
            return False
        dropped = True
        return True

    return rule


def any_of(*rules: Callable[[Datagram], bool]) -> Callable[[Datagram], bool]:
    # Every rule sees every datagram (each keeps its own count), then any match drops it.
    def rule(d: Datagram) -> bool:
        results = [r(d) for r in rules]
        return any(results)

    return rule
