"""In-memory wiring of sans-I/O SIP endpoints with a fake clock (no sockets, no sleeps)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

Addr = tuple[str, int]


class Sent(Protocol):
    data: bytes
    addr: Addr


class OutputLike(Protocol):
    @property
    def send(self) -> list[Any]: ...

    @property
    def events(self) -> list[Any]: ...


class Endpoint(Protocol):
    local_addr: Addr

    def receive(self, now: float, data: bytes, source: Addr) -> Any: ...

    def handle_timer(self, now: float) -> Any: ...

    def next_timer(self) -> float | None: ...


@dataclass
class Packet:
    time: float
    src: Addr
    dst: Addr
    data: bytes
    dropped: bool

    @property
    def first_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode(errors="replace")


@dataclass
class Network:
    """Delivers datagrams between endpoints instantly; ``drop`` decides losses."""

    endpoints: dict[Addr, Endpoint] = field(default_factory=dict)
    now: float = 0.0
    packets: list[Packet] = field(default_factory=list)
    events: dict[Addr, list[Any]] = field(default_factory=dict)
    drop: Callable[[Packet], bool] = lambda packet: False

    def add(self, endpoint: Endpoint) -> Endpoint:
        self.endpoints[endpoint.local_addr] = endpoint
        self.events[endpoint.local_addr] = []
        return endpoint

    def deliver(self, src: Endpoint, out: Any) -> None:
        """Send ``out.send`` from ``src``; record ``out.events`` for ``src``."""
        queue: list[tuple[Addr, Any]] = [(src.local_addr, out)]
        while queue:
            sender, output = queue.pop(0)
            self.events[sender].extend(output.events)
            for item in output.send:
                packet = Packet(self.now, sender, item.addr, item.data, False)
                packet.dropped = self.drop(packet)
                self.packets.append(packet)
                target = self.endpoints.get(item.addr)
                if packet.dropped or target is None:
                    continue
                queue.append((item.addr, target.receive(self.now, item.data, sender)))

    def run_until(self, t: float) -> None:
        """Advance the clock to ``t``, firing every endpoint's timers exactly at their deadline."""
        while True:
            deadlines = [
                (d, addr)
                for addr, ep in self.endpoints.items()
                if (d := ep.next_timer()) is not None and d <= t
            ]
            if not deadlines:
                break
            deadline, addr = min(deadlines)
            self.now = max(self.now, deadline)
            endpoint = self.endpoints[addr]
            self.deliver(endpoint, endpoint.handle_timer(self.now))
        self.now = max(self.now, t)

    def sent(self, src: Addr | None = None, starts: str = "") -> list[Packet]:
        return [
            p
            for p in self.packets
            if (src is None or p.src == src) and p.first_line.startswith(starts)
        ]

    def take_events(self, addr: Addr) -> list[Any]:
        events = self.events[addr]
        self.events[addr] = []
        return events
