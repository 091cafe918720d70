"""Routing what arrives on a shared socket to the right line (phone.sip.demux), on literal SIP
text; then real UserAgents behind one SharedSipSocket on loopback."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from phone.sip.demux import (
    LINE_PARAM,
    Deliver,
    Demux,
    Drop,
    RegisterWindow,
    Reply,
    SharedKeepalive,
    keepalive_probe,
    make_branch,
    make_tag,
)
from phone.sip.message import parse_message
from phone.sip.sdp import build_offer
from phone.sip.transport import SharedSipSocket
from phone.sip.useragent import (
    IncomingCall,
    RegistrationState,
    RegistrationStateChanged,
    UserAgent,
    UserAgentConfig,
)

from .messages import crlf

PBX = ("192.0.2.1", 5060)


def demux_with_two_lines() -> tuple[Demux[str], str, str]:
    demux: Demux[str] = Demux()
    alice, bob = demux.new_token(), demux.new_token()
    demux.add(alice, "alice", user="1001")
    demux.add(bob, "bob", user="1002")
    return demux, alice, bob


def response_200(branch: str) -> bytes:
    return crlf(
        f"""SIP/2.0 200 OK
Via: SIP/2.0/UDP 198.51.100.7:5080;branch={branch};rport=5080;received=198.51.100.7
From: <sip:1001@pbx.example>;tag=x1
To: <sip:1001@pbx.example>;tag=pbx9
Call-ID: reg-1@198.51.100.7
CSeq: 2 REGISTER
Content-Length: 0
"""
    )


def invite(ruri: str, to_tag: str = "", method: str = "INVITE") -> bytes:
    to = "<sip:1001@pbx.example>" + (f";tag={to_tag}" if to_tag else "")
    return crlf(
        f"""{method} {ruri} SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKpbx01;rport
