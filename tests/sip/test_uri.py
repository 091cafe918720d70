from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone.sip.errors import SipParseError
from phone.sip.uri import (
    Address,
    SipUri,
    _split_walk,
    parse_address,
    parse_uri,
    split_outside,
)


def test_it_parses_a_full_sip_uri() -> None:
    uri = parse_uri(
        "sip:alice@atlanta.com:5070;transport=TCP;lr?subject=project%20x&priority=urgent"
    )
    assert uri.scheme == "sip"
    assert uri.user == "alice"
    assert uri.host == "atlanta.com"
    assert uri.port == 5070
    assert uri.transport == "tcp"
    assert uri.lr
    assert uri.headers == {"subject": "project x", "priority": "urgent"}


def test_it_round_trips_uris() -> None:
    for text in [
        "sip:alice@atlanta.com",
        "sips:bob@biloxi.com:5061;transport=tls",
        "sip:192.0.2.4",
        "sip:proxy.example.com;lr",
        "sip:+81312345678@pbx.example.jp;user=phone",
        "sip:[2001:db8::10]:5070;transport=udp",
        "tel:+358-555-1234567;postd=pp22",
    ]:
        assert str(parse_uri(text)) == text


def test_it_handles_escaped_user_and_semicolon_in_user() -> None:
    uri = parse_uri("sip:%61lice;x=1@atlanta.com")
    assert uri.user == "alice;x=1"
    assert parse_uri(str(uri)) == uri


def test_it_compares_uris_per_rfc3261_19_1_4() -> None:
    assert parse_uri("sip:alice@AtLanTa.CoM;Transport=udp") == parse_uri(
        "sip:alice@atlanta.com;transport=UDP"
    )
    assert parse_uri("sip:alice@atlanta.com") != parse_uri("sip:ALICE@atlanta.com")
    assert parse_uri("sip:bob@biloxi.com") != parse_uri("sip:bob@biloxi.com:5060")


@pytest.mark.parametrize(
    "text",
    [
        "alice@atlanta.com",
        "http://example.com",
        "sip:",
        "sip:@host",
        "sip:alice@host:99999",
        "sip:alice@host:abc",
        "sip:alice@[::1",
        "sip:alice@ho st",
        "sip:a@h?noval",
        "sip:a%zz@h",
        "sip:a%ff@h",
    ],
)
def test_it_rejects_malformed_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_it_parses_name_addr_with_quoted_display_name() -> None:
    addr = parse_address('"Bob \\"The\\" <Builder>, Jr" <sip:bob@biloxi.com;lr>;tag=a6c85cf;x')
    assert addr.display_name == 'Bob "The" <Builder>, Jr'
    assert addr.uri.lr
    assert addr.tag == "a6c85cf"
    assert addr.params["x"] is None
    assert parse_address(str(addr)) == addr


def test_it_gives_addr_spec_params_to_the_header_not_the_uri() -> None:
    # RFC 3261 §20.10: without <> the params after the URI are header params.
    addr = parse_address("sip:+12125551212@server.phone2net.com;tag=887s")
    assert addr.tag == "887s"
    assert addr.uri.params == {}
    assert addr.display_name is None


def test_it_parses_unquoted_display_name_and_wildcard() -> None:
    addr = parse_address("Anonymous <sip:c8oqz84zk7z@privacy.org>;tag=hyh8")
    assert addr.display_name == "Anonymous"
    assert parse_address("*").wildcard
    assert str(Address(uri=SipUri(host="h", user="u"))) == "<sip:u@h>"


@pytest.mark.parametrize(
    "text", ['"unterminated <sip:a@b>', "<sip:a@b", "Name sip:a@b>", "x <sip:a@b> y"]
)
def test_it_rejects_malformed_addresses(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_address(text)


def test_it_splits_on_commas_outside_quotes_and_brackets() -> None:
    assert split_outside('"a,b" <sip:x@y;p=1,2>, <sip:z@w>', ",") == [
        '"a,b" <sip:x@y;p=1,2>',
        " <sip:z@w>",
    ]


@given(st.text(alphabet=';,"<>\\ab=', max_size=30), st.sampled_from([",", ";"]))
def test_the_fast_split_agrees_with_the_character_walk(text, sep) -> None:
    """split_outside takes str.split where a value has no quotes or brackets; the character
    walk must give the same parts for every such value."""
    try:
        walked = _split_walk(text, sep)
    except SipParseError:
        walked = None
    if walked is None:
        with pytest.raises(SipParseError):
            split_outside(text, sep)
    else:
        assert split_outside(text, sep) == walked
