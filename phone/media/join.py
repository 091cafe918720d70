"""Two RTP legs joined in the worker: what one far end says, the other hears.

The sipworker joins the legs of two calls when it must stay in the middle: an attended transfer
the peers could not complete themselves (a refused REFER, a peer without Replaces), and a parked
call picked up by a colleague whose line runs elsewhere. G.711 frames cross as they are
(converted between μ-law and A-law when the two legs differ), paced by the legs' own 20 ms tick.

A join re-times (the legs' playout buffers and send queues; a MediaBridge forwards packets as
they arrive instead): the legs must not stay connected to a bridge, which takes their packets
directly (the worker's route_media disconnects the pages from calls it joins).
"""

from __future__ import annotations

from phone.media import g711
from phone.media.leg import MediaTicker, RtpLeg

# Frames waiting to leave one leg: more than this and the oldest go (a burst from one far end
# must not build up delay towards the other).
MAX_QUEUED = 3


class LegJoin:
    def __init__(self, a: RtpLeg, b: RtpLeg, ticker: MediaTicker | None = None) -> None:
        self.a, self.b = a, b
        self.relayed = 0
        for leg in (a, b):
            leg.source = None  # no music on hold or tone on top of the other party
        self._ticker = ticker or MediaTicker.shared()
        # Added after both legs: the ticker calls in insertion order, so a frame a leg released
        # this tick is forwarded this tick.
        self._ticker.add(self)  # type: ignore[arg-type]  # duck-typed: _on_tick/close

    def _on_tick(self, now: float, slots: int) -> None:
        self._move(self.a, self.b)
        self._move(self.b, self.a)

    def _move(self, src: RtpLeg, dst: RtpLeg) -> None:
        while (frame := src.pull_frame()) is not None:
            if frame.payload is None or frame.payload_type not in (
                g711.PAYLOAD_TYPE_PCMU,
                g711.PAYLOAD_TYPE_PCMA,
            ):
                continue  # lost: the other leg sends silence in its place
            dst.send_payload(g711.convert(frame.payload, frame.payload_type, dst.payload_type))
            self.relayed += 1
        dst.trim_queue(MAX_QUEUED)

    def close(self) -> None:
        self._ticker.discard(self)  # type: ignore[arg-type]
