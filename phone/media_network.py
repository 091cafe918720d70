"""Which addresses the sipworker's WebRTC side (aiortc / aioice) offers to browsers.

aioice, under aiortc, gathers a host candidate on every interface address but 127.0.0.1 and has
no setting for it, nor for a public address behind 1:1 NAT. `configure_ice()` applies the
deployment's choice process-wide, once, when the sipworker starts (every MediaBridge created
afterwards uses it; production code never passes anything per peer connection):

    ICE_HOST_ADDRESSES     exactly these host addresses (127.0.0.1 allowed)
    ICE_INTERFACES         else: the addresses of these interfaces only (fnmatch patterns)
    ICE_IGNORE_INTERFACES  never these interfaces ("docker0", "br-*", "veth*")
    ICE_NAT_1TO1           "10.0.0.5=203.0.113.7,..." or one public IPv4 address for all:
                           each mapped host candidate gets a server-reflexive twin with the
                           public address and the same port (RFC 8445 §5.1.1.2), which is what
                           STUN would find through a 1:1 NAT, without a STUN server

The host candidate stays, for browsers on the same network. Mirrors how
phone.media.bridge.ice_host_addresses (tests) patches aioice.ice.get_host_addresses; the NAT
mapping wraps aioice.ice.Connection.get_component_candidates (aioice comes with the aiortc pin
of pyproject.toml; tests/phone/test_network.py proves both against a real MediaBridge).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ANY_PRIVATE = "*"


@dataclass(frozen=True)
class IceNetwork:
    host_addresses: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()
    ignore_interfaces: tuple[str, ...] = ()
    nat_1to1: tuple[tuple[str, str], ...] = ()  # (private address or "*", public address)

    @classmethod
    def from_settings(cls, settings: Any = None) -> IceNetwork:
        if settings is None:
            from django.conf import settings as django_settings

            settings = django_settings
        return cls(
            host_addresses=tuple(_address(a) for a in settings.ICE_HOST_ADDRESSES),
            interfaces=tuple(settings.ICE_INTERFACES),
            ignore_interfaces=tuple(settings.ICE_IGNORE_INTERFACES),
            nat_1to1=parse_nat_1to1(settings.ICE_NAT_1TO1),
        )

    @property
    def chooses_hosts(self) -> bool:
        return bool(self.host_addresses or self.interfaces or self.ignore_interfaces)

    def host_addresses_for(self, use_ipv4: bool, use_ipv6: bool) -> list[str]:
        """What aioice.ice.get_host_addresses returns under this configuration."""
        if self.host_addresses:
            candidates: Iterable[str] = self.host_addresses
        else:
            candidates = self._interface_addresses()
        return [a for a in candidates if (use_ipv6 if ":" in a else use_ipv4)]

    def _interface_addresses(self) -> list[str]:
        import ifaddr  # aioice's own dependency

        found = []
        for adapter in ifaddr.get_adapters():
            name = str(adapter.name)
            chosen = not self.interfaces or _matches(name, self.interfaces)
            if not chosen or _matches(name, self.ignore_interfaces):
                continue
            for ip in adapter.ips:
                if isinstance(ip.ip, str):
                    # As aioice: loopback only when its interface was asked for by name.
                    if ip.ip != "127.0.0.1" or self.interfaces:
                        found.append(ip.ip)
                elif ip.ip[0] != "::1" and ip.ip[2] == 0:  # no link-local (scoped) IPv6
                    found.append(ip.ip[0])
        return found

    def public_address(self, private: str) -> str | None:
        for inner, public in self.nat_1to1:
            if inner == private or (inner == ANY_PRIVATE and ":" not in private):
                return public if public != private else None
        return None


def parse_nat_1to1(entries: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """ "private=public" pairs, or a single public address (for every IPv4 host candidate)."""
    pairs = []
    for entry in entries:
        private, sep, public = entry.partition("=")
        if not sep:
            private, public = ANY_PRIVATE, entry
        private = private.strip() if private.strip() == ANY_PRIVATE else _address(private)
        pairs.append((private, _address(public)))
    return tuple(pairs)


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"ICE address {text!r} is not an IP address") from None


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


# -- applying it to aioice -----------------------------------------------------------------------

_originals: dict[str, Any] = {}
_applied: IceNetwork | None = None


def configure_ice(network: IceNetwork | None = None) -> IceNetwork:
    """Make every peer connection created from now on in this process gather as `network` (the
    settings by default) says. Idempotent: a second call replaces the first configuration.
    With nothing configured it changes nothing (a test's own ice_host_addresses stays)."""
    import aioice.ice

    global _applied
    network = network or IceNetwork.from_settings()
    if not (network.chooses_hosts or network.nat_1to1):
        return network
    connection = aioice.ice.Connection
    _originals.setdefault("get_host_addresses", aioice.ice.get_host_addresses)
    _originals.setdefault("get_component_candidates", connection.get_component_candidates)

    if network.chooses_hosts:
        aioice.ice.get_host_addresses = network.host_addresses_for
    else:
        aioice.ice.get_host_addresses = _originals["get_host_addresses"]
    if network.nat_1to1:
        connection.get_component_candidates = _with_public_twins(  # type: ignore[method-assign]
            _originals["get_component_candidates"], network
        )
    else:
        connection.get_component_candidates = _originals["get_component_candidates"]  # type: ignore[method-assign]
    _applied = network
    log.info(
        "ICE: host candidates %s, public addresses %s",
        network.host_addresses_for(True, True),
        dict(network.nat_1to1) or "-",
    )
    return network


def reset_ice() -> None:
    """Back to aioice's own behaviour (tests)."""
    import aioice.ice

    global _applied
    if "get_host_addresses" in _originals:
        aioice.ice.get_host_addresses = _originals["get_host_addresses"]
    if "get_component_candidates" in _originals:
        original = _originals["get_component_candidates"]
        aioice.ice.Connection.get_component_candidates = original  # type: ignore[method-assign]
    _applied = None


def applied() -> IceNetwork | None:
    return _applied


def _with_public_twins(original: Callable[..., Any], network: IceNetwork) -> Callable[..., Any]:
    from aioice.candidate import Candidate, candidate_foundation, candidate_priority

    async def get_component_candidates(self: Any, *args: Any, **kwargs: Any) -> list[Candidate]:
        candidates: list[Candidate] = await original(self, *args, **kwargs)
        twins = []
        for candidate in candidates:
            public = network.public_address(candidate.host) if candidate.type == "host" else None
            if public is None:
                continue
            twins.append(
                Candidate(
                    foundation=candidate_foundation("srflx", "udp", candidate.host),
                    component=candidate.component,
                    transport=candidate.transport,
                    priority=candidate_priority(candidate.component, "srflx"),
                    host=public,
                    port=candidate.port,
                    type="srflx",
                    related_address=candidate.host,
                    related_port=candidate.port,
                )
            )
        return candidates + twins

    return get_component_candidates
