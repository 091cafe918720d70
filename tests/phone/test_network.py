"""The network side of browser media: which host candidates the sipworker offers
(ICE_HOST_ADDRESSES / ICE_INTERFACES / ICE_IGNORE_INTERFACES), its public address behind 1:1 NAT
(ICE_NAT_1TO1), both applied process-wide by phone.media_network.configure_ice() and seen in a
real MediaBridge's answer SDP; and the short-lived TURN credentials the phone page gets
(portal.turn), never the TURN secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from types import SimpleNamespace

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from phone import media_network
from phone.media.bridge import MediaBridge, ice_host_addresses
from phone.media_network import IceNetwork, configure_ice, parse_nat_1to1
from portal import turn
from tests.support.fake_browser import FakeBrowser

PUBLIC = "203.0.113.7"


@pytest.fixture(autouse=True)
def aioice_as_shipped():
    media_network.reset_ice()
    yield
    media_network.reset_ice()


def candidates(sdp: str) -> list[dict[str, str]]:
    found = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            found.append(
                {
                    "host": fields[4],
                    "port": fields[5],
                    "type": fields[7],
                    **dict(zip(fields[8::2], fields[9::2], strict=False)),
                }
            )
    return found


async def answer_of_a_bridge() -> str:
    browser = FakeBrowser()
    bridge = MediaBridge(ice_servers=[])
    try:
        return await bridge.accept_offer(await browser.offer())
    finally:
        await bridge.close()
        await browser.close()


def settings_like(**values):
    defaults = {
        "ICE_HOST_ADDRESSES": [],
        "ICE_INTERFACES": [],
        "ICE_IGNORE_INTERFACES": [],
        "ICE_NAT_1TO1": [],
    }
    return SimpleNamespace(**{**defaults, **values})


# -- host candidates -----------------------------------------------------------------------------


async def test_it_offers_exactly_the_configured_host_address(settings):
    settings.ICE_HOST_ADDRESSES = ["127.0.0.1"]
    configure_ice()
    found = candidates(await answer_of_a_bridge())
    assert found and {c["host"] for c in found} == {"127.0.0.1"}
    assert {c["type"] for c in found} == {"host"}


async def test_without_settings_aioice_keeps_its_own_choice(settings):
    configure_ice()  # nothing configured: a no-op
    hosts = {c["host"] for c in candidates(await answer_of_a_bridge())}
    assert "127.0.0.1" not in hosts  # aioice leaves loopback out (design.md §1)


def fake_adapters(monkeypatch):
    import ifaddr

    def adapter(name, *ips):
        return SimpleNamespace(name=name, ips=[SimpleNamespace(ip=ip) for ip in ips])

    monkeypatch.setattr(
        ifaddr,
        "get_adapters",
        lambda: [
            adapter("lo", "127.0.0.1", ("::1", 0, 0)),
            adapter("eth0", "10.0.0.5", ("2001:db8::5", 0, 0), ("fe80::1", 0, 2)),
            adapter("docker0", "172.17.0.1"),
            adapter("br-1a2b", "172.18.0.1"),
        ],
    )


def test_it_chooses_host_addresses_by_interface(monkeypatch):
    fake_adapters(monkeypatch)
    everything = IceNetwork.from_settings(settings_like(ICE_IGNORE_INTERFACES=["docker0", "br-*"]))
    assert everything.host_addresses_for(True, True) == ["10.0.0.5", "2001:db8::5"]
    assert everything.host_addresses_for(True, False) == ["10.0.0.5"]

    only_eth = IceNetwork.from_settings(settings_like(ICE_INTERFACES=["eth*"]))
    assert only_eth.host_addresses_for(True, True) == ["10.0.0.5", "2001:db8::5"]
    # Asked for by name, loopback is offered too (aioice alone never does).
    loopback = IceNetwork.from_settings(settings_like(ICE_INTERFACES=["lo"]))
    assert loopback.host_addresses_for(True, True) == ["127.0.0.1"]


def test_it_refuses_an_address_that_is_not_one():
    with pytest.raises(ImproperlyConfigured, match="not an IP address"):
        IceNetwork.from_settings(settings_like(ICE_HOST_ADDRESSES=["eth0"]))
    with pytest.raises(ImproperlyConfigured):
        parse_nat_1to1(["10.0.0.5=public.example.jp"])


# -- 1:1 NAT -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mapping", [f"127.0.0.1={PUBLIC}", PUBLIC], ids=["pair", "single"])
async def test_the_public_address_appears_in_the_answer(settings, mapping):
    settings.ICE_HOST_ADDRESSES = ["127.0.0.1"]
    settings.ICE_NAT_1TO1 = [mapping]
    configure_ice()
    found = candidates(await answer_of_a_bridge())
    hosts = [c for c in found if c["type"] == "host"]
    public = [c for c in found if c["type"] == "srflx"]
    assert hosts and public
    assert {c["host"] for c in public} == {PUBLIC}
    for twin in public:
        # The same socket: same port, related to the private host candidate (RFC 8445 §5.1.1.2)
        assert twin["raddr"] == "127.0.0.1" and twin["rport"] == twin["port"]
        assert twin["port"] in {c["port"] for c in hosts}


async def test_a_browser_still_connects_with_the_public_twin_offered(settings):
    settings.ICE_HOST_ADDRESSES = ["127.0.0.1"]
    settings.ICE_NAT_1TO1 = [f"127.0.0.1={PUBLIC}"]
    configure_ice()
    browser = FakeBrowser()
    bridge = MediaBridge(ice_servers=[])
    try:
        await browser.call(bridge)  # pairs on the host candidate; the twin does no harm
        assert bridge.state == "connected"
    finally:
        await bridge.close()
        await browser.close()


def test_it_maps_only_what_it_is_told():
    network = IceNetwork(nat_1to1=parse_nat_1to1(["10.0.0.5=198.51.100.1", "10.0.0.6=10.0.0.6"]))
    assert network.public_address("10.0.0.5") == "198.51.100.1"
    assert network.public_address("10.0.0.6") is None  # mapped to itself: nothing to add
    assert network.public_address("10.0.0.7") is None
    anything = IceNetwork(nat_1to1=parse_nat_1to1([PUBLIC]))
    assert anything.public_address("10.9.9.9") == PUBLIC
    assert anything.public_address("2001:db8::5") is None  # one IPv4 address maps IPv4 only


def test_configure_ice_replaces_and_reset_restores(settings):
    import aioice.ice

    shipped = aioice.ice.get_host_addresses, aioice.ice.Connection.get_component_candidates
    settings.ICE_HOST_ADDRESSES = ["127.0.0.1"]
    settings.ICE_NAT_1TO1 = [PUBLIC]
    configure_ice()
    configure_ice()  # idempotent
    assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
    assert media_network.applied() is not None
    settings.ICE_HOST_ADDRESSES = ["127.0.0.1", "::1"]
    settings.ICE_NAT_1TO1 = []
    configure_ice()  # the new configuration, NAT twins gone
    assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
    assert aioice.ice.Connection.get_component_candidates is shipped[1]
    media_network.reset_ice()
    assert (aioice.ice.get_host_addresses, aioice.ice.Connection.get_component_candidates) == (
        shipped
    )


def test_without_settings_a_tests_own_host_addresses_stay(settings):
    import aioice.ice

    with ice_host_addresses(["127.0.0.1"]):
        patched = aioice.ice.get_host_addresses
        configure_ice()  # the sipworker starting inside a loopback test
        assert aioice.ice.get_host_addresses is patched


# -- TURN credentials ----------------------------------------------------------------------------


def test_it_computes_turn_rest_credentials():
    username, password = turn.turn_credentials(42, secret="north-wind", ttl=3600, now=1_700_000_000)
    assert username == "1700003600:42"
    # openssl dgst -sha1 -hmac north-wind -binary <<< "1700003600:42" (no newline) | base64
    assert password == "YlpCluhk1i66cE5bZO2tP7aZqpY="


def ice_config_of(page: str) -> dict:
    match = re.search(r'<script id="ice-servers" type="application/json">(.*?)</script>', page)
    assert match, "the phone page carries no ice-servers json_script"
    return json.loads(match.group(1))


@pytest.mark.django_db
def test_the_phone_page_carries_short_lived_turn_credentials(cast, login, settings):
    secret = "coturn-static-auth-secret-0123456789"
    settings.ICE_SERVERS = ["stun:turn.example.jp:3478"]
    settings.TURN_URLS = ["turn:turn.example.jp:3478?transport=udp"]
    settings.TURN_SECRET = secret
    settings.TURN_TTL = 600
    response = login(cast.alice).get(reverse("phone:index"))
    assert response.status_code == 200
    page = response.content.decode()
    assert secret not in page

    config = ice_config_of(page)
    stun, turn_server = config["iceServers"]
    assert stun == {"urls": ["stun:turn.example.jp:3478"]}
    assert turn_server["urls"] == ["turn:turn.example.jp:3478?transport=udp"]
    expiry, user = turn_server["username"].split(":")
    assert user == str(cast.alice.pk)
    assert 0 < int(expiry) - time.time() <= 600
    expected = hmac.new(secret.encode(), turn_server["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(turn_server["credential"]) == expected
    assert config["refresh"] == reverse("ice-servers")

    fresh = login(cast.alice).get(config["refresh"])
    assert fresh.status_code == 200 and "no-cache" in fresh["Cache-Control"]
    assert fresh.json()["iceServers"][1]["username"].endswith(f":{cast.alice.pk}")
    assert secret not in fresh.content.decode()


@pytest.mark.django_db
def test_without_turn_the_page_only_lists_ice_servers(cast, login, settings):
    settings.ICE_SERVERS = []
    settings.TURN_URLS = []
    page = login(cast.alice).get(reverse("phone:index")).content.decode()
    assert ice_config_of(page) == {"iceServers": []}


@pytest.mark.django_db
def test_fresh_credentials_need_a_login(client, settings):
    settings.TURN_URLS = ["turn:turn.example.jp:3478"]
    settings.TURN_SECRET = "x" * 32
    response = client.get(reverse("ice-servers"))
    assert response.status_code == 302 and "login" in response["Location"]
