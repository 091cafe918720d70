"""SDP bodies (RFC 4566) and the offer/answer model for one audio stream (RFC 3264).

``parse_sdp`` / ``SessionDescription.to_bytes`` convert; ``build_offer`` makes our offer,
``negotiate_answer`` answers a remote offer, ``negotiated_media`` tells the media layer where to
send what. Malformed SDP raises :class:`SdpParseError` (a :class:`SipParseError`), an offer we
cannot accept raises :class:`SdpNegotiationError` (answer it with 488, RFC 3261 §13.3.1.1).

SRTP keyed in the SDP (SDES, RFC 4568) is chosen per call by an *encryption* setting:
``ENCRYPTION_NONE`` (plain RTP/AVP only), ``ENCRYPTION_SDES`` (RTP/SAVP with a=crypto, nothing
else: an offer without it is refused, our offer carries it) and ``ENCRYPTION_SDES_OPTIONAL``
(we offer plain RTP, and answer an RTP/SAVP offer with SRTP). Keys come from :mod:`secrets`,
one per crypto line, and never appear in an exception message or a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import SipParseError

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

# RFC 3551 §6: static payload types we may meet without an rtpmap line.
STATIC_PAYLOAD_TYPES = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    18: ("G729", 8000),
}

# RFC 4566 §5: the order in which lines must appear.
_SESSION_ORDER = "vosiuepcbtrzka"
_MEDIA_ORDER = "micbka"


class SdpParseError(SipParseError):
    """Malformed SDP."""


class SdpNegotiationError(ValueError):
    """No acceptable media in an offer (answer with 488 Not Acceptable Here)."""


# -- SDES (RFC 4568) ----------------------------------------------------------------------------

ENCRYPTION_NONE = "none"
ENCRYPTION_SDES = "sdes"  # SRTP mandatory
ENCRYPTION_SDES_OPTIONAL = "sdes-optional"  # SRTP when the offer asks for it
ENCRYPTIONS = (ENCRYPTION_NONE, ENCRYPTION_SDES, ENCRYPTION_SDES_OPTIONAL)

# RFC 4568 §6.2.1 / §6.2.2: the suites libsrtp (pylibsrtp) gives us, our preference first.
# Both take a 128-bit master key and a 112-bit master salt, sent as one base64 value.
SRTP_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
SRTP_KEY_LENGTH = 30
# RFC 4568 §9.1: tag = 1*9DIGIT; crypto-suite = 1*(ALPHA / DIGIT / "_"); key-params follow.
_CRYPTO = re.compile(r"^([0-9]{1,9})[ \t]+([A-Za-z0-9_]{1,64})[ \t]+(\S{1,512})(?:[ \t]+(.*))?$")
_MAX_CRYPTO_LINES = 32  # bound the work an offer can cause; real offers carry 1-6


class SdpCryptoError(SdpNegotiationError):
    """An a=crypto line we cannot use (malformed, or an offer without what the setting needs)."""


@dataclass(slots=True, frozen=True)
class CryptoAttribute:
    """One a=crypto line (RFC 4568 §9.1) with a suite we support and a single inline key."""

    tag: int
    suite: str
    key: bytes = field(repr=False)  # master key || master salt, SRTP_KEY_LENGTH octets

    def __str__(self) -> str:
        # Never logged: this is what goes into the SDP body only.
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"


def new_srtp_key() -> bytes:
    """A fresh master key and salt for one call (RFC 4568 §6.1: keys must be random)."""
    return secrets.token_bytes(SRTP_KEY_LENGTH)


def parse_crypto(value: str) -> CryptoAttribute | None:
    """The a=crypto value ``value``: a CryptoAttribute, None when it is well-formed but not one
    we can use (another suite, an MKI, several keys, session parameters: RFC 4568 §7.1.2 lets
    the answerer skip such lines), SdpCryptoError when it is malformed."""
    match = _CRYPTO.match(value.strip())
    if match is None:
        raise SdpCryptoError("malformed a=crypto line (RFC 4568 §9.1)")
    tag_text, suite, key_params, session_params = match.groups()
    if suite not in SRTP_SUITES:
        return None  # unknown suites have key-params we cannot check
    if session_params:
        # §6.3: KDR, UNENCRYPTED_SRTP, FEC_ORDER... change how SRTP runs; we support none.
        return None
    if ";" in key_params:
        return None  # several keys (§6.1): we do not do key lists
    if not key_params.startswith("inline:"):
        raise SdpCryptoError(f"a=crypto tag {tag_text}: key method is not inline (§6.1)")
    key_info, *rest = key_params[len("inline:") :].split("|")
    if len(rest) > 2:
        raise SdpCryptoError(f"a=crypto tag {tag_text}: too many key-info fields (§9.2)")
    for item in rest:
        if ":" in item:
            return None  # MKI:length (§6.1): libsrtp through pylibsrtp has no MKI
        lifetime = item[2:] if item.startswith("2^") else item
        if not lifetime.isascii() or not lifetime.isdigit() or len(lifetime) > 20:
            raise SdpCryptoError(f"a=crypto tag {tag_text}: bad key lifetime (§6.1)")
        # A lifetime is only an upper bound on use; we never re-key within a call and
        # libsrtp stops at 2^48 packets itself, so it is accepted and ignored.
    try:
        key = base64.b64decode(key_info, validate=True)
    except (binascii.Error, ValueError):
        raise SdpCryptoError(f"a=crypto tag {tag_text}: key is not base64 (§6.1)") from None
    if len(key) != SRTP_KEY_LENGTH:
        raise SdpCryptoError(
            f"a=crypto tag {tag_text}: key||salt must be {SRTP_KEY_LENGTH} octets (§6.2.1)"
        )
    return CryptoAttribute(int(tag_text), suite, key)


def crypto_lines(media: MediaDescription) -> list[CryptoAttribute]:
    """The usable a=crypto lines of a media section, in the offerer's preference order."""
    values = media.attribute_values("crypto")
    if len(values) > _MAX_CRYPTO_LINES:
        raise SdpCryptoError(f"more than {_MAX_CRYPTO_LINES} a=crypto lines")
    return [c for c in (parse_crypto(v) for v in values) if c is not None]


