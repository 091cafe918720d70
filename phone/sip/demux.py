"""Many lines behind one socket: which line's core a message that arrived is for (sans-I/O).

A sipworker hosts thousands of SIP accounts ("lines"). Instead of a socket per line, all of them
share one socket per transport (phone.sip.transport.SharedSipSocket) and every line gets a short
random *token* that it writes into the identifiers it mints, so that whatever comes back names
its line without any per-call table here:

- the branch of every Via it sends (``z9hG4bK<token>.<random>``): a response carries our Via
  back unchanged (RFC 3261 §8.2.6.2, §17.1.3), so it is routed by its top Via branch;
- every local tag (From tag of our requests, To tag of our answers, ``<token>.<random>``): an
  in-dialog request carries our tag in its To header (§12.2.1.1), so the dialog (Call-ID, tags)
  is found by its line's core, which checks the whole dialog ID and answers 481 when it has none;
- the Contact it registers, as the uri-parameter LINE_PARAM: the registrar hands the registered
  Contact URI, parameters included, back as the Request-URI of requests for the AoR (§10.3 step
  7, §16.5; Kamailio's lookup() does), so out-of-dialog requests (INVITE, OPTIONS, NOTIFY,
  REFER...) and CANCEL (same Request-URI as its INVITE, §9.1) are routed by their Request-URI.

A request whose Request-URI carries no token (a PBX that rewrites it to the AoR) goes to the one
line with that user part, if exactly one has it. Everything else is answered here: 481 for a
request with a To tag (§12.2.2), 404 for a new request to nobody we host (§8.2.2.1); ACK is never
answered (§17.1.1.3) and unmatched responses are dropped (§18.1.2). Unparsable requests get 400
when a reply can be routed (§21.4.1), like a core on a socket of its own would send.

    demux = Demux[int]()
    token = demux.new_token()
    demux.add(token, line_id, user="1001")
    match demux.route(data, source):
        case Deliver(key=line_id): ...      # feed `data` to that line's core
        case Reply(data=reply, addr=addr): ...  # send it from the shared socket
        case Drop(reason=why): ...          # log it
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .errors import SipParseError
from .message import (
    BRANCH_MAGIC,
    SipMessage,
    SipRequest,
    build_error_response,
    make_response,
    parse_message,
)
from .transaction import Addr

__all__ = [
    "KEEPALIVE_TOKEN",
    "LINE_PARAM",
    "Deliver",
    "Demux",
    "Drop",
    "RegisterWindow",
    "Reply",
    "SharedKeepalive",
    "keepalive_probe",
    "make_branch",
    "make_tag",
    "token_of_branch",
    "token_of_tag",
]

# The Contact uri-parameter that names the line (a token, RFC 3261 §25.1 "other-param").
LINE_PARAM = "bpline"
# Separates the token from the random rest of a branch or tag: not a hex digit, and allowed in
# both (RFC 3261 §25.1 token).
_SEP = "."
# Tokens are 8 hex digits (2^32: a clash among a few thousand lines is retried in new_token).
_TOKEN_BYTES = 4
_MAX_TOKEN = 16  # anything longer in a branch/tag/parameter is not one of ours

# The branch token of the shared socket's own keepalive probes (never a line's: not hex).
KEEPALIVE_TOKEN = "ka"

K = TypeVar("K")


def make_branch(token: str) -> str:
    """A Via branch for line `token`: the magic cookie (§8.1.1.7), the token, 64 random bits."""
    return f"{BRANCH_MAGIC}{token}{_SEP}{secrets.token_hex(8)}"


def make_tag(token: str) -> str:
    """A local tag for line `token` with 48 random bits (§19.3 asks for 32 at least)."""
    return f"{token}{_SEP}{secrets.token_hex(6)}"


def _token(value: str) -> str | None:
    token, sep, _rest = value.partition(_SEP)
    if not sep or not token or len(token) > _MAX_TOKEN:
        return None
    return token


def token_of_branch(branch: str | None) -> str | None:
    if not branch or not branch.startswith(BRANCH_MAGIC):
        return None
    return _token(branch[len(BRANCH_MAGIC) :])


def token_of_tag(tag: str | None) -> str | None:
    return _token(tag) if tag else None


@dataclass(frozen=True, slots=True)
class Deliver(Generic[K]):
    """Feed the message to the core of line `key`. `how`: branch | dialog | contact | user.
    `message` is the parsed message (the core need not parse it again)."""

    key: K
    how: str
    message: SipMessage | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer from the shared socket: send `data` to `addr`."""

    data: bytes
    addr: Addr
    reason: str


