"""SIP user agents wired together in memory on the running asyncio loop: the real SipTransport
(timers, event flushing) over a network object instead of sockets. No PBX, no ports.

    net = MemoryNetwork()
    peer = FarEnd.open(net, ("127.0.0.1", 5999), "far")      # a plain UserAgent, driven by the test
    call_id = peer.call("1001", offer)                          # INVITE to whoever is at "1001"
    await peer.wait(lambda e: ...)

A line under test gets its transport from `net.open_sip` (the host's `open_sip` hook). The
network can drop or answer datagrams itself (`net.intercept`) to play a far end that refuses a
re-INVITE, and keeps every datagram it carried in `net.log`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from phone.signalling import protocol
from phone.sip.message import SipRequest, make_response, parse_message
from phone.sip.sdp import build_offer
from phone.sip.transport import SipTransport
from phone.sip.useragent import UserAgent, UserAgentConfig

Addr = tuple[str, int]
# Where the FarEnd playing the PBX sits; a line's outbound proxy points here.
PBX: Addr = ("127.0.0.1", 5999)


@dataclass
class Datagram:
    src: Addr
    dst: Addr
    data: bytes

    @property
    def first_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode(errors="replace")


class _Port:
    def __init__(self, net: MemoryNetwork, addr: Addr) -> None:
        self.net = net
        self.addr = addr
        self.transport: SipTransport[Any] | None = None

    def sendto(self, data: bytes, addr: Addr) -> None:
        self.net.send(self.addr, addr, data)

    def close(self) -> None:
        self.net.ports.pop(self.addr, None)


@dataclass
class MemoryNetwork:
    ports: dict[Addr, _Port] = field(default_factory=dict)
    log: list[Datagram] = field(default_factory=list)
    # intercept(datagram) -> True to swallow it (the test may answer with `inject`)
    intercept: Callable[[Datagram], bool] | None = None
    _next_port: Any = field(default_factory=lambda: itertools.count(6000))

    def bind(self, addr: Addr | None = None) -> _Port:
        addr = addr or ("127.0.0.1", next(self._next_port))
        port = self.ports[addr] = _Port(self, addr)
        return port

    def send(self, src: Addr, dst: Addr, data: bytes) -> None:
        datagram = Datagram(src, dst, data)
        self.log.append(datagram)
        if self.intercept is not None and self.intercept(datagram):
            return
        self.inject(src, dst, data)

    def inject(self, src: Addr, dst: Addr, data: bytes) -> None:
        """Deliver `data` to `dst` as if `src` sent it (on the next loop iteration, as a
        socket would)."""
        target = self.ports.get(dst)
        if target is not None and target.transport is not None:
            asyncio.get_running_loop().call_soon(target.transport.datagram_received, data, src)

    def answer(self, datagram: Datagram, status: int) -> None:
        """Answer a request carried by `datagram` with `status`, from its destination."""
        message = parse_message(datagram.data)
        assert isinstance(message, SipRequest)
        self.inject(datagram.dst, datagram.src, make_response(message, status).to_bytes())

    def sent(self, starts: str, *, src: Addr | None = None, dst: Addr | None = None):
        return [
            d
            for d in self.log
            if d.first_line.startswith(starts)
            and (src is None or d.src == src)
            and (dst is None or d.dst == dst)
        ]

    async def open_sip(self, config, make_ua, on_event):
        """The sipworker host's `open_sip` hook: a line's transport on this network."""
        port = self.bind()
        port.transport = SipTransport.over(port, port.addr, make_ua, on_event)
        return port.transport


class FarEnd:
    """A plain UserAgent on the network, playing the PBX and the other party at once."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._changed = asyncio.Event()
        self.transport: SipTransport[UserAgent]

    @classmethod
    def open(cls, net: MemoryNetwork, addr: Addr, user: str = "far") -> FarEnd:
        far = cls()
        port = net.bind(addr)

        def make(local: Addr) -> UserAgent:
            return UserAgent(
                UserAgentConfig(username=user, domain="pbx.test", local_addr=local),
            )

        port.transport = far.transport = SipTransport.over(port, addr, make, far._on_event)
        return far

    @property
    def ua(self) -> UserAgent:
        return self.transport.core

    def _on_event(self, event: Any) -> None:
        self.events.append(event)
        self._changed.set()

    def execute(self, command: Callable[[float], Any]) -> Any:
        return self.transport.execute(command)

    def call(self, target: Addr, user: str = "1001", *, sdp: bool = True) -> str:
        """INVITE sip:user@ip:port (straight to the line's address)."""
        offer = build_offer("127.0.0.1", 40000, session_id="1")
        uri = f"sip:{user}@{target[0]}:{target[1]}"
        call_id, _ = self.execute(lambda now: self.ua.call(now, uri, offer))
        if not sdp:
            raise NotImplementedError
        return call_id

    async def wait(self, match: Callable[[Any], bool], timeout: float = 3.0) -> Any:
        async def find() -> Any:
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if match(event):
                        return event
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)


class Page:
    """One phone page: a channel of the layer, what the worker sent it, and its commands."""

    def __init__(self, host, user_id, session):
        self.host, self.user_id, self.session = host, user_id, session
        self.messages: list[dict] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, host, user):
        page = cls(host, user.pk, await host.layer.new_channel())
        host.dispatch(protocol.Attach(user.pk, page.session, 1.0))
        return page

    async def _read(self):
        while True:
            wire = await self.host.layer.receive(self.session)
            message = protocol.from_wire(wire)
            assert isinstance(message, protocol.ToPage)
            self.messages.append(message.message)
            self._changed.set()

    def send(self, command):
        self.host.dispatch(protocol.Command(self.user_id, self.session, command))

    def mark(self) -> int:
        """For wait(after=...): only messages that arrive from now on."""
        return len(self.messages)

    async def wait(self, kind, timeout=3.0, after=0, **fields):
        async def find():
            seen = after
            while True:
                for message in self.messages[seen:]:
                    if message["type"] == kind and all(
                        message.get(k) == v for k, v in fields.items()
                    ):
                        return message
                seen = len(self.messages)
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    def close(self):
        self._reader.cancel()
