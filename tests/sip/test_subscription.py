"""Dialog-event subscriptions (RFC 6665 + RFC 4235) of the user agent, against a notifier
wired in memory, on a fake clock."""

from __future__ import annotations

import random
from typing import Any

import pytest

from phone.sip.message import SipRequest, make_response, parse_message
from phone.sip.subscription import MAX_EXPIRES, MIN_EXPIRES, RETRY_AFTER
from phone.sip.transaction import RequestReceived, ResponseReceived, TransactionLayer
from phone.sip.useragent import UserAgent, UserAgentConfig, WatchedLamp

from .harness import Network
from .messages import crlf

ALICE = ("10.0.0.1", 5060)
PBX = ("10.0.0.100", 5060)


def dialog_info(version: int, *states: tuple[str, str], kind: str = "full") -> str:
    dialogs = "".join(
        f'<dialog id="d{i}" direction="{direction}"><state>{state}</state></dialog>'
        for i, (state, direction) in enumerate(states)
    )
    return (
        f'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" '
        f'state="{kind}" entity="sip:1009@pbx.example.jp">{dialogs}</dialog-info>'
    )


class Notifier:
    """The PBX side: answers SUBSCRIBEs, sends NOTIFYs in the subscription's dialog."""

    def __init__(self) -> None:
        self.net = Network()
        self.pbx = TransactionLayer(PBX)
        self.alice = UserAgent(
            UserAgentConfig(
                username="1001",
                domain="pbx.example.jp",
                password="pw",
                local_addr=ALICE,
                proxy_addr=PBX,
            ),
            rng=random.Random(7),
        )
        self.net.add(self.pbx)
        self.net.add(self.alice)
        self.notify_seq = 0
        self.subscribe: SipRequest | None = None

    def requests(self) -> list[SipRequest]:
        events = self.net.take_events(PBX)
        return [e.request for e in events if isinstance(e, RequestReceived)]

    def responses(self) -> list[Any]:
        events = self.net.events[PBX]
        return [e.response for e in events if isinstance(e, ResponseReceived)]

    def lamps(self) -> list[str]:
        return [e.state for e in self.net.take_events(ALICE) if isinstance(e, WatchedLamp)]

    def take_subscribe(self) -> SipRequest:
        (request,) = self.requests()
        assert request.method == "SUBSCRIBE"
        self.subscribe = request
        return request

    def answer(self, status: int = 200, expires: int | None = 600, **headers: str) -> None:
        assert self.subscribe is not None
        extra = [("contact", "<sip:1009@10.0.0.9:5070>")]
        if expires is not None:
            extra.append(("expires", str(expires)))
        extra += [(k.replace("_", "-"), v) for k, v in headers.items()]
        response = make_response(self.subscribe, status, to_tag="n1", headers=extra)
        self.net.deliver(self.pbx, self.pbx.send_response(self.net.now, response))

    def notify(
        self,
        body: str | bytes = "",
        state: str = "active;expires=600",
        *,
        content_type: str = "application/dialog-info+xml",
        to_tag: str | None = None,
        event: str = "dialog",
    ) -> int:
        """Send a NOTIFY; the status alice answered with."""
        assert self.subscribe is not None
        self.notify_seq += 1
        raw = body.encode() if isinstance(body, str) else body
        text = crlf(
            f"""NOTIFY {self.alice.contact_uri} SIP/2.0
Via: SIP/2.0/UDP 10.0.0.100:5060;branch=z9hG4bKn{self.notify_seq}x{self.net.now}
Max-Forwards: 70
From: <sip:1009@pbx.example.jp>;tag=n1
To: {self.subscribe.headers.get("from")}
Call-ID: {self.subscribe.call_id}
CSeq: {self.notify_seq} NOTIFY
Contact: <sip:1009@10.0.0.9:5070>
Event: {event}
Subscription-State: {state}
Content-Type: {content_type}
Content-Length: {len(raw)}

"""
        )
        request = parse_message(text + raw)
        assert isinstance(request, SipRequest)
        if to_tag is not None:
            to = request.to_addr
            to.tag = to_tag
            request.headers.set("to", str(to))
        before = len(self.responses())
        self.net.deliver(self.pbx, self.pbx.send_request(self.net.now, request, ALICE)[1])
        (response,) = self.responses()[before:]
        return response.status

    def watch(self, extension: str = "1009", expires: int = 600) -> SipRequest:
        self.net.deliver(self.alice, self.alice.watch_dialogs(self.net.now, extension, expires))
        return self.take_subscribe()