@dataclass(frozen=True, slots=True)
class Drop:
    """Nothing to do (`reason` is for the log); `malformed` ones are logged as warnings."""

    reason: str
    malformed: bool = False


class Demux(Generic[K]):
    """The routing table of one shared socket: line token -> key (whatever names the core)."""

    def __init__(self, *, reliable: bool = False) -> None:
        # Over TCP/TLS there is no datagram size check and replies go back on the connection.
        self.reliable = reliable
        self._lines: dict[str, K] = {}
        self._users: dict[str, set[str]] = {}  # Contact user part -> tokens (fallback route)
        self._user_of: dict[str, str] = {}
        self.counts: Counter[str] = Counter()  # how messages were routed, for tests/benchmarks
        self._salt = secrets.token_bytes(16)  # seeded tokens: stable per socket, not guessable

    def __len__(self) -> int:
        return len(self._lines)

    def new_token(self, seed: str | None = None) -> str:
        """A token no line of this socket uses. With a `seed` (the line's address of record) the
        same one every time that seed comes back while this socket lives: a line that starts
        again (released, reloaded, its account re-created) registers the same Contact, so the
        registrar replaces its old binding (RFC 3261 §10.3 step 7) instead of keeping a stale
        one that forks every call to a token nobody has — whose 404 a proxy would prefer to
        the live line's 486 (the lowest 4xx wins in Kamailio's branch selection)."""
        if seed is None:
            while True:
                token = secrets.token_hex(_TOKEN_BYTES)
                if token not in self._lines:
                    return token
        for n in range(1, 1000):  # two live lines of one address of record: the next index
            digest = hashlib.blake2b(
                f"{seed}#{n}".encode(), key=self._salt, digest_size=_TOKEN_BYTES
            )
            if (token := digest.hexdigest()) not in self._lines:
                return token
        return self.new_token()

    def add(self, token: str, key: K, user: str | None = None) -> None:
        if token in self._lines:
            raise ValueError(f"line token {token!r} already in use")
        if not token or len(token) > _MAX_TOKEN or _SEP in token:
            raise ValueError(f"bad line token {token!r}")
        self._lines[token] = key
        if user:
            self._users.setdefault(user, set()).add(token)
            self._user_of[token] = user

    def remove(self, token: str) -> None:
        self._lines.pop(token, None)
        user = self._user_of.pop(token, None)
        if user is not None:
            tokens = self._users.get(user)
            if tokens is not None:
                tokens.discard(token)
                if not tokens:
                    del self._users[user]

    def route(self, data: bytes, source: Addr) -> Deliver[K] | Reply | Drop:
        if not data.strip(b"\r\n"):
            # RFC 5626 §4.4.1 CRLF keepalive on a datagram socket: nothing to answer.
            self.counts["keepalive"] += 1
            return Drop("keepalive")
        try:
            message = parse_message(data, datagram=not self.reliable)
        except SipParseError as exc:
            self.counts["malformed"] += 1
            error = build_error_response(data)
            if error is not None:
                # §21.4.1; the raw Via is copied, so the reply goes where the bytes came from.
                return Reply(error, source, f"malformed: {exc}")
            return Drop(f"malformed: {exc}", malformed=True)
        if not isinstance(message, SipRequest):
            token = token_of_branch(message.top_via.branch)
            if token == KEEPALIVE_TOKEN:
                self.counts["keepalive-answer"] += 1
                return Drop("keepalive answer")  # the socket noted the source as alive
            key = self._lines.get(token) if token else None
            if key is None:
                # §18.1.2: a response matching no client transaction is discarded.
                self.counts["stray-response"] += 1
                return Drop(f"response {message.status} for no line (branch)")
            self.counts["branch"] += 1
            return Deliver(key, "branch", message)
        return self._route_request(message, source)

    def _route_request(self, request: SipRequest, source: Addr) -> Deliver[K] | Reply | Drop:
        to_tag = request.to_addr.tag
        if to_tag is not None:
            key = self._lines.get(token_of_tag(to_tag) or "")
            if key is not None:
                self.counts["dialog"] += 1
                return Deliver(key, "dialog", request)
        uri = request.uri
        token = uri.params.get(LINE_PARAM)
        key = self._lines.get(token) if token else None
        if key is not None:
            # In-dialog requests too are addressed to our Contact (§12.2.1.1 remote target).
            self.counts["contact"] += 1
            return Deliver(key, "contact", request)
        if token is None and uri.user:
            tokens = self._users.get(uri.user)
            if tokens is not None and len(tokens) == 1:
                self.counts["user"] += 1
                return Deliver(self._lines[next(iter(tokens))], "user", request)
        self.counts["unmatched"] += 1
        if request.method == "ACK":
            return Drop("ACK for no line")  # §17.1.1.3: never answered
        addr = self._reply_addr(request, source)
        if to_tag is not None:
            # §12.2.2: a request within a dialog we do not know.
            reply = make_response(request, 481)
            return Reply(reply.to_bytes(), addr, f"{request.method} for no dialog")
        # §8.2.2.1: the Request-URI names nobody we serve.
        reply = make_response(request, 404, to_tag=secrets.token_hex(6))
        return Reply(reply.to_bytes(), addr, f"{request.method} for no line")

    def _reply_addr(self, request: SipRequest, source: Addr) -> Addr:
        if self.reliable:
            return source  # §18.2.2: over the connection the request came on
        via = request.top_via
        # §18.2.2 with RFC 3581 §4: the source address; its port too when the client asked
        # for rport, otherwise the port it wrote into Via.
        return (source[0], source[1] if via.has_rport else (via.port or 5060))


