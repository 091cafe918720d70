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


async def test_it_refuses_call_actions_without_a_call(cast):
    ws = await connected(cast.alice)
    await until(ws, "calls")
    for kind in ("hangup", "answer", "reject"):
        await ws.send_json_to({"type": kind})
        error = await until(ws, "error")
        assert error["request"] == kind and error["code"] in ("no_call", "no_account")
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


def test_every_server_message_is_documented_and_round_trips():
    from phone.signalling.schema import ERROR_CODES, SERVER_MESSAGES, error_message, server_message

    samples = {str: "x", int: 1, bool: True, list: [], dict: {}, type(None): None}
    for kind, fields in SERVER_MESSAGES.items():
        values = {name: samples[types[0]] for name, (types, _required) in fields.items()}
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
    # Earlier tests of this module may have left contacts of lines that are gone: try each.
    contacts = await database_sync_to_async(on_pbx.registered)("1001")
    targets = []
    for contact in contacts:
        hostport = contact.uri.split("@", 1)[1].split(";", 1)[0].rstrip(">")
        host, port = hostport.rsplit(":", 1)
        targets.append((host, int(port)))
    notify = (
        "NOTIFY sip:1001@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKmwi1\r\n"  # RFC 3581: answer here
        "From: <sip:voicemail@127.0.0.1>;tag=vm1\r\n"
        "To: <sip:1001@127.0.0.1>\r\n"
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
        for target in targets:
            sock.sendto(data, target)
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
    await ws.send_json_to({"type": "hold"})  # the call is still there and still obeys
    assert (await until(ws, "call"))["state"] == "held"
    await ws.send_json_to({"type": "hangup", "call_id": call["id"]})
    while (await until(ws, "call"))["state"] != "ended":
        pass
    await bob.wait_event_async("CALL_CLOSED", timeout=10)
    await ws.disconnect()
