"""Colleague presence (BLF), do-not-disturb and the new messages' bounds (issue 13).

The line runs on the real host with SIP wired in memory (tests/support/memsip: the far end
plays the PBX, and REGISTERs get 200 so the line is registered); colleagues' pages are real
WebSockets to the ASGI app, so the lamps travel the path a page's do: line → presence store →
the tenant's channel-layer group → PhoneConsumer.
"""

import asyncio

import pytest
from channels.db import database_sync_to_async

from phone import presence
from phone.models import CallRecord, PhoneUserSettings
from phone.signalling import protocol
from phone.sip.useragent import CallState, CallStateChanged
from phone.worker.host import SipWorkerHost
from tests.phone.ws import communicator
from tests.support.memsip import PBX, FarEnd, MemoryNetwork, Page

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_store():
    presence.reset_memory()
    yield
    presence.reset_memory()


def test_it_computes_the_lamp_from_the_line():
    state = presence.line_state
    assert state(registered=False, phases=["incall"], dnd=False) == "offline"
    assert state(registered=True, phases=[], dnd=False) == "idle"
    assert state(registered=True, phases=[], dnd=True) == "dnd"
    assert state(registered=True, phases=["incoming"], dnd=False) == "ringing"
    # A second call ringing while one is up: ringing (a colleague can take it).
    assert state(registered=True, phases=["incall", "incoming"], dnd=False) == "ringing"
    for phase in ("dialing", "ringing", "incall", "held"):
        assert state(registered=True, phases=[phase], dnd=True) == "busy"


@pytest.fixture
async def registered_line(cast, settings):
    """alice's line on the real host, its PBX in memory answering REGISTER with 200."""
    settings.SIP_KEEPALIVE_SECONDS = 0
    settings.SIPWORKER_RELEASE_SECONDS = 30
    cast.tenant_a.outbound_proxy = f"{PBX[0]}:{PBX[1]}"
    await database_sync_to_async(cast.tenant_a.save)()
    net = MemoryNetwork()

    def registrar(datagram):
        if datagram.dst == PBX and datagram.first_line.startswith("REGISTER"):
            net.answer(datagram, 200)
            return True
        return False

    net.intercept = registrar
    far = FarEnd.open(net, PBX)
    host = SipWorkerHost("sipworker-presence-test")
    host.open_sip = net.open_sip
    host.net = net  # for tests that look at what went out
    page = await Page.open(host, cast.alice)
    await page.wait("registration", state="registered")
    line = host.lines[cast.alice.pk]
    yield host, far, page, line
    page.close()
    await host.shutdown()


async def ws_of(user):
    ws = await database_sync_to_async(communicator)(user)
    assert (await ws.connect())[0]
    return ws


async def lamps(ws, extension, count, timeout=5.0):
    """The next `count` states of `extension` this page hears (snapshot first)."""
    seen = []
    while len(seen) < count:
        message = await ws.receive_json_from(timeout=timeout)
        if message["type"] != "presence":
            continue
        seen += [e["state"] for e in message["entries"] if e["extension"] == extension]
    return seen


async def presence_messages(ws, wait=0.5):
    found = []
    while not await ws.receive_nothing(timeout=wait):
        message = await ws.receive_json_from()
        if message["type"] == "presence":
            found.append(message)
    return found


async def test_a_colleagues_lamp_follows_the_call_and_another_tenant_hears_nothing(
    registered_line, cast
):
    _host, far, page, line = registered_line
    bob, charlie = await ws_of(cast.bob), await ws_of(cast.charlie)
    # The snapshot on connect already shows alice idle (the store, not an event).
    assert await lamps(bob, "1001", 1) == ["idle"]
    charlie_snapshot = [m for m in await presence_messages(charlie) if m["full"]]
    assert charlie_snapshot and all(
        e["extension"] != "1001" for m in charlie_snapshot for e in m["entries"]
    )

    call_id = far.call(line.transport.local_addr)
    await page.wait("call", id=call_id, state="incoming")
    page.send(protocol.Answer(call_id))
    await page.wait("call", id=call_id, state="incall")
    await far.wait(lambda e: isinstance(e, CallStateChanged) and e.state is CallState.CONNECTED)
    far.execute(lambda now: far.ua.hangup(now, call_id))
    await page.wait("call", id=call_id, state="ended")
    # In this order, each once: no flicker (the answering moment is not "ringing" again).
    assert await lamps(bob, "1001", 3) == ["ringing", "busy", "idle"]
    # Tenant B's page heard none of it.
    assert not [
        e
        for m in await presence_messages(charlie)
        for e in m["entries"]
        if e["extension"] == "1001"
    ]
    await bob.disconnect()
    await charlie.disconnect()


