"""RTP and RTCP wire formats (RFC 3550) and the per-stream bookkeeping around them.

Sans-I/O: everything here turns bytes into objects and back, or updates counters given the
time the caller says it is. Nothing reads a clock or a socket.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass, field

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "SAMPLE_RATE",
    "ReceiverStats",
    "ReportBlock",
    "ReportQuality",
    "RtcpBye",
    "RtcpPacket",
    "RtcpParseError",
    "RtcpReceiverReport",
    "RtcpSdes",
    "RtcpSenderReport",
    "RtpExtension",
    "RtpForwarder",
    "RtpPacket",
    "RtpParseError",
    "RtpSender",
    "SenderStats",
    "build_compound",
    "is_rtcp",
    "ntp_from_unix",
    "ntp_middle32",
    "parse_rtcp",
    "payload_bounds",
    "random_sequence",
    "random_ssrc",
    "random_timestamp",
    "report_quality",
    "round_trip_time",
    "seq_diff",
]

# G.711 narrowband timing (RFC 3551 §4.5.14): 8 kHz clock, 20 ms packets by default.
SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 160

RTP_VERSION = 2
_RTP_HEADER = struct.Struct("!BBHII")

# RFC 3550 §12.1 RTCP packet types.
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
_SDES_CNAME = 1

# Seconds between 1900-01-01 (NTP epoch) and 1970-01-01 (Unix epoch), RFC 3550 §4.
_NTP_UNIX_OFFSET = 2_208_988_800


class RtpParseError(ValueError):
    """Bytes that are not a well-formed RTP packet (RFC 3550 §5.1, validity checks of §A.1)."""


class RtcpParseError(ValueError):
    """Bytes that are not a well-formed RTCP compound packet (RFC 3550 §6.4, §A.2)."""


def random_ssrc() -> int:
    # RFC 3550 §8.1: the SSRC must be random so that independent sources rarely collide.
    return secrets.randbits(32)


def random_sequence() -> int:
    # RFC 3550 §5.1: the initial sequence number is random to hinder known-plaintext attacks.
    return secrets.randbits(16)


def random_timestamp() -> int:
    # RFC 3550 §5.1: the initial timestamp is random for the same reason.
    return secrets.randbits(32)


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b between two 16-bit sequence numbers, in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def ntp_from_unix(unix_time: float) -> int:
    """64-bit NTP timestamp (RFC 3550 §4) for a Unix time in seconds."""
    return round((unix_time + _NTP_UNIX_OFFSET) * (1 << 32)) & 0xFFFF_FFFF_FFFF_FFFF


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: the LSR field of a report block (§6.4.1)."""
    return (ntp >> 16) & 0xFFFF_FFFF


