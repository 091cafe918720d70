from __future__ import annotations

import random

from phone.sip.auth import DigestAuth
from phone.sip.message import make_response
from phone.sip.registration import (
    NO_RESPONSE,
    Registration,
    RegistrationSettings,
    RegistrationState,
)
from phone.sip.uri import parse_uri

CONTACT = parse_uri("sip:alice@192.0.2.10:5060")


def _reg(auth: DigestAuth | None = None, expires: int = 3600, seed: int = 1) -> Registration:
    return Registration(
        aor=parse_uri("sip:alice@example.com"),
        registrar=parse_uri("sip:example.com"),
        contact=CONTACT,
        auth=auth,
        settings=RegistrationSettings(expires=expires),
        rng=random.Random(seed),
    )


def test_it_registers_and_refreshes_before_expiry() -> None:
    reg = _reg()
    request = reg.register(0.0)
    assert request.method == "REGISTER" and str(request.uri) == "sip:example.com"
    assert request.headers.get("expires") == "3600"
    assert request.to_addr.tag is None and request.from_addr.tag
    assert request.contacts[0].uri == CONTACT
    response = make_response(request, 200, to_tag="reg")
    response.headers.add("Contact", f"<sip:other@198.51.100.1>;expires=99, <{CONTACT}>;expires=600")
    assert reg.handle_response(10.0, response) is None
    assert reg.state is RegistrationState.REGISTERED and reg.granted == 600
    assert reg.next_timer() == 310.0  # half of 600
    assert [e.state for e in reg.events] == [
        RegistrationState.REGISTERING,
        RegistrationState.REGISTERED,
    ]
    refresh = reg.handle_timer(310.0)
    assert refresh is not None
    assert refresh.call_id == request.call_id  # §10.2: same Call-ID, higher CSeq
    assert refresh.cseq.seq == request.cseq.seq + 1
    assert reg.state is RegistrationState.REGISTERED  # still registered while refreshing


def test_it_refreshes_short_registrations_32s_early() -> None:
    reg = _reg(expires=60)
    request = reg.register(0.0)
    response = make_response(request, 200, to_tag="reg")
    response.headers.add("Expires", "60")
    reg.handle_response(0.0, response)
    assert reg.next_timer() == 28.0


def test_it_authenticates_after_401() -> None:
    reg = _reg(DigestAuth("alice", "secret"))
    request = reg.register(0.0)
    challenge = make_response(request, 401, to_tag="x")
    challenge.headers.add("WWW-Authenticate", 'Digest realm="example.com", nonce="n1", qop="auth"')
    retry = reg.handle_response(0.1, challenge)
    assert retry is not None
    assert retry.cseq.seq == request.cseq.seq + 1
    assert (retry.headers.get("authorization") or "").startswith('Digest username="alice"')
    # A second challenge with a new nonce but no stale=true: wrong password, give up.
    challenge2 = make_response(retry, 401, to_tag="x")
    challenge2.headers.add("WWW-Authenticate", 'Digest realm="example.com", nonce="n2", qop="auth"')
    assert reg.handle_response(0.2, challenge2) is None
    assert reg.state is RegistrationState.FAILED and "401" in reg.reason
    timer = reg.next_timer()
    assert timer is not None and 0.2 + 15 <= timer <= 0.2 + 30  # backoff retry, jittered


def test_it_retries_with_min_expires_after_423() -> None:
    reg = _reg(expires=30)
    request = reg.register(0.0)
    too_brief = make_response(request, 423, to_tag="x", headers=[("Min-Expires", "120")])
    retry = reg.handle_response(0.0, too_brief)
    assert retry is not None and retry.headers.get("expires") == "120"
    assert reg.expires == 120


def test_it_backs_off_exponentially_and_honours_retry_after() -> None:
    reg = _reg()
    now = 0.0
    delays = []
    for _ in range(8):
        request = reg.handle_timer(now) if now else reg.register(now)
        assert request is not None
        reg.handle_response(now, make_response(request, 503, to_tag="x"))
        timer = reg.next_timer()
        assert timer is not None
        delays.append(timer - now)
        now = timer
    # base * 2**n capped at max, each times a random factor in [0.5, 1]: lines that failed
    # together do not all come back in the same instant.
    ceilings = [30, 60, 120, 240, 480, 960, 1800, 1800]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d / c, 6) for d, c in zip(delays, ceilings, strict=True)}) > 1
    assert reg.state is RegistrationState.FAILED and reg.reason == "503 Service Unavailable"
    request = reg.handle_timer(now)
    assert request is not None and reg.state is RegistrationState.REGISTERING
    reg.handle_response(
        now, make_response(request, 503, to_tag="x", headers=[("Retry-After", "7")])
    )
    assert reg.next_timer() == now + 7


