"""応答不可 → 転送 (DND forward) on the real stack: Kamailio, the embedded sipworker with
alice's and bob's lines, baresip as the forwarding target, SIPp as a plain caller.

alice forwards to 1004 while DND is on: her line answers an INVITE with 302 Moved Temporarily
and Contact <sip:1004@PBX domain> (RFC 3261 §21.3.3). The development Kamailio relays the 302
to the caller unchanged, so the caller's phone follows it; our UA does (§8.1.3.4), so a
colleague calling alice from the portal reaches 1004 and talks.
"""

import asyncio
import time

import pytest
from channels.db import database_sync_to_async

from phone.models import CallRecord, PhoneUserSettings
from portal.models import SipAccount
from tests.integration.test_call_control import Desk
from tests.integration.test_srtp import everything_else

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("loopback_ice"),
]

ALICE_HZ, BOB_HZ, TARGET_HZ = 1000, 1300, 900


@pytest.fixture
def pbx(make_kamailio, cast):
    """A PBX of this test's own (no line of an earlier test registered as 1001 or 1002);
    tenant A on it, alice 1001 forwarding to 1004 while DND is on."""
    pbx = make_kamailio()
    cast.tenant_a.pbx_domain = pbx.domain
    cast.tenant_a.outbound_proxy = pbx.hostport
    cast.tenant_a.save()
    for user, password in ((cast.alice, "pw1001"), (cast.bob, "pw1002")):
        account = SipAccount.objects.get(user=user)
        account.password = password
        account.save()
    PhoneUserSettings.objects.create(user=cast.alice, dnd_action="forward", dnd_forward_to="1004")
    return pbx


@pytest.fixture
async def alice(pbx, cast):
    desk = await Desk.open(cast.alice, ALICE_HZ)
    await desk.send("dnd", on=True)
    await desk.next("dnd", on=True)
    yield desk
    await desk.close()


def _rows(user):
    return list(
        CallRecord.objects.filter(user=user)
        .order_by("started_at")
        .values_list("direction", "remote_number", "end_reason")
    )


async def rows_of(user, count=1, timeout=5.0):
    """The user's history rows once there are `count` (the line logs after it answered)."""
    deadline = time.monotonic() + timeout
    while len(rows := await database_sync_to_async(_rows)(user)) < count:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return rows


async def test_a_colleague_calling_a_forwarding_user_reaches_the_target(
    alice, pbx, cast, make_baresip
):
    target = await asyncio.to_thread(
        lambda: make_baresip("1004", pbx=pbx, tone_hz=TARGET_HZ, auto_answer=True)
    )
    bob = await Desk.open(cast.bob, BOB_HZ)
    try:
        await bob.send("dial", number="1001")
        call = await bob.next("call", state="incall")
        assert call["remote"] == "1001"  # what bob dialled; the PBX's 302 took him on
        await target.wait_event_async("CALL_ESTABLISHED", timeout=10)
        since = time.monotonic()
        await asyncio.sleep(2.0)
        assert bob.hears(since) == pytest.approx(TARGET_HZ, abs=15)
        await bob.send("hangup", call_id=call["id"])
        await target.wait_event_async("CALL_CLOSED", timeout=10)
    finally:
        await bob.close()
    rows = await rows_of(cast.alice)
    assert rows == [("rejected", "1002", "DND forward 1004")]
    # Nothing rang at alice's page.
    heard = await everything_else(alice)
    assert not [m for m in heard if m["type"] in ("incoming", "call")], heard


async def test_dnd_forward_sends_302_with_the_target_at_the_pbx(alice, pbx, cast, make_sipp):
    result = await asyncio.to_thread(
        lambda: make_sipp(
            "uac_expect_302.xml",
            pbx.hostport,
            service="1001",
            auth=("1004", "pw1004"),
            keys={"domain": pbx.domain, "caller": "1004"},
            timeout=15,
        ).run()
    )
    assert result.ok, result.error_log[-2000:] or result.stderr[-2000:]
    assert result.responses[-1] == 302
    assert f"Contact: <sip:1004@{pbx.domain}>" in result.messages_log
    rows = await rows_of(cast.alice)
    assert rows == [("rejected", "1004", "DND forward 1004")]


async def test_dnd_reject_still_says_486(alice, pbx, cast, make_sipp):
    await database_sync_to_async(PhoneUserSettings.objects.filter(user=cast.alice).update)(
        dnd_action="reject"
    )
    result = await asyncio.to_thread(
        lambda: make_sipp(
            "uac_expect_302.xml",
            pbx.hostport,
            service="1001",
            auth=("1004", "pw1004"),
            keys={"domain": pbx.domain, "caller": "1004"},
            timeout=15,
        ).run()
    )
    assert not result.ok and result.responses[-1] == 486
    rows = await rows_of(cast.alice)
    assert rows == [("rejected", "1004", "DND")]
