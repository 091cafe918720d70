from __future__ import annotations

import pytest

from phone.sip.message import (
    Headers,
    SipRequest,
    SipResponse,
    generate_tag,
    make_response,
    parse_message,
)
from phone.sip.transaction import (
    InviteServerTransaction,
    MalformedMessage,
    RequestReceived,
    ResponseReceived,
    State,
    TimerSettings,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    make_cancel,
)
from phone.sip.uri import parse_uri

from .harness import Network, Packet
from .messages import INVITE

A = ("10.0.0.1", 5060)
B = ("10.0.0.2", 5060)


def _request(method: str, cseq: int = 1) -> SipRequest:
    return SipRequest(
        method,
        parse_uri("sip:bob@10.0.0.2"),
        Headers(
            [
                ("Max-Forwards", "70"),
                ("From", f"<sip:alice@10.0.0.1>;tag={generate_tag()}"),
                ("To", "<sip:bob@10.0.0.2>"),
                ("Call-ID", f"call-{generate_tag()}"),
                ("CSeq", f"{cseq} {method}"),
            ]
        ),
    )


def _pair(
    transport: str = "UDP", **timers: float | None
) -> tuple[Network, TransactionLayer, TransactionLayer]:
    settings = TimerSettings(**timers)  # type: ignore[arg-type]
    net = Network()
    a = TransactionLayer(A, transport, timers=settings)
    b = TransactionLayer(B, transport, timers=settings)
    net.add(a)
    net.add(b)
    return net, a, b


def _times(packets: list[Packet]) -> list[float]:
    return [round(p.time, 6) for p in packets]


def test_it_retransmits_invite_at_timer_a_until_timer_b() -> None:
    net, a, _ = _pair()
    net.endpoints.pop(B)  # nobody answers
    tid, out = a.send_request(0.0, _request("INVITE"), B)
    net.deliver(a, out)
    assert a.next_timer() == 0.5
    net.run_until(100)
    # RFC 3261 §17.1.1.2: T1, 2T1, 4T1... after the first send; Timer B at 64*T1 = 32 s.
    assert _times(net.sent(A, "INVITE")) == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    events = net.take_events(A)
    assert isinstance(events[0], TransactionTimeout) and events[0].timer == "B"
    assert events[0].transaction_id == tid
    assert isinstance(events[1], TransactionTerminated)
    assert a.next_timer() is None and not a.clients


def test_it_recovers_from_a_dropped_invite() -> None:
    net, a, _b = _pair()
    net.drop = lambda p: p.first_line.startswith("INVITE") and p.time == 0.0
    _, out = a.send_request(0.0, _request("INVITE"), B)
    net.deliver(a, out)
    assert net.events[B] == []
    net.run_until(0.5)
    events = net.take_events(B)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    # 100 Trying 200 ms after the INVITE arrived, since the TU said nothing (§17.2.1).
    net.run_until(0.69)
    assert net.sent(B, "SIP/2.0 100") == []
    net.run_until(0.7)
    assert _times(net.sent(B, "SIP/2.0 100")) == [0.7]
    net.run_until(10)
    assert _times(net.sent(A, "INVITE")) == [0.0, 0.5]  # Proceeding: no more retransmissions
    assert isinstance(net.take_events(A)[0], ResponseReceived)


def test_it_skips_100_trying_when_the_tu_answers_quickly() -> None:
    net, a, b = _pair()
    _, out = a.send_request(0.0, _request("INVITE"), B)
    net.deliver(a, out)
    (event,) = net.take_events(B)
    net.now = 0.1
    ringing = make_response(event.request, 180, to_tag="t1")
    net.deliver(b, b.send_response(0.1, ringing))
    net.run_until(1.0)
    assert net.sent(B, "SIP/2.0 100") == []
    assert len(net.sent(B, "SIP/2.0 180")) == 1
    net2, a2, _b2 = _pair(trying_delay=0.0)
    net2.deliver(a2, a2.send_request(0.0, _request("INVITE"), B)[1])
    assert _times(net2.sent(B, "SIP/2.0 100")) == [0.0]
    net3, a3, _b3 = _pair(trying_delay=None)
    net3.deliver(a3, a3.send_request(0.0, _request("INVITE"), B)[1])
    net3.run_until(1.0)
    assert net3.sent(B, "SIP/2.0 100") == []