Max-Forwards: 69
From: "Caller" <sip:0312345678@pbx.example>;tag=far1
To: {to}
Call-ID: call-1@192.0.2.1
CSeq: 1 {method}
Contact: <sip:0312345678@192.0.2.1:5060>
Content-Length: 0
"""
    )


def test_it_routes_a_response_by_the_token_in_its_top_via_branch() -> None:
    demux, alice, bob = demux_with_two_lines()
    assert demux.route(response_200(make_branch(bob)), PBX) == Deliver("bob", "branch")
    assert demux.route(response_200(make_branch(alice)), PBX) == Deliver("alice", "branch")


def test_it_drops_a_response_for_no_line() -> None:
    demux, _, _ = demux_with_two_lines()
    for branch in ("z9hG4bKffffffff.0123456789abcdef", "z9hG4bK74bf9", "old-branch"):
        route = demux.route(response_200(branch), PBX)
        assert isinstance(route, Drop), branch  # RFC 3261 §18.1.2: never answered


def test_it_routes_an_invite_by_the_registered_contact_parameter() -> None:
    demux, _, bob = demux_with_two_lines()
    # The registrar hands back the Contact we registered, parameters included.
    route = demux.route(invite(f"sip:1001@198.51.100.7:5080;{LINE_PARAM}={bob}"), PBX)
    assert route == Deliver("bob", "contact")  # the token wins over the user part


def test_it_routes_an_in_dialog_request_by_our_tag() -> None:
    demux, alice, _ = demux_with_two_lines()
    bye = invite("sip:1001@198.51.100.7:5080", to_tag=make_tag(alice), method="BYE")
    assert demux.route(bye, PBX) == Deliver("alice", "dialog")
    ack = invite("sip:1001@198.51.100.7:5080", to_tag=make_tag(alice), method="ACK")
    assert demux.route(ack, PBX) == Deliver("alice", "dialog")


def test_it_routes_a_cancel_like_its_invite() -> None:
    demux, _, bob = demux_with_two_lines()
    cancel = invite(f"sip:1002@198.51.100.7:5080;{LINE_PARAM}={bob}", method="CANCEL")
    assert demux.route(cancel, PBX) == Deliver("bob", "contact")


def test_it_falls_back_to_a_unique_user_part() -> None:
    demux, _, _ = demux_with_two_lines()
    assert demux.route(invite("sip:1002@198.51.100.7:5080"), PBX) == Deliver("bob", "user")
    # Two lines of the same extension: the user part says nothing, so nobody gets it.
    demux.add(demux.new_token(), "bob-2", user="1002")
    route = demux.route(invite("sip:1002@198.51.100.7:5080"), PBX)
    assert isinstance(route, Reply) and route.data.startswith(b"SIP/2.0 404 ")


def test_it_answers_404_to_a_new_request_for_nobody_and_481_in_a_dialog() -> None:
    demux, _, _ = demux_with_two_lines()
    route = demux.route(invite(f"sip:9999@198.51.100.7:5080;{LINE_PARAM}=deadbeef"), PBX)
    assert isinstance(route, Reply)
    reply = parse_message(route.data)
    assert reply.status == 404  # type: ignore[union-attr]
    assert reply.to_addr.tag  # RFC 3261 §8.2.6.2: a tag on our answer
    assert route.addr == PBX  # rport: back to the source port
    options = invite("sip:9999@198.51.100.7:5080", method="OPTIONS")
    assert demux.route(options, PBX).data.startswith(b"SIP/2.0 404 ")  # type: ignore[union-attr]

    route = demux.route(
        invite("sip:9999@198.51.100.7:5080", to_tag="ffffffff.1", method="BYE"), PBX
    )
    assert isinstance(route, Reply) and route.data.startswith(b"SIP/2.0 481 ")
    assert b"tag=ffffffff.1" in route.data  # the dialog's tag, as the request named it
    ack = invite("sip:9999@198.51.100.7:5080", to_tag="ffffffff.1", method="ACK")
    assert isinstance(demux.route(ack, PBX), Drop)  # ACK is never answered


def test_it_answers_400_to_garbage_that_can_be_answered_and_drops_the_rest() -> None:
    demux, _, _ = demux_with_two_lines()
    bad_cseq = invite("sip:1001@198.51.100.7:5080").replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE")
    route = demux.route(bad_cseq, PBX)
    assert isinstance(route, Reply) and route.data.startswith(b"SIP/2.0 400 ")
    for junk in (b"\x00\xff" * 40, b"HELLO\r\n\r\n", b"SIP/2.0 200\r\n\r\n"):
        route = demux.route(junk, PBX)
        assert isinstance(route, Drop) and route.malformed, junk
    assert demux.route(b"\r\n\r\n", PBX) == Drop("keepalive")


def test_it_forgets_a_removed_line() -> None:
    demux, alice, _ = demux_with_two_lines()
    demux.remove(alice)
    assert len(demux) == 1
    assert isinstance(demux.route(response_200(make_branch(alice)), PBX), Drop)
    route = demux.route(invite(f"sip:1001@198.51.100.7:5080;{LINE_PARAM}={alice}"), PBX)
    assert isinstance(route, Reply) and route.data.startswith(b"SIP/2.0 404 ")
    with pytest.raises(ValueError):
        demux.add("bad.token", "x")


def test_a_user_agent_with_a_token_puts_it_in_contact_branch_and_tags() -> None:
    ua = UserAgent(
        UserAgentConfig(
            username="1001",
            domain="pbx.example",
            local_addr=("198.51.100.7", 5080),
            proxy_addr=PBX,
        )
    )
    ua.use_line_token("0badf00d")
    register = parse_message(ua.register(0.0).send[0].data)
    contact = register.contacts[0].uri
    assert contact.params[LINE_PARAM] == "0badf00d" and contact.user == "1001"
    assert register.top_via.branch.startswith("z9hG4bK0badf00d.")  # type: ignore[union-attr]
    _call_id, out = ua.call(1.0, "1002", build_offer("198.51.100.7", 40000, session_id="1"))
    assert parse_message(out.send[0].data).from_addr.tag.startswith("0badf00d.")  # type: ignore[union-attr]


def test_one_keepalive_probes_for_all_lines_and_only_when_the_proxy_is_silent() -> None:
    keepalive = SharedKeepalive(interval=2.0, timeout=4.0)
    keepalive.start(0.0)
    assert keepalive.next_timer() == 2.0
    assert keepalive.handle_timer(2.0) == (True, False)  # silence so far: probe
    keepalive.heard(2.1)  # its answer (or any line's traffic)
    assert keepalive.handle_timer(4.0) == (False, False)  # heard 1.9 s ago: no probe needed
    assert keepalive.handle_timer(6.0) == (True, False)
    # Nothing more from the proxy: lost once, 4 s after the unanswered probe; probing goes on.
    assert keepalive.handle_timer(8.0) == (True, False)
    assert keepalive.next_timer() == 10.0
    assert keepalive.handle_timer(10.0) == (True, True)
    assert keepalive.lost
    assert keepalive.handle_timer(12.0) == (True, False)  # reported once per outage
    assert keepalive.heard(12.5) is True  # back: the lines re-register
    assert keepalive.heard(12.6) is False


def test_the_answer_to_the_shared_probe_is_taken_by_no_line() -> None:
    demux, _, _ = demux_with_two_lines()
    probe = parse_message(keepalive_probe(("198.51.100.7", 5080), "UDP", PBX))
    assert probe.method == "OPTIONS" and str(probe.uri) == "sip:192.0.2.1:5060"  # type: ignore[union-attr]
    route = demux.route(response_200(probe.top_via.branch or ""), PBX)
    assert route == Drop("keepalive answer")


def register(branch: str, authorized: bool = False) -> bytes:
    auth = 'Authorization: Digest username="1001", realm="pbx.example"\n' if authorized else ""
    return crlf(
        f"""REGISTER sip:pbx.example SIP/2.0
