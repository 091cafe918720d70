"""Many lines on one shared UDP socket (phone.sip.transport.SharedSipSocket) against a real
Kamailio 5.6: 300 user agents register from one port, and calls placed through Kamailio reach
the line they are for and no other.

Two of the lines are the same extension (two devices of one user): Kamailio forks the INVITE to
both registered Contacts, which differ only in their line parameter, so only the Contact the
registrar hands back as Request-URI can tell the copies apart (a user-part match could not).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from phone.sip.demux import LINE_PARAM
from phone.sip.sdp import build_offer, negotiate_answer
from phone.sip.transaction import Addr
from phone.sip.transport import SharedSipSocket, SipTransport
from phone.sip.useragent import (
    CallState,
    CallStateChanged,
    IncomingCall,
    RegistrationState,
    RegistrationStateChanged,
    UserAgent,
    UserAgentConfig,
)
from tests.integration.test_tls import DOMAIN as TLS_DOMAIN
from tests.integration.test_tls import pki, tls_pbx  # noqa: F401 - fixtures
from tests.support.pbx import Kamailio, KamailioError

pytestmark = pytest.mark.integration

LINES = 300
FIRST = 4000
CALLER = "1001"
TWIN = str(FIRST + 7)  # registered by two lines


@pytest.fixture
def pbx(make_kamailio: Callable[..., Kamailio]) -> Iterator[Kamailio]:
    users = {str(FIRST + i): f"pw{FIRST + i}" for i in range(LINES)}
    users[CALLER] = "pw1001"
    yield make_kamailio(users=users)


class Lines:
    """LINES user agents on one shared socket, each with its own event list."""

    def __init__(self, shared: SharedSipSocket, pbx: Kamailio) -> None:
        self.shared = shared
        self.pbx = pbx
        self.ports: list[SipTransport[Any]] = []
        self.exts: list[str] = []
        self.events: list[list[Any]] = []

    def open(self, ext: str) -> None:
        pbx_addr = (self.pbx.host, self.pbx.port)
        index = len(self.ports)
        events: list[Any] = []

        def make(addr: Addr) -> UserAgent:
            return UserAgent(
                UserAgentConfig(
                    username=ext,
                    domain=self.pbx.domain,
                    local_addr=addr,
                    password=self.pbx.users[ext],
                    proxy_addr=pbx_addr,
                    expires=300,
                    trusted_sources=frozenset({pbx_addr}),
                )
            )

        port = self.shared.open_line(make, events.append)
        assert len(self.ports) == index
        self.ports.append(port)
        self.exts.append(ext)
        self.events.append(events)

    def registered(self, index: int) -> bool:
        return any(
            isinstance(e, RegistrationStateChanged) and e.state is RegistrationState.REGISTERED
            for e in self.events[index]
        )

    def incoming(self, index: int) -> list[IncomingCall]:
        return [e for e in self.events[index] if isinstance(e, IncomingCall)]


def contacts_of(pbx: Kamailio, ext: str) -> list[str]:
    """The Contact URIs Kamailio holds for `ext` (ul.dump of 300 AoRs is more than kamcmd's
    reply buffer takes, so ask for the one AoR)."""
    try:
        text = pbx.kamcmd("ul.lookup", "location", f"{ext}@{pbx.domain}")
    except KamailioError:
        return []  # "AOR not found"
    return [
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.strip().startswith("Address:")
    ]


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_it_registers_300_lines_on_one_socket_and_each_call_reaches_its_line(
    pbx: Kamailio,
) -> None:
    shared = await SharedSipSocket.shared_udp("127.0.0.1", 0)
    caller_events: list[Any] = []
    caller = await SipTransport.udp(
        "127.0.0.1",
        0,
        lambda addr: UserAgent(
            UserAgentConfig(
                username=CALLER,
                domain=pbx.domain,
                local_addr=addr,
                password="pw1001",
                proxy_addr=(pbx.host, pbx.port),
            )
        ),
        caller_events.append,
    )
    lines = Lines(shared, pbx)
    try:
        for i in range(LINES):
            lines.open(str(FIRST + i))
        lines.open(TWIN)
        for port in lines.ports:
            port.execute(lambda now, port=port: port.core.register(now))
        await until(lambda: all(map(lines.registered, range(len(lines.ports)))), 30, "REGISTERED")

        # Kamailio keeps the Contact with its line parameter, one binding per line.
        twin_contacts = await asyncio.to_thread(contacts_of, pbx, TWIN)
        assert len(twin_contacts) == 2
        assert all(f";{LINE_PARAM}=" in c for c in twin_contacts), twin_contacts
        assert all(str(shared.local_addr[1]) in c for c in twin_contacts)

        # Calls through Kamailio to several lines, one after the other.
        targets = [FIRST + 3, FIRST + 150, FIRST + 299, int(TWIN)]
        for number in targets:
            ext = str(number)
            wanted = [i for i, e in enumerate(lines.exts) if e == ext]
            before = [len(lines.incoming(i)) for i in range(len(lines.ports))]
            offer = build_offer("127.0.0.1", 40000, session_id="1")
            call_id, _ = caller.execute(
                lambda now, ext=ext, offer=offer: caller.core.call(now, ext, offer)
            )

            def rung(wanted: list[int] = wanted, before: list[int] = before) -> bool:
                return all(len(lines.incoming(i)) == before[i] + 1 for i in wanted)

            await until(rung, 10, f"INVITE at {ext}")
            # The first of its lines answers (the twin's other copy is CANCELled by Kamailio).
            callee = lines.ports[wanted[0]]
            incoming = lines.incoming(wanted[0])[-1]
            assert incoming.call_id == call_id and incoming.offer is not None
            assert incoming.request_uri.params.get(LINE_PARAM)
            answer = negotiate_answer(incoming.offer, "127.0.0.1", 40002, session_id="2")
            callee.execute(
                lambda now, c=callee, i=incoming, a=answer: c.core.answer(now, i.call_id, a)
            )

            def connected(call_id: str = call_id) -> bool:
                return any(
                    isinstance(e, CallStateChanged)
                    and e.call_id == call_id
                    and e.state is CallState.CONNECTED
                    for e in caller_events
                )

            await until(connected, 10, f"answer from {ext}")
            caller.execute(lambda now, call_id=call_id: caller.core.hangup(now, call_id))

            def ended(events: list[Any], call_id: str = call_id) -> bool:
                return any(
                    isinstance(e, CallStateChanged)
                    and e.call_id == call_id
                    and e.state is CallState.TERMINATED
                    for e in events
                )

            # The BYE (in the dialog) and, for the twin, the CANCEL reach the right lines.
            def all_ended(wanted: list[int] = wanted) -> bool:
                return all(ended(lines.events[i]) for i in wanted)

            await until(all_ended, 10, "BYE/CANCEL")
            # Nobody else heard of this call.
            others = [
                lines.exts[i]
                for i in range(len(lines.ports))
                if i not in wanted and len(lines.incoming(i)) != before[i]
            ]
            assert not others, f"call to {ext} also rang {others}"

        counts = shared.demux.counts
        print(f"\nshared socket routing: {dict(counts)}")
        # INVITEs and CANCELs by the registered Contact, ACK/BYE by our tag, answers by branch.
        assert counts["contact"] >= len(targets) + 1
        assert counts["dialog"] >= 2 * len(targets)
        assert counts["branch"] >= 2 * len(lines.ports)
        assert counts["user"] == 0 and counts["unmatched"] == 0

        # One line leaving closes nothing for the others.
        await lines.ports[0].close()
        assert shared.lines == len(lines.ports) - 1
        for port in lines.ports[1:]:
            port.execute(lambda now, port=port: port.core.unregister(now))
        await until(lambda: not contacts_of(pbx, str(FIRST + 1)), 10, "un-REGISTER")
    finally:
        await caller.close()
        await shared.close()


async def test_lines_on_tcp_share_one_connection_to_the_pbx(pbx: Kamailio) -> None:
    shared = await SharedSipSocket.shared_tcp("127.0.0.1", 0)
    caller_events: list[Any] = []
    caller = await SipTransport.udp(
        "127.0.0.1",
        0,
        lambda addr: UserAgent(
            UserAgentConfig(
                username=CALLER,
                domain=pbx.domain,
                local_addr=addr,
                password="pw1001",
                proxy_addr=(pbx.host, pbx.port),
            )
        ),
        caller_events.append,
    )
    pbx_addr = (pbx.host, pbx.port)
    events: list[list[Any]] = []
    ports: list[SipTransport[Any]] = []
    try:
        for i in range(20):
            ext = str(FIRST + i)
            got: list[Any] = []

            def make(addr: Addr, ext: str = ext) -> UserAgent:
                return UserAgent(
                    UserAgentConfig(
                        username=ext,
                        domain=pbx.domain,
                        local_addr=addr,
                        password=pbx.users[ext],
                        transport="TCP",
                        proxy_addr=pbx_addr,
                        trusted_sources=frozenset({pbx_addr}),
                    )
                )

            ports.append(shared.open_line(make, got.append))
            events.append(got)
        for port in ports:
            port.execute(lambda now, port=port: port.core.register(now))

        def registered() -> bool:
            return all(
                any(
                    isinstance(e, RegistrationStateChanged)
                    and e.state is RegistrationState.REGISTERED
                    for e in got
                )
                for got in events
            )

        await until(registered, 20, "REGISTERED over TCP")
        # Twenty REGISTER transactions (and their retries with credentials), one connection.
        assert list(shared._conns) == [pbx_addr]
        contacts = await asyncio.to_thread(contacts_of, pbx, str(FIRST + 11))
        assert len(contacts) == 1 and "transport=tcp" in contacts[0]

        offer = build_offer("127.0.0.1", 40000, session_id="1")
        caller.execute(lambda now: caller.core.call(now, str(FIRST + 11), offer))

        def rung() -> bool:
            return any(isinstance(e, IncomingCall) for e in events[11])

        await until(rung, 10, "INVITE over TCP")
        assert not [
            i
            for i, got in enumerate(events)
            if i != 11 and any(isinstance(e, IncomingCall) for e in got)
        ]
        assert shared.demux.counts["contact"] == 1
    finally:
        await caller.close()
        await shared.close()


async def test_the_host_gives_udp_lines_one_socket_and_closes_it_at_shutdown(
    pbx: Kamailio,
) -> None:
    """SipWorkerHost.open_sip (what every Line calls): the lines of a host share one socket;
    a line closing leaves it to the others; the host's shutdown closes it."""
    from phone.worker.db import LineConfig
    from phone.worker.host import SipWorkerHost

    host = SipWorkerHost("sipworker-shared-test")
    pbx_addr = (pbx.host, pbx.port)
    ports = []
    events: list[list[Any]] = []
    for i, ext in enumerate((str(FIRST), str(FIRST + 1))):
        config = LineConfig(
            user_id=i + 1,
            tenant_id=1,
            account_id=i + 1,
            slot=1,
            extension=ext,
            auth_user=ext,
            password=pbx.users[ext],
            domain=pbx.domain,
            proxy=pbx.hostport,
            transport="udp",
            display_name="",
        )

        def make(addr: Addr, ext: str = ext) -> UserAgent:
            return UserAgent(
                UserAgentConfig(
                    username=ext,
                    domain=pbx.domain,
                    local_addr=addr,
                    password=pbx.users[ext],
                    proxy_addr=pbx_addr,
                    keepalive_interval=1.0,
                )
            )

        got: list[Any] = []
        ports.append(await host.open_sip(config, make, got.append))
        events.append(got)
    try:
        assert ports[0].local_addr == ports[1].local_addr
        # The lines' own OPTIONS probes are off: the socket probes the PBX once for both.
        assert all(p.core.config.keepalive_interval is None for p in ports)
        await ports[0].close()
        ports[1].execute(ports[1].core.register)

        def registered() -> bool:
            return any(
                isinstance(e, RegistrationStateChanged) and e.state is RegistrationState.REGISTERED
                for e in events[1]
            )

        await until(registered, 5, "REGISTERED after the other line closed")
        await until(lambda: host._shared["udp"].demux.counts["keepalive-answer"] > 0, 5, "probe")
        shared = host._shared["udp"]
    finally:
        await host.shutdown()
    assert shared._closed and not host._shared