def test_a_page_of_another_tenant_gets_no_lamps_in_its_phonebook(cast, client):
    from django.urls import reverse

    from phone.models import Contact, Phonebook

    books = {}
    for tenant, user in ((cast.tenant_a, cast.alice), (cast.tenant_b, cast.charlie)):
        book = books[user.pk] = Phonebook.objects.create(tenant=tenant, name="Shared")
        # Both books list 1002 (bob's extension in tenant A) and 2001 (charlie's in tenant B).
        Contact.objects.create(tenant=tenant, phonebook=book, name="Bob", number="1002")
        Contact.objects.create(tenant=tenant, phonebook=book, name="Charlie", number="2001")

    def panel(user):
        client.force_login(user)
        return client.get(f"{reverse('phone:phonebook')}?book={books[user.pk].pk}").content.decode()

    page = panel(cast.alice)
    assert 'data-testid="presence-lamp" data-extension="1002"' in page
    page = panel(cast.charlie)
    assert 'data-testid="presence-lamp" data-extension="2001"' not in page  # his own: no lamp
    # In tenant B, 1002 is no line of ours (bob is tenant A's): its lamp is tenant B's PBX
    # extension (phone.worker.blf watches it on tenant B's PBX), never bob's line; and in
    # tenant A likewise 2001 is tenant A's PBX extension, not charlie's line.
    assert presence.pbx_extensions(cast.tenant_b.pk) == ["1002"]
    assert presence.pbx_extensions(cast.tenant_a.pk) == ["2001"]


async def test_dnd_rejects_with_486_without_ringing_and_logs_it(registered_line, cast):
    _host, far, page, line = registered_line
    bob = await ws_of(cast.bob)
    assert await lamps(bob, "1001", 1) == ["idle"]
    page.send(protocol.SetDnd(True))
    await page.wait("dnd", on=True)
    assert await lamps(bob, "1001", 1) == ["dnd"]
    stored = await database_sync_to_async(
        lambda: PhoneUserSettings.objects.get(user=cast.alice).dnd
    )()
    assert stored is True

    mark = page.mark()
    call_id = far.call(line.transport.local_addr)
    ended = await far.wait(
        lambda e: isinstance(e, CallStateChanged) and e.state is CallState.TERMINATED
    )
    assert ended.status == 486
    await asyncio.sleep(0.2)
    assert not [m for m in page.messages[mark:] if m["type"] in ("incoming", "call")]
    row = await database_sync_to_async(lambda: CallRecord.objects.get(sip_call_id=call_id))()
    assert (row.direction, row.end_reason, row.worker) == ("rejected", "DND", "")
    # Never rang: the lamp stayed dnd.
    assert not [
        e for m in await presence_messages(bob) for e in m["entries"] if e["state"] == "ringing"
    ]

    page.send(protocol.SetDnd(False))
    await page.wait("dnd", on=False)
    assert await lamps(bob, "1001", 1) == ["idle"]
    await bob.disconnect()


@pytest.mark.parametrize(
    "message, code",
    [
        ({"type": "dnd"}, "bad_field"),
        ({"type": "dnd", "on": "yes"}, "bad_field"),
        ({"type": "dnd", "on": 1}, "bad_field"),
        ({"type": "dnd", "on": True, "evil": 1}, "bad_field"),
        ({"type": "pickup"}, "bad_field"),
        ({"type": "pickup", "extension": 1002}, "bad_field"),
        ({"type": "pickup", "extension": "1" * 33}, "too_long"),
        ({"type": "pickup", "extension": ["1002"]}, "bad_field"),
        ({"type": "pickup.group", "slot": 1}, "bad_field"),
        ({"type": "presence", "entries": []}, "unknown_type"),
    ],
)
async def test_it_answers_bad_presence_pickup_and_dnd_messages_with_an_error(cast, message, code):
    ws = await ws_of(cast.alice)
    await ws.send_json_to(message)
    while True:
        reply = await ws.receive_json_from(timeout=5)
        if reply["type"] == "error":
            break
    assert reply["code"] == code
    # The connection survives.
    await ws.send_json_to({"type": "ping", "id": 7})
    while (reply := await ws.receive_json_from(timeout=5))["type"] != "pong":
        pass
    await ws.disconnect()