Max-Forwards: 70
From: <sip:1001@pbx.example>;tag=x1
To: <sip:1001@pbx.example>
Call-ID: reg-1@198.51.100.7
CSeq: 1 REGISTER
Via: SIP/2.0/UDP 198.51.100.7:5080;branch={branch};rport
{auth}Content-Length: 0
"""
    )


def test_the_register_window_holds_new_registers_until_earlier_ones_are_answered() -> None:
    window = RegisterWindow(2, give_up=32.0)
    a, b, c, d = (register(f"z9hG4bK{x}.1") for x in "abcd")
    assert window.send(0.0, a, PBX) == [(a, PBX)]
    assert window.send(0.0, b, PBX) == [(b, PBX)]
    assert window.send(0.0, c, PBX) == []  # third: waits
    assert window.send(0.0, d, PBX) == []
    assert window.send(0.5, a, PBX) == [(a, PBX)]  # Timer E retransmission of an admitted one
    assert window.send(0.5, c, PBX) == []  # ... of a waiting one: still waits, not twice
    assert window.waiting == 2
    # The second leg (credentials after a 401) never waits behind the queue.
    authed = register("z9hG4bKe.1", authorized=True)
    assert window.send(0.6, authed, PBX) == [(authed, PBX)]
    assert window.answered(0.7, "z9hG4bKa.1") == []  # still 2 in flight (b and the authed one)
    assert window.answered(0.8, "z9hG4bKb.1") == [(c, PBX)]  # in order
    assert window.in_flight == 2 and window.waiting == 1
    # No answer at all: the place is free again after Timer F; the next retransmission of a
    # waiting one (or any answer) lets it go.
    assert window.send(40.0, d, PBX) == [(d, PBX)]
    assert window.answered(41.0, "z9hG4bKunknown") == []


def test_registers_with_credentials_go_first_but_not_beyond_twice_the_window() -> None:
    # The PBX is back after an outage: every line re-registers with the credentials it has.
    window = RegisterWindow(2)
    storm = [register(f"z9hG4bKs{i}.1", authorized=True) for i in range(6)]
    plain = register("z9hG4bKp.1")
    sent = [window.send(0.0, data, PBX) for data in storm]
    assert sent == [[(d, PBX)] for d in storm[:4]] + [[], []]
    assert window.send(0.0, plain, PBX) == []
    assert window.send(0.5, storm[4], PBX) == []  # retransmitted while waiting: still once
    assert window.answered(1.0, "z9hG4bKs0.1") == [(storm[4], PBX)]
    assert window.answered(1.0, "z9hG4bKs1.1") == [(storm[5], PBX)]
    # The plain one waits until the credentials ones are through and the window has room.
    assert window.answered(1.1, "z9hG4bKs2.1") == []
    assert window.answered(1.2, "z9hG4bKs3.1") == []
    assert window.answered(1.3, "z9hG4bKs4.1") == [(plain, PBX)]


# ------------------------------------------------------------------ real sockets on loopback


class FakePbx(asyncio.DatagramProtocol):
    """A registrar that says 200 to every REGISTER and records the rest (enough to route)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        message = parse_message(data)
        if getattr(message, "method", "") == "REGISTER":
            reply = crlf(
                f"""SIP/2.0 200 OK
Via: {message.headers.get("via")}
From: {message.headers.get("from")}
To: {message.headers.get("to")};tag=reg
Call-ID: {message.call_id}
CSeq: {message.headers.get("cseq")}
Contact: {message.headers.get("contact")};expires=3600
Content-Length: 0
"""
            )
            self.transport.sendto(reply, addr)