class SharedKeepalive:
    """Liveness of one proxy for every line behind a shared socket that uses it.

    A line on a socket of its own probes its proxy with OPTIONS (UserAgent keepalive); a
    thousand lines on one socket would send a thousand probes along the same path for the same
    answer. Here one probe per interval covers them all, and none is sent while anything at all
    arrived from the proxy within the interval (any response proves it alive, RFC 3261 §11).
    No answer within `timeout` of a probe: the proxy is lost (tell every line); the next thing
    heard from it: it is back (tell them again). Sans-I/O: the socket calls `heard` for every
    datagram from the proxy and `handle_timer` at `next_timer()`.
    """

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.lost = False
        self._heard_at: float | None = None
        self._next_probe: float | None = None
        self._deadline: float | None = None  # of the oldest unanswered probe

    def start(self, now: float) -> None:
        if self._next_probe is None:
            self._next_probe = now + self.interval

    def heard(self, now: float) -> bool:
        """Something arrived from the proxy. True when that ends an outage."""
        self._heard_at = now
        self._deadline = None
        if self.lost:
            self.lost = False
            return True
        return False

    def next_timer(self) -> float | None:
        times = [t for t in (self._next_probe, self._deadline) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> tuple[bool, bool]:
        """(send a probe now, the proxy was just lost)."""
        lost_now = False
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            if not self.lost:
                self.lost = lost_now = True
        probe = False
        if self._next_probe is not None and now >= self._next_probe:
            self._next_probe = now + self.interval
            if self.lost or self._heard_at is None or now - self._heard_at >= self.interval:
                probe = True
                if self._deadline is None and not self.lost:
                    self._deadline = now + self.timeout
        return probe, lost_now


def keepalive_probe(local_addr: Addr, transport: str, proxy: Addr) -> bytes:
    """An OPTIONS to the proxy itself (RFC 3261 §11.1) from the shared socket. Its answer
    carries the KEEPALIVE_TOKEN branch back and is dropped by :meth:`Demux.route`."""
    host, port = local_addr
    branch = make_branch(KEEPALIVE_TOKEN)
    call_id = f"{secrets.token_hex(10)}@{host}"
    target = f"sip:{proxy[0]}:{proxy[1]}"
    return (
        f"OPTIONS {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {host}:{port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:keepalive@{host}:{port}>;tag={secrets.token_hex(6)}\r\n"
        f"To: <{target}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


_VIA_BRANCH = re.compile(rb"\r\nVia: [^\r\n]*?;branch=([^;,\s]+)")
_AUTHORIZED = re.compile(rb"\r\nAuthorization: ", re.IGNORECASE)
# Our own REGISTERs carry our Via first, written by us (message.Headers), so a plain search of
# the head is enough; this bounds how much of it is searched.
_HEAD_SEARCH = 4096


class RegisterWindow:
    """At most `size` REGISTER transactions of a shared socket in flight at once.

    A worker starting thousands of lines registers them all at once; past a few hundred the
    answers take longer than T1 (500 ms), every REGISTER is retransmitted (Timer E, RFC 3261
    §17.1.2.2), the registrar gets several times the work and the burst collapses (5000 at once
    on a 2-core machine: p50 6 s, ~540/s). Holding new REGISTERs back until earlier ones are
    answered keeps every round trip short, which is what makes the burst fast.

    Sans-I/O: the socket passes each REGISTER it is asked to send to :meth:`send` and each final
    answer's branch to :meth:`answered`; both return the (data, addr) pairs to send now. A
    retransmission of a REGISTER still waiting is dropped (the waiting copy goes when its turn
    comes; the transaction's own timers carry on as if it had been sent). A REGISTER that gets
    no final answer frees its place after `give_up` seconds (Timer F, 64*T1).
    """

    def __init__(self, size: int, give_up: float = 32.0) -> None:
        self.size = size
        self.give_up = give_up
        self._in_flight: dict[str, float] = {}  # branch -> when admitted (insertion order)
        self._waiting: dict[str, tuple[bytes, Addr]] = {}  # branch -> the REGISTER (FIFO)
        self._first: dict[str, tuple[bytes, Addr]] = {}  # REGISTERs with credentials, waiting

    @property
    def waiting(self) -> int:
        return len(self._waiting) + len(self._first)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def has_room(self, now: float) -> bool:
        """Could a new REGISTER go at once? (The socket holds a line's register() command back
        until then, so a REGISTER that would only wait is not even built.)"""
        self._expire(now)
        return not self._waiting and not self._first and len(self._in_flight) < self.size

    @staticmethod
    def branch_of(data: bytes) -> str | None:
        match = _VIA_BRANCH.search(data, 0, _HEAD_SEARCH)
        return match.group(1).decode("ascii", "replace") if match else None

    def send(self, now: float, data: bytes, addr: Addr) -> list[tuple[bytes, Addr]]:
        branch = self.branch_of(data)
        if branch is None or branch in self._in_flight:
            return [(data, addr)]  # not ours to pace / a retransmission of an admitted one
        if branch in self._waiting or branch in self._first:
            return self._release(now)  # a retransmission of one still waiting: it keeps its turn
        if _AUTHORIZED.search(data, 0, _HEAD_SEARCH):
            # The second leg of a registration (after its 401, which freed a place) or a
            # REGISTER with the credentials it has (a refresh, or all lines at once when the
            # PBX is back after an outage): ahead of the queue, or every line would wait for
            # it twice; beyond twice the window even these wait (a storm stays a storm).
            self._expire(now)
            if len(self._in_flight) < 2 * self.size:
                self._in_flight[branch] = now
                return [(data, addr)]
            self._first[branch] = (data, addr)
            return []
        self._waiting[branch] = (data, addr)
        return self._release(now)

    def answered(self, now: float, branch: str | None) -> list[tuple[bytes, Addr]]:
        if branch is not None:
            self._in_flight.pop(branch, None)
        return self._release(now)

    def _release(self, now: float) -> list[tuple[bytes, Addr]]:
        self._expire(now)
        released = []
        while self._first and len(self._in_flight) < 2 * self.size:
            branch = next(iter(self._first))
            released.append(self._first.pop(branch))
            self._in_flight[branch] = now
        while self._waiting and not self._first and len(self._in_flight) < self.size:
            branch = next(iter(self._waiting))
            released.append(self._waiting.pop(branch))
            self._in_flight[branch] = now
        return released

    def _expire(self, now: float) -> None:
        while self._in_flight:
            branch, since = next(iter(self._in_flight.items()))
            if now - since < self.give_up:
                break
            del self._in_flight[branch]
