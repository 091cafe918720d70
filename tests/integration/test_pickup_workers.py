"""代理応答 across sipworkers (issue 13): alice's and bob's lines run in two `manage.py sipworker`
processes on Redis; alice's page sees bob's lamp ring (the presence store and the tenant group
in Redis) and picks the call up: bob's worker answers the INVITE and hands it over through the
PBX to alice's line on the other worker."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from phone.models import CallRecord
from phone.sip.useragent import CallState, CallStateChanged
from portal.models import SipAccount
from tests.phone import test_sipworker_redis as redis_workers
from tests.phone.ws import communicator

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

workers = redis_workers.workers


async def next_of(ws, kind, timeout=15, **fields):
    while True:
        message = await ws.receive_json_from(timeout=timeout)
        if message["type"] == kind and fields.items() <= message.items():
            return message


async def lamp(ws, extension, state, timeout=15):
    while True:
        message = await next_of(ws, "presence", timeout=timeout)
        if {"extension": extension, "state": state} in message["entries"]:
            return


async def test_alice_picks_up_bobs_call_from_another_sipworker(cast, workers, redis_url, kamailio):
    from tests.support.ua import Phone

    account = await database_sync_to_async(SipAccount.objects.get)(user=cast.bob)
    account.password = "pw1002"
    await database_sync_to_async(account.save)()
    workers.start(), workers.start()
    await asyncio.to_thread(workers.wait_live, 2)
    pages = {}
    for user in (cast.alice, cast.bob):
        ws = await database_sync_to_async(communicator)(user)
        assert (await ws.connect())[0]
        await next_of(ws, "registration", timeout=20, state="registered")
        pages[user.pk] = ws
    owners = redis_workers.owner_map(redis_url, [cast.alice, cast.bob])
    assert owners[cast.alice.pk] != owners[cast.bob.pk], owners  # two processes
    alice, bob = pages[cast.alice.pk], pages[cast.bob.pk]

    outside = await Phone.open(kamailio, "1003", tone_hz=700)
    await outside.register()
    try:
        caller = await outside.call("1002")
        ringing = await next_of(bob, "incoming", timeout=15)
        await lamp(alice, "1002", "ringing")
        await alice.send_json_to({"type": "pickup", "extension": "1002"})
        picked = await next_of(alice, "call", timeout=15, state="incall", direction="in")
        assert picked["remote"] == "1003"
        await next_of(bob, "call", id=ringing["id"], state="ended", reason="picked-up")
        await outside.wait_for(CallStateChanged, 10, call_id=caller, state=CallState.CONNECTED)
        # A page opening now reads bob's lamp from the Redis store (written by his worker).
        late = await database_sync_to_async(communicator)(cast.alice)
        assert (await late.connect())[0]
        snapshot = await next_of(late, "presence", full=True)
        assert {"extension": "1002", "state": "idle"} in snapshot["entries"]
        await late.disconnect()
        await alice.send_json_to({"type": "hangup", "call_id": picked["id"]})
        await outside.wait_for(CallStateChanged, 10, call_id=caller, state=CallState.TERMINATED)
    finally:
        await outside.close()
    await asyncio.sleep(1.0)
    row = await database_sync_to_async(
        lambda: CallRecord.objects.filter(user=cast.bob, ended_at__isnull=False).get()
    )()
    assert (row.end_reason, row.answered_by_id) == ("picked-up", cast.alice.pk)
    for ws in pages.values():
        await ws.disconnect()