async def test_it_runs_many_user_agents_on_one_socket() -> None:
    loop = asyncio.get_running_loop()
    pbx = FakePbx()
    pbx_transport, _ = await loop.create_datagram_endpoint(lambda: pbx, local_addr=("127.0.0.1", 0))
    pbx_addr = pbx_transport.get_extra_info("sockname")[:2]
    shared = await SharedSipSocket.shared_udp("127.0.0.1", 0)
    events: dict[str, list[Any]] = {}
    ports = {}
    try:
        for ext in ("1001", "1002", "1003"):
            events[ext] = []

            def make(addr: Any, ext: str = ext) -> UserAgent:
                return UserAgent(
                    UserAgentConfig(
                        username=ext,
                        domain="127.0.0.1",
                        local_addr=addr,
                        proxy_addr=pbx_addr,
                        trusted_sources=frozenset({pbx_addr}),
                    )
                )

            def broken(event: Any, ext: str = ext) -> None:
                events[ext].append(event)
                if ext == "1003":
                    raise RuntimeError("this line's handler is broken")

            port = ports[ext] = shared.open_line(make, broken)
            port.execute(lambda now, port=port: port.core.register(now))

        async def registered(ext: str) -> None:
            while not any(
                isinstance(e, RegistrationStateChanged) and e.state is RegistrationState.REGISTERED
                for e in events[ext]
            ):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(asyncio.gather(*(registered(e) for e in events)), 3)

        # The PBX calls 1002 at the Contact it registered; only 1002 rings.
        register_1002 = next(parse_message(d) for d in pbx.received if b"From: <sip:1002@" in d)
        target = register_1002.contacts[0].uri
        pbx_transport.sendto(
            invite(str(target)).replace(
                b"192.0.2.1:5060;", f"{pbx_addr[0]}:{pbx_addr[1]};".encode()
            ),
            shared.local_addr,
        )

        async def rung() -> IncomingCall:
            while True:
                for e in events["1002"]:
                    if isinstance(e, IncomingCall):
                        return e
                await asyncio.sleep(0.01)

        call = await asyncio.wait_for(rung(), 3)
        assert call.request_uri.params[LINE_PARAM] == target.params[LINE_PARAM]
        assert not [e for e in events["1001"] + events["1003"] if isinstance(e, IncomingCall)]
        assert shared.demux.counts["contact"] == 1

        # A line that closes leaves the socket open for the others; its calls get 404 now.
        await ports["1002"].close()
        assert shared.lines == 2
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(3)
        port_no = probe.getsockname()[1]
        probe.sendto(
            invite(str(target)).replace(b"192.0.2.1:5060;", f"127.0.0.1:{port_no};".encode()),
            shared.local_addr,
        )
        reply = await asyncio.to_thread(probe.recv, 4096)
        probe.close()
        assert reply.startswith(b"SIP/2.0 404 ")
        ports["1001"].execute(lambda now: ports["1001"].core.unregister(now))
        await asyncio.sleep(0.1)
        assert shared.demux.counts["branch"] >= 4  # 3 REGISTER answers + 1 un-REGISTER
    finally:
        await shared.close()
        pbx_transport.close()


