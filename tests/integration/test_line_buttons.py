"""Line buttons (外線ボタン, seed 6-1) on the bundled PBX: presenting a line's number as caller
ID (発番号選択, seed 1-2) and calls to a line's number.

Kamailio runs deploy/kamailio/kamailio.cfg with a lines table (line number -> extensions that may
present it and that a call to it rings). Our UserAgent presents a line the way
phone/worker/line.py does for the tenant's caller-ID method: the From user ("from"),
P-Preferred-Identity ("ppi") or P-Asserted-Identity ("pai"). The PBX checks the number, strips
the UA's identity headers and asserts the checked number in P-Asserted-Identity (RFC 3325).
"""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from phone.sip.sdp import build_offer
from phone.sip.useragent import CallState, CallStateChanged, IncomingCall, RegistrationState
from tests.support.fixtures import TEST_USERS, require_program
from tests.support.pbx import KAMAILIO_CFG, Kamailio, kamailio_binary
from tests.support.ua import LossyUdpProxy, Phone, PhoneCall

pytestmark = pytest.mark.integration

# Tenant A: 0311112222 is alice's (1001) line, 0311113333 shared by 1001 and 1003, nobody
# of 0311114444 is registered; 0322224444 belongs to tenant B (2001).
LINES = {
    "0311112222": ["1001"],
    "0311113333": ["1001", "1003"],
    "0311114444": ["1004"],
    "0322224444": ["2001"],
}
LINE = "0311112222"
METHODS = ["from", "ppi", "pai"]


@pytest.fixture(scope="module")
def kamailio() -> Iterator[Kamailio]:
    """The module's PBX (overrides the shared one): the test users and LINES."""
    require_program(kamailio_binary(), "kamailio", "kamailio")
    pbx = Kamailio(users=TEST_USERS, lines=LINES)
    try:
        yield pbx.start()
    finally:
        pbx.stop()
        print(f"\n----- kamailio {pbx.hostport} -----\n{pbx.log_text()[-6000:]}")
        pbx.remove_files()


@pytest.fixture
async def make_tap(kamailio: Kamailio) -> AsyncIterator[Callable[..., Any]]:
    """``await make_tap()`` -> a :class:`LossyUdpProxy` to the PBX that drops nothing: a phone
    talking through it shows the responses it got (reason phrases included)."""
    taps: list[LossyUdpProxy] = []

    async def factory() -> LossyUdpProxy:
        taps.append(await LossyUdpProxy((kamailio.host, kamailio.port)).start())
        return taps[-1]

    try:
        yield factory
    finally:
        for tap in taps:
            tap.close()


@pytest.fixture
async def make_phone(kamailio: Kamailio, make_tap: Any) -> AsyncIterator[Callable[..., Any]]:
    """``await make_phone("1001", proxy_addr=None)`` -> a registered :class:`Phone` (closed,
    and so unregistered, before the taps it may talk through)."""
    phones: list[Phone] = []

    async def factory(ext: str, proxy_addr: tuple[str, int] | None = None) -> Phone:
        phone = await Phone.open(kamailio, ext, proxy_addr=proxy_addr, tone_hz=None)
        phones.append(phone)
        registered = await phone.register()
        assert registered.state is RegistrationState.REGISTERED, registered
        return phone

    try:
        yield factory
    finally:
        for phone in phones:
            await phone.close()


def presenting(method: str, line: str, domain: str) -> dict[str, Any]:
    """UserAgent.call's options that present ``line`` for the tenant's caller-ID method (what
    phone/worker/line.py ``_caller_id`` sends)."""
    if method == "ppi":
        return {"headers": [("P-Preferred-Identity", f"<sip:{line}@{domain}>")]}
    if method == "pai":
        return {"headers": [("P-Asserted-Identity", f"<sip:{line}@{domain}>")]}
    return {"from_user": line}


async def dial(phone: Phone, target: str, **options: Any) -> str:
    """:meth:`Phone.call` with UserAgent.call's keyword options (``from_user``, ``headers``)."""
    pending = PhoneCall("")
    leg = await phone._open_leg(pending)
    offer = build_offer("127.0.0.1", leg.local_port, session_id=str(secrets.randbelow(10**9)))
    call_id, _ = phone.execute(lambda now: phone.ua.call(now, target, offer, **options))
    pending.call_id = call_id
    phone.calls[call_id] = pending
    return str(call_id)