def test_it_retransmits_error_response_with_timer_g_until_ack() -> None:
    net, a, b = _pair()
    net.drop = lambda p: p.src == A and p.first_line.startswith("ACK") and p.time < 1.0
    _, out = a.send_request(0.0, _request("INVITE"), B)
    net.deliver(a, out)
    (event,) = net.take_events(B)
    server_tid = event.transaction_id
    busy = make_response(event.request, 486, to_tag="x")
    net.deliver(b, b.send_response(0.0, busy))
    client_events = net.take_events(A)
    assert [e.response.status for e in client_events if isinstance(e, ResponseReceived)] == [486]
    net.run_until(40)
    # Timer G: T1 then 2T1 (capped at T2); the first two ACKs were lost, the third stops G.
    assert _times(net.sent(B, "SIP/2.0 486")) == [0.0, 0.5, 1.5]
    assert _times(net.sent(A, "ACK")) == [0.0, 0.5, 1.5]
    # The retransmitted 486 was absorbed by the client transaction (Completed), not passed up.
    assert not [e for e in net.take_events(A) if isinstance(e, ResponseReceived)]
    server_events = net.take_events(B)
    assert TransactionTerminated(server_tid) in server_events  # Timer I = T4 after the ACK
    assert not [e for e in server_events if isinstance(e, TransactionTimeout)]
    assert not a.clients and not b.servers


def test_it_fires_timer_i_t4_after_ack_and_timer_d_32s() -> None:
    net, a, b = _pair()
    _, out = a.send_request(0.0, _request("INVITE"), B)
    net.deliver(a, out)
    (event,) = net.take_events(B)
    net.deliver(b, b.send_response(0.0, make_response(event.request, 603, to_tag="x")))
    server = b.servers[event.transaction_id]
    assert server.state is State.CONFIRMED
    assert server.timers == {"I": 5.0}
    (client,) = a.clients.values()
    assert client.state is State.COMPLETED and client.timers == {"D": 32.0}
    net.run_until(4.99)
    assert b.servers
    net.run_until(5.0)
    assert not b.servers
    net.run_until(31.99)
    assert a.clients
    net.run_until(32.0)
    assert not a.clients


def test_it_times_out_with_timer_h_without_ack() -> None:
    net, a, b = _pair()
    net.drop = lambda p: p.first_line.startswith("ACK")
    _, out = a.send_request(0.0, _request("INVITE"), B)
    net.deliver(a, out)
    (event,) = net.take_events(B)
    net.deliver(b, b.send_response(0.0, make_response(event.request, 480, to_tag="x")))
    net.run_until(40)
    # G: 0.5, 1.5, 3.5, 7.5, then every T2 = 4 s; H at 64*T1 = 32 s.
    assert _times(net.sent(B, "SIP/2.0 480")) == [
        0.0,
        0.5,
        1.5,
        3.5,
        7.5,
        11.5,
        15.5,
        19.5,
        23.5,
        27.5,
        31.5,
    ]
    timeouts = [e for e in net.take_events(B) if isinstance(e, TransactionTimeout)]
    assert len(timeouts) == 1 and timeouts[0].timer == "H"


def test_it_runs_non_invite_timers_e_f_k() -> None:
    net, a, _ = _pair()
    net.endpoints.pop(B)
    _, out = a.send_request(0.0, _request("OPTIONS"), B)
    net.deliver(a, out)
    net.run_until(100)
    # Timer E doubles up to T2 = 4 s; Timer F at 32 s.
    assert _times(net.sent(A, "OPTIONS")) == [
        0.0,
        0.5,
        1.5,
        3.5,
        7.5,
        11.5,
        15.5,
        19.5,
        23.5,
        27.5,
        31.5,
    ]
    timeouts = [e for e in net.take_events(A) if isinstance(e, TransactionTimeout)]
    assert [t.timer for t in timeouts] == ["F"]