class HoldingPbx(FakePbx):
    """Answers nothing until the test says so."""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        self.addr = addr

    def answer(self, data: bytes) -> None:
        request = parse_message(data)
        reply = crlf(
            f"""SIP/2.0 200 OK
Via: {request.headers.get("via")}
From: {request.headers.get("from")}
To: {request.headers.get("to")};tag=reg
Call-ID: {request.call_id}
CSeq: {request.headers.get("cseq")}
Contact: {request.headers.get("contact")};expires=3600
Content-Length: 0
"""
        )
        self.transport.sendto(reply, self.addr)


async def test_a_full_register_window_holds_lines_back_until_answers_come() -> None:
    loop = asyncio.get_running_loop()
    pbx = HoldingPbx()
    pbx_transport, _ = await loop.create_datagram_endpoint(lambda: pbx, local_addr=("127.0.0.1", 0))
    pbx_addr = pbx_transport.get_extra_info("sockname")[:2]
    shared = await SharedSipSocket.shared_udp("127.0.0.1", 0, register_window=2)
    try:
        ports = []
        for ext in ("1001", "1002", "1003", "1004", "1005"):

            def make(addr: Any, ext: str = ext) -> UserAgent:
                return UserAgent(
                    UserAgentConfig(
                        username=ext, domain="127.0.0.1", local_addr=addr, proxy_addr=pbx_addr
                    )
                )

            port = shared.open_line(make, lambda event: None)
            port.execute(port.core.register)
            ports.append(port)
        await asyncio.sleep(0.2)
        assert len(pbx.received) == 2  # two in flight; three lines have not even built theirs
        assert [p.core.registration.state for p in ports[2:]] == [
            RegistrationState.UNREGISTERED
        ] * 3
        pbx.answer(pbx.received[0])
        await asyncio.sleep(0.2)
        assert len(pbx.received) == 3  # one answered: the next line's REGISTER goes
        assert b"From: <sip:1003@" in pbx.received[2]
        for data in list(pbx.received[1:]):
            pbx.answer(data)
        await asyncio.sleep(0.2)
        for data in list(pbx.received[3:]):
            pbx.answer(data)
        await asyncio.sleep(0.2)
        states = [p.core.registration.state for p in ports]
        assert states == [RegistrationState.REGISTERED] * 5
        assert len(pbx.received) == 5  # and no retransmission was needed
    finally:
        await shared.close()
        pbx_transport.close()


def test_a_line_that_starts_again_gets_its_token_back() -> None:
    """Seeded by the address of record: the same Contact is registered again (the registrar
    replaces the old binding), a second live line of that address gets its own, and another
    socket's tokens are its own."""
    demux: Demux[str] = Demux()
    first = demux.new_token("1002@pbx.example")
    demux.add(first, "bob")
    second = demux.new_token("1002@pbx.example")
    assert second != first  # bob's line still lives: a shared line of 1002 gets its own
    demux.remove(first)
    assert demux.new_token("1002@pbx.example") == first
    assert demux.new_token("1003@pbx.example") != first
    assert Demux[str]().new_token("1002@pbx.example") != first