def test_it_subscribes_to_the_dialog_package_with_bounded_expires() -> None:
    n = Notifier()
    sub = n.watch(expires=10**6)
    assert str(sub.uri) == "sip:1009@pbx.example.jp"
    assert sub.headers.get("event") == "dialog"
    assert sub.headers.get("accept") == "application/dialog-info+xml"
    assert sub.headers.get("expires") == str(MAX_EXPIRES)
    assert sub.to_addr.tag is None and sub.from_addr.tag
    n2 = Notifier()
    assert n2.watch(expires=1).headers.get("expires") == str(MIN_EXPIRES)


def test_it_lights_the_lamp_from_notify_bodies() -> None:
    n = Notifier()
    n.watch()
    n.answer(202)
    assert n.notify(state="pending") == 200  # no body yet: nothing to show
    assert n.lamps() == []
    assert n.notify(dialog_info(0)) == 200
    assert n.notify(dialog_info(1, ("early", "recipient"))) == 200
    assert n.notify(dialog_info(2, ("confirmed", "recipient"))) == 200
    assert n.notify(dialog_info(3, ("terminated", "recipient"))) == 200
    assert n.lamps() == ["idle", "ringing", "busy", "idle"]
    # A call the watched party makes is busy from its first state.
    assert n.notify(dialog_info(4, ("trying", "initiator"), kind="partial")) == 200
    assert n.lamps() == ["busy"]


def test_it_answers_malformed_bodies_and_keeps_the_lamp() -> None:
    n = Notifier()
    n.watch()
    n.answer()
    n.notify(dialog_info(1, ("early", "recipient")))
    assert n.lamps() == ["ringing"]
    assert n.notify("<dialog-info") == 400  # RFC 3261 §21.4.1
    assert n.notify(dialog_info(2, ("confirmed", "x"))) == 400
    assert n.notify(dialog_info(2) + " " * 70_000) == 413  # §21.4.11: past our bound
    many = [("confirmed", "recipient")] * 65
    assert n.notify(dialog_info(2, *many)) == 413
    assert n.notify(dialog_info(2), content_type="text/plain") == 415
    assert n.notify(dialog_info(2), event="presence") == 489  # RFC 6665 §4.1.3
    assert n.lamps() == []
    # The subscription still works.
    assert n.notify(dialog_info(2)) == 200
    assert n.lamps() == ["idle"]


def test_it_answers_481_to_a_notify_of_no_subscription() -> None:
    n = Notifier()
    n.watch()
    n.answer()
    assert n.notify(dialog_info(1), to_tag="not-ours") == 481


def test_it_refreshes_in_the_dialog_before_expiry() -> None:
    n = Notifier()
    first = n.watch()
    n.answer(expires=120)  # the notifier may shorten what we asked for (RFC 6665 §4.1.2.1)
    n.net.run_until(59)
    assert n.requests() == []
    n.net.run_until(60)  # half-way
    refresh = n.take_subscribe()
    assert refresh.call_id == first.call_id and refresh.to_addr.tag == "n1"
    assert refresh.cseq.seq == first.cseq.seq + 1
    assert str(refresh.uri) == "sip:1009@10.0.0.9:5070"  # the notifier's Contact
    n.answer(expires=120)
    # A NOTIFY saying the subscription ends sooner moves the refresh earlier.
    n.notify(dialog_info(1), state="active;expires=40")
    n.net.run_until(n.net.now + 20)
    assert n.take_subscribe().cseq.seq == refresh.cseq.seq + 1