def test_it_retransmits_every_t2_once_proceeding_and_waits_t4() -> None:
    net, a, b = _pair()
    _, out = a.send_request(0.0, _request("REGISTER"), B)
    net.deliver(a, out)
    (event,) = net.take_events(B)
    net.deliver(b, b.send_response(0.0, make_response(event.request, 100)))
    net.run_until(10)
    # E: first retransmission at 0.5, then every T2 in Proceeding (§17.1.2.2).
    assert _times(net.sent(A, "REGISTER")) == [0.0, 0.5, 4.5, 8.5]
    # The server re-sends its last provisional response to each retransmission.
    assert len(net.sent(B, "SIP/2.0 100")) == 4
    net.now = 10.0
    net.deliver(b, b.send_response(10.0, make_response(event.request, 200, to_tag="t")))
    (client,) = a.clients.values()
    assert client.state is State.COMPLETED and client.timers == {"K": 15.0}
    server = b.servers[event.transaction_id]
    assert server.timers == {"J": 42.0}  # 64*T1 after the final response
    net.run_until(50)
    assert not a.clients and not b.servers
    # §17.1.2.2: every provisional in Proceeding goes up to the TU.
    statuses = [e.response.status for e in net.take_events(A) if isinstance(e, ResponseReceived)]
    assert statuses == [100, 100, 100, 100, 200]


def test_it_uses_no_retransmissions_on_reliable_transports() -> None:
    net, a, b = _pair("TCP")
    _, out = a.send_request(0.0, _request("OPTIONS"), B)
    net.deliver(a, out)
    assert a.next_timer() == 32.0  # only Timer F
    (event,) = net.take_events(B)
    net.deliver(b, b.send_response(0.0, make_response(event.request, 200, to_tag="t")))
    assert not a.clients and not b.servers  # K and J are zero on TCP


def test_it_passes_2xx_and_its_ack_through_the_accepted_states() -> None:
    net, a, b = _pair()
    invite = _request("INVITE")
    tid, out = a.send_request(0.0, invite, B)
    net.deliver(a, out)
    (event,) = net.take_events(B)
    ok = make_response(event.request, 200, to_tag="t")
    net.deliver(b, b.send_response(0.0, ok))
    (client,) = a.clients.values()
    assert client.state is State.ACCEPTED and client.timers == {"M": 32.0}
    assert b.servers[event.transaction_id].state is State.ACCEPTED
    # The TU retransmits the 2xx (§13.3.1.4); the client passes it up again (RFC 6026).
    net.now = 0.5
    net.deliver(b, b.send_response(0.5, ok))
    oks = [e for e in net.take_events(A) if isinstance(e, ResponseReceived)]
    assert [e.transaction_id for e in oks] == [tid, tid]
    # ACK for 2xx is a separate request with a new branch, straight to the server TU.
    ack = SipRequest("ACK", invite.uri, invite.headers.copy())
    ack.headers.set("via", str(a.make_via()))
    ack.headers.set("cseq", "1 ACK")
    ack.headers.set("to", ok.headers.get("to") or "")
    net.deliver(a, a.send_stateless(ack, B))
    (ack_event,) = net.take_events(B)
    assert isinstance(ack_event, RequestReceived) and ack_event.transaction_id is None
    # A 2xx arriving after Timer M is stray but still reaches the TU (to re-ACK).
    net.run_until(40)
    assert not a.clients and not b.servers
    net.deliver(b, b.send_response(40, ok))
    (stray,) = [e for e in net.take_events(A) if isinstance(e, ResponseReceived)]
    assert stray.transaction_id is None