async def test_lines_on_tls_share_one_connection_and_calls_come_back_over_it(
    pki: dict[str, Any],  # noqa: F811
    tls_pbx: Any,  # noqa: F811
) -> None:
    """Two lines of one PBX domain over TLS: one connection (the certificate checked once),
    both registered from it, and a call to one of them reaches that one only."""
    shared = await SharedSipSocket.shared_tls(
        "127.0.0.1", 0, server_hostname=TLS_DOMAIN, ca_file=str(pki["ca"])
    )
    caller_events: list[Any] = []
    caller = await SipTransport.udp(
        "127.0.0.1",
        0,
        lambda addr: UserAgent(
            UserAgentConfig(
                username="1003",
                domain=TLS_DOMAIN,
                local_addr=addr,
                password="pw1003",
                proxy_addr=(tls_pbx.host, tls_pbx.port),
            )
        ),
        caller_events.append,
    )
    events: dict[str, list[Any]] = {"1001": [], "1002": []}
    ports = {}
    try:
        for ext, got in events.items():

            def make(addr: Addr, ext: str = ext) -> UserAgent:
                return UserAgent(
                    UserAgentConfig(
                        username=ext,
                        domain=TLS_DOMAIN,
                        local_addr=addr,
                        password=f"pw{ext}",
                        transport="TLS",
                        proxy_addr=tls_pbx.tls_addr,
                        trusted_sources=frozenset({tls_pbx.tls_addr}),
                    )
                )

            port = ports[ext] = shared.open_line(make, got.append)
            port.execute(port.core.register)

        def registered() -> bool:
            return all(
                any(
                    isinstance(e, RegistrationStateChanged)
                    and e.state is RegistrationState.REGISTERED
                    for e in got
                )
                for got in events.values()
            )

        await until(registered, 10, "REGISTERED over TLS")
        assert list(shared._conns) == [tls_pbx.tls_addr]
        contacts = await asyncio.to_thread(contacts_of, tls_pbx, "1002")
        assert len(contacts) == 1 and contacts[0].endswith(";transport=tls")

        offer = build_offer("127.0.0.1", 40000, session_id="1")
        caller.execute(lambda now: caller.core.call(now, "1002", offer))
        await until(lambda: any(isinstance(e, IncomingCall) for e in events["1002"]), 10, "INVITE")
        assert not any(isinstance(e, IncomingCall) for e in events["1001"])
        assert list(shared._conns) == [tls_pbx.tls_addr]  # it came over that connection
    finally:
        await caller.close()
        await shared.close()