def test_it_unsubscribes_and_forgets() -> None:
    n = Notifier()
    first = n.watch()
    n.answer()
    n.notify(dialog_info(1, ("confirmed", "initiator")))
    n.net.deliver(n.alice, n.alice.unwatch_dialogs(n.net.now, "1009"))
    bye = n.take_subscribe()
    assert bye.headers.get("expires") == "0" and bye.call_id == first.call_id
    assert bye.to_addr.tag == "n1"
    n.answer(expires=0)
    # The notifier's last NOTIFY (RFC 6665 §4.2.1.4) is answered; then nothing is left.
    assert n.notify(dialog_info(2), state="terminated;reason=timeout") == 200
    assert n.notify(dialog_info(3), state="active") == 481
    assert n.alice.subscriptions == {} and n.alice.watched == []
    n.net.run_until(10_000)
    assert n.requests() == []


@pytest.mark.parametrize(
    ("state", "again_at"),
    [
        ("terminated;reason=deactivated", 0.0),  # RFC 6665 §4.1.3: at once
        ("terminated;reason=timeout", 0.0),
        ("terminated;reason=probation;retry-after=30", 30.0),
        ("terminated;reason=giveup", 60.0),
        ("terminated", 60.0),
        ("terminated;reason=rejected", None),  # never again
        ("terminated;reason=noresource", None),
        ("terminated;reason=invariant", None),
    ],
)
def test_it_follows_the_termination_reason(state: str, again_at: float | None) -> None:
    n = Notifier()
    first = n.watch()
    n.answer()
    n.notify(dialog_info(1, ("early", "recipient")))
    assert n.notify(state=state) == 200
    lamps = n.lamps()
    assert lamps[0] == "ringing"
    # Offline unless a new subscription starts at once (the old state may be stale by then).
    assert (lamps[-1] == "offline") == (again_at != 0.0)
    n.net.run_until(10_000 if again_at is None else again_at)
    requests = n.requests()
    if again_at is None:
        assert requests == [] and lamps[-1] == "offline"
        return
    (again,) = requests
    # A new subscription: new Call-ID, no To tag, versions start over.
    assert again.call_id != first.call_id and again.to_addr.tag is None
    assert n.net.now == again_at
    n.subscribe = again
    n.answer()
    n.notify(dialog_info(0, ("confirmed", "recipient")))
    assert n.lamps()[-1] == "busy"


def test_it_starts_over_after_481_to_a_refresh_and_backs_off_after_a_refusal() -> None:
    n = Notifier()
    first = n.watch()
    n.answer(expires=120)
    n.net.run_until(60)
    n.take_subscribe()
    n.answer(481, expires=None)
    again = n.take_subscribe()  # at once, as a new subscription
    assert again.call_id != first.call_id and again.to_addr.tag is None
    n.answer(404, expires=None)
    assert n.lamps() == ["offline"]
    n.net.run_until(n.net.now + RETRY_AFTER - 1)
    assert n.requests() == []
    n.net.run_until(n.net.now + 1)
    n.take_subscribe()
    n.answer(423, expires=None, min_expires="1800")  # Interval Too Brief
    assert n.take_subscribe().headers.get("expires") == "1800"


def test_it_takes_a_notify_that_overtakes_the_2xx() -> None:
    # RFC 6665 §4.1.2.4: the NOTIFY may arrive first and establishes the dialog.
    n = Notifier()
    first = n.watch()
    assert n.notify(dialog_info(1, ("early", "recipient"))) == 200
    assert n.lamps() == ["ringing"]
    n.answer(expires=120)
    n.net.run_until(60)
    refresh = n.take_subscribe()
    assert refresh.call_id == first.call_id and refresh.to_addr.tag == "n1"


def test_it_authenticates_a_challenged_subscribe() -> None:
    n = Notifier()
    first = n.watch()
    n.answer(
        407,
        expires=None,
        proxy_authenticate='Digest realm="pbx.example.jp", nonce="n0nce", algorithm=MD5',
    )
    second = n.take_subscribe()
    assert second.headers.get("proxy-authorization")
    assert second.cseq.seq == first.cseq.seq + 1 and second.call_id == first.call_id
    n.answer(expires=120)
    n.net.run_until(60)
    assert n.take_subscribe().cseq.seq == second.cseq.seq + 1