def test_it_matches_server_transactions_per_rfc3261_17_2_3() -> None:
    layer = TransactionLayer(B)
    out = layer.receive(0.0, INVITE, ("192.0.2.101", 5060))
    (event,) = out.events
    assert isinstance(event, RequestReceived)
    tid = event.transaction_id
    assert tid is not None
    # A retransmission matches (absorbed, no new event).
    assert layer.receive(0.1, INVITE, ("192.0.2.101", 5060)).events == []
    # Same branch but another sent-by is another transaction.
    other = INVITE.replace(b"pc33.atlanta.example.com:5060", b"pc34.atlanta.example.com:5060")
    assert isinstance(layer.receive(0.1, other, ("192.0.2.102", 5060)).events[0], RequestReceived)
    # CANCEL has its own transaction but finds the INVITE.
    request = event.request
    cancel = make_cancel(request)
    cancel_out = layer.receive(0.2, bytes(cancel), ("192.0.2.101", 5060))
    (cancel_event,) = cancel_out.events
    assert cancel_event.transaction_id != tid
    found = layer.invite_for_cancel(cancel_event.request)
    assert isinstance(found, InviteServerTransaction) and found.id == tid


def test_it_stamps_received_and_rport_and_replies_there() -> None:
    layer = TransactionLayer(B)
    out = layer.receive(0.0, INVITE, ("198.51.100.9", 40000))
    (event,) = out.events
    via = event.request.top_via
    assert via.received == "198.51.100.9" and via.rport == 40000
    response = layer.send_response(0.0, make_response(event.request, 180, to_tag="x"))
    assert response.send[0].addr == ("198.51.100.9", 40000)
    # Without rport: received IP + Via port (RFC 3261 §18.2.2).
    plain = INVITE.replace(b";rport", b"")
    out = TransactionLayer(B).receive(0.0, plain, ("198.51.100.9", 40000))
    assert "rport" not in out.events[0].request.top_via.params
    layer2 = TransactionLayer(B)
    (event2,) = layer2.receive(0.0, plain, ("198.51.100.9", 40000)).events
    sent = layer2.send_response(0.0, make_response(event2.request, 180, to_tag="x")).send
    assert sent[0].addr == ("198.51.100.9", 5060)


def test_it_answers_malformed_requests_with_400_and_drops_bad_responses() -> None:
    layer = TransactionLayer(B)
    bad = INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: lots")
    out = layer.receive(0.0, bad, ("192.0.2.101", 5060))
    assert isinstance(out.events[0], MalformedMessage)
    (item,) = out.send
    response = parse_message(item.data)
    assert isinstance(response, SipResponse) and response.status == 400
    out = layer.receive(0.0, b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n", ("192.0.2.101", 5060))
    assert out.send == [] and isinstance(out.events[0], MalformedMessage)
    assert layer.receive(0.0, b"\x00\xff" * 50, ("192.0.2.101", 5060)).send == []


def test_it_refuses_to_start_a_transaction_for_ack() -> None:
    with pytest.raises(ValueError):
        TransactionLayer(A).send_request(0.0, _request("ACK"), B)


def test_it_honours_configured_timer_values() -> None:
    net, a, _ = _pair(t1=0.1, t2=0.4)
    net.endpoints.pop(B)
    net.deliver(a, a.send_request(0.0, _request("MESSAGE"), B)[1])
    net.run_until(10)
    times = _times(net.sent(A, "MESSAGE"))
    assert times[:6] == [0.0, 0.1, 0.3, 0.7, 1.1, 1.5]
    assert times[-1] == 6.3  # Timer F = 64*T1 = 6.4 s ends it
    (timeout,) = [e for e in net.take_events(A) if isinstance(e, TransactionTimeout)]
    assert timeout.timer == "F"


def test_it_matches_rfc2543_requests_without_magic_cookie() -> None:
    from .messages import crlf

    old = crlf(
        """OPTIONS sip:bob@10.0.0.2 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.2;branch=390skdjuw
From: <sip:old@192.0.2.2>;tag=o1
To: <sip:bob@10.0.0.2>
Call-ID: rfc2543
CSeq: 4 OPTIONS

"""
    )
    layer = TransactionLayer(B)
    (event,) = layer.receive(0.0, old, ("192.0.2.2", 5060)).events
    assert isinstance(event, RequestReceived)
    out = layer.send_response(0.0, make_response(event.request, 200, to_tag="b"))
    assert out.send[0].addr == ("192.0.2.2", 5060)
    # The retransmission matches by the RFC 2543 rules and gets the same 200 again.
    again = layer.receive(0.5, old, ("192.0.2.2", 5060))
    assert again.events == [] and again.send[0].data == out.send[0].data
