"""SIP dialogs (RFC 3261 §12): state from the dialog-creating exchange, in-dialog requests.

A dialog is pure data plus rules; it never sends anything. The user agent builds in-dialog requests
with :meth:`Dialog.create_request` and sends them through the transaction layer to
:func:`next_hop` of the request.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from .message import Headers, SipRequest, SipResponse, Via
from .uri import Address, SipUri

DialogId = tuple[str, str, str]  # (Call-ID, local tag, remote tag), RFC 3261 §12


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def request_dialog_id(request: SipRequest) -> DialogId:
    """Dialog id of a request we received: our tag is in To (RFC 3261 §12.2.2)."""
    return (request.call_id, request.to_addr.tag or "", request.from_addr.tag or "")


def response_dialog_id(response: SipResponse) -> DialogId:
    """Dialog id of a response to our request: our tag is in From."""
    return (response.call_id, response.from_addr.tag or "", response.to_addr.tag or "")


def next_hop(request: SipRequest) -> SipUri:
    """Where to send (RFC 3261 §8.1.2): the first Route if any, else the Request-URI."""
    routes = request.routes
    return routes[0].uri if routes else request.uri


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: Address
    remote_uri: Address
    remote_target: SipUri
    local_seq: int
    remote_seq: int | None = None
    route_set: list[Address] = field(default_factory=list)
    state: DialogState = DialogState.EARLY
    secure: bool = False
    local_contact: Address | None = None

    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local_tag, self.remote_tag)

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def from_uac(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """UAC side, from a 1xx-with-To-tag or 2xx to our INVITE (RFC 3261 §12.1.2)."""
        contacts = response.contacts
        target = contacts[0].uri if contacts else request.uri
        local = request.from_addr
        remote = response.to_addr
        state = DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY
        local_contacts = request.contacts
        return cls(
            call_id=request.call_id,
            local_tag=local.tag or "",
            remote_tag=remote.tag or "",
            local_uri=_without_tag(local),
            remote_uri=_without_tag(remote),
            remote_target=target,
            local_seq=request.cseq.seq,
            remote_seq=None,
            # §12.1.2: the route set is the Record-Route list in reverse order.
            route_set=list(reversed(response.record_routes)),
            state=state,
            secure=request.uri.scheme == "sips",
            local_contact=local_contacts[0] if local_contacts else None,
        )

    @classmethod
    def from_uas(
        cls,
        request: SipRequest,
        local_tag: str,
        local_contact: Address | None = None,
        *,
        confirmed: bool = False,
    ) -> Dialog:
        """UAS side, when we send a 1xx/2xx with ``local_tag`` (RFC 3261 §12.1.1)."""
        contacts = request.contacts
        target = contacts[0].uri if contacts else request.from_addr.uri
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_addr.tag or "",
            local_uri=_without_tag(request.to_addr),
            remote_uri=_without_tag(request.from_addr),
            remote_target=target,
            # §12.1.1: our sequence space starts wherever we like; random keeps it unguessable.
            local_seq=secrets.randbelow(2**30) + 1,
            remote_seq=request.cseq.seq,
            route_set=list(request.record_routes),
            state=DialogState.CONFIRMED if confirmed else DialogState.EARLY,
            secure=request.uri.scheme == "sips",
            local_contact=local_contact,
        )

    # -- updates ----------------------------------------------------------------------------
    def confirm(self, response: SipResponse) -> None:
        """2xx on an early dialog (RFC 3261 §13.2.2.4): confirm and recompute the route set."""
        if self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED
            self.route_set = list(reversed(response.record_routes))
        self._refresh_target(response.contacts)

    def update_from_response(self, request: SipRequest, response: SipResponse) -> None:
        """Target refresh on 2xx to re-INVITE / UPDATE (RFC 3261 §12.2.1.2)."""
        if 200 <= response.status < 300 and request.method in ("INVITE", "UPDATE"):
            self._refresh_target(response.contacts)

    def receive_request(self, request: SipRequest) -> int | None:
        """Check and absorb an in-dialog request (RFC 3261 §12.2.2).

        Returns an error status to answer with (500 for an out-of-order CSeq), or None.
        """
        seq = request.cseq.seq
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and seq <= self.remote_seq:
                # §12.2.2: lower CSeq is out of order → 500. Equal is a retransmission the
                # transaction layer already absorbed, or a new request reusing CSeq (error).
                return 500
            self.remote_seq = seq
        if request.method in ("INVITE", "UPDATE"):
            self._refresh_target(request.contacts)
        return None

    def _refresh_target(self, contacts: list[Address]) -> None:
        if contacts:
            self.remote_target = contacts[0].uri

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    # -- requests within the dialog -----------------------------------------------------------
    def create_request(
        self,
        method: str,
        *,
        via: Via | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        cseq: int | None = None,
    ) -> SipRequest:
        """Build an in-dialog request (RFC 3261 §12.2.1.1), loose and strict routing included.

        CSeq increments the local sequence number except for ACK/CANCEL, which take ``cseq``
        (the INVITE's number).
        """
        if cseq is None:
            if method in ("ACK", "CANCEL"):
                raise ValueError("ACK/CANCEL need the CSeq of the INVITE")
            self.local_seq += 1
            cseq = self.local_seq
        uri = self.remote_target.copy()
        routes = [r.copy() for r in self.route_set]
        if routes and not routes[0].uri.lr:
            # Strict routing: the first route becomes the Request-URI and the remote target is
            # appended as the last Route (RFC 3261 §12.2.1.1).
            first = routes.pop(0)
            routes.append(Address(uri))
            uri = first.uri.copy()
            uri.headers = {}
            uri.params = {k: v for k, v in uri.params.items() if k != "method"}
        out = Headers()
        if via is not None:
            out.add("via", str(via))
        out.add("max-forwards", "70")
        local = self.local_uri.copy()
        local.tag = self.local_tag
        remote = self.remote_uri.copy()
        remote.tag = self.remote_tag or None
        out.add("from", str(local))
        out.add("to", str(remote))
        out.add("call-id", self.call_id)
        out.add("cseq", f"{cseq} {method}")
        for route in routes:
            out.add("route", str(route))
        if self.local_contact is not None and method not in ("ACK", "CANCEL", "BYE"):
            out.add("contact", str(self.local_contact))
        for name, value in headers:
            out.add(name, value)
        return SipRequest(method, uri, out, body)

    def create_ack(
        self, invite_cseq: int, *, via: Via | None = None, body: bytes = b""
    ) -> SipRequest:
        """ACK for a 2xx (RFC 3261 §13.2.2.4): CSeq number of the INVITE, method ACK."""
        return self.create_request("ACK", via=via, body=body, cseq=invite_cseq)


def _without_tag(addr: Address) -> Address:
    copy = addr.copy()
    copy.tag = None
    return copy