def received_invite(phone: Phone, call_id: str) -> Any:
    return phone.ua.calls[call_id].invite


async def hang_up_connected(caller: Phone, call_id: str, callee: Phone, callee_id: str) -> None:
    await callee.answer(callee_id)
    await caller.wait_for(CallStateChanged, call_id=call_id, state=CallState.CONNECTED)
    caller.hangup(call_id)
    ended = await callee.wait_for(CallStateChanged, call_id=callee_id, state=CallState.TERMINATED)
    assert ended.reason == "remote-bye"


# ---------------------------------------------------------------- presenting a line


async def test_it_shows_baresip_the_line_presented_in_from(kamailio, make_phone, make_baresip):
    bob = make_baresip("1002", auto_answer=True)
    alice = await make_phone("1001")

    call_id = await dial(alice, "1002", from_user=LINE)

    await alice.wait_for(CallStateChanged, call_id=call_id, state=CallState.CONNECTED)
    await bob.wait_event_async("CALL_ESTABLISHED", peeruri=kamailio.aor(LINE))
    alice.hangup(call_id)
    await bob.wait_event_async("CALL_CLOSED")
    ended = await alice.wait_for(CallStateChanged, call_id=call_id, state=CallState.TERMINATED)
    assert ended.reason == "local-bye"


@pytest.mark.parametrize("method", METHODS)
async def test_it_asserts_the_presented_line_to_the_callee(kamailio, make_phone, method):
    bob = await make_phone("1002")
    alice = await make_phone("1001")

    call_id = await dial(alice, "1002", **presenting(method, LINE, kamailio.domain))

    incoming = await bob.wait_for(IncomingCall)
    invite = received_invite(bob, incoming.call_id)
    assert invite.headers.get("p-asserted-identity") == f"<sip:{LINE}@{kamailio.domain}>"
    assert invite.headers.get("p-preferred-identity") is None
    assert incoming.caller.uri.user == (LINE if method == "from" else "1001")
    await hang_up_connected(alice, call_id, bob, incoming.call_id)


async def test_it_asserts_the_extension_when_no_line_is_presented(kamailio, make_phone):
    bob = await make_phone("1002")
    alice = await make_phone("1001")

    call_id = await dial(alice, "1002")

    incoming = await bob.wait_for(IncomingCall)
    invite = received_invite(bob, incoming.call_id)
    assert invite.headers.get("p-asserted-identity") == f"<sip:1001@{kamailio.domain}>"
    assert incoming.caller.uri.user == "1001"
    await hang_up_connected(alice, call_id, bob, incoming.call_id)


@pytest.mark.parametrize(
    ("method", "number"),
    [
        ("from", "0322224444"),  # another tenant's line
        ("ppi", "0322224444"),
        ("pai", "0322224444"),
        ("from", "0311113333"),  # tenant A's, but not a line of 1002
        ("from", "0399999999"),  # not a line of the PBX at all
        ("pai", "1001"),  # another extension
    ],
)
async def test_it_refuses_a_line_the_user_may_not_present(
    kamailio, make_phone, make_tap, method, number
):
    alice = await make_phone("1001")
    tap = await make_tap()
    bob = await make_phone("1002", proxy_addr=tap.addr)

    call_id = await dial(bob, "1001", **presenting(method, number, kamailio.domain))

    ended = await bob.wait_for(CallStateChanged, call_id=call_id, state=CallState.TERMINATED)
    assert ended.status == 403
    finals = [d.first_line for d in tap.exchanged("INVITE") if (d.status or 0) >= 400]
    assert finals == ["SIP/2.0 407 Proxy Authentication Required", "SIP/2.0 403 Line not allowed"]
    assert alice.seen(IncomingCall) == []

    # The next call without a line goes through.
    call_id = await dial(bob, "1001")
    incoming = await alice.wait_for(IncomingCall)
    assert incoming.caller.uri.user == "1002"
    await hang_up_connected(bob, call_id, alice, incoming.call_id)


