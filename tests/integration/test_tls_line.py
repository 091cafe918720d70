"""A user's line over SIP TLS (tenant transport "tls"): the real consumer and the embedded
sipworker, the real Kamailio with its TLS module, the PBX certificate from a test CA given as
SIP_TLS_CA_FILE. Registered, the lamp is green; with another CA it is red with the reason
"certificate" at once."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from portal.models import SipAccount
from tests.integration.test_tls import DOMAIN, pki, tls_pbx  # noqa: F401 - fixtures
from tests.phone.ws import communicator

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def alice_on_tls(cast, tls_pbx):  # noqa: F811
    tenant = cast.tenant_a
    tenant.pbx_domain = DOMAIN
    tenant.outbound_proxy = f"{tls_pbx.host}:{tls_pbx.tls_port}"
    tenant.transport = "tls"
    tenant.save()
    account = SipAccount.objects.get(user=cast.alice)
    account.password = "pw1001"
    account.save()
    return cast.alice


async def next_of(ws, kind, timeout=15, **fields):
    while True:
        message = await ws.receive_json_from(timeout=timeout)
        if message["type"] == kind and fields.items() <= message.items():
            return message


async def test_a_line_registers_over_tls(alice_on_tls, pki, tls_pbx, settings):  # noqa: F811
    settings.SIP_TLS_CA_FILE = str(pki["ca"])
    ws = await database_sync_to_async(communicator)(alice_on_tls)
    assert (await ws.connect())[0]
    await next_of(ws, "registration", state="registered")
    contacts = await tls_pbx.wait_registered_async("1001")
    assert contacts[0].uri.endswith(";transport=tls")
    await ws.disconnect()


async def test_an_untrusted_pbx_certificate_turns_the_lamp_red(
    alice_on_tls,
    pki,  # noqa: F811
    tls_pbx,  # noqa: F811
    settings,
):
    settings.SIP_TLS_CA_FILE = str(pki["other_ca"])
    before = {c.uri for c in await asyncio.to_thread(tls_pbx.registered, "1001")}
    ws = await database_sync_to_async(communicator)(alice_on_tls)
    assert (await ws.connect())[0]
    started = asyncio.get_running_loop().time()
    failed = await next_of(ws, "registration", state="failed")
    assert failed["reason"] == "certificate"
    assert asyncio.get_running_loop().time() - started < 5  # not a 32 s transaction timeout
    # The REGISTER that waited for the connection fails (503) right after: the reason stays.
    later = []
    while not await ws.receive_nothing(timeout=1.5):
        later.append(await ws.receive_json_from())
    reasons = {m["reason"] for m in later if m["type"] == "registration"}
    assert reasons <= {"certificate"}, later
    after = {c.uri for c in await asyncio.to_thread(tls_pbx.registered, "1001")}
    assert after == before  # nothing registered over the untrusted connection
    await ws.disconnect()
