"""URLs that users and admins type in, and that our browsers open or our server calls.

Two different dangers, two checks:

- A URL a *browser* opens (CTI screen-pop links) must not run script: only http and https, judged
  the way a browser reads the URL, so `java\\tscript:` or ` javascript:` cannot slip past a check
  that looked at the raw text (browsers drop tabs and newlines anywhere and trim controls and
  spaces at both ends before they parse).
- A URL our *server* calls (webhooks) must not reach the machines behind it (SSRF): its host may
  not resolve to loopback, private, link-local, multicast, reserved or unspecified addresses,
  unless WEBHOOK_ALLOWED_HOSTS names it.  The check runs when the URL is saved and again at each
  delivery, because what a name resolves to can change after it was saved.
"""

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

ALLOWED_SCHEMES = {"http", "https"}

# What the WHATWG URL parser removes: C0 controls and space at both ends, tab/LF/CR anywhere.
_EDGES = "".join(chr(c) for c in range(0x21))
_TAB_NEWLINE = re.compile(r"[\t\n\r]")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


class UnsafeURL(ValueError):
    """The URL must not be opened or called: a scheme other than http(s), or a host that is not
    on the public internet.  The message is safe to show to a tenant admin."""


class HostNotResolved(UnsafeURL):
    """The host name did not resolve (now).  DNS failures are often temporary: a delivery may be
    retried later, unlike the other UnsafeURL cases."""


def browser_view(url: str) -> str:
    """The URL as a browser reads it (before parsing): what it would actually open."""
    return _TAB_NEWLINE.sub("", (url or "").strip(_EDGES))


def url_scheme(url: str) -> str:
    """The scheme a browser would see, lower-case; "" when there is none.  Controls and spaces
    inside the scheme are dropped first, so that no spelling of "javascript" passes as another
    scheme."""
    head, colon, _rest = browser_view(url).partition(":")
    return _CONTROL_OR_SPACE.sub("", head).lower() if colon else ""


def check_http_url(url: str) -> str:
    """The browser's reading of `url` if it is an absolute http(s) URL with a host, else
    UnsafeURL."""
    view = browser_view(url)
    if url_scheme(view) not in ALLOWED_SCHEMES:
        raise UnsafeURL(_("Enter an http:// or https:// URL."))
    if _CONTROL_OR_SPACE.search(view):
        # Left inside after the browser's clean-up: a URL never needs them, and they hide things.
        raise UnsafeURL(_("The URL contains spaces or control characters."))
    try:
        host = urlsplit(view).netloc
    except ValueError as exc:  # e.g. an unbalanced [ in an IPv6 host
        raise UnsafeURL(_("Enter an http:// or https:// URL.")) from exc
    if not view.split(":", 1)[1].startswith("//") or not host:
        raise UnsafeURL(_("Enter an http:// or https:// URL with a host name."))
    return view


def safe_http_url(url: str) -> str:
    """`url` as a browser reads it if it is http(s), else "" (for values already stored, which
    may predate validation or have been written around it)."""
    try:
        return check_http_url(url)
    except UnsafeURL:
        return ""


def validate_http_url(value: str) -> None:
    """Model-field validator: http(s) only, as a browser would read the value."""
    if not value:
        return
    try:
        check_http_url(value)
    except UnsafeURL as exc:
        raise ValidationError(str(exc), code="unsafe_url") from exc


# --- server-side requests (webhooks) ------------------------------------------------------------


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for an address on the public internet only."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address carried inside IPv6 is judged as the IPv4 address it reaches
        # (::ffff:127.0.0.1 is loopback; Python before 3.13 does not say so by itself).
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None and not _public(embedded):
            return False
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def _allowed_hosts() -> set[str]:
    # urlsplit gives host names lower-case, IPv6 literals without brackets, a final dot kept.
    return {host.strip().strip("[]").lower().rstrip(".") for host in settings.WEBHOOK_ALLOWED_HOSTS}


def check_delivery_url(url: str) -> None:
    """Raise UnsafeURL unless our server may POST to `url`.

    http(s) only; every address the host resolves to must be public, unless the host is listed in
    WEBHOOK_ALLOWED_HOSTS (an operator's own receiver on the internal network).  Call it at save
    time and again right before each delivery.  Raises HostNotResolved when DNS has no answer.
    """
    view = check_http_url(url)
    parts = urlsplit(view)
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # a port out of range or not a number
        raise UnsafeURL(_("The URL has an invalid port.")) from exc
    if not host:
        raise UnsafeURL(_("Enter an http:// or https:// URL with a host name."))
    if host.rstrip(".") in _allowed_hosts():
        return
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(
                host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError) as exc:
            raise HostNotResolved(
                _("The host name %(host)s could not be resolved.") % {"host": host}
            ) from exc
        # Every address, not the first: the HTTP client may connect to any of them.
        addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not addresses or not all(_public(address) for address in addresses):
        raise UnsafeURL(
            _(
                "%(host)s is a loopback, private, link-local or otherwise internal address. "
                "Webhooks go to public addresses only (ask the operator to allow an internal "
                "receiver with WEBHOOK_ALLOWED_HOSTS)."
            )
            % {"host": host}
        )


def validate_delivery_url(value: str) -> None:
    """Model-field validator for URLs our server calls: the admin form shows why it refused."""
    if not value:
        return
    try:
        check_delivery_url(value)
    except UnsafeURL as exc:
        raise ValidationError(str(exc), code="unsafe_url") from exc
