"""SIP transactions (RFC 3261 §17, with the RFC 6026 "Accepted" states), sans-I/O.

A :class:`TransactionLayer` owns every client and server transaction of one transport. Feed it
input and time; it returns what to send and what happened::

    layer = TransactionLayer(local_addr=("192.0.2.1", 5060), transport="UDP")
    tid, out = layer.send_request(now, invite, ("203.0.113.5", 5060))
    out = layer.receive(now, datagram, source_addr)     # bytes or a parsed message
    out = layer.handle_timer(now)                       # call at layer.next_timer()
    for item in out.send: sock.sendto(item.data, item.addr)
    for event in out.events: ...                        # RequestReceived, ResponseReceived, ...

Above it (the "TU", RFC 3261 §17) sit dialogs and the user agent: they answer requests with
``send_response``, retransmit their own 2xx (§13.3.1.4) and send ACK for 2xx (§13.2.2.4) through
``send_stateless``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .errors import SipParseError
from .message import (
    BRANCH_MAGIC,
    CSeq,
    Headers,
    SipMessage,
    SipRequest,
    SipResponse,
    Via,
    build_error_response,
    generate_branch,
    parse_message,
)

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """RFC 3261 §17.1.1.1 / Table 4 base values (seconds)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    # RFC 3261 §17.2.1: send 100 Trying unless the TU answers within 200 ms. None: never.
    trying_delay: float | None = 0.2


