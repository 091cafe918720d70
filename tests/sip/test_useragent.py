from __future__ import annotations

import itertools
import random
from typing import Any

from phone.sip.auth import digest_response
from phone.sip.message import SipRequest, SipResponse, make_response, parse_message
from phone.sip.registration import RegistrationState, RegistrationStateChanged
from phone.sip.sdp import build_offer, negotiate_answer, parse_sdp
from phone.sip.transaction import (
    MalformedMessage,
    Output,
    RequestReceived,
    TransactionLayer,
)
from phone.sip.useragent import (
    CallState,
    CallStateChanged,
    HoldChanged,
    IncomingCall,
    MediaUpdated,
    MessageSummary,
    TransferProgress,
    TransferRequested,
    UntrustedRequests,
    UserAgent,
    UserAgentConfig,
)

from .harness import Network
from .messages import crlf

ALICE = ("10.0.0.1", 5060)
BOB = ("10.0.0.2", 5060)
CAROL = ("10.0.0.3", 5060)
PBX = ("10.0.0.100", 5060)


def _ua(name: str, addr: tuple[str, int], proxy: tuple[str, int] | None = None) -> UserAgent:
    return UserAgent(
        UserAgentConfig(
            username=name,
            domain="pbx.example.jp",
            password=f"{name}-pw",
            local_addr=addr,
            proxy_addr=proxy,
        ),
        rng=random.Random(7),
    )


def _of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def _states(events: list[Any]) -> list[CallState]:
    return [e.state for e in _of(events, CallStateChanged)]


class World:
    def __init__(self) -> None:
        self.net = Network()
        self.alice = _ua("alice", ALICE)
        self.bob = _ua("bob", BOB)
        self.carol = _ua("carol", CAROL)
        for ua in (self.alice, self.bob, self.carol):
            self.net.add(ua)

    def do(self, ua: UserAgent, out: Any) -> None:
        self.net.deliver(ua, out)

    def events(self, ua: UserAgent) -> list[Any]:
        return self.net.take_events(ua.local_addr)

    def connect(self, caller: UserAgent, callee: UserAgent) -> tuple[str, str]:
        offer = build_offer(caller.local_addr[0], 40000, session_id="1")
        call_id, out = caller.call(self.net.now, f"sip:x@{callee.local_addr[0]}:5060", offer)
        self.do(caller, out)
        (incoming,) = _of(self.events(callee), IncomingCall)
        answer = negotiate_answer(incoming.offer, callee.local_addr[0], 50000, session_id="2")
        self.do(callee, callee.answer(self.net.now, incoming.call_id, answer))
        assert CallState.CONNECTED in _states(self.events(caller))
        self.events(callee)
        return call_id, incoming.call_id


def test_it_places_a_call_rings_answers_and_hangs_up() -> None:
    w = World()
    offer = build_offer("10.0.0.1", 40000, session_id="1")
    call_id, out = w.alice.call(0.0, "sip:bob@10.0.0.2:5060", offer)
    w.do(w.alice, out)
    assert _states(w.events(w.alice)) == [CallState.CALLING]
    bob_events = w.events(w.bob)
    (incoming,) = _of(bob_events, IncomingCall)
    assert incoming.call_id == call_id
    assert incoming.caller.uri.user == "alice" and incoming.offer is not None
    assert _states(bob_events) == [CallState.INCOMING]
    w.net.now = 0.1
    w.do(w.bob, w.bob.ring(0.1, call_id))
    assert _states(w.events(w.alice)) == [CallState.RINGING]
    answer = negotiate_answer(incoming.offer, "10.0.0.2", 50000, session_id="2")
    w.net.now = 2.0
    w.do(w.bob, w.bob.answer(2.0, call_id, answer))
    alice_events = w.events(w.alice)
    assert _states(alice_events) == [CallState.CONNECTED]
    (media,) = _of(alice_events, MediaUpdated)
    assert media.media is not None and media.media.remote_port == 50000
    assert media.media.codec.name == "PCMU" and media.media.dtmf_payload_type == 101
    (bob_media,) = _of(w.events(w.bob), MediaUpdated)
    assert bob_media.media is not None and bob_media.media.remote_port == 40000
    # The ACK arrived: no 2xx retransmissions afterwards.
    w.net.run_until(10)
    assert len(w.net.sent(BOB, "SIP/2.0 200")) == 1
    assert len(w.net.sent(ALICE, "ACK")) == 1
    w.do(w.alice, w.alice.hangup(10.0, call_id))
    assert _of(w.events(w.alice), CallStateChanged)[-1].reason == "local-bye"
    (ended,) = _of(w.events(w.bob), CallStateChanged)
    assert ended.state is CallState.TERMINATED and ended.reason == "remote-bye"
    assert len(w.net.sent(BOB, "SIP/2.0 200")) == 2  # 200 to BYE


def test_it_cancels_a_ringing_call_with_487() -> None:
    w = World()
    call_id, out = w.alice.call(
        0.0, "sip:bob@10.0.0.2", build_offer("10.0.0.1", 4000, session_id="1")
    )
    w.do(w.alice, out)
    w.do(w.bob, w.bob.ring(0.0, call_id))
    w.events(w.alice)
    w.events(w.bob)
    w.do(w.alice, w.alice.hangup(1.0, call_id))
    assert [p.first_line.split()[0] for p in w.net.sent(ALICE)][-2:] == ["CANCEL", "ACK"]
    (bob_end,) = _of(w.events(w.bob), CallStateChanged)
    assert (bob_end.state, bob_end.status, bob_end.reason) == (
        CallState.TERMINATED,
        487,
        "cancelled",
    )
    (alice_end,) = _of(w.events(w.alice), CallStateChanged)
    assert (alice_end.status, alice_end.reason) == (487, "cancelled")


def test_it_waits_for_a_provisional_before_cancelling() -> None:
    w = World()
    w.bob.config.timers = w.bob.layer.timers = type(w.bob.layer.timers)(trying_delay=None)
    call_id, out = w.alice.call(
        0.0, "sip:bob@10.0.0.2", build_offer("10.0.0.1", 4000, session_id="1")
    )
    w.do(w.alice, out)
    w.do(w.alice, w.alice.hangup(0.05, call_id))
    assert w.net.sent(ALICE, "CANCEL") == []  # RFC 3261 §9.1
    w.do(w.bob, w.bob.ring(0.1, call_id))
    assert len(w.net.sent(ALICE, "CANCEL")) == 1
    assert _states(w.events(w.alice))[-1] is CallState.TERMINATED