def _profile(proto: str) -> str | None:
    """ "plain" for RTP/AVP(F), "sdes" for RTP/SAVP(F), None for anything else (DTLS-SRTP's
    UDP/TLS/RTP/SAVP included: keyed in another way, RFC 5764)."""
    upper = proto.upper()
    if upper in ("RTP/AVP", "RTP/AVPF"):
        return "plain"
    if upper in ("RTP/SAVP", "RTP/SAVPF"):
        return "sdes"
    return None


@dataclass(slots=True, frozen=True)
class SrtpParameters:
    """The SRTP keys of one negotiated stream (RFC 4568 §6.1), from our point of view."""

    suite: str
    local_key: bytes = field(repr=False)  # we protect what we send with this
    remote_key: bytes = field(repr=False)  # and unprotect what we receive with this


@dataclass(slots=True, frozen=True)
class Codec:
    payload_type: int
    name: str
    clock_rate: int = 8000
    channels: int | None = None
    fmtp: str | None = None

    @property
    def rtpmap(self) -> str:
        suffix = f"/{self.channels}" if self.channels else ""
        return f"{self.payload_type} {self.name}/{self.clock_rate}{suffix}"

    def same_format(self, other: Codec) -> bool:
        # RFC 3264 §6.1: formats match on encoding name (case-insensitive) and clock rate.
        return self.name.lower() == other.name.lower() and self.clock_rate == other.clock_rate


PCMU = Codec(0, "PCMU")
PCMA = Codec(8, "PCMA")
TELEPHONE_EVENT = Codec(101, "telephone-event", fmtp="0-16")
DEFAULT_CODECS = (PCMU, PCMA)


@dataclass(slots=True)
class Origin:
    username: str
    session_id: str
    version: int
    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(slots=True)
class Connection:
    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    @property
    def is_null(self) -> bool:
        # RFC 3264 §8.4 (RFC 2543 legacy): c=0.0.0.0 means hold.
        return self.address in ("0.0.0.0", "::")


