"""DTMF as RTP telephone-events (RFC 4733 §2), sending and receiving. Sans-I/O.

Sending: `dtmf_ticks(digits)` yields one item per 20 ms packet interval: a `DtmfPacket` to send
in that interval, or None for the silent gap between digits (the caller sends audio then).
The caller stamps every packet of one event with the RTP timestamp at the event's start
(§2.3.1) and gives each packet the next sequence number.

Receiving: `DtmfReceiver.on_packet(packet)` returns a `DtmfEvent` the first time an event is
seen and None for its updates and its (retransmitted) end packets.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from phone.media.rtp import FRAME_SAMPLES, SAMPLE_RATE, RtpPacket

__all__ = [
    "DTMF_EVENTS",
    "DtmfEvent",
    "DtmfPacket",
    "DtmfReceiver",
    "TelephoneEvent",
    "TelephoneEventError",
    "dtmf_ticks",
    "event_code",
]

# RFC 4733 §3.2 table 3: DTMF named events.
DTMF_EVENTS = "0123456789*#ABCD"
_EVENT = struct.Struct("!BBH")

# RFC 4733 §2.5.1.4: the end packet is sent three times.
END_REPEATS = 3


class TelephoneEventError(ValueError):
    """A payload that is not a telephone-event (RFC 4733 §2.3)."""


def event_code(digit: str) -> int:
    code = DTMF_EVENTS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return code


@dataclass(slots=True, frozen=True)
class TelephoneEvent:
    """The 4-octet telephone-event payload (RFC 4733 §2.3)."""

    event: int
    end: bool
    volume: int  # power level in -dBm0, 0..63 (§2.3.4)
    duration: int  # in timestamp units since the event's timestamp (§2.3.5)

    def pack(self) -> bytes:
        return _EVENT.pack(
            self.event,
            (0x80 if self.end else 0) | (self.volume & 0x3F),
            min(self.duration, 0xFFFF),
        )

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        # §2.3: several events may be stacked (redundancy, RFC 2198); without it it's 4 octets.
        if len(payload) < 4:
            raise TelephoneEventError(f"telephone-event payload too short: {len(payload)}")
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    @property
    def digit(self) -> str | None:
        return DTMF_EVENTS[self.event] if self.event < len(DTMF_EVENTS) else None


@dataclass(slots=True, frozen=True)
class DtmfPacket:
    """One telephone-event packet to send in this interval."""

    payload: bytes
    marker: bool  # §2.5.1.1: set on the first packet of an event
    digit: str
    end: bool


def dtmf_ticks(
    digits: str,
    duration_ms: int = 100,
    gap_ms: int = 60,
    volume: int = 10,
    packet_samples: int = FRAME_SAMPLES,
) -> Iterator[DtmfPacket | None]:
    """Per-interval plan for sending `digits` as RFC 4733 events.

    Each event spans ceil(duration / interval) update packets whose duration field grows by
    one interval each (§2.5.1.2), then END_REPEATS end packets with the E bit and the final
    duration (§2.5.1.4), then `gap_ms` of None intervals before the next digit. ITU-T Q.24
    wants >= 40 ms of tone and >= 40 ms of pause; 100/60 ms is a safe default for PBX IVRs.
    """
    codes = [event_code(d) for d in digits]  # validate everything before the first packet
    if not 0 <= volume <= 63:
        raise ValueError("volume is 0..63 (-dBm0)")
    interval_ms = packet_samples * 1000 // SAMPLE_RATE
    updates = max(1, -(-duration_ms // interval_ms))
    gap_ticks = max(0, -(-gap_ms // interval_ms))
    for index, (digit, code) in enumerate(zip(digits, codes, strict=True)):
        for k in range(1, updates + 1):
            event = TelephoneEvent(code, False, volume, k * packet_samples)
            if k == updates:
                break
            yield DtmfPacket(event.pack(), k == 1, digit.upper(), False)
        final = TelephoneEvent(code, True, volume, updates * packet_samples).pack()
        for r in range(END_REPEATS):
            # A one-packet event still needs its marker on the first packet it sends.
            yield DtmfPacket(final, updates == 1 and r == 0, digit.upper(), True)
        if index < len(digits) - 1:
            for _ in range(gap_ticks):
                yield None


@dataclass(slots=True, frozen=True)
class DtmfEvent:
    digit: str
    timestamp: int  # RTP timestamp of the event start (its identity, §2.5.2.1)
    volume: int


class DtmfReceiver:
    """Turns incoming telephone-event packets into digits, once per event.

    An event is identified by its RTP timestamp (§2.5.2.1: all packets of an event share it);
    updates, end packets and their retransmissions carry the same timestamp and are ignored.
    A short history of recent timestamps survives reordering of a late update.
    """

    def __init__(self, payload_type: int = 101, history: int = 16) -> None:
        self.payload_type = payload_type
        self._seen: deque[tuple[int, int]] = deque(maxlen=history)
        self.digits = ""

    def on_packet(self, packet: RtpPacket) -> DtmfEvent | None:
        if packet.payload_type != self.payload_type:
            return None
        try:
            ev = TelephoneEvent.parse(packet.payload)
        except TelephoneEventError:
            return None
        key = (packet.ssrc, packet.timestamp)
        if key in self._seen:
            return None
        self._seen.append(key)
        digit = ev.digit
        if digit is None:
            return None  # a non-DTMF event (e.g. flash, §3.2 event 16): not a digit
        self.digits += digit
        return DtmfEvent(digit, packet.timestamp, ev.volume)
