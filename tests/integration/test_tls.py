"""SIP over TLS (transport=tls, RFC 3261 §26.2) to the real Kamailio with its TLS module.

A CA made here issues the PBX certificate for "pbx.test" (and 127.0.0.1). Our UserAgent
registers over phone.sip.transport's TLS client, checking that certificate against the CA file
(SIP_TLS_CA_FILE in production) and the PBX domain, and is called back over the connection it
registered from. With another CA, or a certificate for another name, the transport reports a
"certificate" failure and the REGISTER fails at once.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest

from phone.sip import tls as sip_tls
from phone.sip.registration import RegistrationState, RegistrationStateChanged
from phone.sip.transport import SipTransport, TransportFailure
from phone.sip.useragent import CallState, CallStateChanged, IncomingCall
from tests.support.fixtures import TEST_USERS, require_program
from tests.support.pbx import TlsKamailio, kamailio_binary, kamailio_tls_module
from tests.support.pki import TestCA
from tests.support.ua import Phone

pytestmark = pytest.mark.integration

DOMAIN = "pbx.test"


class TlsPhone(Phone):
    """Our UA over SipTransport.tls, verifying the PBX with `ca_file` for `server_hostname`."""

    ca_file: str | None = None
    server_hostname = DOMAIN

    async def bind(self) -> None:
        self._transport = await SipTransport.tls(
            "127.0.0.1",
            0,
            self._make_core,
            self._on_event,
            server_hostname=self.server_hostname,
            ca_file=self.ca_file,
        )


def tls_phone(ca_file, server_hostname: str = DOMAIN) -> type[TlsPhone]:
    return type(
        "ConfiguredTlsPhone",
        (TlsPhone,),
        {"ca_file": str(ca_file), "server_hostname": server_hostname},
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    require_program(kamailio_binary(), "kamailio", "kamailio")
    module = kamailio_tls_module()
    require_program(str(module) if module else None, "kamailio tls.so", "kamailio-tls-modules")
    folder = tmp_path_factory.mktemp("pki")
    ca = TestCA("PBX test CA")
    cert, key = ca.issue_server(folder / "pbx", dns=[DOMAIN], ips=["127.0.0.1"])
    other = TestCA("Somebody else's CA")
    return {
        "ca": ca.write_ca(folder / "ca.pem"),
        "other_ca": other.write_ca(folder / "other-ca.pem"),
        "cert": cert,
        "key": key,
    }


@pytest.fixture(scope="module")
def tls_pbx(pki):
    pbx = TlsKamailio(TEST_USERS, cert=pki["cert"], key=pki["key"], domain=DOMAIN)
    try:
        pbx.start()
        yield pbx
    finally:
        pbx.stop()
        print(pbx.log_text()[-4000:])
        pbx.remove_files()


async def test_it_registers_over_tls_and_is_called_back_on_the_same_connection(pki, tls_pbx):
    alice = await tls_phone(pki["ca"]).open(
        tls_pbx, "1001", proxy_addr=tls_pbx.tls_addr, transport="tls"
    )
    bob = await Phone.open(tls_pbx, "1002")  # plain UDP
    try:
        registered = await alice.register()
        assert registered.state is RegistrationState.REGISTERED, registered
        contacts = await tls_pbx.wait_registered_async("1001")
        host, port = alice.local_addr
        assert contacts[0].uri == f"sip:1001@{host}:{port};transport=tls"
        assert "tls:" in contacts[0].socket  # Kamailio received it on its TLS listener
        # The Contact is the connection's own address: no TLS listener of ours is needed.
        (peer,) = alice.transport._conns  # one connection, to the PBX's TLS port
        assert peer == tls_pbx.tls_addr

        assert (await bob.register()).state is RegistrationState.REGISTERED
        call_id = await bob.call("1001")
        incoming = await alice.wait_for(IncomingCall, 10)
        await alice.answer(incoming.call_id)
        await bob.wait_for(CallStateChanged, 10, call_id=call_id, state=CallState.CONNECTED)
        bob.hangup(call_id)
        await alice.wait_for(
            CallStateChanged, 10, call_id=incoming.call_id, state=CallState.TERMINATED
        )
        assert alice.transport._conns.keys() == {tls_pbx.tls_addr}  # still that one connection
    finally:
        await bob.close()
        await alice.close()


@pytest.mark.parametrize(
    ("ca", "name", "detail"),
    [
        ("other_ca", DOMAIN, "self-signed certificate in certificate chain"),
        ("ca", "pbx.example.jp", "Hostname mismatch"),
    ],
    ids=["unknown-ca", "wrong-name"],
)
async def test_it_reports_an_untrusted_pbx_certificate_at_once(pki, tls_pbx, ca, name, detail):
    phone = await tls_phone(pki[ca], server_hostname=name).open(
        tls_pbx, "1003", proxy_addr=tls_pbx.tls_addr, transport="tls"
    )
    try:
        started = asyncio.get_running_loop().time()
        phone.execute(phone.ua.register)
        failure = await phone.wait_for(TransportFailure, 5)
        assert failure.kind == sip_tls.CERTIFICATE == "certificate"
        assert failure.addr == tls_pbx.tls_addr and failure.transport == "TLS"
        assert detail in failure.detail
        # The REGISTER waiting for the connection fails now, not after Timer F (32 s).
        failed = await phone.wait_for(RegistrationStateChanged, 5, state=RegistrationState.FAILED)
        assert failed.reason.startswith("503")
        assert asyncio.get_running_loop().time() - started < 5
        assert not tls_pbx.registered("1003")
    finally:
        await phone.close(unregister=False)


def test_it_trusts_the_system_store_without_a_ca_file():
    context = sip_tls.client_context(None)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert sip_tls.client_context(None) is context  # built once per CA file