def test_it_reports_busy_and_decline() -> None:
    w = World()
    call_id, out = w.alice.call(
        0.0, "sip:bob@10.0.0.2", build_offer("10.0.0.1", 4000, session_id="1")
    )
    w.do(w.alice, out)
    w.do(w.bob, w.bob.reject(0.0, call_id, 486))
    end = _of(w.events(w.alice), CallStateChanged)[-1]
    assert (end.state, end.status, end.reason) == (CallState.TERMINATED, 486, "busy")
    call2, out = w.alice.call(
        1.0, "sip:bob@10.0.0.2", build_offer("10.0.0.1", 4000, session_id="1")
    )
    w.do(w.alice, out)
    w.do(w.bob, w.bob.hangup(1.0, call2))  # hangup on an unanswered incoming call = 603
    assert _of(w.events(w.alice), CallStateChanged)[-1].reason == "declined"


def test_it_retransmits_2xx_until_ack_when_the_first_200_is_lost() -> None:
    w = World()
    w.net.drop = lambda p: p.first_line.startswith("SIP/2.0 200") and p.time == 0.0
    w.connect_offer = build_offer("10.0.0.1", 4000, session_id="1")  # type: ignore[attr-defined]
    call_id, out = w.alice.call(0.0, "sip:bob@10.0.0.2", w.connect_offer)  # type: ignore[attr-defined]
    w.do(w.alice, out)
    (incoming,) = _of(w.events(w.bob), IncomingCall)
    answer = negotiate_answer(incoming.offer, "10.0.0.2", 5000, session_id="2")
    w.do(w.bob, w.bob.answer(0.0, call_id, answer))
    assert _states(w.events(w.alice)) == [CallState.CALLING]
    w.net.run_until(5)
    # §13.3.1.4: T1 after the first 200; the ACK stops further retransmissions.
    assert [round(p.time, 3) for p in w.net.sent(BOB, "SIP/2.0 200")] == [0.0, 0.5]
    assert _states(w.events(w.alice)) == [CallState.CONNECTED]
    assert w.bob.calls[call_id].ok is None


def test_it_hangs_up_when_the_ack_never_comes() -> None:
    w = World()
    w.net.drop = lambda p: p.first_line.startswith("ACK")
    _call_id, _ = w.connect(w.alice, w.bob)
    w.net.run_until(40)
    times = [round(p.time, 3) for p in w.net.sent(BOB, "SIP/2.0 200")]
    assert times[:5] == [0.0, 0.5, 1.5, 3.5, 7.5]
    assert all(b - a <= 4.0 for a, b in itertools.pairwise(times))
    assert len(w.net.sent(BOB, "BYE")) == 1  # after 64*T1 without ACK
    assert _of(w.events(w.bob), CallStateChanged)[-1].reason == "no-ack"


def test_it_holds_and_resumes_with_reinvite() -> None:
    w = World()
    call_a, _call_b = w.connect(w.alice, w.bob)
    w.do(w.alice, w.alice.hold(1.0, call_a))
    (bob_media,) = _of(w.events(w.bob), MediaUpdated)
    assert bob_media.remote_hold
    assert bob_media.media is not None and bob_media.media.direction == "recvonly"
    assert bob_media.local.audio is not None and bob_media.local.audio.direction == "recvonly"
    (alice_media,) = _of(w.events(w.alice), MediaUpdated)
    assert alice_media.media is not None and alice_media.media.direction == "sendonly"
    first_version = alice_media.local.origin.version
    w.do(w.alice, w.alice.unhold(2.0, call_a))
    (bob_media,) = _of(w.events(w.bob), MediaUpdated)
    assert not bob_media.remote_hold and bob_media.media is not None
    assert bob_media.media.direction == "sendrecv"
    (alice_media,) = _of(w.events(w.alice), MediaUpdated)
    assert alice_media.local.origin.version == first_version + 1
    # Each re-INVITE got a 2xx and an ACK.
    assert len(w.net.sent(ALICE, "ACK")) == 3


def test_it_resolves_reinvite_glare_with_491() -> None:
    w = World()
    call_a, call_b = w.connect(w.alice, w.bob)
    out_a = w.alice.hold(1.0, call_a)
    out_b = w.bob.hold(1.0, call_b)
    w.net.now = 1.0
    # The two re-INVITEs cross on the wire: each arrives while the other side's is pending.
    reply_b = w.bob.receive(1.0, out_a.send[0].data, ALICE)
    reply_a = w.alice.receive(1.0, out_b.send[0].data, BOB)
    w.do(w.bob, reply_b)
    w.do(w.alice, reply_a)
    assert len(w.net.sent(None, "SIP/2.0 491")) == 2
    w.net.run_until(10)
    assert w.alice.calls[call_a].reinvite is None and w.bob.calls[call_b].reinvite is None
    alice_media = _of(w.events(w.alice), MediaUpdated)
    assert alice_media and alice_media[-1].media is not None
    assert alice_media[-1].media.direction == "inactive"  # both sides on hold
    # RFC 3261 §14.1: the Call-ID owner (alice) retries in 2.1-4 s, bob in 0-2 s.
    retries = [p for p in w.net.sent(None, "INVITE") if p.time > 1.0]
    by = {p.src: p.time for p in retries}
    assert 3.1 <= by[ALICE] <= 5.0 and 1.0 <= by[BOB] <= 3.0


def test_it_answers_options_update_and_unknown_dialogs() -> None:
    w = World()
    probe = TransactionLayer(("10.0.0.9", 5060))
    w.net.add(probe)
    options = SipRequest("OPTIONS", w.alice.contact_uri)
    for name, value in [
        ("From", "<sip:probe@10.0.0.9>;tag=p1"),
        ("To", "<sip:alice@10.0.0.1>"),
        ("Call-ID", "probe-1"),
        ("CSeq", "1 OPTIONS"),
    ]:
        options.headers.add(name, value)
    w.net.deliver(probe, probe.send_request(0.0, options, ALICE)[1])
    response = parse_message(w.net.sent(ALICE)[-1].data)
    assert isinstance(response, SipResponse) and response.status == 200
    assert "INVITE" in (response.headers.get("allow") or "")
    bye = SipRequest("BYE", w.alice.contact_uri, options.headers.copy())
    bye.headers.set("to", "<sip:alice@10.0.0.1>;tag=nope")
    bye.headers.set("cseq", "2 BYE")
    bye.headers.remove("via")
    w.net.deliver(probe, probe.send_request(0.0, bye, ALICE)[1])
    response = parse_message(w.net.sent(ALICE)[-1].data)
    assert isinstance(response, SipResponse) and response.status == 481
    # In-dialog UPDATE without a body (session refresh) is answered 200.
    _call_a, call_b = w.connect(w.alice, w.bob)
    dialog = w.bob.calls[call_b].dialog
    assert dialog is not None
    update = dialog.create_request("UPDATE")
    w.do(w.bob, w.bob.layer.send_request(5.0, update, ALICE)[1])
    assert w.net.sent(ALICE)[-1].first_line == "SIP/2.0 200 OK"


