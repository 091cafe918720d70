from __future__ import annotations

import pytest

from phone.sip.errors import SipParseError
from phone.sip.message import (
    Headers,
    SipRequest,
    SipResponse,
    StreamFramer,
    Via,
    build_error_response,
    make_response,
    parse_message,
)

from .messages import COMPACT, INVITE, REGISTER_401, RESPONSE_180, crlf


def test_it_parses_an_invite_with_body() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, SipRequest)
    assert msg.method == "INVITE"
    assert msg.uri.user == "bob"
    assert msg.call_id == "3848276298220188511@atlanta.example.com"
    assert msg.cseq.seq == 1 and msg.cseq.method == "INVITE"
    assert msg.from_addr.tag == "9fxced76sl"
    assert msg.from_addr.display_name == "Alice A."
    assert msg.to_addr.tag is None
    assert msg.contacts[0].uri.transport == "udp"
    assert msg.content_type == "application/sdp"
    assert len(msg.body) == 151
    assert msg.body.startswith(b"v=0\r\no=alice")


def test_it_round_trips_request_and_response() -> None:
    for raw in (INVITE, RESPONSE_180, COMPACT, REGISTER_401):
        msg = parse_message(raw)
        again = parse_message(bytes(msg))
        assert bytes(again) == bytes(msg)
        assert type(again) is type(msg)
        assert list(again.headers) == list(msg.headers)
        assert again.body == msg.body


def test_it_parses_a_response() -> None:
    msg = parse_message(RESPONSE_180)
    assert isinstance(msg, SipResponse)
    assert msg.status == 180 and msg.reason == "Ringing"
    assert msg.to_addr.tag == "8321234356"
    assert msg.top_via.received == "192.0.2.101"


def test_it_expands_compact_forms_and_splits_lists() -> None:
    msg = parse_message(COMPACT)
    assert msg.call_id == "compact-1@host1"
    vias = msg.vias
    assert [v.branch for v in vias] == ["z9hG4bKcomp1", "z9hG4bKcomp2"]
    assert vias[1].transport == "TCP" and vias[1].port == 5070
    assert vias[1].received == "10.0.0.2"
    assert msg.from_addr.display_name == "Doe, John"
    assert msg.to_addr.uri.user == "carol"
    assert msg.cseq.seq == 8
    contacts = msg.contacts
    assert len(contacts) == 2
    assert contacts[0].display_name == "A, B"
    assert contacts[1].params["q"] == "0.5" and contacts[1].uri.lr
    assert msg.headers.get_all("supported") == ["replaces", "timer"]
    assert "Content-Length" not in msg.headers
    out = bytes(msg).decode()
    assert "Call-ID: compact-1@host1" in out and "Supported: replaces, timer" in out


def test_it_does_not_split_auth_headers_on_commas() -> None:
    msg = parse_message(REGISTER_401)
    values = msg.headers.get_all("www-authenticate")
    assert len(values) == 1 and 'nonce="abc,def"' in values[0]


def test_it_parses_via_with_rport_and_received() -> None:
    via = Via.parse("SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKx;rport=5062;received=198.51.100.7")
    assert via.sent_by == ("192.0.2.4", 5060)
    assert via.rport == 5062 and via.has_rport
    assert via.received == "198.51.100.7"
    empty = Via.parse("SIP/2.0/UDP h;rport;branch=z9hG4bKy")
    assert empty.has_rport and empty.rport is None
    assert str(empty) == "SIP/2.0/UDP h;rport;branch=z9hG4bKy"
    assert Via.parse("SIP/2.0/TLS h").sent_by == ("h", 5061)
    with pytest.raises(SipParseError):
        Via.parse("SIP/2.0/UDP h;rport=abc")


def test_it_truncates_datagram_body_to_content_length() -> None:
    raw = INVITE + b"garbage"
    assert parse_message(raw).body == parse_message(INVITE).body
    with pytest.raises(SipParseError):
        parse_message(raw, datagram=False)


def test_it_treats_missing_content_length_on_datagram_as_rest() -> None:
    raw = INVITE.replace(b"Content-Length: 151\r\n", b"")
    assert len(parse_message(raw).body) == 151


def test_it_accepts_bare_lf_and_leading_crlf() -> None:
    head, _, body = INVITE.partition(b"\r\n\r\n")
    raw = b"\r\n\r\n" + head.replace(b"\r\n", b"\n") + b"\n\n" + body
    msg = parse_message(raw)
    assert msg.call_id.startswith("3848")


