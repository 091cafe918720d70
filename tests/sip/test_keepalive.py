"""Registration liveness: OPTIONS keepalives to the proxy, quick FAILED and quick recovery.

The PBX here is our own transaction layer answering REGISTER and OPTIONS; outages are packet
drops in the in-memory network, so every time below is exact fake-clock time.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from phone.sip.message import SipRequest, SipResponse, make_response, parse_message
from phone.sip.registration import RegistrationState, RegistrationStateChanged
from phone.sip.transaction import Output, RequestReceived, TransactionLayer
from phone.sip.useragent import UserAgent, UserAgentConfig

from .harness import Network, Packet

ALICE = ("10.0.0.1", 5060)
PBX = ("10.0.0.100", 5060)


class Pbx:
    """Registrar and proxy: 200 to REGISTER, ``options_status`` to OPTIONS, nothing else."""

    def __init__(self, options_status: int = 200, register_status: int = 200) -> None:
        self.layer = TransactionLayer(PBX)
        self.local_addr = PBX
        self.options_status = options_status
        self.register_status = register_status
        self.requests: list[tuple[float, SipRequest]] = []

    def next_timer(self) -> float | None:
        return self.layer.next_timer()

    def handle_timer(self, now: float) -> Output:
        return self.layer.handle_timer(now)

    def receive(self, now: float, data: bytes, source: tuple[str, int]) -> Output:
        out = self.layer.receive(now, data, source)
        for event in out.events:
            if isinstance(event, RequestReceived):
                self.requests.append((now, event.request))
                out.send += self.layer.send_response(now, self._answer(event.request)).send
        return out

    def _answer(self, request: SipRequest) -> SipResponse:
        if request.method == "REGISTER":
            response = make_response(request, self.register_status, to_tag="reg")
            if self.register_status == 200:
                expires = request.headers.get("expires") or "0"
                response.headers.add(
                    "Contact", f"{request.headers.get('contact')};expires={expires}"
                )
            return response
        if request.method == "OPTIONS" and self.options_status == 407:
            challenge = 'Digest realm="pbx.example.jp", nonce="n", algorithm=MD5'
            return make_response(
                request, 407, to_tag="o", headers=[("Proxy-Authenticate", challenge)]
            )
        return make_response(request, self.options_status, to_tag="o")


def _alice(**config: Any) -> UserAgent:
    return UserAgent(
        UserAgentConfig(
            username="alice",
            domain="pbx.example.jp",
            password="alice-pw",
            local_addr=ALICE,
            proxy_addr=PBX,
            **config,
        ),
        rng=random.Random(3),
    )


def _world(pbx: Pbx | None = None, **config: Any) -> tuple[Network, Pbx, UserAgent]:
    net = Network()
    pbx = pbx or Pbx()
    alice = _alice(**config)
    net.add(pbx)
    net.add(alice)
    return net, pbx, alice


def _changes(net: Network) -> list[tuple[RegistrationState, str]]:
    return [
        (e.state, e.reason)
        for e in net.take_events(ALICE)
        if isinstance(e, RegistrationStateChanged)
    ]


def _run_until_state(
    net: Network, state: RegistrationState, until: float, step: float = 0.01
) -> tuple[float, list[tuple[RegistrationState, str]]]:
    """Advance in small steps until ``state`` is reported; its time and every change seen."""
    seen: list[tuple[RegistrationState, str]] = []
    t = net.now
    while t < until:
        t = round(t + step, 6)
        net.run_until(t)
        seen += _changes(net)
        if any(s is state for s, _ in seen):
            return t, seen
    raise AssertionError(f"no {state} by t={until}; saw {seen}")


def _first_sendings(net: Network, method: str, after: float) -> list[float]:
    """When each new ``method`` request left (retransmissions, same CSeq, left out)."""
    first: dict[int, float] = {}
    for packet in net.sent(ALICE, method):
        if packet.time > after:
            first.setdefault(parse_message(packet.data).cseq.seq, packet.time)
    return sorted(first.values())


def _outage(start: float, end: float) -> Any:
    def drop(packet: Packet) -> bool:
        return start <= packet.time < end and PBX in (packet.src, packet.dst)

    return drop


def test_it_reports_a_dead_pbx_within_interval_plus_timeout_and_recovers_quickly() -> None:
    net, _pbx, alice = _world(keepalive_interval=2.0, keepalive_timeout=4.0)
    net.deliver(alice, alice.register(0.0))
    assert _changes(net)[-1] == (RegistrationState.REGISTERED, "")
    net.drop = _outage(10.0, 30.0)  # the PBX stops answering at t=10, is back at t=30
    net.run_until(10.0)
    probes = [p for p in net.sent(ALICE, "OPTIONS") if not p.dropped]
    assert [p.time for p in probes] == [2.0, 4.0, 6.0, 8.0]  # every keepalive_interval
    options = parse_message(probes[0].data)
    assert isinstance(options, SipRequest)
    assert str(options.uri) == "sip:pbx.example.jp"  # RFC 3261 §11.1: out of dialog
    assert options.to_addr.tag is None and options.headers.get("max-forwards") == "70"
    assert str(options.from_addr.uri) == str(options.to_addr.uri) == "sip:alice@pbx.example.jp"
    assert len({parse_message(p.data).call_id for p in probes}) == 4

    failed_at, seen = _run_until_state(net, RegistrationState.FAILED, 30.0)
    # The probe sent at t=10 is unanswered for keepalive_timeout: FAILED at 14.
    assert failed_at - 10.0 <= 6.5
    assert failed_at == pytest.approx(14.0, abs=0.011)
    assert seen == [(RegistrationState.FAILED, "no response from the PBX")]

    net.run_until(29.99)
    assert _changes(net) == []  # one FAILED per outage, no REGISTERING flicker
    # Re-REGISTERs while lost: base 1 s doubling to the 8 s cap, jittered by [0.5, 1].
    reregisters = _first_sendings(net, "REGISTER", after=failed_at)
    gaps = [b - a for a, b in zip([failed_at, *reregisters], reregisters, strict=False)]
    assert len(gaps) >= 4
    for gap, ceiling in zip(gaps, [1, 2, 4, 8, 8, 8, 8], strict=False):
        assert ceiling / 2 - 0.011 <= gap <= ceiling + 0.011
    # Probing went on at the same pace, and nothing is retransmitted past its own deadline.
    lost_probes = [p for p in net.sent(ALICE, "OPTIONS") if 10.0 <= p.time < 30.0]
    assert len({parse_message(p.data).call_id for p in lost_probes}) == 10
    assert len(lost_probes) <= 10 * 4  # sent at 0, T1, 3*T1, 7*T1 within the 4 s timeout

    registered_at, seen = _run_until_state(net, RegistrationState.REGISTERED, 40.0)
    first_answer = min(
        p.time
        for p in net.sent(PBX, "SIP/2.0")
        if p.time >= 30.0 and parse_message(p.data).cseq.method == "OPTIONS"
    )
    assert registered_at - 30.0 <= 3.0
    assert registered_at - first_answer <= 3.0
    assert seen == [(RegistrationState.REGISTERED, "")]
    assert alice.registration.state is RegistrationState.REGISTERED
    # Registered again: no more backoff re-REGISTERs, probing goes on.
    net.run_until(60.0)
    assert _changes(net) == []
    assert _first_sendings(net, "REGISTER", after=registered_at + 0.011) == []


def test_it_registers_at_once_when_a_probe_is_answered_after_an_outage() -> None:
    # Backoff would wait up to 8 s; the first answered probe triggers the REGISTER itself.
    net, _pbx, alice = _world(keepalive_interval=2.0, reregister_base=60.0, reregister_max=60.0)
    net.deliver(alice, alice.register(0.0))
    assert _changes(net)[-1] == (RegistrationState.REGISTERED, "")
    net.drop = _outage(5.0, 20.0)
    net.run_until(19.99)
    assert _changes(net) == [(RegistrationState.FAILED, "no response from the PBX")]
    assert _first_sendings(net, "REGISTER", after=0.0) == []
    registered_at, _ = _run_until_state(net, RegistrationState.REGISTERED, 40.0)
    assert registered_at == pytest.approx(20.0, abs=0.011)  # probe sent at 20, answered
    (register,) = [p for p in net.sent(ALICE, "REGISTER") if p.time > 0]
    assert register.time == pytest.approx(registered_at, abs=0.011)


@pytest.mark.parametrize("status", [404, 405, 407, 483, 503])
def test_it_takes_any_answer_to_a_keepalive_as_proof_of_life(status: int) -> None:
    net, pbx, alice = _world(Pbx(options_status=status), keepalive_interval=2.0)
    net.deliver(alice, alice.register(0.0))
    net.run_until(60.0)
    assert _changes(net) == [
        (RegistrationState.REGISTERING, ""),
        (RegistrationState.REGISTERED, ""),
    ]
    options = [r for _, r in pbx.requests if r.method == "OPTIONS"]
    assert len(options) == 30
    # Keepalives are never authenticated (nor retried after a challenge).
    assert all(r.headers.get("proxy-authorization") is None for r in options)
    assert len({r.call_id for r in options}) == 30


def test_it_fails_fast_when_the_pbx_never_answered() -> None:
    net, _pbx, alice = _world(keepalive_interval=2.0, keepalive_timeout=4.0)
    net.drop = _outage(0.0, 15.0)
    net.deliver(alice, alice.register(0.0))
    failed_at, seen = _run_until_state(net, RegistrationState.FAILED, 10.0)
    assert failed_at == pytest.approx(6.0, abs=0.011)  # first probe (t=2) + 4 s, not Timer F
    assert seen == [
        (RegistrationState.REGISTERING, ""),
        (RegistrationState.FAILED, "no response from the PBX"),
    ]
    registered_at, _ = _run_until_state(net, RegistrationState.REGISTERED, 30.0)
    assert 15.0 <= registered_at <= 18.0


def test_it_stops_probing_once_unregistered() -> None:
    net, _pbx, alice = _world(keepalive_interval=2.0)
    net.deliver(alice, alice.register(0.0))
    net.run_until(5.0)
    net.deliver(alice, alice.unregister(5.0))
    assert alice.registration.state is RegistrationState.UNREGISTERED
    sent = len(net.sent(ALICE, "OPTIONS"))
    net.run_until(100.0)
    assert len(net.sent(ALICE, "OPTIONS")) == sent
    assert alice.next_timer() is None
    assert _changes(net)[-1] == (RegistrationState.UNREGISTERED, "")


def test_it_sends_no_keepalives_unless_configured() -> None:
    net, _pbx, alice = _world()
    net.deliver(alice, alice.register(0.0))
    net.run_until(100.0)
    assert net.sent(ALICE, "OPTIONS") == []


def test_it_retries_a_failed_registration_with_the_configured_backoff() -> None:
    net, _pbx, alice = _world(
        Pbx(register_status=503), register_retry_base=2.0, register_retry_max=4.0
    )
    net.deliver(alice, alice.register(0.0))
    net.run_until(30.0)
    times = _first_sendings(net, "REGISTER", after=-1.0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 6
    for gap, ceiling in zip(gaps, [2, 4, 4, 4, 4, 4], strict=False):
        assert ceiling / 2 <= gap <= ceiling  # min(max, base * 2**n) * uniform(0.5, 1)
    assert len({round(g, 6) for g in gaps[1:]}) > 1  # jittered, not lockstep
    assert _changes(net)[-1] == (RegistrationState.FAILED, "503 Service Unavailable")
