from __future__ import annotations

import re

import pytest

from phone.sip.auth import (
    DigestAuth,
    parse_challenge_value,
    parse_challenges,
    pick_challenges,
)
from phone.sip.auth import (
    digest_response as response_for,
)
from phone.sip.errors import SipParseError
from phone.sip.message import Headers, SipRequest, SipResponse
from phone.sip.uri import parse_uri


def test_it_matches_rfc2617_3_5_example() -> None:
    assert (
        response_for(
            algorithm="MD5",
            username="Mufasa",
            password="Circle Of Life",
            realm="testrealm@host.com",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_it_matches_rfc7616_3_9_1_examples(algorithm: str, expected: str) -> None:
    assert (
        response_for(
            algorithm=algorithm,
            username="Mufasa",
            password="Circle of Life",
            realm="http-auth@example.org",
            method="GET",
            uri="/dir/index.html",
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            qop="auth",
            nc="00000001",
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        == expected
    )


def test_it_computes_the_rfc2069_form_without_qop() -> None:
    # H(H(A1):nonce:H(A2)) with MD5, checked against an independent computation.
    import hashlib

    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    expected = md5(f"{md5('bob:biloxi.com:zanzibar')}:dcd98b:{md5('REGISTER:sip:biloxi.com')}")
    assert (
        response_for(
            algorithm="MD5",
            username="bob",
            password="zanzibar",
            realm="biloxi.com",
            method="REGISTER",
            uri="sip:biloxi.com",
            nonce="dcd98b",
        )
        == expected
    )


RFC7616_CHALLENGES = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS", '
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


def test_it_parses_multiple_challenges_and_prefers_sha256() -> None:
    challenges = parse_challenge_value(RFC7616_CHALLENGES)
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert challenges[0].qop == ["auth", "auth-int"]
    assert challenges[0].opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    picked = pick_challenges(list(reversed(challenges)))
    assert [c.algorithm for c in picked] == ["SHA-256"]


def test_it_skips_unknown_schemes_and_algorithms() -> None:
    value = 'Basic realm="x", Digest realm="r", nonce="n", algorithm=FOO'
    challenges = parse_challenge_value(value)
    assert len(challenges) == 1
    assert pick_challenges(challenges) == []
    with pytest.raises(SipParseError):
        parse_challenge_value('Digest realm="r"')
    with pytest.raises(SipParseError):
        parse_challenge_value('Digest realm="r, nonce=x')


def _request() -> SipRequest:
    return SipRequest("REGISTER", parse_uri("sip:example.com"), Headers([("CSeq", "1 REGISTER")]))


def _challenge(header: str, value: str, status: int = 401) -> SipResponse:
    return SipResponse(status, "Unauthorized", Headers([(header, value)]))


def _fields(value: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', value)}


def test_it_counts_nonce_uses_and_verifies() -> None:
    auth = DigestAuth("alice", "secret", cnonce_factory=lambda: "c0ffee")
    ch = 'Digest realm="example.com", nonce="abc", qop="auth", opaque="op"'
    assert auth.handle_challenge(_challenge("WWW-Authenticate", ch))
    request = _request()
    auth.apply(request)
    value = request.headers.get("authorization")
    assert value is not None and value.startswith("Digest ")
    fields = _fields(value)
    assert fields["nc"] == "00000001" and fields["qop"] == "auth" and fields["opaque"] == "op"
    assert fields["uri"] == "sip:example.com" and fields["algorithm"] == "MD5"
    assert fields["response"] == response_for(
        algorithm="MD5",
        username="alice",
        password="secret",
        realm="example.com",
        method="REGISTER",
        uri="sip:example.com",
        nonce="abc",
        qop="auth",
        nc="00000001",
        cnonce="c0ffee",
    )
    auth.apply(request)  # pre-emptive reuse of the nonce: nc increments, one header only
    values = request.headers.get_all("authorization")
    assert len(values) == 1 and _fields(values[0])["nc"] == "00000002"


def test_it_gives_up_on_rejected_credentials_but_retries_stale() -> None:
    auth = DigestAuth("alice", "wrong")
    first = _challenge("WWW-Authenticate", 'Digest realm="r", nonce="n1"')
    assert auth.handle_challenge(first)
    auth.apply(_request())
    stale = _challenge("WWW-Authenticate", 'Digest realm="r", nonce="n2", stale=true')
    assert auth.handle_challenge(stale)
    auth.apply(_request())
    # Same nonce again without stale: the password is wrong.
    again = _challenge("WWW-Authenticate", 'Digest realm="r", nonce="n3"')
    assert not auth.handle_challenge(again)


def test_it_retries_after_an_accepted_nonce_expires() -> None:
    auth = DigestAuth("alice", "secret")
    assert auth.handle_challenge(_challenge("WWW-Authenticate", 'Digest realm="r", nonce="n1"'))
    auth.apply(_request())
    auth.accepted()  # 200 OK
    auth.apply(_request())  # refresh an hour later, pre-emptively with the old nonce
    # The server forgot n1 and challenges without stale=true: worth one retry with the new nonce.
    assert auth.handle_challenge(_challenge("WWW-Authenticate", 'Digest realm="r", nonce="n2"'))
    auth.apply(_request())
    assert not auth.handle_challenge(_challenge("WWW-Authenticate", 'Digest realm="r", nonce="n3"'))


def test_it_answers_proxy_challenges_with_proxy_authorization() -> None:
    auth = DigestAuth("alice", "secret")
    response = _challenge("Proxy-Authenticate", 'Digest realm="p", nonce="x"', 407)
    assert parse_challenges(response)[0].proxy
    assert auth.handle_challenge(response)
    request = _request()
    auth.apply(request)
    assert "proxy-authorization" in request.headers and "authorization" not in request.headers
    value = request.headers.get("proxy-authorization") or ""
    assert "qop" not in value and "nc=" not in value