def is_rtcp(data: bytes) -> bool:
    """Tell RTCP from RTP on a shared port (RFC 5761 §4: second octet 192..223 is RTCP)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


@dataclass(slots=True, frozen=True)
class RtpExtension:
    """A header extension (RFC 3550 §5.3.1): 16-bit profile-defined id plus 32-bit-word data."""

    profile: int
    data: bytes = b""


@dataclass(slots=True)
class RtpPacket:
    """One RTP data packet (RFC 3550 §5.1)."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    # Number of padding octets (including the count octet) after the payload; 0 = no P bit.
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < _RTP_HEADER.size:
            raise RtpParseError(f"RTP packet too short: {len(data)} bytes")
        b0, b1, seq, ts, ssrc = _RTP_HEADER.unpack_from(data)
        version = b0 >> 6
        if version != RTP_VERSION:
            raise RtpParseError(f"RTP version {version}, expected 2")
        has_padding = bool(b0 & 0x20)
        has_extension = bool(b0 & 0x10)
        cc = b0 & 0x0F
        pos = _RTP_HEADER.size
        end = len(data)
        if end < pos + 4 * cc:
            raise RtpParseError(f"RTP CSRC list truncated (CC={cc})")
        csrc = struct.unpack_from(f"!{cc}I", data, pos) if cc else ()
        pos += 4 * cc
        extension = None
        if has_extension:
            if end < pos + 4:
                raise RtpParseError("RTP extension header truncated")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if end < pos + 4 * words:
                raise RtpParseError("RTP extension data truncated")
            extension = RtpExtension(profile, bytes(data[pos : pos + 4 * words]))
            pos += 4 * words
        padding = 0
        if has_padding:
            # §5.1: the last octet counts the padding octets, itself included.
            padding = data[-1] if end > pos else 0
            if padding == 0 or pos + padding > end:
                raise RtpParseError(f"RTP padding length {padding} invalid")
            end -= padding
        return cls(
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(b1 & 0x80),
            csrc=tuple(csrc),
            extension=extension,
            padding=padding,
        )

    def serialize(self) -> bytes:
        if len(self.csrc) > 15:
            raise ValueError("at most 15 CSRCs fit in an RTP header")
        if not 0 <= self.padding <= 255:
            raise ValueError("padding must be 0..255 octets")
        b0 = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        parts = [
            _RTP_HEADER.pack(
                b0, b1, self.sequence_number & 0xFFFF, self.timestamp & 0xFFFF_FFFF, self.ssrc
            )
        ]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            ext = self.extension.data
            if len(ext) % 4:
                raise ValueError("RTP extension data must be a multiple of 4 octets")
            parts.append(struct.pack("!HH", self.extension.profile, len(ext) // 4))
            parts.append(ext)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def payload_bounds(data: bytes) -> tuple[int, int]:
    """(start, end) of the payload of an RTP packet, checked as `RtpPacket.parse` checks it.

    For forwarding, which needs the header's fixed fields (`struct` unpacks those) and the
    payload bytes, but no object per packet. The common header (V=2, no padding, extension or
    CSRC: first octet 0x80) costs one comparison.
    """
    end = len(data)
    if end < _RTP_HEADER.size:
        raise RtpParseError(f"RTP packet too short: {end} bytes")
    b0 = data[0]
    if b0 == 0x80:
        return _RTP_HEADER.size, end
    if b0 >> 6 != RTP_VERSION:
        raise RtpParseError(f"RTP version {b0 >> 6}, expected 2")
    pos = _RTP_HEADER.size + 4 * (b0 & 0x0F)
    if end < pos:
        raise RtpParseError(f"RTP CSRC list truncated (CC={b0 & 0x0F})")
    if b0 & 0x10:
        if end < pos + 4:
            raise RtpParseError("RTP extension header truncated")
        pos += 4 + 4 * ((data[pos + 2] << 8) | data[pos + 3])
        if end < pos:
            raise RtpParseError("RTP extension data truncated")
    if b0 & 0x20:
        padding = data[-1] if end > pos else 0
        if padding == 0 or pos + padding > end:
            raise RtpParseError(f"RTP padding length {padding} invalid")
        end -= padding
    return pos, end


class RtpSender:
    """Numbers outgoing packets of one stream: SSRC, sequence and timestamp per RFC 3550 §5.1.

    The timestamp advances by the samples of each frame whether or not a packet is sent for it,
    so callers that skip a frame (e.g. while a DTMF event is on the wire) call `skip()`.
    """

    def __init__(
        self,
        payload_type: int,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        self.payload_type = payload_type
        self.ssrc = random_ssrc() if ssrc is None else ssrc
        self.sequence = random_sequence() if sequence is None else sequence & 0xFFFF
        self.timestamp = random_timestamp() if timestamp is None else timestamp & 0xFFFF_FFFF
        self.stats = SenderStats()

    def next_packet(
        self,
        payload: bytes,
        samples: int = FRAME_SAMPLES,
        marker: bool = False,
        payload_type: int | None = None,
        timestamp: int | None = None,
    ) -> RtpPacket:
        """Packet for the next frame; advances seq by 1 and the clock by `samples`.

        `timestamp` overrides the media timestamp for this packet only (RFC 4733 §2.3.1: all
        packets of a DTMF event carry the timestamp of its start); the clock still advances.
        """
        pkt = RtpPacket(
            payload_type=self.payload_type if payload_type is None else payload_type,
            sequence_number=self.sequence,
            timestamp=self.timestamp if timestamp is None else timestamp,
            ssrc=self.ssrc,
            payload=payload,
            marker=marker,
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFF_FFFF
        self.stats.on_sent(pkt)
        return pkt

    def skip(self, samples: int = FRAME_SAMPLES) -> None:
        """Advance the media clock without sending (silence suppression, paused audio)."""
        self.timestamp = (self.timestamp + samples) & 0xFFFF_FFFF


# A forwarded sequence number this far from the last one is a restarted source (RFC 3550
# §8.2 / §A.1 treat big jumps as a restart; the playout buffer uses the same bound).
_MAX_JUMP = 100


class RtpForwarder:
    """Forwarded packets as part of one outgoing stream numbered by an RtpSender.

    A back-to-back agent that forwards packets the moment they arrive must still present one
    stream per direction (RFC 3550 §5.1): its own SSRC, sequence numbers that run on, one media
    clock - also across switches between forwarding and sending frames of its own (music on
    hold, tones, DTMF, the re-timed path). So a forwarded packet keeps its distance to its
    neighbours - out = in + offset for sequence number and timestamp alike, which shows the
    receiver what really happened upstream (a loss as a gap, reordering as reordering, a pause
    as a timestamp jump) - and the offsets are chosen at a *splice* so that the packet
    continues exactly where the sender's numbering stands (sequence + 1, the timestamp the
    sender's clock has reached). A splice happens

    - at the first packet, and after `interrupt()` (the sender numbered packets of its own in
      between, or is about to: its clock is brought up to date first, see `_catch_up`);
    - when the incoming SSRC changes or its sequence jumps (RFC 3550 §8.2: a new source, its
      numbering has nothing to do with the old one);
    - for the sequence number only, after incoming packets that were not forwarded (`skip()`:
      comfort noise, events), so the receiver does not count them as lost; the timestamp
      keeps its offset, so the pause stays visible.

    The first packet after a splice carries the marker bit (RFC 3551 §4.1: the start of a
    talkspurt - the receiver may re-adjust its playout there), and so does a packet whose
    timestamp jumps past its predecessor's end (the source paused); otherwise the incoming
    marker is kept. Sans-I/O: `now` is passed in.
    """

    __slots__ = (
        "_base",
        "_high",
        "_high_ts",
        "_last_at",
        "_last_samples",
        "_resync",
        "_seq_off",
        "_splice",
        "_ssrc",
        "_ts_off",
        "frame_samples",
        "frame_seconds",
        "sender",
        "splices",
    )

    def __init__(
        self,
        sender: RtpSender,
        frame_samples: int = FRAME_SAMPLES,
        frame_seconds: float = FRAME_MS / 1000,
    ) -> None:
        self.sender = sender
        self.frame_samples = frame_samples
        self.frame_seconds = frame_seconds
        self.splices = 0
        self._ssrc: int | None = None
        self._seq_off = 0
        self._ts_off = 0
        self._high = 0  # highest incoming sequence number forwarded ...
        self._high_ts = 0  # ... and its timestamp
        self._base = 0  # incoming sequence number at the last splice: older ones are dropped
        self._splice = True
        self._resync = False
        self._last_at: float | None = None  # when a forwarded packet last set the clock
        self._last_samples = 0

    def forward(
        self, ssrc: int, seq: int, timestamp: int, marker: bool, samples: int, now: float
    ) -> tuple[int, int, bool] | None:
        """(sequence, timestamp, marker) for an incoming packet of `samples` samples, or None
        if it must not be sent (a duplicate, or older than the last splice)."""
        if self._splice or ssrc != self._ssrc:
            return self._start(ssrc, seq, timestamp, samples, now)
        d = ((seq - self._high + 0x8000) & 0xFFFF) - 0x8000
        if d > 0:
            if d > _MAX_JUMP:
                return self._start(ssrc, seq, timestamp, samples, now)
            sender = self.sender
            if self._resync:
                self._resync = False
                self._seq_off = (sender.sequence - seq) & 0xFFFF
                self._base = seq
                marker = True
            elif d == 1 and (timestamp - self._high_ts) & 0xFFFF_FFFF > self._last_samples:
                marker = True  # the source paused (silence suppression) and did not say so
            self._high = seq
            self._high_ts = timestamp
            out_seq = (seq + self._seq_off) & 0xFFFF
            out_ts = (timestamp + self._ts_off) & 0xFFFF_FFFF
            sender.sequence = (out_seq + 1) & 0xFFFF
            sender.timestamp = (out_ts + samples) & 0xFFFF_FFFF
            self._last_at = now
            self._last_samples = samples
            return out_seq, out_ts, marker
        if d < -_MAX_JUMP:
            return self._start(ssrc, seq, timestamp, samples, now)
        if d == 0 or ((seq - self._base + 0x8000) & 0xFFFF) - 0x8000 < 0:
            return None  # duplicate, or from before the splice (its number may be taken)
        # Reordered: same mapping, so it lands between its neighbours; the clock stays.
        return (seq + self._seq_off) & 0xFFFF, (timestamp + self._ts_off) & 0xFFFF_FFFF, marker

    def skip(self) -> None:
        """An incoming packet was not forwarded: renumber from the next one (no false loss)."""
        self._resync = True

    def interrupt(self, now: float) -> None:
        """The sender's own numbering takes over (or has just run): splice at the next packet.

        Brings the sender's clock up to the time elapsed since the last forwarded packet, so
        frames the sender numbers next carry timestamps that match the pause.
        """
        self._catch_up(now)
        self._splice = True

    def pause(self, now: float) -> None:
        """Nobody numbers packets from `now` on (the stream goes quiet): the next splice, or
        `interrupt()`, advances the sender's clock over the pause."""
        self._catch_up(now)
        self._last_at = now
        self._last_samples = 0
        self._splice = True

    def _catch_up(self, now: float) -> None:
        if self._last_at is None:
            return  # the sender's own clock ran since: it is current
        # Whole frames only (a receiver's playout runs on the frame grid); the epsilon keeps
        # float noise from losing one (2.0 s / 0.02 s = 99.9999...).
        frames = int((now - self._last_at) / self.frame_seconds + 1e-6)
        behind = frames * self.frame_samples - self._last_samples
        if behind > 0:
            self.sender.skip(behind)
        self._last_at = None

    def _start(
        self, ssrc: int, seq: int, timestamp: int, samples: int, now: float
    ) -> tuple[int, int, bool]:
        self._catch_up(now)
        sender = self.sender
        out_seq, out_ts = sender.sequence, sender.timestamp
        self._ssrc = ssrc
        self._seq_off = (out_seq - seq) & 0xFFFF
        self._ts_off = (out_ts - timestamp) & 0xFFFF_FFFF
        self._high = self._base = seq
        self._high_ts = timestamp
        self._splice = self._resync = False
        self.splices += 1
        sender.sequence = (out_seq + 1) & 0xFFFF
        sender.timestamp = (out_ts + samples) & 0xFFFF_FFFF
        self._last_at = now
        self._last_samples = samples
        return out_seq, out_ts, True


# --- RTCP -----------------------------------------------------------------------------------

_REPORT_BLOCK = struct.Struct("!IBBHIIII")  # ssrc, fraction, lost(24 bits split), ...


@dataclass(slots=True, frozen=True)
class ReportBlock:
    """A reception report block (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int  # 8-bit fixed point: lost/expected * 256 since the last report
    cumulative_lost: int  # signed 24-bit: may go negative with duplicates
    highest_sequence: int  # extended highest sequence number received (cycles << 16 | seq)
    jitter: int  # interarrival jitter in timestamp units
    lsr: int = 0  # middle 32 bits of the NTP time of the last SR received from ssrc
    dlsr: int = 0  # delay since that SR, in 1/65536 s

    def pack(self) -> bytes:
        lost = max(-0x800000, min(0x7FFFFF, self.cumulative_lost)) & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc,
            self.fraction_lost & 0xFF,
            lost >> 16,
            lost & 0xFFFF,
            self.highest_sequence & 0xFFFF_FFFF,
            self.jitter & 0xFFFF_FFFF,
            self.lsr & 0xFFFF_FFFF,
            self.dlsr & 0xFFFF_FFFF,
        )

    @classmethod
    def unpack(cls, data: bytes, pos: int) -> ReportBlock:
        ssrc, fraction, lost_hi, lost_lo, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(
            data, pos
        )
        lost = (lost_hi << 16) | lost_lo
        if lost & 0x800000:  # sign-extend the 24-bit two's complement value
            lost -= 0x1000000
        return cls(ssrc, fraction, lost, highest, jitter, lsr, dlsr)


@dataclass(slots=True)
class RtcpSenderReport:
    """SR (RFC 3550 §6.4.1): sender info plus reception reports about other sources."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)

    def serialize(self) -> bytes:
        body = struct.pack(
            "!IIIIII",
            self.ssrc,
            (self.ntp_timestamp >> 32) & 0xFFFF_FFFF,
            self.ntp_timestamp & 0xFFFF_FFFF,
            self.rtp_timestamp & 0xFFFF_FFFF,
            self.packet_count & 0xFFFF_FFFF,
            self.octet_count & 0xFFFF_FFFF,
        ) + b"".join(r.pack() for r in self.reports)
        return _rtcp_header(RTCP_SR, len(self.reports), body) + body


@dataclass(slots=True)
class RtcpReceiverReport:
    """RR (RFC 3550 §6.4.2): reception reports from a participant that is not sending."""

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)

    def serialize(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(r.pack() for r in self.reports)
        return _rtcp_header(RTCP_RR, len(self.reports), body) + body


@dataclass(slots=True)
class RtcpSdes:
    """SDES with a single CNAME chunk (RFC 3550 §6.5): required in every compound packet."""

    ssrc: int
    cname: str

    def serialize(self) -> bytes:
        cname = self.cname.encode()[:255]
        chunk = struct.pack("!IBB", self.ssrc, _SDES_CNAME, len(cname)) + cname
        # §6.5: the item list ends with at least one null octet, padded to a 32-bit boundary.
        chunk += bytes(4 - len(chunk) % 4)
        return _rtcp_header(RTCP_SDES, 1, chunk) + chunk


@dataclass(slots=True)
class RtcpBye:
    """BYE (RFC 3550 §6.6): the listed sources are leaving the session."""

    ssrcs: list[int]

    def serialize(self) -> bytes:
        body = b"".join(struct.pack("!I", s) for s in self.ssrcs)
        return _rtcp_header(RTCP_BYE, len(self.ssrcs), body) + body


@dataclass(slots=True)
class RtcpPacket:
    """Any other RTCP packet, kept opaque (APP, XR, feedback...)."""

    packet_type: int
    count: int
    body: bytes


RtcpAny = RtcpSenderReport | RtcpReceiverReport | RtcpSdes | RtcpBye | RtcpPacket


def _rtcp_header(packet_type: int, count: int, body: bytes) -> bytes:
    # §6.4.1: length is in 32-bit words minus one, header included.
    if len(body) % 4:
        raise ValueError("RTCP body must be a multiple of 4 octets")
    return struct.pack("!BBH", (RTP_VERSION << 6) | count, packet_type, len(body) // 4)


def build_compound(*packets: RtcpAny) -> bytes:
    """Concatenate RTCP packets into one compound datagram (§6.1: report first, then SDES)."""
    out = []
    for pkt in packets:
        if isinstance(pkt, RtcpPacket):
            out.append(_rtcp_header(pkt.packet_type, pkt.count, pkt.body) + pkt.body)
        else:
            out.append(pkt.serialize())
    return b"".join(out)


def parse_rtcp(data: bytes) -> list[RtcpAny]:
    """Parse a compound RTCP datagram; raises RtcpParseError on any structural problem (§A.2)."""
    packets: list[RtcpAny] = []
    pos = 0
    if len(data) < 4:
        raise RtcpParseError("RTCP packet too short")
    while pos < len(data):
        if len(data) - pos < 4:
            raise RtcpParseError("trailing bytes after RTCP packet")
        b0, pt, length = struct.unpack_from("!BBH", data, pos)
        if b0 >> 6 != RTP_VERSION:
            raise RtcpParseError(f"RTCP version {b0 >> 6}, expected 2")
        count = b0 & 0x1F
        end = pos + 4 * (length + 1)
        if end > len(data):
            raise RtcpParseError("RTCP length field exceeds the datagram")
        body_end = end
        if b0 & 0x20:
            # §6.4.1: padding only allowed on the last packet of a compound.
            pad = data[end - 1]
            if end != len(data) or pad == 0 or pad > 4 * length:
                raise RtcpParseError("bad RTCP padding")
            body_end -= pad
        body = bytes(data[pos + 4 : body_end])
        packets.append(_parse_one(pt, count, body))
        pos = end
    return packets


def _parse_one(pt: int, count: int, body: bytes) -> RtcpAny:
    if pt == RTCP_SR:
        need = 24 + 24 * count
        if len(body) < need:
            raise RtcpParseError(f"SR too short for {count} report blocks")
        ssrc, ntp_hi, ntp_lo, rtp_ts, pkts, octets = struct.unpack_from("!IIIIII", body)
        reports = [ReportBlock.unpack(body, 24 + 24 * i) for i in range(count)]
        return RtcpSenderReport(ssrc, (ntp_hi << 32) | ntp_lo, rtp_ts, pkts, octets, reports)
    if pt == RTCP_RR:
        if len(body) < 4 + 24 * count:
            raise RtcpParseError(f"RR too short for {count} report blocks")
        (ssrc,) = struct.unpack_from("!I", body)
        return RtcpReceiverReport(
            ssrc, [ReportBlock.unpack(body, 4 + 24 * i) for i in range(count)]
        )
    if pt == RTCP_SDES and count >= 1 and len(body) >= 6:
        ssrc, item, length = struct.unpack_from("!IBB", body)
        if item == _SDES_CNAME and 6 + length <= len(body):
            return RtcpSdes(ssrc, body[6 : 6 + length].decode(errors="replace"))
    if pt == RTCP_BYE:
        if len(body) < 4 * count:
            raise RtcpParseError("BYE too short")
        return RtcpBye(list(struct.unpack_from(f"!{count}I", body)))
    return RtcpPacket(pt, count, body)


# --- Statistics -----------------------------------------------------------------------------


@dataclass(slots=True)
class SenderStats:
    """What an SR's sender info reports (RFC 3550 §6.4.1)."""

    packets_sent: int = 0
    octets_sent: int = 0  # payload octets only, as §6.4.1 specifies
    last_rtp_timestamp: int = 0

    def on_sent(self, packet: RtpPacket) -> None:
        self.packets_sent += 1
        self.octets_sent += len(packet.payload)
        self.last_rtp_timestamp = packet.timestamp

    def count(self, octets: int, timestamp: int) -> None:
        """A packet sent without an RtpPacket object (forwarded): `octets` of payload."""
        self.packets_sent += 1
        self.octets_sent += octets
        self.last_rtp_timestamp = timestamp


# RFC 3550 §A.1 constants for source validation.
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100
_MIN_SEQUENTIAL = 2
_SEQ_MOD = 1 << 16


class ReceiverStats:
    """Reception statistics of one remote source (RFC 3550 §6.4.1, algorithms of §A.1, §A.3, §A.8).

    `on_packet(seq, timestamp, arrival)` with `arrival` in seconds of any monotonic clock;
    `report_block()` yields the numbers for the next SR/RR and starts a new interval.
    """

    def __init__(self, ssrc: int, clock_rate: int = SAMPLE_RATE) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.max_seq = 0
        self.cycles = 0  # count of sequence number wraps, shifted left by 16
        self.base_seq = 0
        self.bad_seq = _SEQ_MOD + 1  # "impossible" value so the first jump is not taken as a resync
        self.probation = _MIN_SEQUENTIAL
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.octets_received = 0
        self.transit: float | None = None
        self.jitter = 0.0  # in timestamp units, floating to avoid the §A.8 fixed-point tricks
        self.initialised = False
        # For LSR/DLSR (§6.4.1): when we last heard an SR from this source and its NTP time.
        self.last_sr_ntp_middle = 0
        self.last_sr_arrival: float | None = None
        self.last_fraction_lost = 0

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def _update_seq(self, seq: int) -> bool:
        """§A.1: returns False for a packet that must not count (probation, wild jump)."""
        udelta = (seq - self.max_seq) & 0xFFFF
        if not self.initialised:
            self._init_seq(seq)
            self.max_seq = (seq - 1) & 0xFFFF
            self.initialised = True
            self.probation = _MIN_SEQUENTIAL
            udelta = 1
        if self.probation:
            # A new source is valid only after MIN_SEQUENTIAL packets in sequence.
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = _MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < _MAX_DROPOUT:
            # In order, with a permissible gap.
            if seq < self.max_seq:
                self.cycles += _SEQ_MOD
            self.max_seq = seq
        elif udelta <= _SEQ_MOD - _MAX_MISORDER:
            # A very large jump: accept it only if the next packet follows it (source restart).
            if seq == self.bad_seq:
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet; counted, max_seq unchanged.
        self.received += 1
        return True

    def on_packet(
        self, seq: int, timestamp: int, arrival: float, octets: int = 0, timing: bool = True
    ) -> bool:
        """Account for one received packet; returns whether it passed §A.1 validation.

        timing=False counts the packet without feeding the jitter estimate: RFC 4733 event
        packets repeat their start timestamp (§2.3.1) and would read as huge jitter.
        """
        udelta = (seq - self.max_seq) & 0xFFFF
        if 0 < udelta < _MAX_DROPOUT and self.initialised and not self.probation:
            # §A.1's common case (the next packet, or a permissible gap), inline: it runs for
            # every packet of every call.
            if seq < self.max_seq:
                self.cycles += _SEQ_MOD
            self.max_seq = seq
            self.received += 1
        elif not self._update_seq(seq):
            return False
        self.octets_received += octets
        if not timing:
            return True
        # §A.8: transit time in timestamp units; jitter is the smoothed |D(i-1, i)|.
        arrival_ts = arrival * self.clock_rate
        transit = arrival_ts - timestamp
        if self.transit is not None:
            d = transit - self.transit
            # A 32-bit timestamp wrap shows up as a ±2^32 jump in transit; fold it back.
            if d > 1 << 31:
                d -= 1 << 32
            elif d < -(1 << 31):
                d += 1 << 32
            self.jitter += (abs(d) - self.jitter) / 16
        self.transit = transit
        return True

    def on_sender_report(self, sr: RtcpSenderReport, arrival: float) -> None:
        self.last_sr_ntp_middle = ntp_middle32(sr.ntp_timestamp)
        self.last_sr_arrival = arrival

    @property
    def extended_max_seq(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max_seq - self.base_seq + 1 if self.received else 0

    @property
    def cumulative_lost(self) -> int:
        # §A.3: may be negative when duplicates arrive; clamp to the 24-bit field.
        return max(-0x800000, min(0x7FFFFF, self.expected - self.received))

    def report_block(self, now: float) -> ReportBlock:
        """Report block for this source; closes the current loss-fraction interval (§A.3)."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior = expected
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = (lost_interval << 8) // expected_interval
        self.last_fraction_lost = fraction
        dlsr = 0
        if self.last_sr_arrival is not None:
            dlsr = int((now - self.last_sr_arrival) * 65536)
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            cumulative_lost=self.cumulative_lost,
            highest_sequence=self.extended_max_seq & 0xFFFF_FFFF,
            jitter=int(self.jitter),
            lsr=self.last_sr_ntp_middle,
            dlsr=dlsr,
        )


def round_trip_time(block: ReportBlock, arrival_ntp: int) -> float | None:
    """RTT in seconds from a report block about us (§6.4.1: A - LSR - DLSR), or None."""
    if block.lsr == 0:
        return None
    rtt = (ntp_middle32(arrival_ntp) - block.lsr - block.dlsr) & 0xFFFF_FFFF
    if rtt & 0x8000_0000:  # negative: clocks or a stale report disagree
        return None
    return rtt / 65536


# -- what a report block says about our stream (phone.quality scores it) --------------------


@dataclass(frozen=True, slots=True)
class ReportQuality:
    """What one reception report block says about the stream we send (RFC 3550 §6.4.1)."""

    loss: float  # fraction lost since the previous report, 0..1
    jitter_ms: float  # interarrival jitter, converted from timestamp units
    rtt_ms: float | None  # A - LSR - DLSR; None without an SR to refer to (LSR = 0)
    cumulative_lost: int


def report_quality(
    data: bytes, ssrc: int, arrival_ntp: int, clock_rate: int = 8000
) -> ReportQuality | None:
    """The report block about `ssrc` (ours) in an RTCP compound packet, or None."""
    try:
        packets = parse_rtcp(data)
    except RtcpParseError:
        return None
    for packet in packets:
        if not isinstance(packet, (RtcpSenderReport, RtcpReceiverReport)):
            continue
        for block in packet.reports:
            if block.ssrc != ssrc:
                continue
            rtt = round_trip_time(block, arrival_ntp)
            return ReportQuality(
                loss=block.fraction_lost / 256,
                jitter_ms=block.jitter * 1000 / clock_rate,
                rtt_ms=None if rtt is None else rtt * 1000,
                cumulative_lost=block.cumulative_lost,
            )
    return None
