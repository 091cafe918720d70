"""The asyncio adapter on real loopback sockets (ports chosen by the OS)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from phone.sip.message import SipResponse, parse_message
from phone.sip.sdp import build_offer, negotiate_answer
from phone.sip.transport import SipTransport
from phone.sip.useragent import (
    CallState,
    CallStateChanged,
    IncomingCall,
    UserAgent,
    UserAgentConfig,
)

from .messages import INVITE, RESPONSE_180


def _factory(name: str, transport: str = "UDP") -> Any:
    def build(addr: tuple[str, int]) -> UserAgent:
        return UserAgent(
            UserAgentConfig(username=name, domain="127.0.0.1", local_addr=addr, transport=transport)
        )

    return build


async def _wait_for(events: list[Any], predicate: Any, timeout: float = 3.0) -> Any:
    async def poll() -> Any:
        while True:
            for event in events:
                if predicate(event):
                    return event
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(poll(), timeout)


@pytest.mark.parametrize("kind", ["UDP", "TCP"])
async def test_it_completes_a_call_over_loopback(kind: str) -> None:
    alice_events: list[Any] = []
    bob_events: list[Any] = []
    opener = SipTransport.udp if kind == "UDP" else SipTransport.tcp
    alice = await opener("127.0.0.1", 0, _factory("alice", kind), alice_events.append)
    bob_holder: dict[str, SipTransport[UserAgent]] = {}

    def bob_on_event(event: Any) -> None:
        bob_events.append(event)
        if isinstance(event, IncomingCall):
            assert event.offer is not None
            answer = negotiate_answer(event.offer, "127.0.0.1", 50000, session_id="2")
            bob_holder["t"].execute(
                lambda now: bob_holder["t"].core.answer(now, event.call_id, answer)
            )

    bob = await opener("127.0.0.1", 0, _factory("bob", kind), bob_on_event)
    bob_holder["t"] = bob
    try:
        # Via and Contact carry the bound port.
        assert alice.core.contact_uri.port == alice.local_addr[1] != 0
        host, port = bob.local_addr
        target = f"sip:bob@{host}:{port}" + (";transport=tcp" if kind == "TCP" else "")
        offer = build_offer("127.0.0.1", 40000, session_id="1")
        call_id, _ = alice.execute(lambda now: alice.core.call(now, target, offer))
        await _wait_for(
            alice_events,
            lambda e: isinstance(e, CallStateChanged) and e.state is CallState.CONNECTED,
        )
        alice.execute(lambda now: alice.core.hangup(now, call_id))
        ended = await _wait_for(
            bob_events,
            lambda e: isinstance(e, CallStateChanged) and e.state is CallState.TERMINATED,
        )
        assert ended.reason == "remote-bye"
    finally:
        await alice.close()
        await bob.close()


async def test_it_answers_bad_requests_with_400_and_ignores_bad_responses() -> None:
    events: list[Any] = []
    ua = await SipTransport.udp("127.0.0.1", 0, _factory("carol"), events.append)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        bad = INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: many")
        sock.sendto(bad, ua.local_addr)
        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 2.0)
        response = parse_message(data)
        assert isinstance(response, SipResponse) and response.status == 400
        # A garbage response and random bytes: dropped, the transport still works.
        sock.sendto(RESPONSE_180.replace(b"SIP/2.0 180", b"SIP/2.0 18"), ua.local_addr)
        sock.sendto(b"\xff" * 100, ua.local_addr)
        sock.sendto(INVITE, ua.local_addr)
        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 2.0)
        trying = parse_message(data)
        assert isinstance(trying, SipResponse) and trying.status in (100, 180)
        assert any(isinstance(e, IncomingCall) for e in events)
    finally:
        sock.close()
        await ua.close()


async def test_it_survives_a_crashing_event_handler() -> None:
    def boom(event: Any) -> None:
        raise RuntimeError("handler bug")

    ua = await SipTransport.udp("127.0.0.1", 0, _factory("dave"), boom)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        sock.sendto(INVITE, ua.local_addr)
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 2.0)
        assert data.startswith(b"SIP/2.0 100")
    finally:
        sock.close()
        await ua.close()


async def test_it_answers_tcp_keepalive_pings() -> None:
    ua = await SipTransport.tcp("127.0.0.1", 0, _factory("erin", "TCP"), lambda e: None)
    try:
        reader, writer = await asyncio.open_connection(*ua.local_addr)
        writer.write(b"\r\n\r\n")  # RFC 5626 §3.5.1 ping
        assert await asyncio.wait_for(reader.readexactly(2), 2.0) == b"\r\n"
        writer.write(INVITE)
        data = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
        assert data.startswith(b"SIP/2.0 100")
        writer.close()
    finally:
        await ua.close()
