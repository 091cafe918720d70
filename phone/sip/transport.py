"""asyncio UDP/TCP/TLS adapter for the sans-I/O core: the only module here that does I/O.

It binds a socket, builds the core with the *bound* address (so Via and Contact carry the real
port), feeds it datagrams / framed stream messages with ``loop.time()`` as ``now``, sends what it
returns, keeps one timer armed at ``core.next_timer()`` and hands events to a callback::

    transport = await SipTransport.udp("0.0.0.0", 5060, lambda addr: UserAgent(cfg(addr)), on_event)
    transport.execute(lambda now: transport.core.register(now))

Over TLS (``SipTransport.tls``) the transport is a client only: it connects to the PBX, verifies
its certificate for the PBX domain (phone.sip.tls) and binds every connection to the one local
port written into Via and Contact, so the PBX reaches us over the connection we registered from
(there is no TLS listener, hence no certificate of ours). A connection that cannot be set up is
reported as a :class:`TransportFailure` event (``kind`` "certificate" for an untrusted or
mismatched PBX certificate) and the requests waiting for it fail at once with 503 (RFC 3261
§8.1.3.1) instead of running into their 32 s timeout.

A sipworker puts all its lines on one :class:`SharedSipSocket` per transport (per PBX domain
over TLS): each line still gets a ``SipTransport`` of its own (core, timer, events), and
phone.sip.demux decides which line a message that arrived is for, or answers it when it is for
none. The shared socket also probes each PBX once for all its lines (keepalive) and lets a
bounded number of REGISTERs be in flight, so a worker starting thousands of lines does not drown
the registrar in retransmissions.

Nothing received from the network can crash it: malformed requests are answered 400 by the
transaction layer, malformed responses are dropped and logged, and unexpected exceptions from the
core are logged, not raised.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from . import tls as sip_tls
from .demux import Deliver, Demux, RegisterWindow, Reply, SharedKeepalive, keepalive_probe
from .errors import SipParseError
from .message import (
    SipMessage,
    SipRequest,
    SipResponse,
    StreamFramer,
    make_response,
    parse_message,
)
from .transaction import Addr, MalformedMessage

log = logging.getLogger(__name__)

# Connecting plus the TLS handshake to the PBX may take this long before it counts as failed.
TLS_CONNECT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class TransportFailure:
    """A connection to `addr` could not be set up (TLS only, for now): handed to the event
    callback like the core's events. `kind` is one of phone.sip.tls CERTIFICATE, TLS, CONNECT,
    TIMEOUT; `detail` says what exactly (e.g. "unable to get local issuer certificate")."""

    addr: Addr
    transport: str
    kind: str
    detail: str


class OutgoingLike(Protocol):
    data: bytes
    addr: Addr


class OutputLike(Protocol):
    @property
    def send(self) -> list[Any]: ...

    @property
    def events(self) -> list[Any]: ...


class Core(Protocol):
    """What the transport drives: a UserAgent or a bare TransactionLayer."""

    def receive(self, now: float, data: Any, source: Addr) -> Any: ...  # bytes or parsed

    def handle_timer(self, now: float) -> Any: ...

    def next_timer(self) -> float | None: ...


CoreT = TypeVar("CoreT", bound=Core)


class DatagramSender(Protocol):
    """The part of an asyncio DatagramTransport the adapter uses (the tests' in-memory network
    provides the same)."""

    def sendto(self, data: bytes, addr: Addr) -> None: ...

    def close(self) -> None: ...


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport[Any]) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.owner._feed(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the transaction timers deal with the loss.
        log.debug("UDP error: %s", exc)


class SipTransport(Generic[CoreT]):
    """One bound socket (UDP) or listener (TCP) plus its core."""

    def __init__(self, transport_name: str, on_event: Callable[[Any], None]) -> None:
        self.transport_name = transport_name
        self.on_event = on_event
        self.local_addr: Addr = ("0.0.0.0", 0)
        self._core: CoreT | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._udp: DatagramSender | None = None
        self._server: asyncio.Server | None = None
        self._conns: dict[Addr, asyncio.StreamWriter] = {}
        self._connecting: dict[Addr, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # TLS: the client context, the name the PBX certificate must carry, and the socket that
        # holds our local port until the first connection uses it.
        self._tls: ssl.SSLContext | None = None
        self._server_hostname = ""
        self._reserved: socket.socket | None = None

    @property
    def core(self) -> CoreT:
        if self._core is None:
            raise RuntimeError("transport not started")
        return self._core

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    async def udp(
        cls,
        host: str,
        port: int,
        core_factory: Callable[[Addr], CoreT],
        on_event: Callable[[Any], None],
    ) -> SipTransport[CoreT]:
        self: SipTransport[CoreT] = cls("UDP", on_event)
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(host, port)
        )
        self._udp = transport
        sockname = transport.get_extra_info("sockname")
        self.local_addr = (str(sockname[0]), int(sockname[1]))
        self._core = core_factory(self.local_addr)
        self._arm()
        return self

    @classmethod
    def over(
        cls,
        sender: DatagramSender,
        local_addr: Addr,
        core_factory: Callable[[Addr], CoreT],
        on_event: Callable[[Any], None],
        transport_name: str = "UDP",
    ) -> SipTransport[CoreT]:
        """Datagrams through any sender, fed back with :meth:`datagram_received` (tests wire
        cores together in memory this way, with the real timers and event flushing; a line on
        a :class:`SharedSipSocket` is one of these)."""
        self: SipTransport[CoreT] = cls(transport_name, on_event)
        self._udp = sender
        self.local_addr = local_addr
        self._core = core_factory(local_addr)
        self._arm()
        return self

    def datagram_received(self, data: bytes, source: Addr) -> None:
        self._feed(data, source)

    @classmethod
    async def tcp(
        cls,
        host: str,
        port: int,
        core_factory: Callable[[Addr], CoreT],
        on_event: Callable[[Any], None],
    ) -> SipTransport[CoreT]:
        self: SipTransport[CoreT] = cls("TCP", on_event)
        self._server = await asyncio.start_server(self._accepted, host, port)
        sockname = self._server.sockets[0].getsockname()
        self.local_addr = (str(sockname[0]), int(sockname[1]))
        self._core = core_factory(self.local_addr)
        self._arm()
        return self

    @classmethod
    async def tls(
        cls,
        host: str,
        port: int,
        core_factory: Callable[[Addr], CoreT],
        on_event: Callable[[Any], None],
        *,
        server_hostname: str,
        ca_file: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> SipTransport[CoreT]:
        """SIP over TLS to the PBX (RFC 3261 §26.2.1): `server_hostname` is the PBX domain its
        certificate must be valid for; `ca_file` replaces the system CA store (or give a whole
        `ssl_context`). Connections are opened on demand, from (`host`, the bound port)."""
        self: SipTransport[CoreT] = cls("TLS", on_event)
        self._tls = ssl_context or sip_tls.client_context(ca_file)
        self._server_hostname = server_hostname
        sock = self._reserved = _client_socket(host, port)
        sockname = sock.getsockname()
        self.local_addr = (str(sockname[0]), int(sockname[1]))
        self._core = core_factory(self.local_addr)
        self._arm()
        return self

    async def close(self) -> None:
        self._closed = True
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        if self._timer is not None:
            self._timer.cancel()
        if self._udp is not None:
            self._udp.close()
        for writer in list(self._conns.values()):
            writer.close()
        self._conns.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- driving the core -----------------------------------------------------------------------
    def execute(self, command: Callable[[float], Any]) -> Any:
        """Run a core command (``lambda now: ua.call(now, ...)``) and flush what it produced.

        Returns the command's result (e.g. ``(call_id, output)`` or the output itself).
        """
        result = command(self._loop.time())
        output = result[1] if isinstance(result, tuple) else result
        self._flush(output)
        self._arm()
        return result

    def message_received(self, message: SipMessage, source: Addr) -> None:
        """A message the shared socket has parsed already (to route it) for this core."""
        self._feed(message, source)

    def _feed(self, data: bytes | SipMessage, source: Addr) -> None:
        if self._closed:
            return
        try:
            output = self.core.receive(self._loop.time(), data, source)
        except Exception:  # never let one message take the worker down
            log.exception("SIP core failed on a message from %s:%s", *source)
            return
        self._flush(output)
        self._arm()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed:
            return
        try:
            output = self.core.handle_timer(self._loop.time())
        except Exception:
            log.exception("SIP core failed in handle_timer")
        else:
            self._flush(output)
        self._arm()

    def _arm(self) -> None:
        if self._closed or self._core is None:
            return
        when = self._core.next_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _flush(self, output: Any) -> None:
        for item in output.send:
            self._send(item.data, item.addr)
        for event in output.events:
            if isinstance(event, MalformedMessage):
                log.warning("dropped malformed SIP from %s: %s", event.source, event.error)
            try:
                self.on_event(event)
            except Exception:
                log.exception("SIP event handler failed for %r", event)

    # -- sending ----------------------------------------------------------------------------------
    def _send(self, data: bytes, addr: Addr) -> None:
        if self._udp is not None:
            self._udp.sendto(data, addr)
            return
        writer = self._conns.get(addr)
        if writer is not None and not writer.is_closing():
            writer.write(data)
            return
        if addr in self._connecting:
            self._connecting[addr].append(data)
            return
        self._connecting[addr] = [data]
        self._spawn(self._connect(addr))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, addr: Addr) -> None:
        if self._tls is not None:
            await self._connect_tls(addr)
            return
        try:
            reader, writer = await asyncio.open_connection(addr[0], addr[1])
        except OSError as exc:
            # The transaction will time out (Timer B/F); RFC 3261 §18.4 transport error.
            log.warning("SIP TCP connect to %s:%s failed: %s", addr[0], addr[1], exc)
            self._connecting.pop(addr, None)
            return
        self._conns[addr] = writer
        for data in self._connecting.pop(addr, []):
            writer.write(data)
        await self._read_loop(reader, writer, addr)

    async def _connect_tls(self, addr: Addr) -> None:
        assert self._tls is not None
        try:
            sock = self._reserved or _client_socket(*self.local_addr)
        except OSError as exc:
            self._tls_failed(addr, exc)
            return
        self._reserved = None
        try:
            async with asyncio.timeout(TLS_CONNECT_SECONDS):
                await self._loop.sock_connect(sock, addr)
                reader, writer = await asyncio.open_connection(
                    sock=sock,
                    ssl=self._tls,
                    server_hostname=self._server_hostname,
                    ssl_handshake_timeout=TLS_CONNECT_SECONDS,
                )
        except (OSError, TimeoutError) as exc:
            sock.close()
            self._tls_failed(addr, exc)
            return
        except BaseException:
            sock.close()
            raise
        self._conns[addr] = writer
        for data in self._connecting.pop(addr, []):
            writer.write(data)
        await self._read_loop(reader, writer, addr)

    def _tls_failed(self, addr: Addr, exc: BaseException) -> None:
        failure = TransportFailure(
            addr, "TLS", sip_tls.failure_kind(exc), sip_tls.failure_detail(exc)
        )
        log.warning(
            "SIP TLS connection to %s:%s (%s) failed: %s: %s",
            addr[0],
            addr[1],
            self._server_hostname,
            failure.kind,
            failure.detail,
        )
        pending = self._connecting.pop(addr, [])
        if self._closed:
            return
        try:
            self.on_event(failure)
        except Exception:
            log.exception("SIP event handler failed for %r", failure)
        # RFC 3261 §8.1.3.1: a transport failure is treated as a 503 to the request; the core
        # has no call for it, so the answer is made here and fed back as if the PBX sent it.
        for data in pending:
            with contextlib.suppress(SipParseError):
                request = parse_message(data, datagram=False)
                if isinstance(request, SipRequest) and request.method != "ACK":
                    reply = make_response(request, 503, f"TLS {failure.kind} failure")
                    self._feed(reply.to_bytes(), addr)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr = (str(peer[0]), int(peer[1]))
        self._conns[addr] = writer
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        await self._read_loop(reader, writer, addr)

    async def _read_loop(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, addr: Addr
    ) -> None:
        framer = StreamFramer()
        try:
            while not self._closed:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                try:
                    messages = framer.feed(chunk)
                except SipParseError as exc:
                    # Framing is lost: the stream cannot be resynchronised (RFC 3261 §18.3).
                    log.warning("closing SIP TCP connection from %s: %s", addr, exc)
                    break
                for message in messages:
                    self._feed(message, addr)
                if framer.keepalives:
                    # RFC 5626 §3.5.1: answer a CRLFCRLF ping with a CRLF pong.
                    writer.write(b"\r\n" * framer.keepalives)
                    framer.keepalives = 0
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the peer went away (over TLS possibly mid-record): the next send reconnects
        finally:
            if self._conns.get(addr) is writer:
                del self._conns[addr]
            writer.close()


def _client_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) for outgoing connections. SO_REUSEADDR lets the next
    connection (after the PBX closed one) take the same port again, so our Via and Contact stay
    true; Linux allows that for sockets that never listen."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


# Receive buffer asked for the shared UDP socket: a registration burst of thousands of lines
# brings their 401s and 200s back at once, and the default (~200 KiB, a few hundred datagrams)
# overflows; every datagram lost costs a Timer E/F retransmission (RFC 3261 §17.1.2.2).
# The kernel caps it at net.core.rmem_max.
SHARED_RCVBUF = 4 * 1024 * 1024
# REGISTER transactions of one shared socket in flight at once (phone.sip.demux.RegisterWindow):
# enough to keep the registrar busy, few enough that answers come back within T1.
REGISTER_WINDOW = 200


class _LineSender:
    """A line's view of the shared socket: sending goes through it, closing only leaves it."""

    __slots__ = ("shared", "token")

    def __init__(self, shared: SharedSipSocket, token: str) -> None:
        self.shared = shared
        self.token = token

    def sendto(self, data: bytes, addr: Addr) -> None:
        if data.startswith(b"REGISTER "):
            self.shared._send_register(data, addr)
        else:
            self.shared._send(data, addr)

    def close(self) -> None:
        self.shared.detach(self.token)


