"""Parse + serialize throughput of the SIP core (prints figures; no assertions).

.venv/bin/python benchmarks/sip_parse.py [seconds-per-case]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from phone.sip.message import parse_message
from phone.sip.sdp import parse_sdp


def _wire(text: str) -> bytes:
    head, _, body = text.partition("\n\n")
    body_bytes = body.replace("\n", "\r\n").encode()
    head = head.replace("Content-Length: AUTO", f"Content-Length: {len(body_bytes)}")
    return (head.replace("\n", "\r\n") + "\r\n\r\n").encode() + body_bytes


INVITE = _wire(
    """INVITE sip:0312345678@pbx.example.jp SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport
Max-Forwards: 70
To: <sip:0312345678@pbx.example.jp>
From: "Tanaka" <sip:201@pbx.example.jp>;tag=1928301774
Call-ID: a84b4c76e66710@192.0.2.10
CSeq: 314159 INVITE
Contact: <sip:201@192.0.2.10:5060>
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REFER, NOTIFY
Supported: replaces, norefersub
Proxy-Authorization: Digest username="201", realm="pbx.example.jp", nonce="abcdef",
  uri="sip:0312345678@pbx.example.jp", response="6629fae49393a05397450978507c4ef1", algorithm=MD5
User-Agent: BrowserPhone
Content-Type: application/sdp
Content-Length: AUTO

v=0
o=- 1234 1 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 40000 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
"""
)

RESPONSE_200 = _wire(
    """SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060;received=198.51.100.7
Record-Route: <sip:10.0.0.1;lr>, <sip:10.0.0.2;lr>
From: "Tanaka" <sip:201@pbx.example.jp>;tag=1928301774
To: <sip:0312345678@pbx.example.jp>;tag=a6c85cf
Call-ID: a84b4c76e66710@192.0.2.10
CSeq: 314159 INVITE
Contact: <sip:0312345678@203.0.113.5:5060>
Content-Length: 0

"""
)

COMPACT_OPTIONS = _wire(
    """OPTIONS sip:201@192.0.2.10 SIP/2.0
v: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKping
f: <sip:pbx@pbx.example.jp>;tag=p
t: <sip:201@192.0.2.10>
i: ping-1
CSeq: 1 OPTIONS
Max-Forwards: 70
l: 0

"""
)


def bench(name: str, data: bytes, seconds: float) -> None:
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(200):
            bytes(parse_message(data))
        n += 200
    elapsed = time.perf_counter() - start
    rate = n / elapsed
    print(f"{name:<22} {len(data):>5} B  {rate:>10,.0f} msg/s  {1e6 / rate:>7.1f} µs/msg")


def bench_sdp(seconds: float) -> None:
    body = INVITE.split(b"\r\n\r\n", 1)[1]
    n = 0
    start = time.perf_counter()
    while time.perf_counter() < start + seconds:
        for _ in range(200):
            parse_sdp(body).to_bytes()
        n += 200
    rate = n / (time.perf_counter() - start)
    name = "SDP parse+serialize"
    print(f"{name:<22} {len(body):>5} B  {rate:>10,.0f} msg/s  {1e6 / rate:>7.1f} µs/msg")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    print(f"parse + serialize, {seconds:.1f} s per case (Python {sys.version.split()[0]})")
    bench("INVITE with SDP+auth", INVITE, seconds)
    bench("200 OK with RR", RESPONSE_200, seconds)
    bench("OPTIONS compact", COMPACT_OPTIONS, seconds)
    bench_sdp(seconds)


if __name__ == "__main__":
    main()
