"""SIP requests and responses: parse, serialize, frame streams (RFC 3261 §7, §18.3, §20, §25).

``parse_message(data)`` turns one datagram (or one framed stream message) into a
:class:`SipRequest` or :class:`SipResponse`; ``bytes(message)`` serializes it back. Anything
malformed raises :class:`SipParseError` and nothing else. The mandatory headers are validated at
parse time (RFC 3261 §8.1.1), so the convenience properties of a parsed message do not fail later.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .errors import SipParseError
from .uri import (
    Address,
    SipUri,
    format_hostport,
    format_params,
    parse_address,
    parse_hostport,
    parse_params,
    parse_uri,
    split_outside,
)

__all__ = [
    "BRANCH_MAGIC",
    "CSeq",
    "Headers",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "StreamFramer",
    "Via",
    "build_error_response",
    "canonical_name",
    "generate_branch",
    "generate_tag",
    "make_response",
    "parse_message",
    "reason_phrase",
]

# RFC 3261 §8.1.1.7: branch IDs of RFC 3261 compliant elements start with this magic cookie.
BRANCH_MAGIC = "z9hG4bK"

# RFC 3261 §7.3.3 and the IANA registry: compact forms.
COMPACT_FORMS = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

_CANONICAL = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
    "p-asserted-identity": "P-Asserted-Identity",
    "p-preferred-identity": "P-Preferred-Identity",
}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1); only these are split.
# Authorization / WWW-Authenticate contain commas inside one value and are never split here.
LIST_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "in-reply-to",
        "p-asserted-identity",
        "path",
        "proxy-require",
        "reason",
        "record-route",
        "require",
        "route",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    }
)

_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024


def reason_phrase(status: int) -> str:
    return REASON_PHRASES.get(status, "Unknown")


def generate_branch() -> str:
    # RFC 3261 §8.1.1.7: unique per transaction, starting with the magic cookie.
    return BRANCH_MAGIC + secrets.token_hex(8)


def generate_tag() -> str:
    # RFC 3261 §19.3: at least 32 bits of randomness.
    return secrets.token_hex(6)


def _normalize(name: str) -> str:
    key = name.strip().lower()
    return COMPACT_FORMS.get(key, key)


def _canonical(key: str) -> str:
    return _CANONICAL.get(key) or "-".join(part.capitalize() for part in key.split("-"))


# Every message is looked up and written by header name dozens of times (about 50 name
# lookups per REGISTER transaction): the names this stack and PBXs use are mapped once, here,
# in every spelling they come in. A static table, so a peer's made-up names cannot grow it;
# those are worked out on each use.
_KNOWN_NAMES = (
    *COMPACT_FORMS.values(),
    *_CANONICAL,
    "accept", "accept-encoding", "accept-language", "alert-info", "allow", "authorization",
    "call-info", "content-disposition", "content-length", "date", "diversion", "error-info",
    "expires", "max-forwards", "min-expires", "min-se", "organization", "path", "priority",
    "proxy-authenticate", "proxy-authorization", "proxy-require", "reason", "record-route",
    "referred-by", "replaces", "require", "retry-after", "route", "server", "service-route",
    "subscription-state", "timestamp", "unsupported", "user-agent", "warning",
)  # fmt: skip
_NORMALIZED: dict[str, str] = {}
for _key in _KNOWN_NAMES:
    for _spelling in (_key, _canonical(_key), _key.upper()):
        _NORMALIZED[_spelling] = _key
for _short, _key in COMPACT_FORMS.items():
    _NORMALIZED[_short] = _NORMALIZED[_short.upper()] = _key
_CANONICAL_OF = {key: _canonical(key) for key in set(_NORMALIZED.values())}
del _key, _spelling, _short


def normalize_name(name: str) -> str:
    """Lower-case a header name and expand its compact form (RFC 3261 §7.3.3)."""
    key = _NORMALIZED.get(name)
    return key if key is not None else _normalize(name)


def canonical_name(key: str) -> str:
    """The header name as written on the wire ("Call-ID", "WWW-Authenticate")."""
    name = _CANONICAL_OF.get(key)
    return name if name is not None else _canonical(normalize_name(key))


class Headers:
    """Ordered, case-insensitive multi-map of header fields; compact names are expanded."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(normalize_name(k), v) for k, v in items]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = normalize_name(name)
        return any(k == key for k, _ in self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        return new

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name`` (first list element for list headers)."""
        key = normalize_name(name)
        for k, v in self._items:
            if k == key:
                if key in LIST_HEADERS:
                    values = [p.strip() for p in split_outside(v, ",") if p.strip()]
                    if values:
                        return values[0]
                    continue
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """All values of ``name``; list headers are split on commas (RFC 3261 §7.3.1)."""
        key = normalize_name(name)
        out: list[str] = []
        for k, v in self._items:
            if k != key:
                continue
            if key in LIST_HEADERS:
                out.extend(p.strip() for p in split_outside(v, ",") if p.strip())
            else:
                out.append(v)
        return out

    def add(self, name: str, value: str) -> None:
        self._items.append((normalize_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        self._items.insert(0, (normalize_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` field by one field, at the position of the first."""
        key = normalize_name(name)
        for i, (k, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (key, value)
                self._items = [
                    item for j, item in enumerate(self._items) if j <= i or item[0] != key
                ]
                return
        self._items.append((key, value))

    def set_all(self, name: str, values: Iterable[str]) -> None:
        key = normalize_name(name)
        self.remove(key)
        for value in values:
            self._items.append((key, value))

    def remove(self, name: str) -> None:
        key = normalize_name(name)
        self._items = [item for item in self._items if item[0] != key]


@dataclass(slots=True)
class Via:
    """One Via header value (RFC 3261 §20.42, RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        # A message's Via is read several times on its way (validation, the socket's routing,
        # transaction matching, the response address): parsed once per distinct value, and
        # each caller gets its own Via to change.
        transport, host, port, params = _via_fields(text)
        return cls(transport=transport, host=host, port=port, params=dict(params))

    @classmethod
    def _parse(cls, text: str) -> Via:
        proto, _, rest = text.strip().partition("/")
        version, _, rest = rest.strip().partition("/")
        rest = rest.strip()
        if proto.strip().upper() != "SIP" or version.strip() != "2.0":
            raise SipParseError(f"bad Via protocol {text!r}")
        parts = rest.split(None, 1)
        if len(parts) != 2:
            raise SipParseError(f"bad Via sent-by {text!r}")
        transport, after = parts
        if not _TOKEN_RE.match(transport):
            raise SipParseError(f"bad Via transport {text!r}")
        sent_by, _, param_text = after.partition(";")
        host, port = parse_hostport(sent_by.replace(" ", "").replace("\t", ""))
        params = parse_params(param_text)
        rport = params.get("rport")
        if rport is not None and not (rport.isdigit() and rport.isascii()):
            raise SipParseError(f"bad rport in {text!r}")
        return cls(transport=transport.upper(), host=host, port=port, params=params)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The filled-in rport value (RFC 3581 §4), or None when absent or empty."""
        value = self.params.get("rport")
        return int(value) if value else None

    @property
    def has_rport(self) -> bool:
        return "rport" in self.params

    @property
    def sent_by(self) -> tuple[str, int]:
        default = 5061 if self.transport == "TLS" else 5060
        return (self.host.lower(), self.port or default)

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {format_hostport(self.host, self.port)}" + format_params(
            self.params
        )


@functools.lru_cache(maxsize=1024)  # bounded: a peer sending new values only churns it
def _via_fields(text: str) -> tuple[str, str, int | None, tuple[tuple[str, str | None], ...]]:
    via = Via._parse(text)  # SipParseError is raised each time, never cached
    return via.transport, via.host, via.port, tuple(via.params.items())


@dataclass(slots=True, frozen=True)
class CSeq:
    """CSeq header (RFC 3261 §20.16)."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii():
            raise SipParseError(f"bad CSeq {text!r}")
        seq = int(parts[0])
        # RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31.
        if seq >= 2**31 or not _TOKEN_RE.match(parts[1]):
            raise SipParseError(f"bad CSeq {text!r}")
        return cls(seq, parts[1].upper())

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


class SipMessage:
    """Shared behaviour of requests and responses; ``headers`` is a :class:`Headers`."""

    headers: Headers
    body: bytes

    # -- typed access to common headers ---------------------------------------------------
    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("via")]

    @property
    def top_via(self) -> Via:
        value = self.headers.get("via")
        if value is None:
            raise SipParseError("missing Via")
        return Via.parse(value)

    @property
    def from_addr(self) -> Address:
        return parse_address(self._required("from"))

    @property
    def to_addr(self) -> Address:
        return parse_address(self._required("to"))

    @property
    def call_id(self) -> str:
        return self._required("call-id").strip()

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self._required("cseq"))

    @property
    def contacts(self) -> list[Address]:
        return [parse_address(v) for v in self.headers.get_all("contact")]

    @property
    def record_routes(self) -> list[Address]:
        return [parse_address(v) for v in self.headers.get_all("record-route")]

    @property
    def routes(self) -> list[Address]:
        return [parse_address(v) for v in self.headers.get_all("route")]

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return value.split(";")[0].strip().lower() if value else None

    @property
    def expires(self) -> int | None:
        value = self.headers.get("expires")
        if value is None:
            return None
        value = value.strip()
        if not value.isdigit() or not value.isascii():
            raise SipParseError(f"bad Expires {value!r}")
        return int(value)

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"missing {canonical_name(name)}")
        return value

    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialize; Content-Length always reflects ``body`` (RFC 3261 §20.14)."""
        lines = [self._start_line()]
        for key, value in self.headers:
            if key != "content-length":
                lines.append(f"{canonical_name(key)}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def validate(self) -> None:
        """Check the mandatory headers of RFC 3261 §8.1.1 parse; raises SipParseError."""
        if not self.vias:
            raise SipParseError("missing Via")
        self.from_addr  # noqa: B018 - parse for validation
        self.to_addr  # noqa: B018
        if not self.call_id:
            raise SipParseError("empty Call-ID")
        self.cseq  # noqa: B018
        self.contacts  # noqa: B018
        self.record_routes  # noqa: B018
        self.routes  # noqa: B018
        self.expires  # noqa: B018
        mf = self.headers.get("max-forwards")
        if mf is not None and not (mf.strip().isdigit() and mf.strip().isascii()):
            raise SipParseError(f"bad Max-Forwards {mf!r}")


@dataclass(eq=False)
class SipRequest(SipMessage):
    method: str
    uri: SipUri
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri}>"

    def validate(self) -> None:
        SipMessage.validate(self)
        # RFC 3261 §8.2 / §20.16: the CSeq method must match the request method.
        if self.cseq.method != self.method:
            raise SipParseError("CSeq method does not match request method")


@dataclass(eq=False)
class SipResponse(SipMessage):
    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason}>"


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split at the blank line ending the header section (CRLFCRLF, tolerating bare LF)."""
    idx = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if idx >= 0 and (lf < 0 or idx <= lf):
        return data[:idx], data[idx + 4 :]
    if lf >= 0:
        return data[:lf], data[lf + 2 :]
    # No body separator: the whole datagram is the header section (tolerated for datagrams).
    return data.rstrip(b"\r\n"), b""


def _header_lines(head: str) -> list[str]:
    """Split header lines and unfold continuation lines (RFC 3261 §7.3.1 LWS)."""
    lines: list[str] = []
    for raw in re.split(r"\r?\n", head):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += " " + raw.strip()
        else:
            lines.append(raw)
    return lines


def parse_message(data: bytes, *, datagram: bool = True) -> SipRequest | SipResponse:
    """Parse one SIP message. Raises :class:`SipParseError` (only) when malformed.

    ``datagram=True`` applies RFC 3261 §18.3 datagram rules: a body longer than Content-Length is
    truncated, a missing Content-Length means "the rest of the datagram".
    """
    try:
        return _parse_message(data, datagram)
    except SipParseError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as exc:
        # Defence in depth: any parser slip on hostile input is still a parse error.
        raise SipParseError(f"malformed message: {exc}") from exc


def _parse_message(data: bytes, datagram: bool) -> SipRequest | SipResponse:
    # RFC 3261 §7.5: implementations should ignore CRLF before the start line.
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    head_bytes, body = _split_head(data)
    if len(head_bytes) > MAX_HEADER_BYTES:
        raise SipParseError("header section too large")
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError("header section is not UTF-8") from exc
    if "\x00" in head:
        raise SipParseError("NUL in header section")
    lines = _header_lines(head)
    start = lines[0]
    headers = Headers()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name or not _TOKEN_RE.match(name):
            raise SipParseError(f"bad header line {line!r}")
        headers.add(name, value.strip())

    cl_values = headers.get_all("content-length")
    if cl_values:
        if len(set(v.strip() for v in cl_values)) != 1:
            raise SipParseError("conflicting Content-Length")
        text = cl_values[0].strip()
        if not text.isdigit() or not text.isascii() or len(text) > 10:
            raise SipParseError(f"bad Content-Length {text!r}")
        length = int(text)
        if length > len(body):
            # RFC 3261 §18.3: shorter than Content-Length is an error.
            raise SipParseError("body shorter than Content-Length")
        if len(body) > length and not datagram:
            raise SipParseError("body longer than Content-Length")
        body = body[:length]
    headers.remove("content-length")

    message: SipRequest | SipResponse
    if start.upper().startswith("SIP/"):
        parts = start.split(" ", 2)
        if len(parts) < 2 or parts[0].upper() != "SIP/2.0":
            raise SipParseError(f"bad status line {start!r}")
        code = parts[1]
        if len(code) != 3 or not code.isdigit() or not code.isascii():
            raise SipParseError(f"bad status code {start!r}")
        status = int(code)
        if not 100 <= status <= 699:
            raise SipParseError(f"status code out of range {start!r}")
        message = SipResponse(status, parts[2] if len(parts) > 2 else "", headers, body)
    else:
        parts = start.split(" ")
        if len(parts) != 3:
            raise SipParseError(f"bad request line {start!r}")
        method, uri_text, version = parts
        if not _TOKEN_RE.match(method):
            raise SipParseError(f"bad method {method!r}")
        if version.upper() != "SIP/2.0":
            raise SipParseError(f"unsupported version {version!r}")
        message = SipRequest(method, parse_uri(uri_text), headers, body)
    message.validate()
    return message


class StreamFramer:
    """Extract complete messages from a stream (TCP) byte buffer (RFC 3261 §18.3).

    On a stream, Content-Length is what delimits messages. Keep-alive CRLFs between messages
    (RFC 5626 §3.5.1) are skipped and counted in ``keepalives``. ``feed`` raises SipParseError when
    the stream cannot be framed any more (oversized headers, bad Content-Length): the connection
    should then be closed.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.keepalives = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            stripped = 0
            while stripped < len(self._buf) and self._buf[stripped] in (0x0D, 0x0A):
                stripped += 1
            if stripped:
                if self._buf[:stripped].count(b"\r\n\r\n") or stripped >= 4:
                    self.keepalives += 1
                del self._buf[:stripped]
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEADER_BYTES:
                    raise SipParseError("header section too large")
                return out
            length = _content_length(bytes(self._buf[:end]))
            total = end + 4 + length
            if len(self._buf) < total:
                return out
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]

    @property
    def pending(self) -> int:
        return len(self._buf)