def _attr_line(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


@dataclass(slots=True)
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[str]
    connection: Connection | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    # Other lines (i=, b=, k=) as (type, value), kept for round trips.
    extra: list[tuple[str, str]] = field(default_factory=list)
    port_count: int | None = None

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value
        return None

    def attribute_values(self, name: str) -> list[str]:
        return [v for k, v in self.attributes if k == name and v is not None]

    def has_attribute(self, name: str) -> bool:
        return any(k == name for k, _ in self.attributes)

    @property
    def direction(self) -> str | None:
        for key, _ in self.attributes:
            if key in DIRECTIONS:
                return key
        return None

    def set_direction(self, direction: str) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(direction)
        self.attributes = [(k, v) for k, v in self.attributes if k not in DIRECTIONS]
        self.attributes.append((direction, None))

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        return int(value) if value and value.isdigit() else None

    def codecs(self) -> list[Codec]:
        """The formats in preference order, with rtpmap/fmtp resolved (RFC 4566 §6)."""
        rtpmaps: dict[int, tuple[str, int, int | None]] = {}
        for value in self.attribute_values("rtpmap"):
            pt_text, _, enc = value.partition(" ")
            parts = enc.strip().split("/")
            if not pt_text.isdigit() or len(parts) < 2 or not parts[1].isdigit():
                continue
            channels = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
            rtpmaps[int(pt_text)] = (parts[0], int(parts[1]), channels)
        fmtps: dict[int, str] = {}
        for value in self.attribute_values("fmtp"):
            pt_text, _, params = value.partition(" ")
            if pt_text.isdigit():
                fmtps[int(pt_text)] = params.strip()
        out: list[Codec] = []
        for fmt in self.formats:
            if not fmt.isdigit():
                continue
            pt = int(fmt)
            if pt in rtpmaps:
                name, rate, channels = rtpmaps[pt]
            elif pt in STATIC_PAYLOAD_TYPES:
                name, rate = STATIC_PAYLOAD_TYPES[pt]
                channels = None
            else:
                continue
            out.append(Codec(pt, name, rate, channels, fmtps.get(pt)))
        return out

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count else str(self.port)
        out = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}".rstrip()]
        extras = sorted(self.extra, key=lambda item: _MEDIA_ORDER.index(item[0]))
        out += [f"{t}={v}" for t, v in extras if t == "i"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"{t}={v}" for t, v in extras if t in "bk"]
        out += [_attr_line(k, v) for k, v in self.attributes]
        return out


@dataclass(slots=True)
class SessionDescription:
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    media: list[MediaDescription] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    timing: list[str] = field(default_factory=lambda: ["0 0"])
    # Other session lines (i u e p b r z k) as (type, value).
    extra: list[tuple[str, str]] = field(default_factory=list)
    version: int = 0

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        return parse_sdp(data)

    def to_bytes(self) -> bytes:
        return str(self).encode()

    def __str__(self) -> str:
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        extras = sorted(self.extra, key=lambda item: _SESSION_ORDER.index(item[0]))
        out += [f"{t}={v}" for t, v in extras if t in "iuep"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"{t}={v}" for t, v in extras if t == "b"]
        out += [f"t={t}" for t in self.timing]
        out += [f"{t}={v}" for t, v in extras if t in "rzk"]
        out += [_attr_line(k, v) for k, v in self.attributes]
        for m in self.media:
            out += m.lines()
        return "\r\n".join(out) + "\r\n"

    @property
    def audio(self) -> MediaDescription | None:
        for m in self.media:
            if m.media == "audio" and m.port != 0:
                return m
        return None

    def direction_of(self, media: MediaDescription) -> str:
        """Effective direction: media level, else session level, else sendrecv (RFC 3264 §5.1)."""
        if media.direction:
            return media.direction
        for key, _ in self.attributes:
            if key in DIRECTIONS:
                return key
        return "sendrecv"

    def connection_of(self, media: MediaDescription) -> Connection | None:
        return media.connection or self.connection


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body (RFC 4566 §5). Raises :class:`SdpParseError` when malformed."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise SdpParseError("SDP is not UTF-8") from exc
    try:
        return _parse_sdp(text)
    except SdpParseError:
        raise
    except (ValueError, IndexError) as exc:
        raise SdpParseError(f"malformed SDP: {exc}") from exc


