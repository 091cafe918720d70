"""The /ws/phone/ protocol against the real ASGI app: auth, origin, bad input, isolation."""

import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from phone.signalling import events
from phone.signalling.schema import MAX_MESSAGE_BYTES
from tests.phone.ws import communicator

pytestmark = pytest.mark.django_db(transaction=True)


async def open_ws(user, **kwargs):
    # Creating the session cookie touches the database: not on the event loop.
    return await database_sync_to_async(communicator)(user, **kwargs)


async def connected(user):
    ws = await open_ws(user)
    ok, _ = await ws.connect()
    assert ok
    return ws


async def until(ws, kind, timeout=5):
    """The next message of `kind`, skipping others (registration, calls, ...)."""
    while True:
        message = await ws.receive_json_from(timeout=timeout)
        if message["type"] == kind:
            return message


async def test_it_refuses_anonymous_visitors(cast):
    ws = await open_ws(None)
    ok, code = await ws.connect()
    assert not ok and code == 4401


async def test_it_refuses_a_foreign_origin(cast):
    ws = await open_ws(cast.alice, origin="https://evil.example")
    ok, _ = await ws.connect()
    assert not ok


async def test_it_refuses_a_user_without_a_tenant(cast):
    ws = await open_ws(cast.superuser)
    ok, code = await ws.connect()
    assert not ok and code == 4403


async def test_it_reports_the_line_state_on_connect(cast):
    ws = await connected(cast.alice)
    registration = await until(ws, "registration")
    assert registration["extension"] == "1001"
    assert registration["state"] in ("registering", "failed")
    calls = await until(ws, "calls")
    assert calls["calls"] == []
    await ws.disconnect()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        ('{"no": "type"}', "bad_json"),
        ('{"type": "launch.missiles"}', "unknown_type"),
        ('{"type": "dial"}', "bad_field"),
        ('{"type": "dial", "number": 12}', "bad_field"),
        ('{"type": "dtmf", "digits": true}', "bad_field"),
        ('{"type": "hold", "extra": 1}', "bad_field"),
        ("x" * (MAX_MESSAGE_BYTES + 1), "too_large"),
    ],
)
async def test_it_answers_bad_messages_with_an_error_and_stays_open(cast, raw, code):
    ws = await connected(cast.alice)
    await ws.send_to(text_data=raw)
    error = await until(ws, "error")
    assert error["code"] == code and error["message"]
    await ws.send_json_to({"type": "ping", "id": 7})
    assert (await until(ws, "pong"))["id"] == 7
    await ws.disconnect()


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "ping", "id": "\\ud800"}',  # a lone surrogate: no reply could echo it
        '{"type": "dial", "number": "\\udfff"}',
        '{"type": "ping", "\\ud800": 1}',
        "[" * 20_000 + "]" * 20_000,  # fits in 64 KB, exhausts the JSON parser's stack
        '{"type": "ping", "id": ' + "[" * 5000 + "]" * 5000 + "}",
    ],
)
async def test_it_survives_crash_payloads_with_an_error_reply(cast, raw):
    ws = await connected(cast.alice)
    await until(ws, "calls")
    await ws.send_to(text_data=raw)
    assert (await until(ws, "error"))["code"] in ("bad_json", "bad_field")
    await ws.send_json_to({"type": "ping", "id": 1})
    assert (await until(ws, "pong"))["id"] == 1
    await ws.disconnect()


async def test_it_answers_a_binary_frame_that_is_not_utf8_with_an_error(cast):
    ws = await connected(cast.alice)
    await until(ws, "calls")
    await ws.send_to(bytes_data=b'{"type": "ping", "id": "\xff\xfe"}')
    assert (await until(ws, "error"))["code"] == "bad_json"
    await ws.send_to(bytes_data=b'{"type": "ping", "id": 2}')
    assert (await until(ws, "pong"))["id"] == 2
    await ws.disconnect()