_CL_RE = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*(.*?)[ \t]*$", re.IGNORECASE | re.MULTILINE
)


def _content_length(head: bytes) -> int:
    match = _CL_RE.search(head.replace(b"\r\n", b"\n"))
    if match is None:
        return 0  # RFC 3261 §18.3 makes it mandatory on streams; be lenient and assume none.
    value = match.group(1).strip()
    if not value.isdigit() or len(value) > 10:
        raise SipParseError("bad Content-Length on stream")
    length = int(value)
    if length > MAX_BODY_BYTES:
        raise SipParseError("body too large")
    return length


# Requests that can create a dialog (RFC 3261 §12.1, RFC 6665 §4.1.2.2, RFC 3515 §2.4.6).
_DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """Build a response to ``request`` (RFC 3261 §8.2.6).

    Via (all, in order), From, Call-ID and CSeq are copied; To is copied and gets ``to_tag``
    unless it already has a tag (or the response is 100 Trying, §8.2.6.2).
    """
    out = Headers()
    for value in request.headers.get_all("via"):
        out.add("via", value)
    out.add("from", request._required("from"))
    to_value = request._required("to")
    if to_tag is not None and status > 100 and parse_address(to_value).tag is None:
        # Append to the raw value so the display name and params stay byte-identical.
        to_value = f"{to_value};tag={to_tag}"
    out.add("to", to_value)
    out.add("call-id", request.call_id)
    out.add("cseq", request._required("cseq"))
    if 100 < status < 300 and request.method in _DIALOG_CREATING:
        # RFC 3261 §12.1.1: a UAS copies Record-Route into the responses that establish a
        # dialog, in order, so that the caller learns the route set; without it the caller's
        # in-dialog requests would reach the proxy without Route and be treated as new calls.
        for value in request.headers.get_all("record-route"):
            out.add("record-route", value)
    if status == 100:
        # RFC 3261 §8.2.6.1: 100 Trying copies Timestamp.
        ts = request.headers.get("timestamp")
        if ts is not None:
            out.add("timestamp", ts)
    for name, value in headers:
        out.add(name, value)
    return SipResponse(status, reason or reason_phrase(status), out, body)


