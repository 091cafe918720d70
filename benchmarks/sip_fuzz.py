"""Mutation fuzzing of every parser the network can reach (prints figures; no assertions).

Feeds ≥100 000 mutated inputs (random bytes and mutations of real messages) to the SIP message
parser, the stream framer, the 400 builder, SDP, URI/address and digest-challenge parsers, and a
live TransactionLayer + UserAgent. Only SipParseError may escape the parsers, and nothing may escape
the layer/UA: anything else is counted and the first few are printed.

    .venv/bin/python benchmarks/sip_fuzz.py [count] [seed]
"""

from __future__ import annotations

import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sip_parse import COMPACT_OPTIONS, INVITE, RESPONSE_200

from phone.sip.auth import parse_challenge_value
from phone.sip.errors import SipParseError
from phone.sip.message import StreamFramer, build_error_response, parse_message
from phone.sip.sdp import negotiate_answer, parse_sdp
from phone.sip.uri import parse_address, parse_uri
from phone.sip.useragent import UserAgent, UserAgentConfig

CHALLENGE = (
    b'Digest realm="pbx.example.jp", nonce="7ypf/xlj9XXwfDPEoM4URrv", qop="auth, auth-int", '
    b'algorithm=SHA-256, opaque="FQhe", Digest realm="r", nonce="n", algorithm=MD5, stale=true'
)
BYE = INVITE.replace(b"INVITE sip", b"BYE sip").replace(b"314159 INVITE", b"314160 BYE")
SEEDS = [INVITE, RESPONSE_200, COMPACT_OPTIONS, BYE]
TOKENS = [
    b",",
    b";",
    b'"',
    b"<",
    b">",
    b":",
    b"\r\n",
    b"\r\n\r\n",
    b"%",
    b" ",
    b"=",
    b"@",
    b"\\",
    b"[",
    b"]",
    b"\x00",
    b"\xff",
    b"Content-Length: 99999\r\n",
    b"v: SIP/2.0/UDP",
    b"z9hG4bK",
    b"sip:",
    b"tel:",
    b"9" * 12,
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 5, 10))):
        if not buf:
            buf += rng.randbytes(rng.randint(1, 20))
            continue
        pos = rng.randrange(len(buf))
        op = rng.randrange(6)
        if op == 0:
            buf[pos] = rng.randrange(256)
        elif op == 1:
            del buf[pos : pos + rng.randint(1, 30)]
        elif op == 2:
            buf[pos:pos] = rng.choice(TOKENS)
        elif op == 3:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 4:  # duplicate a slice (repeated headers, params)
            end = min(len(buf), pos + rng.randint(1, 60))
            buf[pos:pos] = buf[pos:end]
        else:  # swap case of a region (header names, methods)
            end = min(len(buf), pos + rng.randint(1, 20))
            buf[pos:end] = bytes(buf[pos:end]).swapcase()
    return bytes(buf)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    ua = UserAgent(
        UserAgentConfig(username="fuzz", domain="127.0.0.1", local_addr=("127.0.0.1", 5060))
    )
    failures: Counter[str] = Counter()
    shown = 0
    parsed = 0
    sdp_body = INVITE.split(b"\r\n\r\n", 1)[1]
    start = time.perf_counter()

    def record(where: str, exc: BaseException, data: bytes) -> None:
        nonlocal shown
        failures[f"{where}: {type(exc).__name__}"] += 1
        if shown < 5:
            shown += 1
            print(f"--- {where} raised {type(exc).__name__} on {data[:120]!r}")
            traceback.print_exception(exc, limit=4)

    for i in range(count):
        data = rng.randbytes(rng.randint(0, 300)) if i % 10 == 0 else mutate(rng, rng.choice(SEEDS))
        try:
            msg = parse_message(data)
            parsed += 1
            parse_message(bytes(msg))
        except SipParseError:
            try:
                build_error_response(data)
            except Exception as exc:
                record("build_error_response", exc, data)
        except Exception as exc:
            record("parse_message", exc, data)
        try:
            StreamFramer().feed(data)
        except SipParseError:
            pass
        except Exception as exc:
            record("StreamFramer", exc, data)
        if i % 4 == 0:
            blob = mutate(rng, sdp_body)
            try:
                negotiate_answer(parse_sdp(blob), "192.0.2.2", 5000, session_id="1")
            except (SipParseError, ValueError):
                pass
            except Exception as exc:
                record("sdp", exc, blob)
            text = mutate(rng, b'"Tanaka, T" <sip:201@pbx.example.jp:5060;transport=udp?x=1>;tag=9')
            decoded = text.decode("utf-8", errors="replace")
            for fn in (parse_uri, parse_address):
                try:
                    fn(decoded)
                except SipParseError:
                    pass
                except Exception as exc:
                    record(fn.__name__, exc, text)
            challenge = mutate(rng, CHALLENGE).decode("utf-8", errors="replace")
            try:
                parse_challenge_value(challenge)
            except SipParseError:
                pass
            except Exception as exc:
                record("parse_challenge_value", exc, challenge.encode())
        if i % 2 == 0:
            try:
                ua.receive(i * 0.01, data, ("192.0.2.99", 5060))
                ua.handle_timer(i * 0.01)
            except Exception as exc:
                record("UserAgent.receive", exc, data)
    elapsed = time.perf_counter() - start
    total = sum(failures.values())
    print(
        f"inputs: {count:,}  parsed OK: {parsed:,}  time: {elapsed:.1f} s  "
        f"({count / elapsed:,.0f} inputs/s)"
    )
    print(f"uncaught non-SipParseError exceptions: {total}")
    for key, n in failures.most_common():
        print(f"  {n:>6}  {key}")


if __name__ == "__main__":
    main()