def _parse_int(text: str, what: str, limit: int = 2**63) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > limit:
        raise SdpParseError(f"bad {what} {text!r}")
    return int(text)


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpParseError(f"bad c= line {value!r}")
    # Multicast TTL / count suffixes (RFC 4566 §5.7) are kept in the address text.
    return Connection(address=parts[2], nettype=parts[0], addrtype=parts[1])


def _parse_attribute(value: str) -> tuple[str, str | None]:
    name, sep, rest = value.partition(":")
    if not name:
        raise SdpParseError(f"bad a= line {value!r}")
    return name, rest if sep else None


def _parse_sdp(text: str) -> SessionDescription:
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or not lines[0].startswith("v="):
        raise SdpParseError("SDP must start with v=")
    version = _parse_int(lines[0][2:].strip(), "version", 9)
    origin: Origin | None = None
    session_name = "-"
    connection: Connection | None = None
    attributes: list[tuple[str, str | None]] = []
    timing: list[str] = []
    extra: list[tuple[str, str]] = []
    media: list[MediaDescription] = []
    current: MediaDescription | None = None
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpParseError(f"bad SDP line {line!r}")
        kind, value = line[0], line[2:].strip()
        if kind == "m":
            parts = value.split()
            if len(parts) < 3:
                raise SdpParseError(f"bad m= line {value!r}")
            port_text, _, count_text = parts[1].partition("/")
            port = _parse_int(port_text, "port", 65535)
            count = _parse_int(count_text, "port count", 65535) if count_text else None
            current = MediaDescription(parts[0], port, parts[2], parts[3:], port_count=count)
            media.append(current)
        elif current is not None:
            if kind == "c":
                current.connection = _parse_connection(value)
            elif kind == "a":
                current.attributes.append(_parse_attribute(value))
            elif kind in "ibk":
                current.extra.append((kind, value))
            else:
                raise SdpParseError(f"unexpected {kind}= line in media section")
        elif kind == "o":
            parts = value.split()
            if len(parts) != 6:
                raise SdpParseError(f"bad o= line {value!r}")
            origin = Origin(
                username=parts[0],
                session_id=parts[1],
                version=_parse_int(parts[2], "origin version"),
                nettype=parts[3],
                addrtype=parts[4],
                address=parts[5],
            )
        elif kind == "s":
            session_name = value or "-"
        elif kind == "c":
            connection = _parse_connection(value)
        elif kind == "t":
            timing.append(value)
        elif kind == "a":
            attributes.append(_parse_attribute(value))
        elif kind in "iuepbrzk":
            extra.append((kind, value))
        else:
            raise SdpParseError(f"unknown SDP line type {kind!r}")
    if origin is None:
        raise SdpParseError("SDP without o= line")
    return SessionDescription(
        origin=origin,
        session_name=session_name,
        connection=connection,
        media=media,
        attributes=attributes,
        timing=timing or ["0 0"],
        extra=extra,
        version=version,
    )


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def build_offer(
    address: str,
    port: int,
    *,
    session_id: str,
    version: int = 1,
    codecs: Iterable[Codec] = DEFAULT_CODECS,
    telephone_event: Codec | None = TELEPHONE_EVENT,
    ptime: int | None = 20,
    direction: str = "sendrecv",
    username: str = "-",
    encryption: str = ENCRYPTION_NONE,
) -> SessionDescription:
    """Our audio offer: PCMU, PCMA, telephone-event 0-16, ptime 20 by default (RFC 3264 §5).

    With ``ENCRYPTION_SDES`` the stream is RTP/SAVP with one a=crypto line per suite we
    support, in our preference order, each with a fresh key (RFC 4568 §5.1.1, §6.1).
    ``ENCRYPTION_SDES_OPTIONAL`` offers plain RTP: SRTP is then the offerer's call.
    """
    if encryption not in ENCRYPTIONS:
        raise ValueError(f"unknown media encryption {encryption!r}")
    offered = list(codecs)
    if telephone_event is not None:
        offered.append(telephone_event)
    proto = "RTP/SAVP" if encryption == ENCRYPTION_SDES else "RTP/AVP"
    media = MediaDescription("audio", port, proto, [str(c.payload_type) for c in offered])
    if encryption == ENCRYPTION_SDES:
        for tag, suite in enumerate(SRTP_SUITES, start=1):
            media.attributes.append(("crypto", str(CryptoAttribute(tag, suite, new_srtp_key()))))
    for codec in offered:
        media.attributes.append(("rtpmap", codec.rtpmap))
        if codec.fmtp:
            media.attributes.append(("fmtp", f"{codec.payload_type} {codec.fmtp}"))
    if ptime:
        media.attributes.append(("ptime", str(ptime)))
    media.set_direction(direction)
    return SessionDescription(
        origin=Origin(username, session_id, version, address, addrtype=_addrtype(address)),
        connection=Connection(address, addrtype=_addrtype(address)),
        media=[media],
    )