@pytest.mark.parametrize(
    "message",
    [
        {"type": "dial", "number": "1" * 33},
        {"type": "hangup", "call_id": "x" * 256},
        {"type": "dtmf", "call_id": "c", "digits": "1" * 33},
        {"type": "ping", "id": "p" * 65},
    ],
)
async def test_it_refuses_overlong_fields_with_a_clear_error(cast, message):
    ws = await connected(cast.alice)
    await until(ws, "calls")
    await ws.send_json_to(message)
    error = await until(ws, "error")
    assert error["code"] == "too_long" and "longer than" in error["message"]
    await ws.disconnect()


async def test_it_tells_the_worker_the_page_went_away_however_the_consumer_ended(cast, settings):
    """The test plays the sipworker: it reads the worker channel itself."""
    import asyncio

    from phone.signalling import protocol

    settings.SIPWORKER_EMBEDDED = False
    layer = get_channel_layer()
    ws = await connected(cast.alice)
    attach = protocol.from_wire(await layer.receive(protocol.WORKER_CHANNEL))
    assert isinstance(attach, protocol.Attach) and attach.user_id == cast.alice.pk
    ws.future.cancel()  # the server drops the connection's task (crash, shutdown...)
    with pytest.raises(asyncio.CancelledError):
        await ws.future
    detach = protocol.from_wire(await asyncio.wait_for(layer.receive(protocol.WORKER_CHANNEL), 2))
    assert detach == protocol.Detach(cast.alice.pk, attach.session)


async def test_it_keeps_the_socket_when_a_handler_fails(cast, monkeypatch):
    from phone.signalling.consumers import PhoneConsumer

    async def broken(self, event):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(PhoneConsumer, "phone_dial_request", broken)
    ws = await connected(cast.alice)
    await until(ws, "calls")
    await get_channel_layer().group_send(
        events.user_group(cast.alice.pk),
        {"type": events.DIAL_REQUEST, "number": "1", "source": "x"},
    )
    await ws.send_json_to({"type": "ping", "id": 3})
    assert (await until(ws, "pong"))["id"] == 3
    await ws.disconnect()


async def test_it_refuses_call_actions_without_a_call(cast):
    ws = await connected(cast.alice)
    await until(ws, "calls")
    for kind in ("hangup", "answer", "reject", "hold", "unhold"):
        await ws.send_json_to({"type": kind, "call_id": "none@x"})
        error = await until(ws, "error")
        assert error["request"] == kind and error["code"] in ("no_call", "no_account", "bad_state")
    await ws.disconnect()


async def test_it_keeps_users_events_to_themselves(cast):
    alice, charlie = await connected(cast.alice), await connected(cast.charlie)
    await until(alice, "calls")
    await until(charlie, "calls")
    layer = get_channel_layer()
    await layer.group_send(
        events.user_group(cast.alice.pk), {"type": events.SETTINGS_CHANGED, "what": "cti"}
    )
    assert (await until(alice, "settings.changed"))["what"] == "cti"
    assert await charlie.receive_nothing(timeout=0.3)
    await alice.disconnect()
    await charlie.disconnect()


async def test_it_cannot_answer_another_users_call_by_id(cast):
    # Call ids are per line: charlie naming some id of alice's gets "no_call", never her call.
    ws = await connected(cast.charlie)
    await until(ws, "calls")
    await ws.send_json_to({"type": "answer", "call_id": "alices-call@127.0.0.1"})
    error = await until(ws, "error")
    assert error["code"] in ("no_call", "no_account")
    await ws.disconnect()


def test_every_browser_command_reaches_the_worker_as_a_typed_message():
    import dataclasses

    from phone.signalling import protocol
    from phone.signalling.schema import CLIENT_MESSAGES

    assert set(CLIENT_MESSAGES) - {"ping"} == set(protocol.COMMANDS)
    for kind, cls in protocol.COMMANDS.items():
        assert {f.name for f in dataclasses.fields(cls)} == set(CLIENT_MESSAGES[kind]), kind
        sample = {
            name: (1 if spec[0] == (int,) else "x") for name, spec in CLIENT_MESSAGES[kind].items()
        }
        wire = protocol.to_wire(protocol.Command(1, "s", protocol.make_command(kind, sample)))
        assert protocol.from_wire(wire) == protocol.Command(1, "s", cls(**sample))