class State(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"  # RFC 6026 §7.1 / §7.2
    TERMINATED = "terminated"


# ---------------------------------------------------------------- outputs and events


@dataclass(slots=True)
class Outgoing:
    """One message to hand to the transport."""

    data: bytes
    addr: Addr
    message: SipMessage | None = None


@dataclass(slots=True)
class RequestReceived:
    """A new request for the TU. ``transaction_id`` is None for ACK (no server transaction)."""

    request: SipRequest
    source: Addr
    transaction_id: str | None


@dataclass(slots=True)
class ResponseReceived:
    """A response for the TU. ``transaction_id`` None: stray (e.g. a 2xx retransmission)."""

    response: SipResponse
    source: Addr
    transaction_id: str | None
    request: SipRequest | None = None


@dataclass(slots=True)
class TransactionTimeout:
    """Timer B / F fired (no answer), or Timer H (no ACK for our error response)."""

    transaction_id: str
    request: SipRequest
    timer: str


@dataclass(slots=True)
class TransactionTerminated:
    transaction_id: str


@dataclass(slots=True)
class MalformedMessage:
    """Dropped input; requests were answered with 400 when possible (RFC 3261 §21.4.1)."""

    data: bytes
    source: Addr
    error: str


Event = (
    RequestReceived
    | ResponseReceived
    | TransactionTimeout
    | TransactionTerminated
    | MalformedMessage
)


@dataclass(slots=True)
class Output:
    send: list[Outgoing] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        self.send.extend(other.send)
        self.events.extend(other.events)


# ---------------------------------------------------------------- helpers


def response_addr(via: Via, source: Addr | None = None) -> Addr:
    """Where a response goes over an unreliable transport (RFC 3261 §18.2.2, RFC 3581 §4)."""
    host = via.received or via.host
    if via.rport is not None:
        return (host, via.rport)
    return (host, via.port or 5060)


def make_ack_for_error(request: SipRequest, response: SipResponse) -> SipRequest:
    """ACK for a non-2xx final response to INVITE (RFC 3261 §17.1.1.3)."""
    headers = Headers()
    headers.add("via", request.headers.get_all("via")[0])
    for route in request.headers.get_all("route"):
        headers.add("route", route)
    headers.add("max-forwards", "70")
    headers.add("from", request._required("from"))
    headers.add("to", response._required("to"))
    headers.add("call-id", request.call_id)
    headers.add("cseq", str(CSeq(request.cseq.seq, "ACK")))
    return SipRequest("ACK", request.uri.copy(), headers)


def make_cancel(request: SipRequest) -> SipRequest:
    """CANCEL for a pending INVITE (RFC 3261 §9.1): same branch, URI, Call-ID, From, To, CSeq."""
    headers = Headers()
    headers.add("via", request.headers.get_all("via")[0])
    for route in request.headers.get_all("route"):
        headers.add("route", route)
    headers.add("max-forwards", "70")
    headers.add("from", request._required("from"))
    headers.add("to", request._required("to"))
    headers.add("call-id", request.call_id)
    headers.add("cseq", str(CSeq(request.cseq.seq, "CANCEL")))
    return SipRequest("CANCEL", request.uri.copy(), headers)


def _server_key(request: SipRequest, method: str | None = None) -> str:
    """Server transaction key (RFC 3261 §17.2.3); ACK and CANCEL may ask for the INVITE's key."""
    via = request.top_via
    method = method or ("INVITE" if request.method == "ACK" else request.method)
    branch = via.branch or ""
    if branch.startswith(BRANCH_MAGIC):
        host, port = via.sent_by
        return f"{branch}|{host}:{port}|{method}"
    # RFC 2543 style matching: Request-URI, To tag, From tag, Call-ID, CSeq number, top Via.
    to_tag = "" if request.method == "ACK" else (request.to_addr.tag or "")
    return "|".join(
        [
            "2543",
            str(request.uri),
            to_tag,
            request.from_addr.tag or "",
            request.call_id,
            str(request.cseq.seq),
            str(via),
            method,
        ]
    )


def _client_key(branch: str, method: str) -> str:
    return f"{branch}|{'INVITE' if method == 'ACK' else method}"


def _send(out: Output, message: SipMessage, addr: Addr) -> None:
    out.send.append(Outgoing(message.to_bytes(), addr, message))


# ---------------------------------------------------------------- transactions


class Transaction:
    """State shared by the four transaction kinds; ``timers`` maps name → deadline."""

    def __init__(
        self, tid: str, request: SipRequest, addr: Addr, reliable: bool, cfg: TimerSettings
    ) -> None:
        self.id = tid
        self.request = request
        self.addr = addr
        self.reliable = reliable
        self.cfg = cfg
        self.state = State.TRYING
        self.timers: dict[str, float] = {}
        self._intervals: dict[str, float] = {}

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def _start(self, name: str, now: float, interval: float) -> None:
        self.timers[name] = now + interval
        self._intervals[name] = interval

    def _stop(self, *names: str) -> None:
        for name in names:
            self.timers.pop(name, None)

    def _terminate(self, out: Output) -> None:
        if self.state is not State.TERMINATED:
            self.state = State.TERMINATED
            self.timers.clear()
            out.events.append(TransactionTerminated(self.id))

    def _wait_then_terminate(self, name: str, now: float, delay: float, out: Output) -> None:
        # Reliable transports use zero for D, I, J, K (RFC 3261 §17): terminate at once.
        if self.reliable or delay <= 0:
            self._terminate(out)
        else:
            self._start(name, now, delay)

    def fire(self, name: str, now: float, out: Output) -> None:
        raise NotImplementedError


class InviteClientTransaction(Transaction):
    """RFC 3261 §17.1.1 with RFC 6026 §7.2 (Accepted state, Timer M)."""

    def start(self, now: float, out: Output) -> None:
        self.state = State.CALLING
        _send(out, self.request, self.addr)
        if not self.reliable:
            self._start("A", now, self.cfg.t1)  # §17.1.1.2
        self._start("B", now, 64 * self.cfg.t1)

    def fire(self, name: str, now: float, out: Output) -> None:
        deadline = self.timers.pop(name)
        if name == "A" and self.state is State.CALLING:
            _send(out, self.request, self.addr)
            interval = self._intervals["A"] * 2  # Timer A doubles without a cap for INVITE
            self.timers["A"] = deadline + interval
            self._intervals["A"] = interval
        elif name == "B" and self.state is State.CALLING:
            out.events.append(TransactionTimeout(self.id, self.request, "B"))
            self._terminate(out)
        elif name in ("D", "M"):
            self._terminate(out)

    def receive(self, now: float, response: SipResponse, source: Addr, out: Output) -> None:
        code = response.status
        if self.state in (State.CALLING, State.PROCEEDING):
            if code < 200:
                # §17.1.1.2: no more retransmissions once a provisional arrived.
                self.state = State.PROCEEDING
                self._stop("A", "B")
                out.events.append(ResponseReceived(response, source, self.id, self.request))
            elif code < 300:
                # RFC 6026 §8.4: Accepted; 2xx retransmissions go to the TU, which ACKs them.
                self.state = State.ACCEPTED
                self._stop("A", "B")
                out.events.append(ResponseReceived(response, source, self.id, self.request))
                # Timer M runs on reliable transports too: 2xx retransmissions come end-to-end.
                self._start("M", now, 64 * self.cfg.t1)
            else:
                self.state = State.COMPLETED
                self._stop("A", "B")
                self._ack = make_ack_for_error(self.request, response)
                _send(out, self._ack, self.addr)
                out.events.append(ResponseReceived(response, source, self.id, self.request))
                self._wait_then_terminate("D", now, 32.0, out)
        elif self.state is State.ACCEPTED and 200 <= code < 300:
            out.events.append(ResponseReceived(response, source, self.id, self.request))
        elif self.state is State.COMPLETED and code >= 300:
            # §17.1.1.2: retransmitted final response → retransmit the ACK, do not tell the TU.
            _send(out, self._ack, self.addr)


class NonInviteClientTransaction(Transaction):
    """RFC 3261 §17.1.2."""

    def start(self, now: float, out: Output) -> None:
        self.state = State.TRYING
        _send(out, self.request, self.addr)
        if not self.reliable:
            self._start("E", now, self.cfg.t1)
        self._start("F", now, 64 * self.cfg.t1)

    def fire(self, name: str, now: float, out: Output) -> None:
        deadline = self.timers.pop(name)
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            _send(out, self.request, self.addr)
            if self.state is State.TRYING:
                interval = min(2 * self._intervals["E"], self.cfg.t2)
            else:
                interval = self.cfg.t2  # §17.1.2.2: in Proceeding, retransmit every T2
            self.timers["E"] = deadline + interval
            self._intervals["E"] = interval
        elif name == "F" and self.state in (State.TRYING, State.PROCEEDING):
            out.events.append(TransactionTimeout(self.id, self.request, "F"))
            self._terminate(out)
        elif name == "K":
            self._terminate(out)

    def receive(self, now: float, response: SipResponse, source: Addr, out: Output) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return  # §17.1.2.2: retransmissions in Completed are absorbed
        out.events.append(ResponseReceived(response, source, self.id, self.request))
        if response.status < 200:
            self.state = State.PROCEEDING
        else:
            self.state = State.COMPLETED
            self._stop("E", "F")
            self._wait_then_terminate("K", now, self.cfg.t4, out)


class InviteServerTransaction(Transaction):
    """RFC 3261 §17.2.1 with RFC 6026 §7.1 (Accepted state, Timer L)."""

    last_response: SipResponse | None = None

    def start(self, now: float, out: Output) -> None:
        self.state = State.PROCEEDING
        delay = self.cfg.trying_delay
        if delay is not None:
            if delay <= 0:
                self._send_trying(out)
            else:
                self._start("trying", now, delay)

    def _send_trying(self, out: Output) -> None:
        from .message import make_response

        trying = make_response(self.request, 100)
        self.last_response = trying
        _send(out, trying, self.addr)

    def fire(self, name: str, now: float, out: Output) -> None:
        deadline = self.timers.pop(name)
        if name == "trying" and self.state is State.PROCEEDING and self.last_response is None:
            self._send_trying(out)
        elif name == "G" and self.state is State.COMPLETED and self.last_response is not None:
            _send(out, self.last_response, self.addr)
            interval = min(2 * self._intervals["G"], self.cfg.t2)
            self.timers["G"] = deadline + interval
            self._intervals["G"] = interval
        elif name == "H" and self.state is State.COMPLETED:
            # §17.2.1: no ACK arrived; the TU is told (transaction failure).
            out.events.append(TransactionTimeout(self.id, self.request, "H"))
            self._terminate(out)
        elif name in ("I", "L"):
            self._terminate(out)

    def respond(self, now: float, response: SipResponse, out: Output) -> None:
        code = response.status
        if self.state is State.PROCEEDING:
            self._stop("trying")
            self.last_response = response
            _send(out, response, self.addr)
            if 200 <= code < 300:
                self.state = State.ACCEPTED
                self._start("L", now, 64 * self.cfg.t1)
            elif code >= 300:
                self.state = State.COMPLETED
                if not self.reliable:
                    self._start("G", now, self.cfg.t1)
                self._start("H", now, 64 * self.cfg.t1)
        elif self.state is State.ACCEPTED and 200 <= code < 300:
            # RFC 6026 §7.1: the TU's 2xx retransmissions pass through.
            _send(out, response, self.addr)

    def receive_request(self, request: SipRequest, source: Addr, now: float, out: Output) -> None:
        if request.method == "ACK":
            if self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                self._stop("G", "H")
                self._wait_then_terminate("I", now, self.cfg.t4, out)
            elif self.state is State.ACCEPTED:
                # RFC 6026 §8.7: an ACK matching in Accepted goes to the TU.
                out.events.append(RequestReceived(request, source, None))
            return
        # Retransmitted INVITE.
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response is not None:
            _send(out, self.last_response, self.addr)
        # In Accepted the TU retransmits the 2xx itself: absorb (RFC 6026 §8.7).


class NonInviteServerTransaction(Transaction):
    """RFC 3261 §17.2.2."""

    last_response: SipResponse | None = None

    def start(self, now: float, out: Output) -> None:
        self.state = State.TRYING

    def fire(self, name: str, now: float, out: Output) -> None:
        self.timers.pop(name)
        if name == "J":
            self._terminate(out)

    def respond(self, now: float, response: SipResponse, out: Output) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return
        self.last_response = response
        _send(out, response, self.addr)
        if response.status < 200:
            self.state = State.PROCEEDING
        else:
            self.state = State.COMPLETED
            self._wait_then_terminate("J", now, 64 * self.cfg.t1, out)

    def receive_request(self, request: SipRequest, source: Addr, now: float, out: Output) -> None:
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response is not None:
            _send(out, self.last_response, self.addr)


ClientTransaction = InviteClientTransaction | NonInviteClientTransaction
ServerTransaction = InviteServerTransaction | NonInviteServerTransaction


# ---------------------------------------------------------------- the layer


class TransactionLayer:
    """All transactions of one transport (RFC 3261 §17), driven by ``now`` (seconds, monotonic).

    ``transport`` is the Via transport token ("UDP", "TCP", "TLS"); retransmission timers run only
    on unreliable transports (§17.1.1.2). ``local_addr`` is the sent-by written into Via headers
    the layer adds.
    """

    def __init__(
        self,
        local_addr: Addr,
        transport: str = "UDP",
        *,
        timers: TimerSettings | None = None,
        reliable: bool | None = None,
    ) -> None:
        self.local_addr = local_addr
        self.transport = transport.upper()
        self.reliable = self.transport != "UDP" if reliable is None else reliable
        self.timers = timers or TimerSettings()
        self.clients: dict[str, ClientTransaction] = {}
        self.servers: dict[str, ServerTransaction] = {}

    # -- helpers for the TU -----------------------------------------------------------------
    def make_via(self, branch: str | None = None) -> Via:
        """Our Via (with rport, RFC 3581 §3) for a new request."""
        host, port = self.local_addr
        return Via(
            self.transport, host, port, {"branch": branch or generate_branch(), "rport": None}
        )

    def send_request(self, now: float, request: SipRequest, addr: Addr) -> tuple[str, Output]:
        """Start a client transaction; adds our Via (or a branch to the TU's Via) if missing."""
        if request.method == "ACK":
            raise ValueError("ACK is sent with send_stateless (RFC 3261 §17.1.1.3)")
        if "via" not in request.headers:
            request.headers.prepend("via", str(self.make_via()))
        via = request.top_via
        if not via.branch:
            via.params["branch"] = generate_branch()
            vias = request.headers.get_all("via")
            request.headers.set_all("via", [str(via), *vias[1:]])
        tid = _client_key(via.branch or "", request.method)
        cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        tx = cls(tid, request, addr, self.reliable, self.timers)
        self.clients[tid] = tx
        out = Output()
        tx.start(now, out)
        self._collect(out)
        return tid, out

    def send_response(self, now: float, response: SipResponse) -> Output:
        """Send a response through its server transaction (matched by top Via and CSeq method).

        A response without a live transaction (e.g. a late 2xx retransmission) is sent statelessly
        to the address of RFC 3261 §18.2.2.
        """
        out = Output()
        key = self._response_server_key(response)
        tx = self.servers.get(key) if key else None
        if tx is None:
            _send(out, response, response_addr(response.top_via))
            return out
        tx.respond(now, response, out)
        self._collect(out)
        return out

    def send_stateless(self, message: SipMessage, addr: Addr) -> Output:
        """Send outside a transaction: ACK for 2xx (§13.2.2.4), 2xx retransmits (§13.3.1.4)."""
        out = Output()
        _send(out, message, addr)
        return out

    def server_transaction(self, tid: str) -> ServerTransaction | None:
        return self.servers.get(tid)

    def client_transaction(self, tid: str) -> ClientTransaction | None:
        return self.clients.get(tid)

    def abandon(self, tid: str) -> None:
        """Forget a client transaction the TU has stopped caring about, without an event.

        The TU has its own, shorter deadline (a keepalive probe, a REGISTER it replaces): the
        retransmissions stop at once instead of running to Timer F, and a late response is
        passed up as a stray one (``transaction_id`` None).
        """
        self.clients.pop(tid, None)

    def invite_for_cancel(self, cancel: SipRequest) -> InviteServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 §9.2)."""
        try:
            tx = self.servers.get(_server_key(cancel, "INVITE"))
        except SipParseError:
            return None
        return tx if isinstance(tx, InviteServerTransaction) else None

    # -- input --------------------------------------------------------------------------------
    def receive(self, now: float, data: bytes | SipMessage, source: Addr) -> Output:
        out = Output()
        if isinstance(data, bytes):
            try:
                message: SipMessage = parse_message(data, datagram=not self.reliable)
            except SipParseError as exc:
                error = build_error_response(data)
                if error is not None:
                    # The raw Via is copied, so reply to the source (RFC 3581 style).
                    out.send.append(Outgoing(error, source))
                out.events.append(MalformedMessage(data, source, str(exc)))
                return out
        else:
            message = data
        try:
            if isinstance(message, SipRequest):
                self._receive_request(now, message, source, out)
            elif isinstance(message, SipResponse):
                self._receive_response(now, message, source, out)
        except SipParseError as exc:
            # Messages built in memory skip parse-time validation; never let them crash the layer.
            out.events.append(MalformedMessage(b"", source, str(exc)))
        self._collect(out)
        return out

    def _receive_request(self, now: float, request: SipRequest, source: Addr, out: Output) -> None:
        self._stamp_via(request, source)
        key = _server_key(request)
        tx = self.servers.get(key)
        if tx is not None:
            tx.receive_request(request, source, now, out)
            return
        if request.method == "ACK":
            # ACK for a 2xx is its own thing (§17.2.3 note): straight to the TU.
            out.events.append(RequestReceived(request, source, None))
            return
        addr = source if self.reliable else response_addr(request.top_via, source)
        cls = InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
        server = cls(key, request, addr, self.reliable, self.timers)
        self.servers[key] = server
        out.events.append(RequestReceived(request, source, key))
        server.start(now, out)

    def _stamp_via(self, request: SipRequest, source: Addr) -> None:
        """Add received/rport to the top Via (RFC 3261 §18.2.1, RFC 3581 §4)."""
        vias = request.headers.get_all("via")
        via = Via.parse(vias[0])
        changed = False
        if via.host != source[0] or via.has_rport:
            via.params["received"] = source[0]
            changed = True
        if via.has_rport and via.rport is None:
            via.params["rport"] = str(source[1])
            changed = True
        if changed:
            request.headers.set_all("via", [str(via), *vias[1:]])

    def _receive_response(
        self, now: float, response: SipResponse, source: Addr, out: Output
    ) -> None:
        via = response.top_via
        tx = self.clients.get(_client_key(via.branch or "", response.cseq.method))
        if tx is None:
            out.events.append(ResponseReceived(response, source, None))
            return
        tx.receive(now, response, source, out)

    def _response_server_key(self, response: SipResponse) -> str | None:
        via = response.top_via
        branch = via.branch or ""
        if not branch.startswith(BRANCH_MAGIC):
            for key, tx in self.servers.items():
                if tx.request.top_via.branch == via.branch and tx.request.call_id == (
                    response.call_id
                ):
                    return key
            return None
        host, port = via.sent_by
        return f"{branch}|{host}:{port}|{response.cseq.method}"

    # -- time -----------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        """Earliest deadline of any transaction timer, or None when nothing is pending."""
        deadlines = [d for tx in self._all() for d in tx.timers.values()]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> Output:
        """Fire every timer due at ``now`` in deadline order (timers scheduled meanwhile too)."""
        out = Output()
        while True:
            due = [
                (deadline, tx.id, name, tx)
                for tx in self._all()
                for name, deadline in tx.timers.items()
                if deadline <= now
            ]
            if not due:
                break
            due.sort(key=lambda item: (item[0], item[1], item[2]))
            _, _, name, tx = due[0]
            tx.fire(name, now, out)
        self._collect(out)
        return out

    def _all(self) -> list[Transaction]:
        return [*self.clients.values(), *self.servers.values()]

    def _collect(self, out: Output) -> None:
        for table in (self.clients, self.servers):
            for key in [k for k, tx in table.items() if tx.terminated]:
                del table[key]
