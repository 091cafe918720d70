from __future__ import annotations

from phone.sip.dialog import (
    Dialog,
    DialogState,
    next_hop,
    request_dialog_id,
    response_dialog_id,
)
from phone.sip.message import SipRequest, SipResponse, Via, make_response, parse_message
from phone.sip.uri import parse_address

from .messages import INVITE


def _invite() -> SipRequest:
    msg = parse_message(INVITE)
    assert isinstance(msg, SipRequest)
    return msg


def _ok(request: SipRequest, status: int = 200) -> SipResponse:
    response = make_response(request, status, to_tag="bobtag")
    response.headers.add("Record-Route", "<sip:p2.example.com;lr>, <sip:p1.example.com;lr>")
    response.headers.add("Contact", "<sip:bob@192.0.2.4:5070>")
    return response


def test_it_creates_the_uac_dialog_from_2xx() -> None:
    invite = _invite()
    dialog = Dialog.from_uac(invite, _ok(invite))
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.id == ("3848276298220188511@atlanta.example.com", "9fxced76sl", "bobtag")
    assert dialog.id == response_dialog_id(_ok(invite))
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4:5070"
    # §12.1.2: reversed Record-Route.
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]
    assert dialog.local_seq == 1


def test_it_builds_in_dialog_requests_with_loose_routing() -> None:
    invite = _invite()
    dialog = Dialog.from_uac(invite, _ok(invite))
    bye = dialog.create_request("BYE", via=Via("UDP", "192.0.2.101", 5060, {"branch": "z9hG4bKb"}))
    assert str(bye.uri) == "sip:bob@192.0.2.4:5070"
    assert bye.cseq.seq == 2 and bye.cseq.method == "BYE"
    assert bye.from_addr.tag == "9fxced76sl" and bye.to_addr.tag == "bobtag"
    assert [str(r.uri) for r in bye.routes] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert str(next_hop(bye)) == "sip:p1.example.com;lr"
    parse_message(bytes(bye))  # valid on the wire
    ack = dialog.create_ack(1)
    assert ack.cseq.seq == 1 and ack.cseq.method == "ACK"
    assert dialog.local_seq == 2


def test_it_handles_strict_routing() -> None:
    invite = _invite()
    response = make_response(invite, 200, to_tag="t")
    response.headers.add("Record-Route", "<sip:strict.example.com>")
    response.headers.add("Contact", "<sip:bob@192.0.2.4>")
    dialog = Dialog.from_uac(invite, response)
    request = dialog.create_request("INFO")
    assert str(request.uri) == "sip:strict.example.com"
    assert [str(r.uri) for r in request.routes] == ["sip:bob@192.0.2.4"]


def test_it_creates_the_uas_dialog_and_checks_cseq_order() -> None:
    invite = _invite()
    invite.headers.add("Record-Route", "<sip:p1.example.com;lr>")
    dialog = Dialog.from_uas(invite, "mytag", parse_address("<sip:bob@192.0.2.4>"))
    assert dialog.id == ("3848276298220188511@atlanta.example.com", "mytag", "9fxced76sl")
    assert str(dialog.remote_target) == "sip:alice@client.atlanta.example.com;transport=udp"
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p1.example.com;lr"]
    assert dialog.remote_seq == 1
    reinvite = dialog.create_request("INVITE")  # our own sequence space
    assert reinvite.to_addr.tag == "9fxced76sl" and reinvite.from_addr.tag == "mytag"
    assert reinvite.contacts[0].uri.host == "192.0.2.4"
    # Incoming requests: in order accepted; old CSeq → 500 (§12.2.2); target refresh.
    bye = SipRequest("BYE", invite.uri, invite.headers.copy())
    bye.headers.set("cseq", "1 BYE")
    assert dialog.receive_request(bye) == 500
    refresh = SipRequest("INVITE", invite.uri, invite.headers.copy())
    refresh.headers.set("cseq", "5 INVITE")
    refresh.headers.set("contact", "<sip:alice@198.51.100.1:6000>")
    assert dialog.receive_request(refresh) is None
    assert dialog.remote_seq == 5 and dialog.remote_target.port == 6000
    to = parse_address(invite.headers.get("to") or "")
    to.tag = "mytag"
    refresh.headers.set("to", str(to))
    assert request_dialog_id(refresh) == dialog.id


def test_it_confirms_an_early_dialog_and_recomputes_routes() -> None:
    invite = _invite()
    ringing = make_response(invite, 180, to_tag="bobtag")
    ringing.headers.add("Contact", "<sip:bob@early>")
    dialog = Dialog.from_uac(invite, ringing)
    assert dialog.state is DialogState.EARLY and dialog.route_set == []
    dialog.confirm(_ok(invite))
    assert dialog.state is DialogState.CONFIRMED
    assert len(dialog.route_set) == 2 and dialog.remote_target.host == "192.0.2.4"