def test_every_server_message_is_documented_and_round_trips():
    from phone.signalling.schema import ERROR_CODES, SERVER_MESSAGES, error_message, server_message

    samples = {str: "x", int: 1, bool: True, list: [], dict: {}, type(None): None}
    for kind, fields in SERVER_MESSAGES.items():
        values = {name: samples[spec[0][0]] for name, spec in fields.items()}
        message = server_message(kind, **values)
        assert json.loads(json.dumps(message)) == message
    with pytest.raises(KeyError):
        server_message("undocumented")
    for code in ERROR_CODES:
        assert error_message(code)["message"]


@pytest.mark.integration
async def test_it_refuses_to_present_another_tenants_line_number(cast, on_pbx):
    from phone.models import LineButton

    cast.tenant_a.caller_id_method = "ppi"
    await database_sync_to_async(cast.tenant_a.save)()
    await database_sync_to_async(LineButton.objects.create)(
        tenant=cast.tenant_b, kind="line", number="0399990000", position=1
    )
    await database_sync_to_async(LineButton.objects.create)(
        tenant=cast.tenant_a, kind="line", number="0311112222", position=1
    )
    ws = await connected(cast.alice)
    while (await until(ws, "registration", timeout=10))["state"] != "registered":
        pass
    await ws.send_json_to({"type": "dial", "number": "1002", "line": "0399990000"})
    error = await until(ws, "error")
    assert (error["code"], error["request"]) == ("not_allowed", "dial")
    # Its own tenant's line is fine: the call goes out (1002 is not registered: it fails).
    await ws.send_json_to({"type": "dial", "number": "1002", "line": "0311112222"})
    call = await until(ws, "call", timeout=10)
    assert call["direction"] == "out" and call["remote"] == "1002"
    await ws.disconnect()


@pytest.mark.integration
async def test_it_tells_the_page_when_voicemail_is_waiting(cast, on_pbx):
    import asyncio
    import socket

    ws = await connected(cast.alice)
    while (await until(ws, "registration", timeout=10))["state"] != "registered":
        pass
    # The voicemail system's NOTIFY reaches the phone through the PBX, as on a real one: a
    # phone accepts out-of-dialog requests from its PBX only.
    notify = (
        f"NOTIFY sip:1001@{on_pbx.domain} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKmwi1\r\n"  # RFC 3581: answer here
        "From: <sip:voicemail@127.0.0.1>;tag=vm1\r\n"
        f"To: <sip:1001@{on_pbx.domain}>\r\n"
        "Call-ID: mwi-1@127.0.0.1\r\n"
        "CSeq: 1 NOTIFY\r\n"
        "Max-Forwards: 70\r\n"
        "Event: message-summary\r\n"
        "Subscription-State: active\r\n"
        "Content-Type: application/simple-message-summary\r\n"
    )
    body = "Messages-Waiting: yes\r\nVoice-Message: 2/1 (0/0)\r\n"
    data = f"{notify}Content-Length: {len(body)}\r\n\r\n{body}".encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(data, (on_pbx.host, on_pbx.port))
        sock.settimeout(5)
        reply = await asyncio.to_thread(sock.recv, 4096)
    assert reply.startswith(b"SIP/2.0 200")
    status = await until(ws, "vm.status", timeout=5)
    assert (status["waiting"], status["new"], status["old"]) == (True, 2, 1)
    await ws.disconnect()


