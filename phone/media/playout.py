"""A small fixed-delay playout (jitter) buffer for 20 ms G.711 frames.

Sans-I/O: `put(packet, now)` when a packet arrives, `get(now)` once per frame tick to pull the
next frame. Frames are keyed by RTP sequence number (16-bit, wrapping; RFC 3550 §5.1), so
reordering is undone for free and a missing number is a loss.

Adaptive (`max_delay`): the delay starts at `target_delay` and grows by one frame, up to
`max_delay`, each time a packet arrives too late for its slot (the network's jitter is larger
than the buffer): the next get() plays one concealment frame without moving the cursor, so
every later packet has 20 ms more time. After `shrink_after` frames in which the buffer never
ran below two frames ahead (the extra delay went unused) it drops one frame and the delay
shrinks again, back down to `target_delay` at most. A LAN PBX's stream then plays 40 ms behind
arrival, not 60, and a jittery one still plays without repeated losses.

The one property that matters most: playout never stalls. A missing frame is reported as a
concealment frame (payload None) and the cursor moves on; a stream that falls behind the cursor
(sender paused, our clock ran fast, a network stall) re-anchors instead of having every packet
dropped as late; an SSRC change or a big sequence jump (RFC 3550 §8.2 / §A.1 "source restart")
starts over.
"""

from __future__ import annotations

from dataclasses import dataclass

from phone.media.rtp import FRAME_MS, FRAME_SAMPLES, RtpPacket, seq_diff

__all__ = ["PlayoutBuffer", "PlayoutFrame", "PlayoutStats"]


@dataclass(slots=True, frozen=True)
class PlayoutFrame:
    """One 20 ms slot of output. `payload is None` means the packet was lost: conceal it."""

    sequence: int
    timestamp: int | None
    payload_type: int | None
    payload: bytes | None

    @property
    def lost(self) -> bool:
        return self.payload is None


@dataclass(slots=True)
class PlayoutStats:
    received: int = 0  # packets accepted into the buffer
    played: int = 0  # frames returned with a payload
    concealed: int = 0  # frames returned as lost
    late: int = 0  # packets dropped because their slot had already been played
    duplicates: int = 0
    overflow: int = 0  # packets dropped to keep latency bounded (drift, bursts)
    resets: int = 0  # SSRC changes, big jumps, re-anchoring after the stream fell behind
    stretched: int = 0  # adaptive: frames of delay added after a late packet (also concealed)
    shrunk: int = 0  # adaptive: frames dropped because the added delay went unused