async def test_another_tenant_cannot_pick_up_a_call_by_extension(registered_line, cast):
    """charlie (tenant B, his line up on the same PBX) names alice's ringing extension: it is
    not his tenant's, so no Handover reaches alice's line; his line treats it as an extension
    outside the portal and dials the PBX feature code (which his PBX would refuse)."""
    host, far, page, line = registered_line
    cast.tenant_b.outbound_proxy = f"{PBX[0]}:{PBX[1]}"
    await database_sync_to_async(cast.tenant_b.save)()
    call_id = far.call(line.transport.local_addr)
    await page.wait("call", id=call_id, state="incoming")
    charlie = await Page.open(host, cast.charlie)
    await charlie.wait("registration", state="registered")
    charlie.send(protocol.PickupRinging("1001"))
    dialled = await charlie.wait("call", direction="out")
    assert dialled["remote"] == "*81001"  # a normal call, not alice's caller
    await asyncio.sleep(0.3)
    assert line.calls[call_id].phase == "incoming"  # still ringing at alice, untouched
    assert not line.handing_over
    # Group pickup: tenant B's group does not see tenant A's ringing lines either.
    charlie.send(protocol.PickupGroup())
    assert (await charlie.wait("error", request="pickup.group"))["code"] == "no_call"
    # Hostile extensions end as a number that cannot be dialled.
    charlie.send(protocol.PickupRinging("1001;user=<evil>"))
    assert (await charlie.wait("error", request="dial"))["code"] == "bad_number"
    charlie.close()


async def test_an_extension_not_on_the_portal_is_picked_up_by_the_pbx_feature_code(
    registered_line, cast
):
    host, _far, page, _line = registered_line
    cast.tenant_a.pickup_template = "**{ext}"
    await database_sync_to_async(cast.tenant_a.save)()
    page.send(protocol.PickupRinging("1099"))
    dialled = await page.wait("call", direction="out")
    assert dialled["remote"] == "**1099"
    assert host.net.sent("INVITE sip:**1099@")
    # A colleague on the portal whose phone does not ring: refused, nothing dialled.
    page.send(protocol.PickupRinging("1002"))
    assert (await page.wait("error", request="pickup"))["code"] == "no_call"


async def test_the_redis_store_is_shared_and_forgets_lines_of_dead_workers(settings, redis_url):
    """With several sipworkers the store is a Redis hash per tenant: what one worker's line
    wrote another process reads; a worker that stopped beating leaves its lines offline."""
    from phone.signalling import owners

    settings.REDIS_URL, settings.SIPWORKER_EMBEDDED = redis_url, False
    assert owners.enabled()
    r = owners.client()
    await r.set(owners.worker_key("w-alive"), "1", px=5000)
    await presence.publish(7, presence.Entry("1001", "ringing", 1, 10.0, "w-alive"))
    await presence.publish(7, presence.Entry("1002", "busy", 2, 11.0, "w-dead"))
    await presence.publish(8, presence.Entry("2001", "idle", 3, 12.0, "w-alive"))
    assert [(e.extension, e.state) for e in await presence.snapshot(7)] == [("1001", "ringing")]
    assert [e.extension for e in await presence.snapshot(8)] == ["2001"]  # per tenant
    assert (await presence.oldest_ringing(7, {1, 2})).extension == "1001"
    await presence.publish(7, presence.Entry("1001", "offline", 1, 13.0, "w-alive"))
    assert await presence.snapshot(7) == []


def test_the_phone_page_shows_the_stored_dnd_state(cast, client):
    client.force_login(cast.alice)
    assert 'data-testid="dnd-btn" data-state="off"' in client.get("/").content.decode()
    PhoneUserSettings.objects.create(user=cast.alice, dnd=True)
    assert 'data-testid="dnd-btn" data-state="on"' in client.get("/").content.decode()
    client.force_login(cast.bob)  # per user
    assert 'data-testid="dnd-btn" data-state="off"' in client.get("/").content.decode()


# -- 応答不可 → 転送 (DND forward) ---------------------------------------------------------------