def test_it_survives_garbage_and_answers_bad_sdp_with_400() -> None:
    w = World()
    out = w.alice.receive(0.0, b"\x00garbage\xff", BOB)
    assert _of(out.events, MalformedMessage) and out.send == []
    _call_id, out = w.alice.call(
        0.0, "sip:bob@10.0.0.2", build_offer("10.0.0.1", 4000, session_id="1")
    )
    invite = out.send[0].data.replace(b"v=0\r\n", b"v=X\r\n")
    out = w.bob.receive(0.0, invite, ALICE)
    statuses = [parse_message(s.data).status for s in out.send]  # type: ignore[union-attr]
    assert 400 in statuses
    assert not _of(out.events, IncomingCall)


def test_it_does_a_blind_transfer_with_refer_and_notify() -> None:
    w = World()
    call_a, call_b = w.connect(w.alice, w.bob)
    w.do(w.alice, w.alice.refer(1.0, call_a, "sip:carol@10.0.0.3:5060"))
    (request,) = _of(w.events(w.bob), TransferRequested)
    assert request.call_id == call_b and request.replaces is None
    assert str(request.target) == "sip:carol@10.0.0.3:5060"
    progress = _of(w.events(w.alice), TransferProgress)
    assert [(p.status, p.final) for p in progress] == [(202, False), (100, False)]
    # Bob calls carol, then reports success.
    _new_call, out = w.bob.call(1.0, request.target, build_offer("10.0.0.2", 6000, session_id="3"))
    w.do(w.bob, out)
    assert _of(w.events(w.carol), IncomingCall)
    w.do(w.bob, w.bob.transfer_progress(2.0, call_b, 200, "OK"))
    (done,) = _of(w.events(w.alice), TransferProgress)
    assert (done.status, done.final) == (200, True)
    notify = parse_message(w.net.sent(BOB, "NOTIFY")[-1].data)
    assert notify.headers.get("subscription-state") == "terminated;reason=noresource"
    assert notify.body == b"SIP/2.0 200 OK\r\n"


def test_it_does_an_attended_transfer_with_replaces() -> None:
    w = World()
    call_ab, _call_ba = w.connect(w.alice, w.bob)
    call_ac, call_ca = w.connect(w.alice, w.carol)
    w.do(w.alice, w.alice.refer(1.0, call_ab, "ignored", replaces_call=call_ac))
    (request,) = _of(w.events(w.bob), TransferRequested)
    assert request.target.host == "10.0.0.3" and request.replaces is not None
    assert request.replaces.startswith(call_ac)
    # Bob sends INVITE with Replaces to carol (RFC 3891); carol matches her dialog with alice.
    _new_call, out = w.bob.call(
        2.0,
        request.target,
        build_offer("10.0.0.2", 6000, session_id="3"),
        headers=[("Replaces", request.replaces)],
    )
    w.do(w.bob, out)
    (incoming,) = _of(w.events(w.carol), IncomingCall)
    assert incoming.replaces == call_ca
    # A Replaces naming no dialog gets 481.
    _bad, out = w.bob.call(
        3.0,
        request.target,
        build_offer("10.0.0.2", 6002, session_id="4"),
        headers=[("Replaces", "nope;to-tag=a;from-tag=b")],
    )
    w.do(w.bob, out)
    assert _of(w.events(w.bob), CallStateChanged)[-1].status == 481


def test_it_reports_message_summary_notify() -> None:
    w = World()
    w.alice.config.proxy_addr = PBX  # the SUBSCRIBE goes to the (absent) PBX
    out = w.alice.subscribe_mwi(0.0)
    subscribe = parse_message(out.send[0].data)
    assert subscribe.headers.get("event") == "message-summary"
    probe = TransactionLayer(("10.0.0.9", 5060))
    w.net.add(probe)
    notify = SipRequest("NOTIFY", w.alice.contact_uri)
    for name, value in [
        ("From", "<sip:alice@pbx.example.jp>;tag=pbx"),
        ("To", "<sip:alice@pbx.example.jp>"),
        ("Call-ID", "mwi-1"),
        ("CSeq", "1 NOTIFY"),
        ("Event", "message-summary"),
        ("Content-Type", "application/simple-message-summary"),
    ]:
        notify.headers.add(name, value)
    notify.body = (
        b"Messages-Waiting: yes\r\nMessage-Account: sip:*97@pbx\r\nVoice-Message: 2/8 (0/2)\r\n"
    )
    w.net.deliver(probe, probe.send_request(0.0, notify, ALICE)[1])
    (summary,) = _of(w.events(w.alice), MessageSummary)
    assert summary.waiting and (summary.new, summary.old) == (2, 8)