def test_it_fails_on_timeout_and_recovers() -> None:
    reg = _reg()
    reg.register(0.0)
    reg.handle_timeout(32.0)
    assert reg.state is RegistrationState.FAILED and reg.reason == NO_RESPONSE
    timer = reg.next_timer()
    assert timer is not None and 47.0 <= timer <= 62.0
    request = reg.handle_timer(62.0)
    assert request is not None
    response = make_response(request, 200, to_tag="reg")
    reg.handle_response(62.5, response)
    assert reg.state is RegistrationState.REGISTERED and reg.granted == 3600


def test_it_unregisters_with_expires_zero() -> None:
    reg = _reg()
    request = reg.register(0.0)
    reg.handle_response(0.0, make_response(request, 200, to_tag="reg"))
    bye = reg.unregister(5.0)
    assert bye is not None and bye.headers.get("expires") == "0"
    assert reg.state is RegistrationState.UNREGISTERING
    reg.handle_response(5.1, make_response(bye, 200, to_tag="reg"))
    assert reg.state is RegistrationState.UNREGISTERED and reg.next_timer() is None
    assert _reg().unregister(0.0) is None


def test_it_spreads_refreshes_with_jitter_but_never_late() -> None:
    timers = set()
    for seed in range(20):
        reg = Registration(
            aor=parse_uri("sip:alice@example.com"),
            registrar=parse_uri("sip:example.com"),
            contact=CONTACT,
            settings=RegistrationSettings(expires=600, refresh_jitter=0.2),
            rng=random.Random(seed),
        )
        request = reg.register(10.0)
        reg.handle_response(10.0, make_response(request, 200, headers=[("Expires", "600")]))
        timer = reg.next_timer()
        assert timer is not None and 10.0 + 300 * 0.8 <= timer <= 310.0
        timers.add(round(timer, 3))
    assert len(timers) > 10  # spread out, not all at once


def test_it_reports_a_lost_registrar_once_and_reregisters_quickly() -> None:
    reg = _reg()
    request = reg.register(0.0)
    reg.handle_response(0.0, make_response(request, 200, to_tag="reg"))
    reg.events.clear()
    reg.unreachable(100.0)
    reg.unreachable(102.0)  # the next lost keepalive: nothing new to say
    assert [(e.state, e.reason) for e in reg.events] == [(RegistrationState.FAILED, NO_RESPONSE)]
    reg.events.clear()
    now, delays = 100.0, []
    for _ in range(6):
        timer = reg.next_timer()
        assert timer is not None
        delays.append(timer - now)
        now = timer
        retry = reg.handle_timer(now)
        # A REGISTER each time, even with the previous one unanswered (the owner drops it).
        assert retry is not None and retry.headers.get("expires") == "3600"
    # reregister_base 1 s doubling up to reregister_max 8 s, times a factor in [0.5, 1].
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    reg.handle_timeout(now + 1)  # an unanswered one timing out changes nothing
    assert reg.events == [] and reg.state is RegistrationState.FAILED
    assert reg.next_timer() is not None
    # The registrar answers something again: REGISTER now; REGISTERED only on its 2xx.
    request = reg.reachable(now + 2)
    assert request is not None and reg.next_timer() is None
    assert reg.state is RegistrationState.FAILED and reg.reachable(now + 2) is None
    reg.handle_response(now + 2, make_response(request, 200, to_tag="reg"))
    assert [e.state for e in reg.events] == [RegistrationState.REGISTERED]


def test_it_ignores_a_lost_registrar_when_not_registering() -> None:
    reg = _reg()
    reg.unreachable(1.0)
    assert reg.state is RegistrationState.UNREGISTERED and reg.next_timer() is None
    assert reg.reachable(2.0) is None
