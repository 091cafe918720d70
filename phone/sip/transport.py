"""asyncio UDP/TCP adapter for the sans-I/O core: the only module here that does I/O.

It binds a socket, builds the core with the *bound* address (so Via and Contact carry the real
port), feeds it datagrams / framed stream messages with ``loop.time()`` as ``now``, sends what it
returns, keeps one timer armed at ``core.next_timer()`` and hands events to a callback::

    transport = await SipTransport.udp("0.0.0.0", 5060, lambda addr: UserAgent(cfg(addr)), on_event)
    transport.execute(lambda now: transport.core.register(now))

Nothing received from the network can crash it: malformed requests are answered 400 by the
transaction layer, malformed responses are dropped and logged, and unexpected exceptions from the
core are logged, not raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from .errors import SipParseError
from .message import StreamFramer
from .transaction import Addr, MalformedMessage

log = logging.getLogger(__name__)


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

    def receive(self, now: float, data: bytes, source: Addr) -> Any: ...

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
    ) -> SipTransport[CoreT]:
        """Datagrams through any sender, fed back with :meth:`datagram_received` (tests wire
        cores together in memory this way, with the real timers and event flushing)."""
        self: SipTransport[CoreT] = cls("UDP", on_event)
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

    async def close(self) -> None:
        self._closed = True
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

    def _feed(self, data: bytes, source: Addr) -> None:
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
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if self._conns.get(addr) is writer:
                del self._conns[addr]
            writer.close()