def answer_direction(offered: str, wanted: str = "sendrecv") -> str:
    """Mirror the offered direction (RFC 3264 §6.1), restricted by what we want to do."""
    we_may_send = offered in ("sendrecv", "recvonly") and wanted in ("sendrecv", "sendonly")
    we_may_recv = offered in ("sendrecv", "sendonly") and wanted in ("sendrecv", "recvonly")
    if we_may_send and we_may_recv:
        return "sendrecv"
    if we_may_send:
        return "sendonly"
    if we_may_recv:
        return "recvonly"
    return "inactive"


def negotiate_answer(
    offer: SessionDescription,
    address: str,
    port: int,
    *,
    session_id: str,
    version: int = 1,
    codecs: Iterable[Codec] = DEFAULT_CODECS,
    direction: str = "sendrecv",
    ptime: int | None = 20,
    username: str = "-",
    encryption: str = ENCRYPTION_NONE,
    srtp_key: bytes | None = None,
) -> SessionDescription:
    """Answer ``offer`` (RFC 3264 §6): one m= line per offered line, audio accepted at most once.

    The first offered codec we support wins; the offerer's telephone-event payload type is kept.
    Other streams are rejected with port 0 (RFC 3264 §6). Raises SdpNegotiationError when no
    audio stream can be accepted.

    SRTP (RFC 4568 §7.1.2): an RTP/SAVP stream is accepted when ``encryption`` allows it and
    one of its a=crypto lines has a suite we support - the first such line, the offerer's
    preference - and answered with that line's tag and suite and our own key (``srtp_key``,
    else a fresh one). ``ENCRYPTION_SDES`` refuses plain RTP, ``ENCRYPTION_NONE`` refuses
    RTP/SAVP; a malformed a=crypto line raises SdpCryptoError.
    """
    if encryption not in ENCRYPTIONS:
        raise ValueError(f"unknown media encryption {encryption!r}")
    supported = list(codecs)
    accepted = False
    answer_media: list[MediaDescription] = []
    refusal = "no common audio codec"
    for offered in offer.media:
        chosen: Codec | None = None
        dtmf: Codec | None = None
        crypto: CryptoAttribute | None = None
        usable = offered.media == "audio" and offered.port != 0 and not accepted
        profile = _profile(offered.proto)
        if usable and profile == "plain" and encryption == ENCRYPTION_SDES:
            usable, refusal = False, "plain RTP offered, SRTP (RTP/SAVP) is required"
        elif usable and profile == "sdes":
            if encryption == ENCRYPTION_NONE:
                usable, refusal = False, "SRTP offered, this line uses plain RTP"
            else:
                offered_crypto = crypto_lines(offered)
                if offered_crypto:
                    crypto = offered_crypto[0]
                else:
                    usable, refusal = False, "no supported SRTP crypto-suite offered"
        if usable and profile is not None:
            for codec in offered.codecs():
                if chosen is None and any(codec.same_format(s) for s in supported):
                    chosen = codec
                if dtmf is None and codec.same_format(TELEPHONE_EVENT):
                    dtmf = codec
        if chosen is None:
            answer_media.append(MediaDescription(offered.media, 0, offered.proto, offered.formats))
            continue
        accepted = True
        formats = [chosen] + ([dtmf] if dtmf else [])
        media = MediaDescription(
            "audio", port, offered.proto, [str(c.payload_type) for c in formats]
        )
        for codec in formats:
            media.attributes.append(("rtpmap", codec.rtpmap))
            if codec.fmtp:
                media.attributes.append(("fmtp", f"{codec.payload_type} {codec.fmtp}"))
        if ptime:
            media.attributes.append(("ptime", str(ptime)))
        if crypto is not None:
            # §7.1.2: exactly one a=crypto in the answer, the accepted offer line's tag and
            # suite, and the answerer's own key for what it sends.
            key = srtp_key if srtp_key is not None else new_srtp_key()
            media.attributes.append(("crypto", str(CryptoAttribute(crypto.tag, crypto.suite, key))))
        media.set_direction(answer_direction(offer.direction_of(offered), direction))
        answer_media.append(media)
    if not accepted:
        raise SdpNegotiationError(refusal)
    return SessionDescription(
        origin=Origin(username, session_id, version, address, addrtype=_addrtype(address)),
        connection=Connection(address, addrtype=_addrtype(address)),
        media=answer_media,
    )


