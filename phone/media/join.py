"""Two RTP legs joined in the worker: what one far end says, the other hears.

The sipworker joins the legs of two calls when it must stay in the middle: an attended transfer
the peers could not complete themselves (a refused REFER, a peer without Replaces), and a parked
call picked up by a colleague whose line runs elsewhere.

Both legs carry G.711, so a join forwards each packet the moment it arrives, as a MediaBridge
does in passthrough (phone.media.leg, "direct"): each leg hands what it receives to the join
(`RtpLeg.listen`) and the join sends it out of the other leg at once (`RtpLeg.relay`) - no tick,
no playout buffer, no send queue. The payload crosses untouched, or mapped through the 256-entry
μ-law <-> A-law table when the two calls negotiated different laws (a law can also change under a
running join: a re-INVITE, e.g. taking the held call off hold, picks the law again; the table is
chosen per packet). The header is the sending leg's own: its SSRC, and sequence numbers and
timestamps continuing its stream (`RtpForwarder`: RFC 3550 §5.1/§8.2, the marker bit after a
splice or a pause, RFC 3551 §4.1); a loss upstream stays a gap downstream.

Whenever a leg has audio of its own to send - RFC 4733 digits (paced by the 20 ms tick), or
nothing relayed for `RELAY_IDLE` (it sends silence so the far end keeps a stream) - `relay()`
declines and the join queues the payload on that leg the re-timed way (its tick sends it, at
most MAX_QUEUED frames behind), until the leg forwards again. Telephone events and comfort
noise are not carried across (each leg reports its far end's digits through `on_dtmf`); the
other leg renumbers around them, so they do not show as losses.

`direct=False` keeps the old re-timed join for comparison (benchmarks/join_delay.py): each
leg's playout buffer releases one frame per 20 ms tick and the join moves it to the other
leg's send queue, which its next tick sends - 60-150 ms later than forwarding.

The legs must not stay connected to a bridge, which takes their packets directly too (the
worker's route_media disconnects the pages from calls it joins).
"""

from __future__ import annotations

from phone.media import g711
from phone.media.leg import MediaTicker, RtpLeg

__all__ = ["MAX_QUEUED", "LegJoin"]

# Frames waiting to leave one leg (re-timed): more than this and the oldest go (a burst from
# one far end must not build up delay towards the other).
MAX_QUEUED = 3

_G711 = (g711.PAYLOAD_TYPE_PCMU, g711.PAYLOAD_TYPE_PCMA)


class _Direction:
    """One way through the join: src's listener, relaying into dst."""

    __slots__ = ("dst", "join", "relay", "src")

    def __init__(self, join: LegJoin, src: RtpLeg, dst: RtpLeg) -> None:
        self.join = join
        self.src = src
        self.dst = dst
        self.relay = dst.relay

    def __call__(
        self, payload: bytes, pt: int, seq: int, ts: int, ssrc: int, marker: bool, now: float
    ) -> None:
        dst = self.dst
        law = dst.payload_type
        if pt != law:
            if pt not in _G711 or not payload:
                dst.relay_skip()  # an event or comfort noise: not for the other far end
                return
            payload = g711.convert(payload, pt, law)
        self.join.relayed += 1
        if not self.relay(payload, ssrc, seq, ts, marker, now):
            # dst sends something of its own right now (digits, or idle silence while the
            # stream was away): the audio waits for dst's tick, never more than MAX_QUEUED.
            dst.send_payload(payload)
            dst.trim_queue(MAX_QUEUED)


class LegJoin:
    def __init__(
        self, a: RtpLeg, b: RtpLeg, ticker: MediaTicker | None = None, *, direct: bool = True
    ) -> None:
        self.a, self.b = a, b
        self.direct = direct
        self.relayed = 0
        self.closed = False
        for leg in (a, b):
            leg.source = None  # no music on hold or tone on top of the other party
        self._ticker = ticker or MediaTicker.shared()
        self._a_to_b = _Direction(self, a, b)
        self._b_to_a = _Direction(self, b, a)
        if direct:
            a.listen(self._a_to_b)
            b.listen(self._b_to_a)
            a.relay_from(self)
            b.relay_from(self)
        else:
            # Added after both legs: the ticker calls in insertion order, so a frame a leg
            # released this tick is forwarded this tick.
            self._ticker.add(self)  # type: ignore[arg-type]  # duck-typed: _on_tick/close

    # -- re-timed (direct=False) ----------------------------------------------------------

    def _on_tick(self, now: float, slots: int) -> None:
        self._move(self.a, self.b)
        self._move(self.b, self.a)

    def _move(self, src: RtpLeg, dst: RtpLeg) -> None:
        while (frame := src.pull_frame()) is not None:
            if frame.payload is None or frame.payload_type not in _G711:
                continue  # lost: the other leg sends silence in its place
            dst.send_payload(g711.convert(frame.payload, frame.payload_type, dst.payload_type))
            self.relayed += 1
        dst.trim_queue(MAX_QUEUED)

    def close(self) -> None:
        """Stop relaying; each leg goes back to sending on its own (silence) until closed."""
        if self.closed:
            return
        self.closed = True
        self._ticker.discard(self)  # type: ignore[arg-type]
        self.a.unlisten(self._a_to_b)
        self.b.unlisten(self._b_to_a)
        self.a.release_relay(self)
        self.b.release_relay(self)