class PlayoutBuffer:
    """Fixed-delay (or, with max_delay, adaptive) playout buffer.

    target_delay: seconds a new stream is held before the first frame plays (default 60 ms;
        RtpLeg uses 40 ms, adaptive up to 100 ms).
    max_extra_frames: how far past the target depth the buffer may grow before the oldest
        frames are dropped (bounds latency when the sender's clock runs faster than ours or a
        burst arrives after a stall).
    max_jump: a sequence number this many frames away from the cursor is a new stream.
    idle_after: after this many consecutive ticks with nothing buffered the stream is taken
        as paused (hold, silence suppression): get() returns None instead of concealment
        frames and the next packet starts a fresh fill to the target delay.
    max_delay: adaptive (module doc): the delay may grow up to this after late packets;
        None keeps it fixed at target_delay.
    shrink_after: adaptive: frames of unused extra delay before one frame of it is dropped.
    """

    def __init__(
        self,
        target_delay: float = 0.060,
        frame_duration: float = FRAME_MS / 1000,
        max_extra_frames: int = 4,
        max_jump: int = 100,
        idle_after: int = 10,
        max_delay: float | None = None,
        shrink_after: int = 250,
    ) -> None:
        if target_delay < 0:
            raise ValueError("target_delay must be >= 0")
        self.target_delay = target_delay
        self.frame_duration = frame_duration
        self.target_frames = max(1, round(target_delay / frame_duration))
        self.max_extra_frames = max_extra_frames
        self.max_jump = max_jump
        self.idle_after = idle_after
        self.max_frames = self.target_frames
        if max_delay is not None:
            self.max_frames = max(self.target_frames, round(max_delay / frame_duration))
        self.shrink_after = shrink_after
        self.extra = 0  # frames of delay added to target_frames (adaptive)
        self._stretch = 0  # of which not yet inserted by get()
        self._calm = 0  # frames played since the delay last changed ...
        self._min_ahead = 1 << 30  # ... and the fewest frames buffered ahead over them
        self.stats = PlayoutStats()
        self.ssrc: int | None = None
        self._packets: dict[int, RtpPacket] = {}
        self._next_seq: int | None = None  # cursor: sequence number of the next slot to play
        self._buffering_since: float | None = None  # set while (re)filling to the target delay
        self._empty_run = 0  # consecutive gets that found nothing buffered at all
        self._last_ts: int | None = None
        self._last_pt: int | None = None
        self._last_played: int | None = None  # sequence number of the last frame played

    # -- input ------------------------------------------------------------------------------

    def put(self, packet: RtpPacket, now: float) -> bool:
        """Offer a received packet; returns False if it was dropped (late, duplicate...)."""
        if packet.ssrc != self.ssrc:
            # RFC 3550 §8.2: a new SSRC is a new source (re-INVITE to another media server,
            # far end restarted); its numbering has nothing to do with the old one.
            if self.ssrc is not None:
                self.stats.resets += 1
            self._restart(packet.ssrc, now)
        seq = packet.sequence_number
        if self._next_seq is not None:
            d = seq_diff(seq, self._next_seq)
            if d >= self.max_jump or d <= -self.max_jump:
                # Sender restarted its numbering without changing SSRC.
                self.stats.resets += 1
                self._restart(packet.ssrc, now)
            elif d < 0:
                if self._packets or self._empty_run == 0:
                    self.stats.late += 1
                    if d >= -self.max_frames and self.target_frames + self.extra < self.max_frames:
                        # Its slot passed a moment ago: the jitter exceeds the delay; hold
                        # the cursor one slot at the next get() (adaptive, module doc).
                        self.extra += 1
                        self._stretch += 1
                        self._calm = 0
                        self._min_ahead = 1 << 30
                    return False
                if self._played_already(seq):
                    self.stats.late += 1
                    return False
                # Nothing buffered and we have been playing air: the stream is behind the
                # cursor (sender paused with contiguous sequence numbers, or our clock runs
                # fast). Dropping it as late would drop every following packet too, so
                # re-anchor on it and rebuild the target delay.
                self.stats.resets += 1
                self._restart(packet.ssrc, now)
        elif self._played_already(seq):
            # Stopped after a silence: a straggler from before it must not become the new
            # start, or it would play after frames that followed it.
            self.stats.late += 1
            return False
        if seq in self._packets:
            self.stats.duplicates += 1
            return False
        self._packets[seq] = packet
        self.stats.received += 1
        if self._next_seq is None:
            if self._buffering_since is None:
                self._buffering_since = now
            self._empty_run = 0
        self._trim()
        return True

    def _played_already(self, seq: int) -> bool:
        """Whether `seq` is at or before the last frame played (a re-anchor on it would play
        the stream out of order); a jump of max_jump or more is a restart, not this."""
        if self._last_played is None:
            return False
        return -self.max_jump < seq_diff(seq, self._last_played) <= 0

    def _restart(self, ssrc: int, now: float) -> None:
        if ssrc != self.ssrc:
            self._last_played = None  # another source: its numbers are its own
        self.ssrc = ssrc
        self._packets.clear()
        self._next_seq = None
        self._buffering_since = now
        self._empty_run = 0

    def _trim(self) -> None:
        """Drop the oldest frames if the buffer is deeper than target + slack."""
        target = self.target_frames + self.extra
        if self._next_seq is None:
            # Not playing yet (or nobody pulls): keep only the newest frames.
            while len(self._packets) > target + self.max_extra_frames:
                ref = next(iter(self._packets))
                del self._packets[min(self._packets, key=lambda s: seq_diff(s, ref))]
                self.stats.overflow += 1
            return
        newest = max(seq_diff(s, self._next_seq) for s in self._packets)
        excess = newest + 1 - (target + self.max_extra_frames)
        if excess <= 0:
            return
        # Skip the cursor forward so that the buffer holds the target depth again.
        skip = newest + 1 - target
        for _ in range(skip):
            if self._packets.pop(self._next_seq, None) is not None:
                self.stats.overflow += 1
            self._next_seq = (self._next_seq + 1) & 0xFFFF

    # -- output -----------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Frames buffered ahead of (and including) the cursor."""
        return len(self._packets)

    @property
    def playing(self) -> bool:
        return self._next_seq is not None

    def get(self, now: float) -> PlayoutFrame | None:
        """Pull the frame for this 20 ms tick.

        Returns None while there is nothing to play (no stream yet, or refilling to the target
        delay), a PlayoutFrame with a payload normally, and one with payload None for a loss.
        """
        if self._next_seq is None:
            if self._buffering_since is None or not self._packets:
                return None
            delay = self.target_delay + self.extra * self.frame_duration
            if now - self._buffering_since < delay - 1e-9:
                return None
            # Start at the oldest buffered packet: relative to any member, the minimum
            # signed distance identifies it even across the 65535 -> 0 wrap.
            ref = next(iter(self._packets))
            self._next_seq = min(self._packets, key=lambda s: seq_diff(s, ref))
            self._buffering_since = None
            self._empty_run = 0
        seq = self._next_seq
        if self._stretch:
            # Adaptive: one slot of concealment without moving the cursor - 20 ms more delay.
            self._stretch -= 1
            self.stats.stretched += 1
            self.stats.concealed += 1
            return PlayoutFrame(seq, None, self._last_pt, None)
        self._next_seq = (seq + 1) & 0xFFFF
        packet = self._packets.pop(seq, None)
        if packet is not None:
            if self.extra:
                self._adapt_down()
            self._empty_run = 0
            self._last_ts = packet.timestamp
            self._last_pt = packet.payload_type
            self._last_played = seq
            self.stats.played += 1
            return PlayoutFrame(seq, packet.timestamp, packet.payload_type, packet.payload)
        if not self._packets:
            self._empty_run += 1
            if self._empty_run > self.idle_after:
                # Long silence: stop concealing and wait for the stream to come back.
                self._next_seq = None
                self._buffering_since = None
                return None
        else:
            self._empty_run = 0
        self.stats.concealed += 1
        ts = None
        if self._last_ts is not None:
            ts = (self._last_ts + FRAME_SAMPLES) & 0xFFFF_FFFF
            self._last_ts = ts
        return PlayoutFrame(seq, ts, self._last_pt, None)

    def _adapt_down(self) -> None:
        """Drop one frame of added delay after shrink_after frames that never needed it."""
        ahead = len(self._packets)
        if ahead < self._min_ahead:
            self._min_ahead = ahead
        self._calm += 1
        if self._calm < self.shrink_after:
            return
        if self._min_ahead >= 2 and self._next_seq is not None:
            # Two frames or more were always waiting: one fewer still leaves the margin seen.
            if self._packets.pop(self._next_seq, None) is not None:
                self.stats.shrunk += 1
            self._next_seq = (self._next_seq + 1) & 0xFFFF
            self.extra -= 1
        self._calm = 0
        self._min_ahead = 1 << 30

    def reset(self) -> None:
        """Forget everything (e.g. the remote address changed on re-INVITE)."""
        self.ssrc = None
        self._packets.clear()
        self._next_seq = None
        self._buffering_since = None
        self._empty_run = 0
        self._last_ts = None
        self._last_pt = None
        self._last_played = None
        self.extra = 0
        self._stretch = 0
        self._calm = 0
        self._min_ahead = 1 << 30