class FakeRegistrar:
    """A registrar with digest auth (MD5, qop=auth) built on our own transaction layer."""

    def __init__(self, addr: tuple[str, int], password: str, fail: int = 0) -> None:
        self.layer = TransactionLayer(addr)
        self.local_addr = addr
        self.password = password
        self.registered: dict[str, int] = {}
        self.fail = fail

    def next_timer(self) -> float | None:
        return self.layer.next_timer()

    def handle_timer(self, now: float) -> Output:
        return self.layer.handle_timer(now)

    def receive(self, now: float, data: bytes, source: tuple[str, int]) -> Output:
        out = self.layer.receive(now, data, source)
        for event in out.events:
            if isinstance(event, RequestReceived) and event.request.method == "REGISTER":
                out.send += self.layer.send_response(now, self._answer(event.request)).send
        return out

    def _answer(self, request: SipRequest) -> SipResponse:
        if self.fail:
            self.fail -= 1
            return make_response(request, 503, to_tag="r")
        auth = request.headers.get("authorization")
        challenge = 'Digest realm="pbx.example.jp", nonce="n0nce", qop="auth", algorithm=MD5'
        if auth is None:
            return make_response(
                request, 401, to_tag="r", headers=[("WWW-Authenticate", challenge)]
            )
        import re

        fields = {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', auth)}
        expected = digest_response(
            algorithm="MD5",
            username=fields["username"],
            password=self.password,
            realm=fields["realm"],
            method="REGISTER",
            uri=fields["uri"],
            nonce=fields["nonce"],
            qop=fields["qop"],
            nc=fields["nc"],
            cnonce=fields["cnonce"],
        )
        if fields["response"] != expected:
            return make_response(request, 403, to_tag="r")
        expires = int(request.headers.get("expires") or "0")
        self.registered[str(request.contacts[0].uri)] = expires
        response = make_response(request, 200, to_tag="r")
        response.headers.add("Contact", f"{request.headers.get('contact')};expires={expires}")
        return response


def test_it_registers_with_digest_and_refreshes() -> None:
    net = Network()
    registrar = FakeRegistrar(PBX, "alice-pw")
    net.add(registrar)
    alice = _ua("alice", ALICE, proxy=PBX)
    alice.config.expires = 120
    alice.registration.expires = 120
    net.add(alice)
    net.deliver(alice, alice.register(0.0))
    states = [e.state for e in _of(net.take_events(ALICE), RegistrationStateChanged)]
    assert states == [RegistrationState.REGISTERING, RegistrationState.REGISTERED]
    assert registrar.registered == {"sip:alice@10.0.0.1:5060": 120}
    assert alice.registration.next_timer() == 60.0
    assert alice.next_timer() == 5.0  # Timer K of the finished REGISTER transaction comes first
    net.run_until(61)
    assert len(net.sent(ALICE, "REGISTER")) == 3  # initial, with auth, refresh (pre-emptive auth)
    net.deliver(alice, alice.unregister(70.0))
    assert registrar.registered["sip:alice@10.0.0.1:5060"] == 0
    assert alice.registration.state is RegistrationState.UNREGISTERED


def test_it_reports_wrong_password_and_retries_later() -> None:
    net = Network()
    net.add(FakeRegistrar(PBX, "other"))
    alice = _ua("alice", ALICE, proxy=PBX)
    net.add(alice)
    net.deliver(alice, alice.register(0.0))
    changes = _of(net.take_events(ALICE), RegistrationStateChanged)
    assert changes[-1].state is RegistrationState.FAILED and changes[-1].reason.startswith("403")
    net.run_until(31)
    assert len(net.sent(ALICE, "REGISTER")) >= 3


def test_it_fails_registration_on_timeout() -> None:
    net = Network()
    alice = _ua("alice", ALICE, proxy=PBX)
    net.add(alice)
    net.deliver(alice, alice.register(0.0))
    net.run_until(33)
    changes = _of(net.take_events(ALICE), RegistrationStateChanged)
    assert changes[-1].state is RegistrationState.FAILED
    assert changes[-1].reason == "no response from the PBX"


def test_it_keeps_the_late_offer_answer_in_ack() -> None:
    w = World()
    call_id, _out = w.alice.call(
        0.0, "sip:bob@10.0.0.2", build_offer("10.0.0.1", 4000, session_id="1")
    )
    # Sanity for our own fixtures: offers are parseable both ways.
    assert parse_sdp(w.alice.calls[call_id].invite.body).audio is not None


def _probe_request(method: str, target: UserAgent, call_id: str, cseq: int) -> SipRequest:
    request = SipRequest(method, target.contact_uri)
    for name, value in [
        ("Max-Forwards", "70"),
        ("From", "<sip:probe@10.0.0.9>;tag=p1"),
        ("To", f"<sip:{target.config.username}@{target.local_addr[0]}>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", "<sip:probe@10.0.0.9:5060>"),
    ]:
        request.headers.add(name, value)
    return request


def test_it_puts_the_offer_in_200_for_an_offerless_invite() -> None:
    w = World()
    probe = TransactionLayer(("10.0.0.9", 5060))
    w.net.add(probe)
    invite = _probe_request("INVITE", w.bob, "late-1", 1)
    w.net.deliver(probe, probe.send_request(0.0, invite, BOB)[1])
    (incoming,) = _of(w.events(w.bob), IncomingCall)
    assert incoming.offer is None
    our_offer = build_offer("10.0.0.2", 5000, session_id="7")
    w.do(w.bob, w.bob.answer(0.0, "late-1", our_offer))
    ok = parse_message(w.net.sent(BOB, "SIP/2.0 200")[-1].data)
    assert isinstance(ok, SipResponse) and ok.body == our_offer.to_bytes()
    # The answer comes in the ACK (RFC 3261 §13.2.1).
    answer = negotiate_answer(parse_sdp(ok.body), "10.0.0.9", 7000, session_id="8")
    ack = SipRequest("ACK", invite.uri, invite.headers.copy(), answer.to_bytes())
    ack.headers.set("to", ok.headers.get("to") or "")
    ack.headers.set("cseq", "1 ACK")
    ack.headers.set("via", str(probe.make_via()))
    ack.headers.set("content-type", "application/sdp")
    w.net.deliver(probe, probe.send_stateless(ack, BOB))
    (media,) = _of(w.events(w.bob), MediaUpdated)
    assert media.media is not None and media.media.remote_port == 7000
    assert w.bob.calls["late-1"].ok is None


def test_it_authenticates_an_invite_after_407() -> None:
    net = Network()
    proxy = TransactionLayer(PBX)
    alice = _ua("alice", ALICE, proxy=PBX)
    net.add(proxy)
    net.add(alice)
    call_id, out = alice.call(0.0, "0312345678", build_offer("10.0.0.1", 4000, session_id="1"))
    net.deliver(alice, out)
    (first,) = [e for e in net.take_events(PBX) if isinstance(e, RequestReceived)]
    assert str(first.request.uri) == "sip:0312345678@pbx.example.jp"
    challenge = 'Digest realm="pbx.example.jp", nonce="xyz", algorithm=MD5'
    net.deliver(
        proxy,
        proxy.send_response(
            0.0,
            make_response(
                first.request, 407, to_tag="p", headers=[("Proxy-Authenticate", challenge)]
            ),
        ),
    )
    retried = [e for e in net.take_events(PBX) if isinstance(e, RequestReceived)]
    invites = [e.request for e in retried if e.request.method == "INVITE"]
    assert len(invites) == 1
    second = invites[0]
    assert second.call_id == first.request.call_id  # same call, new transaction and CSeq
    assert second.cseq.seq == first.request.cseq.seq + 1
    assert second.top_via.branch != first.request.top_via.branch
    assert "alice" in (second.headers.get("proxy-authorization") or "")
    assert len(net.sent(ALICE, "ACK")) == 1  # the 407 was ACKed by the transaction
    # Challenged again: wrong password, the call fails with 407.
    net.deliver(
        proxy,
        proxy.send_response(
            0.1,
            make_response(second, 407, to_tag="p", headers=[("Proxy-Authenticate", challenge)]),
        ),
    )
    end = _of(net.take_events(ALICE), CallStateChanged)[-1]
    assert (end.state, end.status) == (CallState.TERMINATED, 407)
    assert alice.calls[call_id].state is CallState.TERMINATED


def test_it_queues_a_hold_while_another_offer_is_pending() -> None:
    w = World()
    call_a, _ = w.connect(w.alice, w.bob)
    w.net.drop = lambda p: p.first_line.startswith("INVITE") and p.time < 0.4
    w.do(w.alice, w.alice.hold(0.0, call_a))  # lost once, retransmitted at T1
    assert w.alice.calls[call_a].reinvite is not None
    w.do(w.alice, w.alice.unhold(0.1, call_a))  # queued behind the pending re-INVITE
    w.net.run_until(5)
    assert w.alice.calls[call_a].reinvite is None
    medias = _of(w.events(w.alice), MediaUpdated)
    assert [m.media.direction for m in medias] == ["sendonly", "sendrecv"]


def _probe_world() -> tuple[Network, TransactionLayer, UserAgent]:
    net = Network()
    probe = TransactionLayer(("10.0.0.9", 5060))
    alice = _ua("alice", ALICE)
    net.add(probe)
    net.add(alice)
    return net, probe, alice


def _answer_sdp(request: SipRequest, port: int = 7000) -> bytes:
    return negotiate_answer(parse_sdp(request.body), "10.0.0.9", port, session_id="9").to_bytes()


def test_it_reports_early_media_from_183() -> None:
    net, probe, alice = _probe_world()
    _call_id, out = alice.call(0.0, "sip:x@10.0.0.9", build_offer("10.0.0.1", 4000, session_id="1"))
    net.deliver(alice, out)
    (event,) = [e for e in net.take_events(probe.local_addr) if isinstance(e, RequestReceived)]
    progress = make_response(
        event.request,
        183,
        to_tag="e1",
        headers=[("Content-Type", "application/sdp")],
        body=_answer_sdp(event.request),
    )
    net.deliver(probe, probe.send_response(0.1, progress))
    events = net.take_events(ALICE)
    assert _states(events) == [CallState.CALLING, CallState.RINGING]
    (media,) = _of(events, MediaUpdated)
    assert media.early and media.media is not None and media.media.remote_port == 7000


def test_it_acks_and_hangs_up_a_second_forked_2xx() -> None:
    net, probe, alice = _probe_world()
    call_id, out = alice.call(0.0, "sip:x@10.0.0.9", build_offer("10.0.0.1", 4000, session_id="1"))
    net.deliver(alice, out)
    (event,) = [e for e in net.take_events(probe.local_addr) if isinstance(e, RequestReceived)]
    for tag in ("fork1", "fork2"):
        ok = make_response(
            event.request,
            200,
            to_tag=tag,
            headers=[("Contact", f"<sip:{tag}@10.0.0.9>"), ("Content-Type", "application/sdp")],
            body=_answer_sdp(event.request),
        )
        net.deliver(probe, probe.send_response(0.1, ok))
    acks = [parse_message(p.data) for p in net.sent(ALICE, "ACK")]
    assert [a.to_addr.tag for a in acks] == ["fork1", "fork2"]
    (bye,) = [parse_message(p.data) for p in net.sent(ALICE, "BYE")]
    assert bye.to_addr.tag == "fork2" and str(bye.uri) == "sip:fork2@10.0.0.9"
    dialog = alice.calls[call_id].dialog
    assert dialog is not None and dialog.remote_tag == "fork1"
    assert alice.calls[call_id].state is CallState.CONNECTED


def test_it_times_out_an_unanswered_invite_with_timer_b() -> None:
    net, probe, alice = _probe_world()
    net.endpoints.pop(probe.local_addr)
    _call_id, out = alice.call(0.0, "sip:x@10.0.0.9", build_offer("10.0.0.1", 4000, session_id="1"))
    net.deliver(alice, out)
    net.run_until(40)
    end = _of(net.take_events(ALICE), CallStateChanged)[-1]
    assert (end.state, end.status, end.reason) == (CallState.TERMINATED, 408, "timeout")
    assert len(net.sent(ALICE, "INVITE")) == 7


def test_it_answers_update_and_offerless_reinvite() -> None:
    w = World()
    _call_a, call_b = w.connect(w.alice, w.bob)
    dialog = w.bob.calls[call_b].dialog
    assert dialog is not None
    # UPDATE with a new offer: answered in the 200 (RFC 3311), media moves to the new port.
    offer = build_offer("10.0.0.2", 50002, session_id="2", version=5)
    update = dialog.create_request(
        "UPDATE", headers=[("Content-Type", "application/sdp")], body=offer.to_bytes()
    )
    net = w.net
    net.now = 1.0
    probe_out = w.bob.layer.send_request(1.0, update, ALICE)[1]
    w.do(w.bob, probe_out)
    (media,) = _of(w.events(w.alice), MediaUpdated)
    assert media.media is not None and media.media.remote_port == 50002
    # An offer-less re-INVITE gets our current SDP as the offer in the 200.
    reinvite = dialog.create_request("INVITE")
    w.do(w.bob, w.bob.layer.send_request(2.0, reinvite, ALICE)[1])
    ok = parse_message(w.net.sent(ALICE, "SIP/2.0 200")[-1].data)
    assert ok.cseq.method == "INVITE" and b"m=audio 40000" in ok.body


def test_it_takes_mwi_notify_inside_the_subscription_dialog() -> None:
    net = Network()
    pbx = TransactionLayer(PBX)
    alice = _ua("alice", ALICE, proxy=PBX)
    net.add(pbx)
    net.add(alice)
    net.deliver(alice, alice.subscribe_mwi(0.0, expires=600))
    (sub,) = [e for e in net.take_events(PBX) if isinstance(e, RequestReceived)]
    net.deliver(
        pbx,
        pbx.send_response(
            0.0, make_response(sub.request, 200, to_tag="s1", headers=[("Expires", "600")])
        ),
    )
    notify = SipRequest("NOTIFY", alice.contact_uri, body=b"Messages-Waiting: no\r\n")
    for name, value in [
        ("From", "<sip:alice@pbx.example.jp>;tag=s1"),
        ("To", sub.request.headers.get("from") or ""),
        ("Call-ID", sub.request.call_id),
        ("CSeq", "1 NOTIFY"),
        ("Event", "message-summary"),
        ("Subscription-State", "active;expires=600"),
    ]:
        notify.headers.add(name, value)
    net.deliver(pbx, pbx.send_request(0.1, notify, ALICE)[1])
    (summary,) = _of(net.take_events(ALICE), MessageSummary)
    assert not summary.waiting
    # The subscription is refreshed before it expires.
    net.run_until(300)
    subscribes = [e for e in net.take_events(PBX) if isinstance(e, RequestReceived)]
    assert [e.request.method for e in subscribes] == ["SUBSCRIBE"]
    assert subscribes[0].request.cseq.seq == sub.request.cseq.seq + 1


def test_it_presents_a_line_number_in_from_and_extra_headers() -> None:
    # 発番号選択: another of our numbers in From; identity headers pass through untouched.
    w = World()
    offer = build_offer("10.0.0.1", 40000, session_id="1")
    call_id, out = w.alice.call(
        0.0,
        "sip:bob@10.0.0.2:5060",
        offer,
        from_user="0311112222",
        headers=[("P-Preferred-Identity", "<sip:0311112222@pbx.example.jp>")],
    )
    w.do(w.alice, out)
    (incoming,) = _of(w.events(w.bob), IncomingCall)
    assert incoming.caller.uri.user == "0311112222"
    assert incoming.caller.tag  # still a proper From with our tag
    invite = w.alice.calls[call_id].invite
    assert invite.headers.get("p-preferred-identity") == "<sip:0311112222@pbx.example.jp>"
    assert w.alice.aor.user == "alice"  # our own AoR is unchanged


# ---------------------------------------------------------------- hold outcome (HoldChanged)


def _connected_to_probe() -> tuple[Network, TransactionLayer, UserAgent, str]:
    """Alice in a call with a bare transaction layer, so the test writes the peer's answers."""
    net, probe, alice = _probe_world()
    call_id, out = alice.call(0.0, "sip:x@10.0.0.9", build_offer("10.0.0.1", 4000, session_id="1"))
    net.deliver(alice, out)
    (event,) = [e for e in net.take_events(probe.local_addr) if isinstance(e, RequestReceived)]
    ok = make_response(
        event.request,
        200,
        to_tag="peer",
        headers=[("Contact", "<sip:peer@10.0.0.9>"), ("Content-Type", "application/sdp")],
        body=_answer_sdp(event.request),
    )
    net.deliver(probe, probe.send_response(0.1, ok))
    assert alice.calls[call_id].state is CallState.CONNECTED
    net.take_events(ALICE)
    net.take_events(probe.local_addr)
    return net, probe, alice, call_id


def _answer_reinvite(net: Network, probe: TransactionLayer, status: int) -> None:
    (event,) = [
        e
        for e in net.take_events(probe.local_addr)
        if isinstance(e, RequestReceived) and e.request.method == "INVITE"
    ]
    if status == 200:
        response = make_response(
            event.request,
            200,
            headers=[("Contact", "<sip:peer@10.0.0.9>"), ("Content-Type", "application/sdp")],
            body=_answer_sdp(event.request),
        )
    else:
        response = make_response(event.request, status)
    net.deliver(probe, probe.send_response(net.now, response))


def test_it_reports_hold_and_unhold_accepted() -> None:
    w = World()
    call_a, _call_b = w.connect(w.alice, w.bob)
    w.do(w.alice, w.alice.hold(1.0, call_a))
    (held,) = _of(w.events(w.alice), HoldChanged)
    assert held == HoldChanged(call_a, held=True, ok=True, status=200)
    w.do(w.alice, w.alice.unhold(2.0, call_a))
    (resumed,) = _of(w.events(w.alice), HoldChanged)
    assert resumed == HoldChanged(call_a, held=False, ok=True, status=200)
    assert _of(w.events(w.bob), HoldChanged) == []  # the peer's side is MediaUpdated.remote_hold


def test_it_reports_a_refused_hold_and_stays_off_hold() -> None:
    net, probe, alice, call_id = _connected_to_probe()
    net.deliver(alice, alice.hold(1.0, call_id))
    _answer_reinvite(net, probe, 488)
    (refused,) = _of(net.take_events(ALICE), HoldChanged)
    assert refused == HoldChanged(
        call_id, held=False, ok=False, status=488, reason="Not Acceptable Here"
    )
    call = alice.calls[call_id]
    assert not call.local_hold and call.reinvite is None and call.state is CallState.CONNECTED
    # Held for real, then a refused unhold: we stay held.
    net.deliver(alice, alice.hold(2.0, call_id))
    _answer_reinvite(net, probe, 200)
    net.deliver(alice, alice.unhold(3.0, call_id))
    _answer_reinvite(net, probe, 403)
    changes = _of(net.take_events(ALICE), HoldChanged)
    assert [(c.held, c.ok, c.status) for c in changes] == [(True, True, 200), (True, False, 403)]
    assert call.local_hold


def test_it_reports_only_the_outcome_of_the_retry_after_491() -> None:
    net, probe, alice, call_id = _connected_to_probe()
    net.now = 1.0
    net.deliver(alice, alice.hold(1.0, call_id))
    _answer_reinvite(net, probe, 491)
    assert _of(net.take_events(ALICE), HoldChanged) == []
    net.run_until(5.0)  # RFC 3261 §14.1: the Call-ID owner retries after 2.1-4 s
    _answer_reinvite(net, probe, 200)
    (held,) = _of(net.take_events(ALICE), HoldChanged)
    assert held == HoldChanged(call_id, held=True, ok=True, status=200)
    assert len(net.sent(ALICE, "INVITE")) == 3  # call, hold, retried hold


def test_it_retries_the_newest_hold_request_after_491() -> None:
    # hold(), then unhold() while the hold is pending; the hold meets glare: the retry must
    # carry what the user wants now (resumed), not the stale hold.
    net, probe, alice, call_id = _connected_to_probe()
    net.now = 1.0
    net.deliver(alice, alice.hold(1.0, call_id))
    net.deliver(alice, alice.unhold(1.05, call_id))
    _answer_reinvite(net, probe, 491)
    net.run_until(5.0)
    retry = parse_message(net.sent(ALICE, "INVITE")[-1].data)
    assert b"a=sendrecv" in retry.body
    _answer_reinvite(net, probe, 200)
    (outcome,) = _of(net.take_events(ALICE), HoldChanged)
    assert outcome == HoldChanged(call_id, held=False, ok=True, status=200)


def test_it_reports_no_hold_outcome_when_the_dialog_is_gone() -> None:
    net, probe, alice, call_id = _connected_to_probe()
    net.deliver(alice, alice.hold(1.0, call_id))
    _answer_reinvite(net, probe, 481)
    events = net.take_events(ALICE)
    assert _of(events, HoldChanged) == []
    assert _states(events) == [CallState.TERMINATED]


def test_it_acks_every_retransmitted_2xx_to_a_reinvite() -> None:
    # The first ACK is lost: the peer retransmits its 2xx (§13.3.1.4) until an ACK arrives.
    w = World()
    call_a, _call_b = w.connect(w.alice, w.bob)
    w.net.drop = lambda p: p.first_line.startswith("ACK") and p.time == 1.0
    w.net.now = 1.0
    w.do(w.alice, w.alice.hold(1.0, call_a))
    w.net.run_until(40.0)
    assert [p.time for p in w.net.sent(BOB, "SIP/2.0 200")][-2:] == [1.0, 1.5]
    acks = [parse_message(p.data) for p in w.net.sent(ALICE, "ACK") if p.time >= 1.0]
    assert len(acks) == 2 and acks[0].cseq == acks[1].cseq
    assert len(_of(w.events(w.alice), HoldChanged)) == 1


# ---------------------------------------------------------------- ring timeout


def test_it_gives_up_an_unanswered_call_after_ring_timeout() -> None:
    w = World()
    w.bob.config.ring_timeout = 30.0
    call_id, out = w.alice.call(
        0.0, "sip:bob@10.0.0.2", build_offer("10.0.0.1", 4000, session_id="1")
    )
    w.do(w.alice, out)
    w.do(w.bob, w.bob.ring(0.0, call_id))
    w.events(w.alice)
    w.events(w.bob)
    w.net.run_until(29.9)
    assert w.bob.calls[call_id].state is CallState.INCOMING
    w.net.run_until(31.0)
    (final,) = w.net.sent(BOB, "SIP/2.0 480")
    assert final.time == 30.0
    (bob_end,) = _of(w.events(w.bob), CallStateChanged)
    assert (bob_end.state, bob_end.status, bob_end.reason) == (
        CallState.TERMINATED,
        480,
        "no-answer",
    )
    (alice_end,) = _of(w.events(w.alice), CallStateChanged)
    assert (alice_end.state, alice_end.status) == (CallState.TERMINATED, 480)


def test_it_forgets_the_ring_timeout_once_answered_rejected_or_cancelled() -> None:
    w = World()
    w.bob.config.ring_timeout = 30.0
    offer = build_offer("10.0.0.1", 4000, session_id="1")
    answered, out = w.alice.call(0.0, "sip:bob@10.0.0.2", offer)
    w.do(w.alice, out)
    rejected, out = w.alice.call(0.0, "sip:bob@10.0.0.2", offer)
    w.do(w.alice, out)
    cancelled, out = w.alice.call(0.0, "sip:bob@10.0.0.2", offer)
    w.do(w.alice, out)
    w.do(w.bob, w.bob.ring(0.0, cancelled))
    (incoming, _, _) = _of(w.events(w.bob), IncomingCall)
    answer = negotiate_answer(incoming.offer, "10.0.0.2", 5000, session_id="2")
    w.net.now = 5.0
    w.do(w.bob, w.bob.answer(5.0, answered, answer))
    w.do(w.bob, w.bob.reject(5.0, rejected, 486))
    w.do(w.alice, w.alice.hangup(5.0, cancelled))
    w.net.run_until(100.0)
    assert w.net.sent(BOB, "SIP/2.0 480") == []
    ends = {e.call_id: (e.status, e.reason) for e in _of(w.events(w.bob), CallStateChanged)}
    assert ends[rejected] == (486, "busy") and ends[cancelled] == (487, "cancelled")
    assert w.bob.calls[answered].state is CallState.CONNECTED


# ---------------------------------------------------------------- trusted sources

SCANNER = ("198.51.100.66", 5070)

# What SIP scanners send to every address they find (sipvicious' "friendly-scanner").
SCANNER_OPTIONS = crlf(
    """OPTIONS sip:100@10.0.0.2 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.66:5070;branch=z9hG4bK-1794395614;rport
Max-Forwards: 70
To: "sipvicious"<sip:100@1.1.1.1>
From: "sipvicious"<sip:100@1.1.1.1>;tag=6131663236346133313363340131363935333733343837
User-Agent: friendly-scanner
Call-ID: 818239472812638145838113
CSeq: 1 OPTIONS
Contact: <sip:100@198.51.100.66:5070>
Accept: application/sdp
Content-Length: 0

"""
)

SCANNER_INVITE = crlf(
    """INVITE sip:011972592340046@10.0.0.2 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.66:5070;branch=z9hG4bK-524287-1---3e2bdd0c5bd0b1ba;rport
Max-Forwards: 70
Contact: <sip:100@198.51.100.66:5070>
To: <sip:011972592340046@10.0.0.2>
From: <sip:100@10.0.0.2>;tag=ad8a1d5e
Call-ID: NTY2NzE2ZTE5ZWY2NjM5NDNhZDk0YTQ4ZTk5MDhjNTI.
CSeq: 1 INVITE
User-Agent: Z 3.15.40006 rv2.8.20
Content-Type: application/sdp
Content-Length: AUTO

v=0
o=Z 0 0 IN IP4 198.51.100.66
s=Z
c=IN IP4 198.51.100.66
t=0 0
m=audio 8000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""
)

SCANNER_ACK = crlf(
    """ACK sip:100@10.0.0.2 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.66:5070;branch=z9hG4bK-ack-1;rport
Max-Forwards: 70
To: <sip:100@10.0.0.2>;tag=whatever
From: <sip:100@10.0.0.2>;tag=ad8a1d5e
Call-ID: stray-ack-1
CSeq: 1 ACK
Content-Length: 0

"""
)


def _guarded(transport: str = "UDP", proxy: tuple[str, int] | None = PBX) -> UserAgent:
    return UserAgent(
        UserAgentConfig(
            username="bob",
            domain="pbx.example.jp",
            local_addr=BOB,
            proxy_addr=proxy,
            transport=transport,
            trusted_sources=frozenset({PBX}),
        ),
        rng=random.Random(7),
    )


def _statuses(out: Any) -> list[int]:
    return [parse_message(s.data).status for s in out.send]  # type: ignore[union-attr]


def test_it_refuses_out_of_dialog_requests_from_untrusted_sources() -> None:
    bob = _guarded()
    out = bob.receive(0.0, SCANNER_OPTIONS, SCANNER)
    assert _statuses(out) == [403]  # RFC 3261 §21.4.4
    assert out.send[0].addr == SCANNER
    assert _of(out.events, UntrustedRequests) == [UntrustedRequests(1, SCANNER, "OPTIONS")]
    out = bob.receive(1.0, SCANNER_INVITE, SCANNER)
    assert _statuses(out) == [403]
    assert _of(out.events, IncomingCall) == [] and bob.calls == {}
    out = bob.receive(1.2, SCANNER_ACK, SCANNER)
    assert out.send == []  # an ACK is only dropped
    # The same address at another port is someone else over UDP.
    options = SCANNER_OPTIONS.replace(
        b"198.51.100.66:5070;branch=z9hG4bK-1", b"10.0.0.100:5070;branch=z9hG4bK-2"
    )
    out = bob.receive(2.0, options, (PBX[0], 5070))
    assert _statuses(out) == [403] and out.send[0].addr == (PBX[0], 5070)
    assert bob.untrusted_requests == 4
    # At most one report a minute: the rest is counted and reported when the minute is up.
    assert _of(out.events, UntrustedRequests) == []
    early: list[Any] = []
    while (t := bob.next_timer()) is not None and t < 60.0:
        early += bob.handle_timer(t).events  # the 403s' own transaction timers
    assert _of(early, UntrustedRequests) == [] and bob.next_timer() == 60.0
    out = bob.handle_timer(60.0)
    assert _of(out.events, UntrustedRequests) == [UntrustedRequests(3, (PBX[0], 5070), "OPTIONS")]
    assert _of(bob.handle_timer(200.0).events, UntrustedRequests) == []
    out = bob.receive(200.0, SCANNER_INVITE.replace(b"NTY2", b"XXY2"), SCANNER)
    assert _of(out.events, UntrustedRequests) == [UntrustedRequests(1, SCANNER, "INVITE")]
    assert bob.untrusted_requests == 5


def test_it_takes_new_calls_from_the_pbx_and_dialog_requests_from_anyone() -> None:
    net = Network()
    pbx = TransactionLayer(PBX)
    bob = _guarded(proxy=None)
    alice = _ua("alice", ALICE)
    for endpoint in (pbx, bob, alice):
        net.add(endpoint)
    invite = _probe_request("INVITE", bob, "from-pbx-1", 1)
    net.deliver(pbx, pbx.send_request(0.0, invite, BOB)[1])
    assert _of(net.take_events(BOB), IncomingCall)
    # Bob calls alice directly; her re-INVITE and BYE come from her own (untrusted) address.
    _call_b, out = bob.call(
        1.0, "sip:alice@10.0.0.1", build_offer("10.0.0.2", 5000, session_id="5")
    )
    net.deliver(bob, out)
    (incoming,) = _of(net.take_events(ALICE), IncomingCall)
    answer = negotiate_answer(incoming.offer, "10.0.0.1", 4000, session_id="6")
    net.deliver(alice, alice.answer(1.0, incoming.call_id, answer))
    assert CallState.CONNECTED in _states(net.take_events(BOB))
    net.deliver(alice, alice.hold(2.0, incoming.call_id))
    assert _of(net.take_events(ALICE), HoldChanged)[0].ok
    net.deliver(alice, alice.hangup(3.0, incoming.call_id))
    assert _of(net.take_events(BOB), CallStateChanged)[-1].reason == "remote-bye"
    assert bob.untrusted_requests == 0


def test_it_matches_only_the_address_of_trusted_sources_over_tcp() -> None:
    bob = _guarded("TCP")
    invite = SCANNER_INVITE.replace(b"SIP/2.0/UDP 198.51.100.66:5070", b"SIP/2.0/TCP 10.0.0.100")
    out = bob.receive(0.0, invite, (PBX[0], 40312))  # the proxy's connection: ephemeral port
    assert _of(out.events, IncomingCall) and bob.untrusted_requests == 0
    scan = SCANNER_INVITE.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP").replace(b"NTY2", b"XXY2")
    out = bob.receive(0.0, scan, SCANNER)
    assert _statuses(out) == [403] and bob.untrusted_requests == 1


def test_it_refuses_a_cancel_from_anywhere_unless_it_matches_an_invite() -> None:
    bob = _guarded()
    cancel = SCANNER_INVITE.split(b"Content-Type")[0].replace(b"INVITE", b"CANCEL") + (
        b"Content-Length: 0\r\n\r\n"
    )
    out = bob.receive(0.0, cancel, SCANNER)
    assert _statuses(out) == [403] and bob.untrusted_requests == 1
    # A CANCEL of the PBX's INVITE is taken, whatever port it arrives from.
    invite = SCANNER_INVITE.replace(b"198.51.100.66:5070", b"10.0.0.100:5060")
    bob.receive(0.0, invite, PBX)
    out = bob.receive(1.0, cancel.replace(b"198.51.100.66:5070", b"10.0.0.100:5060"), SCANNER)
    assert sorted(_statuses(out)) == [200, 487]
    assert _of(out.events, CallStateChanged)[-1].reason == "cancelled"
    assert bob.untrusted_requests == 1
