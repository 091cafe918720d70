"""Literal SIP text fixtures shared by the tests (written for this project, RFC 3261 §24 style)."""

from __future__ import annotations

import re


def crlf(text: str) -> bytes:
    """Turn a readable triple-quoted message into wire format (CRLF line ends)."""
    head, _, body = text.partition("\n\n")
    body_bytes = body.replace("\n", "\r\n").encode()
    head = re.sub(r"(Content-Length\s*:\s*)AUTO", rf"\g<1>{len(body_bytes)}", head)
    return (head.replace("\n", "\r\n") + "\r\n\r\n").encode() + body_bytes


INVITE = crlf(
    """INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK74bf9;rport
Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>
From: "Alice A." <sip:alice@atlanta.example.com>;tag=9fxced76sl
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 1 INVITE
Contact: <sip:alice@client.atlanta.example.com;transport=udp>
Content-Type: application/sdp
Content-Length: AUTO

v=0
o=alice 2890844526 2890844526 IN IP4 client.atlanta.example.com
s=-
c=IN IP4 192.0.2.101
t=0 0
m=audio 49172 RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""
)

RESPONSE_180 = crlf(
    """SIP/2.0 180 Ringing
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK74bf9;received=192.0.2.101
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
To: Bob <sip:bob@biloxi.example.com>;tag=8321234356
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 1 INVITE
Contact: <sip:bob@client.biloxi.example.com>
Content-Length: 0

"""
)

# Compact forms, odd whitespace, folded lines, multi-value headers, quoted commas.
COMPACT = crlf(
    """OPTIONS sip:carol@chicago.example.com SIP/2.0
v: SIP/2.0/UDP host1.example.com;branch=z9hG4bKcomp1, SIP / 2.0 / TCP host2.example.com:5070
  ;branch=z9hG4bKcomp2;received=10.0.0.2
i: compact-1@host1
f: "Doe, John" <sip:john@example.com>;tag=abc
t: sip:carol@chicago.example.com
CSeq   :   8   OPTIONS
m: "A, B" <sip:a@h1>, <sip:b@h2;lr>;q=0.5
k: replaces, timer
Max-Forwards: 70
l: 0

"""
)

REGISTER_401 = crlf(
    """SIP/2.0 401 Unauthorized
Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKreg1;rport=5062;received=198.51.100.7
From: <sip:alice@example.com>;tag=r1
To: <sip:alice@example.com>;tag=srv
Call-ID: reg-1
CSeq: 1 REGISTER
WWW-Authenticate: Digest realm="example.com", nonce="abc,def", qop="auth", algorithm=MD5
Content-Length: 0

"""
)