async def test_dnd_forward_redirects_with_302_naming_the_number_at_the_pbx(registered_line, cast):
    host, far, page, line = registered_line
    await database_sync_to_async(PhoneUserSettings.objects.create)(
        user=cast.alice, dnd_action="forward", dnd_forward_to="201"
    )
    page.send(protocol.SetDnd(True))
    await page.wait("dnd", on=True)
    mark = page.mark()
    call_id = far.call(line.transport.local_addr)
    ended = await far.wait(
        lambda e: isinstance(e, CallStateChanged) and e.state is CallState.TERMINATED
    )
    # The far end here has no proxy to send a new INVITE through: the 302 stands.
    assert ended.status == 302
    (redirect,) = host.net.sent("SIP/2.0 302", src=line.transport.local_addr)
    assert b"\r\nContact: <sip:201@a.pbx.test>\r\n" in redirect.data
    await asyncio.sleep(0.2)
    assert not [m for m in page.messages[mark:] if m["type"] in ("incoming", "call")]
    row = await database_sync_to_async(lambda: CallRecord.objects.get(sip_call_id=call_id))()
    assert (row.direction, row.end_reason) == ("rejected", "DND forward 201")

    # Back to refusing: 486 again, read per call (the 設定 panel does not tell the line).
    await database_sync_to_async(PhoneUserSettings.objects.filter(user=cast.alice).update)(
        dnd_action="reject"
    )
    far.call(line.transport.local_addr)
    ended = await far.wait(
        lambda e: (
            isinstance(e, CallStateChanged)
            and e.state is CallState.TERMINATED
            and e.call_id != call_id
        )
    )
    assert ended.status == 486


def _settings_post(client, user, data):
    from django.urls import reverse

    client.force_login(user)
    return client.post(reverse("phone:settings_dnd"), data, HTTP_HX_REQUEST="true")


def test_the_settings_panel_saves_the_dnd_forward_number(cast, client):
    from django.urls import reverse

    client.force_login(cast.alice)
    page = client.get(f"{reverse('phone:settings')}?tab=other").content.decode()
    assert 'data-testid="dnd-forward-to"' in page and 'data-testid="dnd-action-forward"' in page
    response = _settings_post(
        client, cast.alice, {"dnd_action": "forward", "dnd_forward_to": "03-1234-5678"}
    )
    assert 'data-testid="settings-saved"' in response.content.decode()
    saved = PhoneUserSettings.objects.get(user=cast.alice)
    assert (saved.dnd_action, saved.dnd_forward_to, saved.dnd) == ("forward", "0312345678", False)
    from phone.worker import db

    assert db.dnd_for(cast.alice.pk) == db.DndSetting(False, "0312345678")


@pytest.mark.parametrize(
    "number", ["", "201;evil", "sip:201@x", "0" * 21, "abc", "<201>", "1001", "10-01"]
)
def test_a_bad_forwarding_number_gets_a_field_error(cast, client, number):
    response = _settings_post(
        client, cast.alice, {"dnd_action": "forward", "dnd_forward_to": number}
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="dnd-error-dnd_forward_to"' in page
    assert 'data-testid="settings-saved"' not in page
    assert not PhoneUserSettings.objects.filter(user=cast.alice).exists()


def test_another_tenant_cannot_change_someones_dnd_setting_over_http(cast, client):
    PhoneUserSettings.objects.create(user=cast.alice, dnd=True)
    # Whatever charlie names, he saves his own row (there is no user or pk to name).
    _settings_post(
        client,
        cast.charlie,
        {"dnd_action": "forward", "dnd_forward_to": "999", "user": cast.alice.pk},
    )
    alice = PhoneUserSettings.objects.get(user=cast.alice)
    assert (alice.dnd, alice.dnd_action, alice.dnd_forward_to) == (True, "reject", "")
    assert PhoneUserSettings.objects.get(user=cast.charlie).dnd_forward_to == "999"


async def test_another_tenant_cannot_change_someones_dnd_over_the_websocket(cast):
    ws = await ws_of(cast.charlie)
    for message in (
        {"type": "dnd", "on": True, "user": cast.alice.pk},
        {"type": "dnd", "on": True, "extension": "1001"},
    ):
        await ws.send_json_to(message)
        while (reply := await ws.receive_json_from(timeout=5))["type"] != "error":
            pass
        assert reply["code"] == "bad_field"
    await ws.disconnect()
    stored = await database_sync_to_async(
        lambda: list(PhoneUserSettings.objects.filter(user=cast.alice).values_list("dnd"))
    )()
    assert stored == []


def test_history_shows_where_a_dnd_call_was_forwarded(cast, client):
    from django.urls import reverse
    from django.utils import timezone

    CallRecord.objects.create(
        tenant=cast.tenant_a,
        user=cast.alice,
        direction="rejected",
        remote_number="1002",
        started_at=timezone.now(),
        ended_at=timezone.now(),
        end_reason="DND forward 0312345678",
    )
    client.force_login(cast.alice)
    page = client.get(reverse("phone:history")).content.decode()
    assert "→ 0312345678)" in page