@pytest.mark.integration
async def test_it_keeps_the_call_through_bad_messages(cast, on_pbx, make_baresip):
    bob = await database_sync_to_async(make_baresip)("1002", auto_answer=True, tone_hz=700)
    ws = await connected(cast.alice)
    while (await until(ws, "registration", timeout=10))["state"] != "registered":
        pass
    await ws.send_json_to({"type": "dial", "number": "1002"})
    while (call := await until(ws, "call", timeout=10))["state"] != "incall":
        pass
    for garbage in ("{", '{"type": "hangup", "call_id": 5}', '{"type": "nope"}', "x" * 70000):
        await ws.send_to(text_data=garbage)
        assert (await until(ws, "error"))["code"]
    await ws.send_json_to({"type": "hold", "call_id": call["id"]})  # still there, still obeys
    while (await until(ws, "call"))["state"] != "held":
        pass
    await ws.send_json_to({"type": "hangup", "call_id": call["id"]})
    while (await until(ws, "call"))["state"] != "ended":
        pass
    await bob.wait_event_async("CALL_CLOSED", timeout=10)
    await ws.disconnect()


@pytest.fixture
def park_groups(cast):
    from phone.models import ParkGroup

    group = ParkGroup.objects.create(tenant=cast.tenant_a, name="Sales")
    group.members.add(cast.alice, cast.bob)
    other = ParkGroup.objects.create(tenant=cast.tenant_b, name="B")
    other.members.add(cast.charlie)
    return group


async def test_it_shows_the_park_slots_to_the_group_and_nobody_else(cast, park_groups):
    from phone import actions

    alice, bob, charlie = (
        await connected(cast.alice),
        await connected(cast.bob),
        await connected(cast.charlie),
    )
    initial = await until(alice, "park.slots")
    assert [s["state"] for s in initial["slots"]] == ["free"] * 6
    await until(bob, "park.slots")
    await until(charlie, "park.slots")
    await database_sync_to_async(actions.do_park)(
        cast.bob.pk, park_groups.pk, 2, "c1@x", "w", "0312345678", "山田"
    )
    seen_by_bob = (await until(bob, "park.slots"))["slots"][1]
    seen_by_alice = (await until(alice, "park.slots"))["slots"][1]
    assert seen_by_bob["state"] == "mine" and seen_by_alice["state"] == "parked"
    assert (seen_by_alice["parked_by"], seen_by_alice["caller"]) == ("Bob", "0312345678")
    messages = []
    while not await charlie.receive_nothing(timeout=0.3):
        messages.append(await charlie.receive_json_from())
    assert not [m for m in messages if m["type"] == "park.slots"]
    # Another tenant's user naming the slot gets nothing of it.
    await charlie.send_json_to({"type": "park.pickup", "slot": 2})
    assert (await until(charlie, "error"))["code"] in ("no_slot", "no_account")
    for ws in (alice, bob, charlie):
        await ws.disconnect()


def test_to_wire_gives_what_asdict_gives_as_a_copy():
    """The worker's messages leave as plain data, nested containers copied (a page message
    changed after it was sent must not change what was sent), exactly as dataclasses.asdict."""
    import dataclasses
    from collections import namedtuple

    from phone.signalling import protocol

    Pair = namedtuple("Pair", "a b")
    message = {
        "type": "quality",
        "id": "c1",
        "legs": [{"loss": 0.5, "rtt": None, "ok": True}, {"loss": 2, "tags": ("x", 1)}],
        "pair": Pair(1, [2]),
        "nested": protocol.Heartbeat("w-1"),
    }
    out = protocol.ToPage(message)
    wire = protocol.to_wire(out)
    assert wire == {"type": "phone.message", **dataclasses.asdict(out)}
    assert wire["message"]["nested"] == {"worker": "w-1"}
    assert type(wire["message"]["legs"][1]["tags"]) is tuple
    message["legs"][0]["loss"] = 99.0
    message["pair"].b.append(3)
    assert wire["message"]["legs"][0]["loss"] == 0.5
    assert wire["message"]["pair"] == (1, [2])
    assert protocol.from_wire(wire) == protocol.ToPage(wire["message"])
