"""SIP URIs and name-addr / addr-spec values (RFC 3261 §19.1, §20.10, §25.1)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from urllib.parse import quote, unquote

from .errors import SipParseError

# RFC 3261 §25.1: characters allowed unescaped in the user part (unreserved / user-unreserved).
_USER_SAFE = "-_.!~*'()&=+$,;?/"
_PARAM_SAFE = "-_.!~*'()[]/:&+$"
_HEADER_SAFE = "-_.!~*'()[]/?:+$"


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _unescape(text: str) -> str:
    if "%" not in text:
        return text
    if _BAD_ESCAPE.search(text):
        raise SipParseError(f"bad %-escape in {text!r}")
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"bad %-escape in {text!r}") from exc


def split_outside(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` except inside double quotes or angle brackets.

    RFC 3261 §7.3.1: a comma inside a quoted display name or inside <...> does not separate values.
    """
    # Most header values have no quotes and no brackets (Via, CSeq, a Contact's parameters):
    # str.split gives the same answer without walking the text a character at a time, which
    # was a fifth of the worker's CPU in a registration burst (benchmarks/sip_register.py).
    if '"' not in text:
        if sep not in text:
            return [text]
        if "<" not in text:
            return text.split(sep)
    return _split_walk(text, sep)


def _split_walk(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    buf: list[str] = []
    in_quote = False
    in_angle = False
    escaped = False
    for ch in text:
        if in_quote:
            buf.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
            continue
        if ch == '"':
            in_quote = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == sep and not in_angle:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    if in_quote:
        raise SipParseError(f"unterminated quoted string in {text!r}")
    parts.append("".join(buf))
    return parts


def unquote_string(value: str) -> str:
    """Remove the quotes of a quoted-string and resolve quoted-pairs (RFC 3261 §25.1)."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        it = iter(inner)
        for ch in it:
            if ch == "\\":
                nxt = next(it, None)
                if nxt is None:
                    raise SipParseError(f"dangling backslash in {value!r}")
                out.append(nxt)
            else:
                out.append(ch)
        return "".join(out)
    return value


def quote_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` generic parameters (RFC 3261 §25.1 generic-param).

    Names are lower-cased (they are case-insensitive); values keep their case and quotes.
    """
    params: dict[str, str | None] = {}
    if not text.strip():
        return params
    for raw in split_outside(text, ";"):
        item = raw.strip()
        if not item:
            continue
        if "=" in item:
            name, _, value = item.partition("=")
            name = name.strip().lower()
            value = value.strip()
            if not name:
                raise SipParseError(f"empty parameter name in {text!r}")
            params[name] = value
        else:
            params[item.lower()] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _split_hostport(text: str) -> tuple[str, int | None]:
    if not text:
        raise SipParseError("empty host")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"bad IPv6 reference {text!r}")
        host = text[: end + 1]
        rest = text[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise SipParseError(f"bad host:port {text!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = ""
        if not host:
            raise SipParseError(f"empty host in {text!r}")
        for ch in host:
            if not (ch.isascii() and (ch.isalnum() or ch in "-._")):
                raise SipParseError(f"bad character in host {text!r}")
        if not sep:
            return host, None
    if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
        raise SipParseError(f"bad port in {text!r}")
    port = int(port_text)
    if port > 65535:
        raise SipParseError(f"port out of range in {text!r}")
    return host, port


def parse_hostport(text: str) -> tuple[str, int | None]:
    """Parse ``host[:port]`` (RFC 3261 §25.1 hostport), IPv6 references included."""
    return _split_hostport(text.strip())


def format_hostport(host: str, port: int | None) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


@dataclass(slots=True)
class SipUri:
    """A ``sip:``/``sips:`` URI (RFC 3261 §19.1.1), or a ``tel:`` URI kept as number + params.

    ``params`` are uri-parameters (``;transport=udp;lr``), ``headers`` the ``?name=value`` part.
    For ``tel:`` URIs (RFC 3966) ``user`` holds the number and ``host`` is empty.
    """

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    password: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        return parse_uri(text)

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        return "lr" in self.params

    def hostport(self) -> str:
        return format_hostport(self.host, self.port)

    def copy(self, **changes: object) -> SipUri:
        new = replace(self, **changes)  # type: ignore[arg-type]
        if "params" not in changes:
            new.params = dict(self.params)
        if "headers" not in changes:
            new.headers = dict(self.headers)
        return new

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user or ''}{format_params(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(quote(self.user, safe=_USER_SAFE))
            if self.password is not None:
                out.append(":" + quote(self.password, safe=_USER_SAFE))
            out.append("@")
        out.append(self.hostport())
        for name, value in self.params.items():
            out.append(";" + quote(name, safe=_PARAM_SAFE))
            if value is not None:
                out.append("=" + quote(value, safe=_PARAM_SAFE))
        if self.headers:
            out.append(
                "?"
                + "&".join(
                    f"{quote(k, safe=_HEADER_SAFE)}={quote(v, safe=_HEADER_SAFE)}"
                    for k, v in self.headers.items()
                )
            )
        return "".join(out)

    def __eq__(self, other: object) -> bool:
        # RFC 3261 §19.1.4 (simplified): scheme, user, host (case-insensitive), port and the
        # transport/user/method/maddr/ttl params must match.
        if not isinstance(other, SipUri):
            return NotImplemented
        important = ("transport", "user", "method", "maddr", "ttl")
        return (
            self.scheme.lower() == other.scheme.lower()
            and self.user == other.user
            and self.password == other.password
            and self.host.lower() == other.host.lower()
            and self.port == other.port
            and all(
                (self.params.get(p) or "").lower() == (other.params.get(p) or "").lower()
                for p in important
            )
        )

    def __hash__(self) -> int:
        return hash((self.scheme.lower(), self.user, self.host.lower(), self.port))


def parse_uri(text: str) -> SipUri:
    """Parse a SIP, SIPS or tel URI. Raises :class:`SipParseError` on anything malformed."""
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    if not sep or not scheme:
        raise SipParseError(f"URI without scheme: {text!r}")
    scheme = scheme.lower()
    if scheme == "tel":
        number, _, param_text = rest.partition(";")
        if not number:
            raise SipParseError(f"empty tel URI {text!r}")
        return SipUri(
            host="", user=_unescape(number), scheme="tel", params=parse_params(param_text)
        )
    if scheme not in ("sip", "sips"):
        raise SipParseError(f"unsupported URI scheme {scheme!r}")
    rest, _, header_text = rest.partition("?")
    user: str | None = None
    password: str | None = None
    # The user part may contain ';' (user-unreserved) so split on the last '@' first.
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        if not userinfo:
            raise SipParseError(f"empty user part in {text!r}")
        user_text, psep, password_text = userinfo.partition(":")
        user = _unescape(user_text)
        if psep:
            password = _unescape(password_text)
    hostport, _, param_text = rest.partition(";")
    host, port = _split_hostport(hostport)
    params: dict[str, str | None] = {}
    for name, value in parse_params(param_text).items():
        params[_unescape(name)] = None if value is None else _unescape(value)
    headers: dict[str, str] = {}
    if header_text:
        for item in header_text.split("&"):
            name, hsep, value = item.partition("=")
            if not name or not hsep:
                raise SipParseError(f"bad URI header {item!r}")
            headers[_unescape(name)] = _unescape(value)
    return SipUri(
        host=host,
        user=user,
        port=port,
        scheme=scheme,
        params=params,
        headers=headers,
        password=password,
    )


@dataclass(slots=True)
class Address:
    """A name-addr or addr-spec with header parameters (From, To, Contact, Route, ...).

    RFC 3261 §20.10: ``"Display" <uri;uri-params>;header-params``. Without angle brackets every
    ``;param`` after the URI is a header parameter (so ``tag`` is never swallowed by the URI).
    """

    uri: SipUri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    # Contact: * (RFC 3261 §10.2.2) is represented by wildcard=True.
    wildcard: bool = False

    @classmethod
    def parse(cls, text: str) -> Address:
        return parse_address(text)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @tag.setter
    def tag(self, value: str | None) -> None:
        if value is None:
            self.params.pop("tag", None)
        else:
            self.params["tag"] = value

    @property
    def expires(self) -> int | None:
        value = self.params.get("expires")
        if value is None or not value.isdigit():
            return None
        return int(value)

    def copy(self) -> Address:
        return Address(self.uri.copy(), self.display_name, dict(self.params), self.wildcard)

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        name = ""
        if self.display_name:
            name = quote_string(self.display_name) + " "
        return f"{name}<{self.uri}>{format_params(self.params)}"


def parse_address(text: str) -> Address:
    """Parse name-addr / addr-spec header value (RFC 3261 §20.10, §25.1)."""
    text = text.strip()
    if text == "*":
        return Address(uri=SipUri(host=""), wildcard=True)
    display: str | None = None
    if "<" in text and not text.startswith(("sip:", "sips:", "tel:")):
        if text.startswith('"'):
            # Quoted display name may contain '<'; find the closing quote honouring escapes.
            i = 1
            while i < len(text):
                if text[i] == "\\":
                    i += 2
                    continue
                if text[i] == '"':
                    break
                i += 1
            else:
                raise SipParseError(f"unterminated display name in {text!r}")
            display = unquote_string(text[: i + 1])
            rest = text[i + 1 :].lstrip()
            if not rest.startswith("<"):
                raise SipParseError(f"expected <uri> after display name in {text!r}")
        else:
            lt = text.index("<")
            display = text[:lt].strip() or None
            rest = text[lt:]
        gt = rest.find(">")
        if gt < 0:
            raise SipParseError(f"unterminated <uri> in {text!r}")
        uri = parse_uri(rest[1:gt])
        params = parse_params(rest[gt + 1 :])
        trailing = rest[gt + 1 :].strip()
        if trailing and not trailing.startswith(";"):
            raise SipParseError(f"junk after <uri> in {text!r}")
        return Address(uri=uri, display_name=display, params=params)
    if "<" in text or ">" in text:
        raise SipParseError(f"bad name-addr {text!r}")
    # addr-spec: header params start at the first ';' after the host (RFC 3261 §20.10).
    uri_text, _, param_text = text.partition(";")
    if "?" in uri_text or "," in uri_text:
        raise SipParseError(f"addr-spec with headers/comma needs <>: {text!r}")
    return Address(uri=parse_uri(uri_text), params=parse_params(param_text))


def iter_addresses(values: list[str]) -> Iterator[Address]:
    for value in values:
        yield parse_address(value)