class _LinePort(SipTransport[Any]):
    """A line's transport on a shared socket: its register() waits while the socket's
    REGISTER window is full (a worker starting thousands of lines builds each REGISTER only
    when it can go: no transaction retransmitting in a queue, no Timer F running out there)."""

    shared: SharedSipSocket | None = None

    def execute(self, command: Callable[[float], Any]) -> Any:
        shared = self.shared
        if shared is not None and shared._defer_register(self, command):
            return None
        return super().execute(command)


class SharedSipSocket(SipTransport[Any]):
    """One UDP socket, or one TCP listener plus one connection per peer (so one per PBX
    address), for every line of a worker process. Each line is a :class:`SipTransport` of its
    own (its core, its timer, its event callback) from :meth:`open_line`; what arrives is
    handed to the right one by phone.sip.demux, or answered here when it is for no line.

    The socket belongs to whoever opened it (the sipworker host): closing a line only takes
    it off the routing table; :meth:`close` closes the socket (and stops routing to lines).
    """

    def __init__(self, transport_name: str, register_window: int = REGISTER_WINDOW) -> None:
        super().__init__(transport_name, _log_shared_event)
        self.demux: Demux[SipTransport[Any]] = Demux(reliable=transport_name != "UDP")
        self.register_window = RegisterWindow(register_window)
        self._synthetic = False  # feeding answers made here, not received
        # Lines' register() commands waiting for room in the REGISTER window.
        self._deferred: collections.deque[tuple[_LinePort, Callable[[float], Any]]] = (
            collections.deque()
        )
        self._lines: dict[str, SipTransport[Any]] = {}
        # One keepalive per proxy for all its lines (their own probes are switched off).
        self._keepalives: dict[Addr, SharedKeepalive] = {}
        self._keepalive_timers: dict[Addr, asyncio.TimerHandle] = {}
        self._lines_of: dict[Addr, set[str]] = {}
        self._proxy_of: dict[str, Addr] = {}

    @classmethod
    async def shared_udp(
        cls,
        host: str,
        port: int,
        *,
        rcvbuf: int | None = SHARED_RCVBUF,
        register_window: int = REGISTER_WINDOW,
    ) -> SharedSipSocket:
        self = cls("UDP", register_window)
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(host, port)
        )
        self._udp = transport
        if rcvbuf:
            sock = transport.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sockname = transport.get_extra_info("sockname")
        self.local_addr = (str(sockname[0]), int(sockname[1]))
        return self

    @classmethod
    async def shared_tcp(
        cls, host: str, port: int, *, register_window: int = REGISTER_WINDOW
    ) -> SharedSipSocket:
        """A listener for requests the PBX sends us (it connects to our Contact) and, on
        demand, one outgoing connection per peer address, which every line sends over."""
        self = cls("TCP", register_window)
        self._server = await asyncio.start_server(self._accepted, host, port)
        sockname = self._server.sockets[0].getsockname()
        self.local_addr = (str(sockname[0]), int(sockname[1]))
        return self

    @classmethod
    async def shared_tls(
        cls,
        host: str,
        port: int,
        *,
        server_hostname: str,
        ca_file: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        register_window: int = REGISTER_WINDOW,
    ) -> SharedSipSocket:
        """One TLS connection per PBX address for every line of a PBX domain (the certificate
        is checked for `server_hostname`, RFC 3261 §26.2), all from one local port: the PBX
        reaches each line over the connection they registered from (see :meth:`tls`). A
        connection that cannot be set up is reported to each line that uses that address."""
        self = cls("TLS", register_window)
        self._tls = ssl_context or sip_tls.client_context(ca_file)
        self._server_hostname = server_hostname
        sock = self._reserved = _client_socket(host, port)
        sockname = sock.getsockname()
        self.local_addr = (str(sockname[0]), int(sockname[1]))
        self.on_event = self._to_lines_of
        return self

    def _to_lines_of(self, event: Any) -> None:
        """The socket's own events: a TransportFailure goes to the lines of its address."""
        if not isinstance(event, TransportFailure):
            _log_shared_event(event)
            return
        for port in list(self._lines.values()):
            if port.core.config.proxy_addr != event.addr:
                continue
            try:
                port.on_event(event)
            except Exception:  # one line's handler must not keep the news from the others
                log.exception("SIP event handler failed for %r", event)

    @property
    def lines(self) -> int:
        return len(self._lines)

    def open_line(
        self,
        core_factory: Callable[[Addr], Any],
        on_event: Callable[[Any], None],
        seed: str | None = None,
    ) -> SipTransport[Any]:
        """A line's port on this socket. `core_factory` builds its UserAgent for our address;
        the line's token goes into it (UserAgent.use_line_token) before it sends anything.
        `seed`: the line's address of record, for the same token each time (Demux.new_token)."""
        if self._closed:
            raise RuntimeError("shared SIP socket is closed")
        token = self.demux.new_token(seed)
        keepalive: tuple[Addr, float, float] | None = None

        def make(addr: Addr) -> Any:
            nonlocal keepalive
            ua = core_factory(addr)
            ua.use_line_token(token)
            config = ua.config
            if config.keepalive_interval and config.proxy_addr is not None:
                # The socket probes the proxy for every line that uses it (SharedKeepalive).
                keepalive = (config.proxy_addr, config.keepalive_interval, config.keepalive_timeout)
                config.keepalive_interval = None
            return ua

        port = _LinePort.over(
            _LineSender(self, token), self.local_addr, make, on_event, self.transport_name
        )
        assert isinstance(port, _LinePort)  # over() builds the class it is called on
        port.shared = self
        self.demux.add(token, port, port.core.config.username)
        self._lines[token] = port
        if keepalive is not None:
            self._join_keepalive(token, *keepalive)
        return port

    def detach(self, token: str) -> None:
        self.demux.remove(token)
        self._lines.pop(token, None)
        proxy = self._proxy_of.pop(token, None)
        if proxy is not None:
            tokens = self._lines_of.get(proxy, set())
            tokens.discard(token)
            if not tokens:
                self._lines_of.pop(proxy, None)
                self._keepalives.pop(proxy, None)
                timer = self._keepalive_timers.pop(proxy, None)
                if timer is not None:
                    timer.cancel()

    def _send_register(self, data: bytes, addr: Addr) -> None:
        for item in self.register_window.send(self._loop.time(), data, addr):
            self._send(*item)
        self._run_deferred()

    def _defer_register(self, port: _LinePort, command: Callable[[float], Any]) -> bool:
        """Hold a line's register() back while no REGISTER could go at once (FIFO)."""
        if command != port.core.register:  # bound methods: equal for the same core
            return False
        if not self._deferred and self.register_window.has_room(self._loop.time()):
            return False
        self._deferred.append((port, command))
        return True

    def _run_deferred(self) -> None:
        while self._deferred and self.register_window.has_room(self._loop.time()):
            port, command = self._deferred.popleft()
            if port._closed:
                continue  # the line stopped while it waited
            try:
                SipTransport.execute(port, command)
            except Exception:  # one line's failure must not hold the others back
                log.exception("SIP line failed to register")

    # -- the shared keepalive ---------------------------------------------------------------------
    def _join_keepalive(self, token: str, proxy: Addr, interval: float, timeout: float) -> None:
        self._proxy_of[token] = proxy
        self._lines_of.setdefault(proxy, set()).add(token)
        if proxy not in self._keepalives:
            keepalive = self._keepalives[proxy] = SharedKeepalive(interval, timeout)
            keepalive.start(self._loop.time())
            self._arm_keepalive(proxy)

    def _arm_keepalive(self, proxy: Addr) -> None:
        keepalive = self._keepalives.get(proxy)
        old = self._keepalive_timers.pop(proxy, None)
        if old is not None:
            old.cancel()
        when = keepalive.next_timer() if keepalive is not None else None
        if when is not None and not self._closed:
            self._keepalive_timers[proxy] = self._loop.call_at(
                when, self._on_keepalive_timer, proxy
            )

    def _on_keepalive_timer(self, proxy: Addr) -> None:
        self._keepalive_timers.pop(proxy, None)
        keepalive = self._keepalives.get(proxy)
        if keepalive is None or self._closed:
            return
        probe, lost = keepalive.handle_timer(self._loop.time())
        if probe:
            self._send(keepalive_probe(self.local_addr, self.transport_name, proxy), proxy)
        if lost:
            log.warning("SIP proxy %s:%s does not answer: its lines are failed", *proxy)
            self._tell_lines(proxy, "proxy_lost")
        self._arm_keepalive(proxy)

    def _tell_lines(self, proxy: Addr, what: str) -> None:  # what: a UserAgent method
        """Every line of `proxy` hears of its outage or return (only on those transitions)."""
        for token in list(self._lines_of.get(proxy, ())):
            port = self._lines.get(token)
            if port is None:
                continue
            try:
                command: Callable[[float], Any] = getattr(port.core, what)
                port.execute(command)
            except Exception:  # one line failing must not keep the news from the others
                log.exception("SIP line failed on %s", what)

    def _tls_failed(self, addr: Addr, exc: BaseException) -> None:
        # The 503s made up for the requests that waited for the connection are not news from
        # the PBX: they must not count as its answer to the keepalive.
        self._synthetic = True
        try:
            super()._tls_failed(addr, exc)
        finally:
            self._synthetic = False

    def _feed(self, data: bytes | SipMessage, source: Addr) -> None:
        if self._closed:
            return
        if not isinstance(data, bytes):
            data = data.to_bytes()  # only bytes arrive from the network; keep the type honest
        keepalive = None if self._synthetic else self._keepalives.get(source)
        if keepalive is not None and keepalive.heard(self._loop.time()):
            log.info("SIP proxy %s:%s answers again", *source)
            self._tell_lines(source, "proxy_answered")
            self._arm_keepalive(source)
        try:
            route = self.demux.route(data, source)
        except Exception:  # a routing bug must not take the socket (and every line) down
            log.exception("SIP demux failed on a message from %s:%s", *source)
            return
        if isinstance(route, Deliver):
            message = route.message
            # The line's own transport catches and logs whatever its core raises.
            if message is not None:
                route.key.message_received(message, source)
            else:
                route.key.datagram_received(data, source)
            if (
                isinstance(message, SipResponse)
                and message.status >= 200
                and message.cseq.method == "REGISTER"
            ):
                # A REGISTER transaction is over (after the line sent what follows from it,
                # e.g. its REGISTER with credentials): the next one waiting may go.
                now = self._loop.time()
                for item in self.register_window.answered(now, message.top_via.branch):
                    self._send(*item)
                self._run_deferred()
        elif isinstance(route, Reply):
            # Malformed input is worth a warning, as on a line's own socket; a request for a
            # line that has gone (a stale binding at the PBX) is routine.
            level = logging.WARNING if route.reason.startswith("malformed") else logging.DEBUG
            log.log(
                level, "SIP from %s:%s answered by the shared socket: %s", *source, route.reason
            )
            self._send(route.data, route.addr)
        elif route.malformed:
            log.warning("dropped malformed SIP from %s:%s: %s", *source, route.reason)
        else:
            log.debug("dropped SIP from %s:%s: %s", *source, route.reason)

    async def close(self) -> None:
        self._lines.clear()
        self._deferred.clear()
        for timer in self._keepalive_timers.values():
            timer.cancel()
        self._keepalive_timers.clear()
        await super().close()


def _log_shared_event(event: Any) -> None:
    log.info("shared SIP socket: %r", event)