def _raw_header(lines: list[str], names: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for line in lines:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() in names:
            found.append(value.strip())
    return found


def build_error_response(data: bytes, status: int = 400, reason: str | None = None) -> bytes | None:
    """Best-effort error response to a request that failed to parse (RFC 3261 §8.2, §21.4.1).

    The raw Via/From/To/Call-ID/CSeq lines are copied verbatim. Returns None when the input does not
    look like a request (responses are never answered) or lacks the headers needed to route a reply,
    or when it is an ACK (never answered, RFC 3261 §17.2.3).
    """
    try:
        head, _ = _split_head(data.lstrip(b"\r\n"))
        text = head.decode("utf-8", errors="replace")
        lines = _header_lines(text)
        start = lines[0]
        if start.upper().startswith("SIP/") or start.upper().startswith("ACK "):
            return None
        if len(start.split(" ")) < 2:
            return None
        vias = _raw_header(lines[1:], ("via", "v"))
        required = {
            "From": _raw_header(lines[1:], ("from", "f")),
            "To": _raw_header(lines[1:], ("to", "t")),
            "Call-ID": _raw_header(lines[1:], ("call-id", "i")),
            "CSeq": _raw_header(lines[1:], ("cseq",)),
        }
        if not vias or any(not v for v in required.values()):
            return None
        # Refuse to echo anything that could smuggle extra lines.
        all_values = vias + [v[0] for v in required.values()]
        if any("\r" in v or "\n" in v or "\ufffd" in v for v in all_values):
            return None
        out = [f"SIP/2.0 {status} {reason or reason_phrase(status)}"]
        out += [f"Via: {v}" for v in vias]
        out += [f"{name}: {values[0]}" for name, values in required.items()]
        out.append("Content-Length: 0")
        return ("\r\n".join(out) + "\r\n\r\n").encode()
    except (ValueError, IndexError):
        return None