@dataclass(slots=True, frozen=True)
class OfferRefusal:
    """Why an offer cannot be answered under a media-encryption setting (answer 488)."""

    reason: str
    # The offer would be answerable in plain RTP, only the setting requires SRTP (RFC 4568):
    # the caller's media is less protected than the tenant demands.
    insecure: bool


def offer_refusal(
    offer: SessionDescription, encryption: str, *, codecs: Iterable[Codec] = DEFAULT_CODECS
) -> OfferRefusal | None:
    """None if ``negotiate_answer`` would answer ``offer`` under ``encryption``, else why not.

    Asked when an INVITE arrives, before any page rings (RFC 3261 §13.3.1.1: a UAS that cannot
    take the session says so at once rather than ringing). It runs the answer's own rules on
    a throwaway address, so the two can never disagree.
    """
    supported = list(codecs)

    def refusal(setting: str) -> str | None:
        try:
            negotiate_answer(
                offer, "0.0.0.0", 9, session_id="0", codecs=supported, encryption=setting,
                srtp_key=bytes(SRTP_KEY_LENGTH),
            )  # fmt: skip
        except SdpNegotiationError as exc:
            return str(exc)
        return None

    reason = refusal(encryption)
    if reason is None:
        return None
    insecure = encryption == ENCRYPTION_SDES and refusal(ENCRYPTION_NONE) is None
    return OfferRefusal(reason, insecure)


@dataclass(slots=True, frozen=True)
class NegotiatedMedia:
    """What the RTP leg needs after an offer/answer exchange, from our point of view."""

    remote_address: str
    remote_port: int
    codec: Codec
    dtmf_payload_type: int | None
    direction: str  # our direction: sendrecv / sendonly / recvonly / inactive
    ptime: int
    srtp: SrtpParameters | None = None  # None: plain RTP

    @property
    def on_hold(self) -> bool:
        """Either side has put the stream on hold (anything but sendrecv)."""
        return self.direction != "sendrecv"


_REVERSE = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


