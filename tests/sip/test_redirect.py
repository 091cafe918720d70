"""3xx redirects (RFC 3261 §21.3, §8.1.3.4): the UAS side puts Contacts into a 302 (応答不可
forward), the UAC side follows the first new one once per hop, bounded and loop-safe - with
literal SIP text and UAs wired in memory."""

from __future__ import annotations

import itertools

import pytest

from phone.sip.message import SipRequest, SipResponse, parse_message
from phone.sip.sdp import build_offer, negotiate_answer
from phone.sip.uri import SipUri
from phone.sip.useragent import (
    MAX_REDIRECTS,
    CallRedirected,
    CallState,
    CallStateChanged,
    IncomingCall,
)
from tests.sip.test_useragent import ALICE, BOB, CAROL, World, _of, _states, _ua

INVITE = (
    "INVITE sip:bob@10.0.0.2 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:alice@pbx.example.jp>;tag=a1\r\n"
    "To: <sip:bob@pbx.example.jp>\r\n"
    "Call-ID: redirect-1@10.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@10.0.0.1:5060>\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def _offer():
    return build_offer("10.0.0.1", 4000, session_id="1")


def _invites(w: World, dst: tuple[str, int]) -> list[SipRequest]:
    out = []
    for packet in w.net.packets:
        if packet.dst == dst and packet.first_line.startswith("INVITE"):
            message = parse_message(packet.data)
            assert isinstance(message, SipRequest)
            out.append(message)
    return out


def test_it_redirects_with_302_and_a_contact_naming_the_target() -> None:
    bob = _ua("bob", BOB)
    bob.receive(0.0, INVITE.encode(), ALICE)
    out = bob.redirect(0.0, "redirect-1@10.0.0.1", [SipUri(host="pbx.example.jp", user="201")])
    (final,) = [s for s in out.send if s.data.startswith(b"SIP/2.0 3")]
    text = final.data.decode()
    assert text.startswith("SIP/2.0 302 Moved Temporarily\r\n")
    assert "\r\nContact: <sip:201@pbx.example.jp>\r\n" in text
    response = parse_message(final.data)
    assert isinstance(response, SipResponse) and response.to_addr.tag  # §8.2.6.2
    (ended,) = _of(out.events, CallStateChanged)
    assert (ended.state, ended.status, ended.reason) == (CallState.TERMINATED, 302, "redirected")


def test_it_can_name_several_contacts() -> None:
    bob = _ua("bob", BOB)
    bob.receive(0.0, INVITE.encode(), ALICE)
    targets = [SipUri(host="pbx.example.jp", user=n) for n in ("201", "202")]
    out = bob.redirect(0.0, "redirect-1@10.0.0.1", targets, status=300)
    (final,) = [s for s in out.send if s.data.startswith(b"SIP/2.0 3")]
    response = parse_message(final.data)
    assert isinstance(response, SipResponse) and response.status == 300
    assert [c.uri.user for c in response.contacts] == ["201", "202"]


@pytest.mark.parametrize(
    "status, targets",
    [
        (200, [SipUri(host="pbx.example.jp", user="201")]),
        (486, [SipUri(host="pbx.example.jp", user="201")]),
        (302, []),
        (302, [SipUri(host="pbx.example.jp", user=str(n)) for n in range(6)]),
        (302, [SipUri(host="", user="201", scheme="tel")]),
        (302, ["sip:201@pbx.example.jp"]),
    ],
)
def test_it_refuses_a_redirect_it_should_not_send(status, targets) -> None:
    bob = _ua("bob", BOB)
    bob.receive(0.0, INVITE.encode(), ALICE)
    with pytest.raises(ValueError):
        bob.redirect(0.0, "redirect-1@10.0.0.1", targets, status=status)
    assert bob.calls["redirect-1@10.0.0.1"].state is CallState.INCOMING  # nothing sent


def test_the_caller_follows_a_302_to_the_contact_and_gets_through() -> None:
    w = World()
    call_id, out = w.alice.call(0.0, "sip:bob@10.0.0.2", _offer())
    w.do(w.alice, out)
    w.events(w.alice)
    w.do(w.bob, w.bob.redirect(0.0, call_id, [SipUri(host="10.0.0.3", user="carol")]))
    # The 302 is ACKed by the INVITE transaction (§17.1.1.3), then a new INVITE goes out.
    assert len(w.net.sent(ALICE, "ACK")) == 1
    (redirected,) = _of(w.events(w.alice), CallRedirected)
    assert (redirected.call_id, redirected.status) == (call_id, 302)
    (first,) = _invites(w, BOB)
    (second,) = _invites(w, CAROL)
    assert str(second.uri) == "sip:carol@10.0.0.3"
    # Same Call-ID, From (tag) and To; a new CSeq and a new branch (§8.1.3.4).
    assert second.call_id == first.call_id == call_id
    assert second.from_addr.tag == first.from_addr.tag
    assert second.headers.get("to") == first.headers.get("to")
    assert second.cseq.seq == first.cseq.seq + 1
    assert second.top_via.branch != first.top_via.branch
    (incoming,) = _of(w.events(w.carol), IncomingCall)
    answer = negotiate_answer(incoming.offer, "10.0.0.3", 5000, session_id="3")
    w.do(w.carol, w.carol.answer(0.1, call_id, answer))
    assert _states(w.events(w.alice)) == [CallState.CONNECTED]
    w.do(w.alice, w.alice.hangup(1.0, call_id))
    (bye,) = w.net.sent(ALICE, "BYE")
    assert bye.dst == CAROL and len(_invites(w, BOB)) == 1


def test_a_redirect_back_to_where_we_were_ends_the_call() -> None:
    w = World()
    call_id, out = w.alice.call(0.0, "sip:bob@10.0.0.2", _offer())
    w.do(w.alice, out)
    w.do(w.bob, w.bob.redirect(0.0, call_id, [SipUri(host="10.0.0.3", user="carol")]))
    w.events(w.alice)
    # carol forwards back to bob: a loop, not followed (§8.1.3.4).
    w.do(w.carol, w.carol.redirect(0.0, call_id, [SipUri(host="10.0.0.2", user="bob")]))
    end = _of(w.events(w.alice), CallStateChanged)[-1]
    assert (end.state, end.status) == (CallState.TERMINATED, 302)
    assert len(_invites(w, BOB)) == 1


def test_it_follows_at_most_max_redirects() -> None:
    w = World()
    hops = [w.bob, w.carol] + [
        w.net.add(_ua(f"u{n}", (f"10.0.0.{10 + n}", 5060))) for n in range(MAX_REDIRECTS)
    ]
    call_id, out = w.alice.call(0.0, "sip:bob@10.0.0.2", _offer())
    w.do(w.alice, out)
    for ua, nxt in itertools.pairwise(hops):
        w.do(ua, ua.redirect(0.0, call_id, [SipUri(host=nxt.local_addr[0], user="next")]))
    events = w.events(w.alice)
    assert len(_of(events, CallRedirected)) == MAX_REDIRECTS
    end = _of(events, CallStateChanged)[-1]
    assert (end.state, end.status) == (CallState.TERMINATED, 302)
    assert _invites(w, hops[-1].local_addr) == []  # the last hop was never called
