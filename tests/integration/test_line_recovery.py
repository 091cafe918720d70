"""A line recovers from a PBX that vanishes and comes back, with no user action: the real
consumer and the embedded sipworker host in this process, a real Kamailio restarted on the
same port, baresip calling in afterwards. The measured times are printed (pytest -s); the
bounds only catch "never" (timed assertions belong in benchmarks, design.md §6)."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from portal.models import SipAccount
from tests.phone.ws import communicator
from tests.support.ports import free_port, release_ports

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def restartable_pbx(cast, make_kamailio):
    """Tenant A on a Kamailio whose port this test keeps, so a restart gets the same one."""
    port = free_port()
    pbx = make_kamailio(port=port)
    cast.tenant_a.pbx_domain = pbx.domain
    cast.tenant_a.outbound_proxy = pbx.hostport
    cast.tenant_a.save()
    account = SipAccount.objects.get(user=cast.alice)
    account.password = "pw1001"
    account.save()
    yield pbx
    release_ports(port)


async def next_of(ws, kind, timeout=15, **fields):
    while True:
        message = await ws.receive_json_from(timeout=timeout)
        if message["type"] == kind and fields.items() <= message.items():
            return message


async def test_it_shows_a_lost_pbx_and_registers_again_when_it_is_back(
    cast, restartable_pbx, make_kamailio, make_baresip
):
    loop = asyncio.get_running_loop()
    ws = await database_sync_to_async(communicator)(cast.alice)
    assert (await ws.connect())[0]
    await next_of(ws, "registration", state="registered")

    await asyncio.to_thread(restartable_pbx.stop)
    stopped = loop.time()
    failed = await next_of(ws, "registration", state="failed")
    red_after = loop.time() - stopped
    assert "PBX" in failed["reason"]  # the page shows why, not just a red lamp

    again = await asyncio.to_thread(make_kamailio, port=restartable_pbx.port)
    back = loop.time()
    await next_of(ws, "registration", state="registered")
    green_after = loop.time() - back
    print(
        f"\nPBX killed -> lamp red after {red_after:.2f} s; back -> green after {green_after:.2f} s"
    )
    assert await asyncio.to_thread(again.registered, "1001")

    # And a call to the user rings again.
    bob = await asyncio.to_thread(make_baresip, "1002", pbx=again)
    await asyncio.to_thread(bob.dial, "1001")
    incoming = await next_of(ws, "incoming")
    assert incoming["remote"] == "1002"
    await ws.send_json_to({"type": "reject", "call_id": incoming["id"]})
    await next_of(ws, "call", id=incoming["id"], state="ended")
    await ws.disconnect()


async def test_it_never_rings_for_an_invite_that_does_not_come_from_the_pbx(cast, restartable_pbx):
    """Straight to the line's UDP port, past the PBX: refused, no ringing, no history."""
    import socket

    from phone.models import CallRecord

    ws = await database_sync_to_async(communicator)(cast.alice)
    assert (await ws.connect())[0]
    await next_of(ws, "registration", state="registered")
    [contact] = await asyncio.to_thread(restartable_pbx.registered, "1001")
    hostport = contact.uri.split("@", 1)[1].split(";", 1)[0].rstrip(">")
    host, port = hostport.rsplit(":", 1)
    invite = (
        f"INVITE sip:1001@{host}:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKghost1\r\n"
        'From: "Spoofed" <sip:0312345678@127.0.0.1>;tag=g1\r\n'
        f"To: <sip:1001@{host}>\r\n"
        "Call-ID: ghost-1@127.0.0.1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:ghost@127.0.0.1:9>\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(invite, (host, int(port)))
        sock.settimeout(5)
        reply = await asyncio.to_thread(sock.recv, 4096)
    assert reply.startswith(b"SIP/2.0 403")
    seen = []
    while not await ws.receive_nothing(timeout=1.0):
        seen.append(await ws.receive_json_from())
    assert not [m for m in seen if m["type"] in ("incoming", "call", "cti.popup")], seen
    rows = await database_sync_to_async(
        lambda: CallRecord.objects.filter(sip_call_id="ghost-1@127.0.0.1").count()
    )()
    assert rows == 0
    await ws.disconnect()