async def test_it_follows_lines_changed_at_runtime(kamailio, make_phone):
    bob = await make_phone("1002")
    alice = await make_phone("1001")
    kamailio.add_line("0311115555", ["1001"])
    try:
        call_id = await dial(alice, "1002", from_user="0311115555")
        incoming = await bob.wait_for(IncomingCall)
        assert incoming.caller.uri.user == "0311115555"
        await hang_up_connected(alice, call_id, bob, incoming.call_id)
    finally:
        kamailio.remove_line("0311115555")

    call_id = await dial(alice, "1002", from_user="0311115555")
    ended = await alice.wait_for(CallStateChanged, call_id=call_id, state=CallState.TERMINATED)
    assert ended.status == 403


# ---------------------------------------------------------------- calls to a line


async def test_it_rings_the_lines_extension_with_the_line_in_to(kamailio, make_phone, make_baresip):
    alice = await make_phone("1001")
    bob = make_baresip("1002")

    bob.dial(LINE)

    incoming = await alice.wait_for(IncomingCall)
    assert incoming.callee.uri.user == LINE  # the dialled line, which the phone shows
    # The Request-URI is the Contact alice registered: it names her extension, not the line.
    assert incoming.request_uri.user == "1001"
    assert incoming.caller.uri.user == "1002"
    await alice.answer(incoming.call_id)
    await alice.wait_for(CallStateChanged, call_id=incoming.call_id, state=CallState.CONNECTED)
    await bob.wait_event_async("CALL_ESTABLISHED")
    bob.hangup()
    ended = await alice.wait_for(
        CallStateChanged, call_id=incoming.call_id, state=CallState.TERMINATED
    )
    assert ended.reason == "remote-bye"


async def test_it_rings_every_extension_of_a_shared_line(kamailio, make_phone):
    alice = await make_phone("1001")
    carol = await make_phone("1003")
    bob = await make_phone("1002")

    call_id = await dial(bob, "0311113333")

    to_alice = await alice.wait_for(IncomingCall)
    to_carol = await carol.wait_for(IncomingCall)
    assert to_alice.callee.uri.user == to_carol.callee.uri.user == "0311113333"
    await carol.answer(to_carol.call_id)
    await bob.wait_for(CallStateChanged, call_id=call_id, state=CallState.CONNECTED)
    # The PBX cancels the branch nobody answered.
    ended = await alice.wait_for(
        CallStateChanged, call_id=to_alice.call_id, state=CallState.TERMINATED
    )
    assert ended.reason == "cancelled"
    bob.hangup(call_id)
    await carol.wait_for(CallStateChanged, call_id=to_carol.call_id, state=CallState.TERMINATED)


async def test_it_answers_480_when_nobody_of_the_line_is_registered(kamailio, make_phone):
    alice = await make_phone("1001")

    call_id = await dial(alice, "0311114444")

    ended = await alice.wait_for(CallStateChanged, call_id=call_id, state=CallState.TERMINATED)
    assert (ended.status, ended.reason) == (480, "unavailable")


# ---------------------------------------------------------------- the demo


def test_it_seeds_demo_lines_that_the_dev_pbx_lets_alice_and_bob_present(db):
    from django.core.management import call_command

    from phone.models import LineButton
    from portal.models import SipAccount, Tenant

    call_command("seed_demo", stdout=io.StringIO())
    demo = Tenant.objects.get(code="demo")
    numbers = set(
        LineButton.objects.filter(tenant=demo, kind=LineButton.Kind.LINE).values_list(
            "number", flat=True
        )
    )
    lines_demo = (KAMAILIO_CFG.parent / "lines.demo").read_text()
    known = dict(re.findall(r'^\$sht\(lines=>(\w+)\) = "([^"]*)";', lines_demo, re.M))
    extensions = {
        a.extension
        for a in SipAccount.objects.filter(user__username__in=["alice", "bob"], is_active=True)
    }

    assert demo.caller_id_method == Tenant.CallerIdMethod.FROM_USER
    assert len(numbers) >= 2
    for number in numbers:
        assert extensions <= set(known[number].split(",")), number