def negotiated_media(local: SessionDescription, remote: SessionDescription) -> NegotiatedMedia:
    """Combine our SDP and the peer's into the media parameters (either side of offer/answer).

    The codec is the first of the remote's formats that we also listed (RFC 3264 §6.1: the answer
    lists what will be used, in preference order). Raises SdpNegotiationError when nothing matches.
    """
    ours = local.audio
    theirs = remote.audio
    if ours is None or theirs is None:
        raise SdpNegotiationError("no active audio stream")
    conn = remote.connection_of(theirs)
    if conn is None:
        raise SdpNegotiationError("no connection address for audio")
    our_codecs = ours.codecs()
    codec = next(
        (
            c
            for c in theirs.codecs()
            if c.name.lower() != "telephone-event" and any(c.same_format(o) for o in our_codecs)
        ),
        None,
    )
    if codec is None:
        raise SdpNegotiationError("no common audio codec")
    dtmf = next((c for c in theirs.codecs() if c.name.lower() == "telephone-event"), None)
    if dtmf is not None and not any(o.name.lower() == "telephone-event" for o in our_codecs):
        dtmf = None
    # Our direction is what we said, limited by the mirror image of what they said.
    mine = local.direction_of(ours)
    theirs_mirrored = _REVERSE[remote.direction_of(theirs)]
    direction = _intersect(mine, theirs_mirrored)
    if conn.is_null:
        direction = _intersect(direction, "recvonly")
    return NegotiatedMedia(
        remote_address=conn.address,
        remote_port=theirs.port,
        codec=codec,
        dtmf_payload_type=dtmf.payload_type if dtmf else None,
        direction=direction,
        ptime=theirs.ptime or ours.ptime or 20,
        srtp=_negotiated_srtp(ours, theirs),
    )


def _negotiated_srtp(ours: MediaDescription, theirs: MediaDescription) -> SrtpParameters | None:
    """The keys of an SDES stream: the a=crypto lines of both sides with the same tag and
    suite (RFC 4568 §7.1.3 for the offerer, §7.1.2 for the answerer). Raises
    SdpNegotiationError when one side is SRTP and the other is not: never plain RTP where
    SRTP was agreed, nor SRTP the far end could not decrypt."""
    mine, their_profile = _profile(ours.proto), _profile(theirs.proto)
    if mine != "sdes" and their_profile != "sdes":
        return None
    if mine != their_profile:
        raise SdpCryptoError(f"transport {theirs.proto} does not match our {ours.proto}")
    local = {c.tag: c for c in crypto_lines(ours)}
    for remote in crypto_lines(theirs):
        match = local.get(remote.tag)
        if match is not None and match.suite == remote.suite:
            return SrtpParameters(remote.suite, local_key=match.key, remote_key=remote.key)
    raise SdpCryptoError("no a=crypto line of the answer matches the offer (RFC 4568 §7.1.3)")


def sdes_of(sdp: SessionDescription) -> tuple[str, bytes | None]:
    """(encryption, key) to answer a re-offer with in a call whose current SDP of ours is
    ``sdp``: an SRTP call stays SRTP with our key (RFC 4568 §7.1.4: a re-offer may keep the
    keys; a downgrade to plain RTP is refused), a plain call stays plain."""
    audio = sdp.audio
    if audio is None or _profile(audio.proto) != "sdes":
        return ENCRYPTION_NONE, None
    lines = crypto_lines(audio)
    return ENCRYPTION_SDES, lines[0].key if lines else None


def _intersect(a: str, b: str) -> str:
    send = a in ("sendrecv", "sendonly") and b in ("sendrecv", "sendonly")
    recv = a in ("sendrecv", "recvonly") and b in ("sendrecv", "recvonly")
    return {(True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly"}.get(
        (send, recv), "inactive"
    )


def is_hold(sdp: SessionDescription) -> bool:
    """Does this (re-)offer put us on hold? sendonly/inactive or c=0.0.0.0 (RFC 3264 §8.4)."""
    audio = sdp.audio
    if audio is None:
        return False
    conn = sdp.connection_of(audio)
    if conn is not None and conn.is_null:
        return True
    return sdp.direction_of(audio) in ("sendonly", "inactive")


def media_address(sdp: SessionDescription) -> tuple[str, int] | None:
    audio = sdp.audio
    if audio is None:
        return None
    conn = sdp.connection_of(audio)
    return (conn.address, audio.port) if conn else None


def media_changed(old: SessionDescription, new: SessionDescription) -> bool:
    """Did the remote RTP address or port change (RFC 3264 §8.3.1)?"""
    return media_address(old) != media_address(new)
