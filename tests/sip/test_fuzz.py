"""Property tests: hostile input never raises anything but SipParseError."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phone.sip.errors import SipParseError
from phone.sip.message import StreamFramer, build_error_response, parse_message
from phone.sip.uri import parse_address, parse_uri

from .messages import COMPACT, INVITE, REGISTER_401, RESPONSE_180

SEEDS = [INVITE, RESPONSE_180, COMPACT, REGISTER_401]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_everything(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError:
        build_error_response(data)
        return
    # A message that parsed must serialize and re-parse.
    parse_message(bytes(msg))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.integers(0, 3))
        if op == 0:
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            del data[pos : pos + draw(st.integers(1, 20))]
        elif op == 2:
            chunk = draw(st.sampled_from([b",", b";", b'"', b"<", b">", b":", b"\r\n", b"%", b" "]))
            data[pos:pos] = chunk
        else:
            data[pos:pos] = draw(st.binary(max_size=16))
    return bytes(data)


@FUZZ
@given(st.binary(max_size=400))
def test_it_survives_random_bytes(data: bytes) -> None:
    _parse_everything(data)


@FUZZ
@given(mutated())
def test_it_survives_mutated_real_messages(data: bytes) -> None:
    _parse_everything(data)
    with contextlib.suppress(SipParseError):
        StreamFramer().feed(data)


@FUZZ
@given(st.text(max_size=80))
def test_it_survives_random_uri_and_address_text(text: str) -> None:
    for fn in (parse_uri, parse_address):
        with contextlib.suppress(SipParseError):
            fn(text)


@FUZZ
@given(st.binary(max_size=300))
def test_it_survives_random_sdp(data: bytes) -> None:
    from phone.sip.sdp import build_offer, negotiate_answer, parse_sdp

    base = build_offer("192.0.2.1", 4000, session_id="1").to_bytes()
    for blob in (data, base[: len(data) % len(base)] + data):
        try:
            sdp = parse_sdp(blob)
        except SipParseError:
            continue
        with contextlib.suppress(ValueError):
            negotiate_answer(sdp, "192.0.2.2", 5000, session_id="2")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=5))
def test_it_keeps_the_user_agent_alive_on_hostile_traffic(datagrams: list[bytes]) -> None:
    from phone.sip.useragent import UserAgent, UserAgentConfig

    ua = UserAgent(UserAgentConfig(username="u", domain="10.0.0.1", local_addr=("10.0.0.1", 5060)))
    now = 0.0
    for data in datagrams:
        ua.receive(now, data, ("192.0.2.7", 5060))
        now += 1.0
        ua.handle_timer(now)
    ua.handle_timer(now + 100)
