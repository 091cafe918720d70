"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

``parse_challenges(response)`` reads WWW-Authenticate / Proxy-Authenticate; ``DigestAuth`` keeps the
credentials and per-nonce state (nonce counts) and answers challenges:

    auth = DigestAuth("alice", "secret")
    if auth.handle_challenge(response):        # 401/407 to our request
        auth.apply(new_request)                # adds Authorization / Proxy-Authorization
    else:
        ...                                    # credentials rejected: give up
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import SipParseError
from .message import SipRequest, SipResponse

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
if "sha512_256" in hashlib.algorithms_available:  # depends on the OpenSSL build
    _HASHES["SHA-512-256"] = lambda data: hashlib.new("sha512_256", data).hexdigest()

# RFC 7616 §3.7: prefer the strongest algorithm the server offers; MD5 last.
_PREFERENCE = ["SHA-512-256", "SHA-256", "MD5"]


def _base_algorithm(algorithm: str) -> str:
    upper = algorithm.upper()
    return upper[:-5] if upper.endswith("-SESS") else upper


def algorithm_supported(algorithm: str) -> bool:
    return _base_algorithm(algorithm) in _HASHES


@dataclass(slots=True)
class Challenge:
    """One Digest challenge (RFC 7616 §3.3)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: list[str] = field(default_factory=list)
    opaque: str | None = None
    stale: bool = False
    proxy: bool = False  # came in Proxy-Authenticate (answer with Proxy-Authorization)
    params: dict[str, str] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        base = _base_algorithm(self.algorithm)
        return len(_PREFERENCE) - _PREFERENCE.index(base) if base in _PREFERENCE else -1


def _scan_auth_params(text: str) -> list[tuple[str, dict[str, str]]]:
    """Split a challenge header value into (scheme, params) items (RFC 7235 §2.1 grammar).

    One header value may hold several challenges: ``Digest a=1, b=2, Digest a=3``. A bare token not
    followed by ``=`` starts a new challenge.
    """
    out: list[tuple[str, dict[str, str]]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] not in " \t,=":
            i += 1
        token = text[start:i]
        j = i
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] == "=":
            if not out:
                raise SipParseError(f"auth-param before scheme in {text!r}")
            i = j + 1
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] == '"':
                i += 1
                buf: list[str] = []
                while i < n and text[i] != '"':
                    if text[i] == "\\" and i + 1 < n:
                        i += 1
                    buf.append(text[i])
                    i += 1
                if i >= n:
                    raise SipParseError(f"unterminated quoted string in {text!r}")
                i += 1
                value = "".join(buf)
            else:
                vstart = i
                while i < n and text[i] not in " \t,":
                    i += 1
                value = text[vstart:i]
            if not token:
                raise SipParseError(f"empty auth-param name in {text!r}")
            out[-1][1][token.lower()] = value
        else:
            if not token:
                raise SipParseError(f"bad challenge {text!r}")
            out.append((token, {}))
            i = j
    return out


def parse_challenge_value(value: str, *, proxy: bool = False) -> list[Challenge]:
    """Digest challenges in one header value; other schemes are skipped."""
    out: list[Challenge] = []
    for scheme, params in _scan_auth_params(value):
        if scheme.lower() != "digest":
            continue
        if "realm" not in params or "nonce" not in params:
            raise SipParseError("Digest challenge without realm or nonce")
        qop = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
        out.append(
            Challenge(
                realm=params["realm"],
                nonce=params["nonce"],
                algorithm=params.get("algorithm", "MD5"),
                qop=qop,
                opaque=params.get("opaque"),
                stale=params.get("stale", "").lower() == "true",
                proxy=proxy,
                params=params,
            )
        )
    return out


def parse_challenges(response: SipResponse) -> list[Challenge]:
    """All Digest challenges of a 401/407 (WWW-Authenticate and Proxy-Authenticate)."""
    out: list[Challenge] = []
    for value in response.headers.get_all("www-authenticate"):
        out += parse_challenge_value(value)
    for value in response.headers.get_all("proxy-authenticate"):
        out += parse_challenge_value(value, proxy=True)
    return out


def pick_challenges(challenges: list[Challenge]) -> list[Challenge]:
    """Per (realm, proxy) the strongest supported challenge: SHA-256 over MD5 (RFC 8760 §2.4)."""
    best: dict[tuple[str, bool], Challenge] = {}
    for ch in challenges:
        if ch.rank < 0:
            continue
        key = (ch.realm, ch.proxy)
        if key not in best or ch.rank > best[key].rank:
            best[key] = ch
    return list(best.values())


def digest_response(
    *,
    algorithm: str,
    username: str,
    password: str,
    realm: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value of RFC 7616 §3.4.1 (RFC 2617 §3.2.2 when algorithm is MD5)."""
    base = _base_algorithm(algorithm)
    if base not in _HASHES:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    h = _HASHES[base]

    def kd(*parts: str) -> str:
        return h(":".join(parts).encode("utf-8"))

    ha1 = kd(username, realm, password)
    if algorithm.upper().endswith("-SESS"):
        # RFC 7616 §3.4.2: session variants fold in nonce and cnonce.
        ha1 = kd(ha1, nonce, cnonce or "")
    ha2 = kd(method, uri, h(body)) if qop == "auth-int" else kd(method, uri)
    if qop:
        return kd(ha1, nonce, nc or "00000001", cnonce or "", qop, ha2)
    return kd(ha1, nonce, ha2)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DigestAuth:
    """Credentials plus the digest state of one user agent / registration.

    ``handle_challenge`` decides whether a 401/407 is worth a retry (RFC 3261 §22.2: do not retry a
    rejected nonce unless ``stale=true``); ``apply`` adds the authorization headers to a request and
    is also used pre-emptively on later requests to the same realm (nonce count increments,
    RFC 7616 §3.4).
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        cnonce_factory: Callable[[], str] | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self._cnonce = cnonce_factory or (lambda: secrets.token_hex(8))
        self._challenges: dict[tuple[str, bool], Challenge] = {}
        self._nonce_counts: dict[str, int] = {}
        # Realms we sent credentials to and have not yet seen accepted.
        self._pending: set[tuple[str, bool]] = set()

    @property
    def challenges(self) -> list[Challenge]:
        return list(self._challenges.values())

    def handle_challenge(self, response: SipResponse) -> bool:
        """Remember the challenges of a 401/407. Returns False if retrying would be pointless."""
        try:
            picked = pick_challenges(parse_challenges(response))
        except SipParseError:
            return False
        if not picked:
            return False
        retry = True
        for ch in picked:
            key = (ch.realm, ch.proxy)
            if key in self._pending and not ch.stale:
                # RFC 3261 §22.2: we already answered this realm and were challenged again without
                # stale=true: the credentials are wrong, do not loop.
                retry = False
            self._challenges[key] = ch
        self._pending.clear()
        return retry

    def accepted(self) -> None:
        """Call on a final response other than 401/407: the credentials sent were accepted."""
        self._pending.clear()

    def reset(self) -> None:
        self._challenges.clear()
        self._nonce_counts.clear()
        self._pending.clear()

    def header_value(self, ch: Challenge, method: str, uri: str, body: bytes = b"") -> str:
        qop: str | None = None
        if "auth" in ch.qop:
            qop = "auth"
        elif "auth-int" in ch.qop:
            qop = "auth-int"
        nc: str | None = None
        cnonce: str | None = None
        if qop or ch.algorithm.upper().endswith("-SESS"):
            cnonce = self._cnonce()
        if qop:
            count = self._nonce_counts.get(ch.nonce, 0) + 1
            self._nonce_counts[ch.nonce] = count
            nc = f"{count:08x}"
        else:
            self._nonce_counts.setdefault(ch.nonce, 0)
        response = digest_response(
            algorithm=ch.algorithm,
            username=self.username,
            password=self.password,
            realm=ch.realm,
            method=method,
            uri=uri,
            nonce=ch.nonce,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(ch.realm)}",
            f"nonce={_quote(ch.nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(response)}",
            f"algorithm={ch.algorithm}",
        ]
        if cnonce is not None:
            parts.append(f"cnonce={_quote(cnonce)}")
        if ch.opaque is not None:
            parts.append(f"opaque={_quote(ch.opaque)}")
        if qop and nc:
            parts.append(f"qop={qop}")
            parts.append(f"nc={nc}")
        return "Digest " + ", ".join(parts)

    def apply(self, request: SipRequest) -> None:
        """Add (replace) Authorization / Proxy-Authorization for every remembered challenge."""
        request.headers.remove("authorization")
        request.headers.remove("proxy-authorization")
        uri = str(request.uri)
        for ch in self._challenges.values():
            name = "Proxy-Authorization" if ch.proxy else "Authorization"
            if ch.nonce not in self._nonce_counts:
                # First answer to this challenge; pre-emptive reuse of an accepted nonce does not
                # count, so a challenge after it (nonce expired) is still retried.
                self._pending.add((ch.realm, ch.proxy))
            request.headers.add(name, self.header_value(ch, request.method, uri, request.body))