def _mutate(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert old in raw
    return raw.replace(old, new, 1)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"INVITE\r\n\r\n",
        b"SIP/2.0 9999 Bad\r\n\r\n",
        b"SIP/2.0 099 Bad\r\n\r\n",
        b"SIP/3.0 200 OK\r\n\r\n",
        _mutate(INVITE, b"SIP/2.0\r\n", b"SIP/7.0\r\n"),
        _mutate(INVITE, b"Content-Length: 151", b"Content-Length: 9999"),
        _mutate(INVITE, b"Content-Length: 151", b"Content-Length: -1"),
        _mutate(INVITE, b"Content-Length: 151", b"Content-Length: 151\r\nl: 3"),
        _mutate(INVITE, b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),
        _mutate(INVITE, b"CSeq: 1 INVITE", b"CSeq: 99999999999 INVITE"),
        _mutate(INVITE, b"CSeq: 1 INVITE", b"CSeq: INVITE"),
        _mutate(INVITE, b"Call-ID: 3848276298220188511@atlanta.example.com\r\n", b""),
        _mutate(INVITE, b"Via: SIP/2.0/UDP", b"Via: SIP/2.0 UDP"),
        _mutate(INVITE, b"To: Bob <sip:bob@biloxi.example.com>", b"To: Bob <sip:bob@biloxi"),
        _mutate(INVITE, b"Max-Forwards: 70", b"Max-Forwards: seventy"),
        _mutate(INVITE, b"Max-Forwards: 70", b"Max-Forwards 70"),
        _mutate(INVITE, b"sip:bob@biloxi.example.com SIP", b"bob@biloxi SIP"),
        _mutate(INVITE, b"Alice A.", b"Alice \xff\xfe"),
        _mutate(INVITE, b"Contact: <sip:alice", b"Contact: <sip:al%gice"),
    ],
)
def test_it_raises_only_sip_parse_error_on_malformed_input(raw: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(raw)


def test_it_builds_responses_per_rfc3261_8_2_6() -> None:
    request = parse_message(COMPACT)
    assert isinstance(request, SipRequest)
    response = make_response(request, 200, to_tag="totag1", headers=[("Allow", "INVITE, ACK")])
    assert response.reason == "OK"
    assert [v.branch for v in response.vias] == ["z9hG4bKcomp1", "z9hG4bKcomp2"]
    assert response.to_addr.tag == "totag1"
    assert response.from_addr.tag == "abc"
    assert response.call_id == request.call_id
    assert response.cseq == request.cseq
    parsed = parse_message(bytes(response))
    assert isinstance(parsed, SipResponse) and parsed.status == 200
    # An existing To tag is kept; 100 Trying never gets one and copies Timestamp.
    request.headers.add("Timestamp", "54")
    trying = make_response(request, 100, to_tag="x")
    assert trying.to_addr.tag is None and trying.headers.get("timestamp") == "54"


def test_it_frames_stream_messages() -> None:
    framer = StreamFramer()
    stream = b"\r\n\r\n" + INVITE + RESPONSE_180 + INVITE
    out: list[bytes] = []
    for i in range(0, len(stream), 7):
        out.extend(framer.feed(stream[i : i + 7]))
    assert out == [INVITE, RESPONSE_180, INVITE]
    assert framer.pending == 0
    assert framer.keepalives == 1


def test_it_refuses_to_frame_garbage_forever() -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError):
        framer.feed(b"X" * 70000)
    with pytest.raises(SipParseError):
        StreamFramer().feed(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n")


def test_it_builds_400_for_unparseable_requests() -> None:
    bad = _mutate(INVITE, b"Max-Forwards: 70", b"Max-Forwards: seventy")
    raw = build_error_response(bad)
    assert raw is not None
    response = parse_message(raw)
    assert isinstance(response, SipResponse) and response.status == 400
    assert response.top_via.branch == "z9hG4bK74bf9"
    assert build_error_response(RESPONSE_180) is None
    assert build_error_response(b"ACK sip:a@b SIP/2.0\r\n\r\n") is None
    assert build_error_response(b"\xff\xfe") is None


def test_it_keeps_header_order_and_set_replaces() -> None:
    headers = Headers([("Route", "<sip:a;lr>"), ("Foo", "1"), ("route", "<sip:b;lr>")])
    headers.set("ROUTE", "<sip:c;lr>")
    assert list(headers) == [("route", "<sip:c;lr>"), ("foo", "1")]
    headers.prepend("v", "SIP/2.0/UDP h")
    assert headers.get("Via") == "SIP/2.0/UDP h"


def test_it_serializes_a_built_request() -> None:
    request = SipRequest(
        "OPTIONS",
        parse_message(INVITE).uri,  # type: ignore[union-attr]
        Headers(
            [
                ("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"),
                ("From", "<sip:a@h>;tag=1"),
                ("To", "<sip:b@h>"),
                ("Call-ID", "c"),
                ("CSeq", "1 OPTIONS"),
            ]
        ),
    )
    assert bytes(request) == crlf(
        """OPTIONS sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP h;branch=z9hG4bK1
From: <sip:a@h>;tag=1
To: <sip:b@h>
Call-ID: c
CSeq: 1 OPTIONS
Content-Length: 0

"""
    )


TORTURE = crlf(
    """INVITE sip:sips%3Auser%40example.com@example.net;user=phone SIP/2.0
To: "Wierd \\"Name\\", Jr." <sip:vivekg@chair-dnrc.example.com>
fRoM  :   <sip:mcohen@example.com;lr>;tag=ab ; x-flag
Max-Forwards :    0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : AUTO
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;rport;branch=390skdjuw
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Contact: <sip:caller@[2001:db8::9:1]:5060>;expires=10
Route: <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP/2.0/TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.3
s=-
c=IN IP4 192.0.2.4
t=0 0
m=audio 49217 RTP/AVP 0 12
a=rtpmap:0 PCMU/8000
"""
)


def test_it_parses_a_torture_message() -> None:
    msg = parse_message(TORTURE)
    assert isinstance(msg, SipRequest)
    assert msg.uri.user == "sips:user@example.com" and msg.uri.params == {"user": "phone"}
    assert msg.to_addr.display_name == 'Wierd "Name", Jr.'
    assert msg.from_addr.tag == "ab" and "x-flag" in msg.from_addr.params
    assert msg.cseq.seq == 9 and msg.cseq.method == "INVITE"
    vias = msg.vias
    assert [v.transport for v in vias] == ["UDP", "TCP", "UDP"]
    assert vias[0].branch == "390skdjuw" and vias[0].has_rport
    assert vias[1].branch == "z9hG4bK9ikj8" and vias[2].host == "192.168.255.111"
    assert vias[2].branch == "z9hG4bK30239"
    assert msg.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    contacts = msg.contacts
    assert contacts[0].uri.host == "[2001:db8::9:1]" and contacts[0].expires == 10
    assert contacts[1].display_name == 'Quoted string ""' and contacts[1].params["q"] == "0.33"
    assert msg.routes[0].uri.params["unknown-no-value"] is None
    assert msg.body.endswith(b"a=rtpmap:0 PCMU/8000\r\n")
    again = parse_message(bytes(msg))
    assert again.uri == msg.uri and [str(v) for v in again.vias] == [str(v) for v in msg.vias]


def test_it_parses_wildcard_contact_and_empty_reason() -> None:
    register = crlf(
        """REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP h;branch=z9hG4bKw
From: <sip:a@example.com>;tag=1
To: <sip:a@example.com>
Call-ID: w
CSeq: 2 REGISTER
Contact: *
Expires: 0

"""
    )
    msg = parse_message(register)
    assert msg.contacts[0].wildcard and msg.expires == 0
    response = parse_message(b"SIP/2.0 200\r\n" + RESPONSE_180.split(b"\r\n", 1)[1])
    assert isinstance(response, SipResponse) and response.reason == ""


@pytest.mark.parametrize(
    "start",
    [
        b"INVITE sip:bob@biloxi.example.com SIP/2.0 extra",
        b"INVITE sip:bob@bil oxi.example.com SIP/2.0",
        b"INV<ITE sip:bob@biloxi.example.com SIP/2.0",
        b"INVITE mailto:bob@biloxi.example.com SIP/2.0",
    ],
)
def test_it_rejects_bad_request_lines(start: bytes) -> None:
    raw = start + b"\r\n" + INVITE.split(b"\r\n", 1)[1]
    with pytest.raises(SipParseError):
        parse_message(raw)


def test_it_copies_record_route_into_dialog_creating_responses() -> None:
    # RFC 3261 §12.1.1: the caller learns the route set from the UAS's 18x/2xx.
    invite = parse_message(
        crlf(
            """INVITE sip:1002@192.0.2.9:5080 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy
Via: SIP/2.0/UDP 192.0.2.5:5062;branch=z9hG4bKcaller
Record-Route: <sip:192.0.2.1:5060;lr;ftag=a1>
Record-Route: <sip:192.0.2.2;lr>
From: <sip:1001@pbx.test>;tag=a1
To: <sip:1002@pbx.test>
Call-ID: rr-1@192.0.2.5
CSeq: 1 INVITE
Content-Length: 0

"""
        )
    )
    assert isinstance(invite, SipRequest)
    ok = make_response(invite, 200, to_tag="b2")
    ringing = make_response(invite, 180, to_tag="b2")
    trying = make_response(invite, 100)
    busy = make_response(invite, 486, to_tag="b2")
    expected = ["<sip:192.0.2.1:5060;lr;ftag=a1>", "<sip:192.0.2.2;lr>"]
    assert ok.headers.get_all("record-route") == expected
    assert ringing.headers.get_all("record-route") == expected
    assert trying.headers.get_all("record-route") == []
    assert busy.headers.get_all("record-route") == []
