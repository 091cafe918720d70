"""RtpLeg: the G.711 RTP/RTCP endpoint of one call towards the PBX — the thin asyncio part.

Everything protocol-shaped lives in the sans-I/O modules (rtp, playout, dtmf, g711); this
module only owns sockets and time:

- ports: an even RTP port from a configured range with RTCP on port + 1 (RFC 3550 §11: RTP on
  an even port, RTCP on the next odd one; no rtcp-mux so plain SIP far ends work);
- symmetric RTP (RFC 4961) / "comedia": once packets arrive we send to the address they came
  from, which gets media through NATs that rewrote the address in the SDP;
- pacing: one shared `MediaTicker` per event loop fires every 20 ms and drives every leg, so
  100+ calls cost one timer, not one task each;
- per tick a leg pulls one frame from its playout buffer (40 ms behind arrival, adaptive up
  to 100 ms: phone.media.playout) into a small receive queue - unless nobody has pulled
  from that queue for its length of ticks (a held call's leg): then the buffer rests and
  the queue keeps no stale backlog until the next pull - and sends one frame: a DTMF event
  packet if one is in progress (RFC 4733 §2.5.1: audio pauses), else a queued payload, else
  a frame from its tone source, else silence.

Two ways to use it — both available at once, choose per direction:

decoded:     leg.source = SineTone(1000)   or  leg.send_pcm(int16 array)
             pcm = await leg.recv_pcm()    or  leg.pull_pcm()
re-timed:    leg.send_payload(g711 bytes)  (already PCMU/PCMA, one 20 ms frame)
             frame = await leg.recv_frame() or leg.pull_frame()   (PlayoutFrame, no decode)

and a third, for a relay that adds nothing (MediaBridge in passthrough), which skips the
ticker, the playout buffer and the send queue, so a packet leaves the moment it arrives:

direct:      leg.listen(callback)      every received audio packet, as it arrives:
                                       callback(payload, pt, seq, ts, ssrc, marker, now)
             leg.relay_from(owner)     then leg.relay(payload, ssrc, seq, ts, marker, now)
                                       sends the owner's packets at once, renumbered into the
                                       leg's own stream (RtpForwarder)

Direct output is suspended whenever the leg has something of its own to send - a tone source
(music on hold), DTMF (RFC 4733 events are paced by the tick), or nothing relayed for
`RELAY_IDLE` (it sends silence, as before, so the far end keeps a stream) - and resumes with
the next relayed packet; `relay()` returns False meanwhile and the caller queues the payload
the re-timed way. The leg is on the shared ticker only while it needs it: when it sends frames
of its own or a consumer pulls from its playout buffer. Otherwise a slow timer does what the
tick did besides audio: RTCP reports and the idle check.

SRTP (RFC 3711, keys from SDES): `set_srtp(SrtpContext)`. Every way out (ticked frames,
relayed packets, RTCP) and in (RTP, RTCP) passes the one context at the socket boundary, so
all three modes above work encrypted unchanged; packets failing authentication are dropped
and counted (`stats.srtp_auth_failures`) before they can latch symmetric RTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import struct
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from phone.media import g711
from phone.media.dtmf import DtmfEvent, DtmfPacket, DtmfReceiver, dtmf_ticks
from phone.media.playout import PlayoutBuffer, PlayoutFrame
from phone.media.rtp import (
    FRAME_MS,
    FRAME_SAMPLES,
    ReceiverStats,
    ReportBlock,
    RtcpBye,
    RtcpParseError,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    RtpForwarder,
    RtpPacket,
    RtpParseError,
    RtpSender,
    build_compound,
    ntp_from_unix,
    parse_rtcp,
    payload_bounds,
    round_trip_time,
)
from phone.media.srtp import SrtpContext
from phone.media.tones import ToneSource

__all__ = [
    "RELAY_IDLE",
    "LegListener",
    "LegStats",
    "MediaTicker",
    "PortRange",
    "PortRangeExhausted",
    "RtpLeg",
    "socket_sendto",
]

log = logging.getLogger(__name__)

TICK = FRAME_MS / 1000
_DONE = object()
_RTP_HEADER = struct.Struct("!BBHII")
_pack_header = _RTP_HEADER.pack
_unpack_header = _RTP_HEADER.unpack_from
_monotonic = time.monotonic
# Direct output with nothing relayed for this long: the relay's source has paused (browser
# gone quiet, ICE not up yet); the leg falls back to sending silence so the far end keeps a
# stream (symmetric-RTP latching, RTP timeouts), until the next relayed packet.
RELAY_IDLE = 0.2
# How often the slow timer of a leg off the ticker looks at RTCP and the idle check.
_HOUSEKEEPING = RELAY_IDLE / 2
# The re-timed send queue: a standing backlog above this many frames, seen over
# _DRAIN_TICKS ticks, is dropped (a queue that never empties is only delay).
_TX_KEEP = 1
_DRAIN_TICKS = 50

# listen() callback: (payload, payload type, sequence, timestamp, ssrc, marker, monotonic now)
LegListener = Callable[[bytes, int, int, int, int, bool, float], None]


def socket_sendto(transport: Any) -> Callable[[bytes, Any], None]:
    """`transport.sendto`, minus asyncio's Python wrapper where it can be skipped.

    asyncio's selector datagram transport checks its state and buffer and then calls the
    socket's sendto; called for every packet, the wrapper is a tenth of the send. While its
    buffer is empty (always, unless the kernel's send buffer filled up) the socket is called
    directly; a full kernel buffer (BlockingIOError) hands the packet, and every one after it
    until the buffer drained, to the transport, which queues them in order. Any other loop
    (uvloop) or transport: its own sendto.
    """
    sock = getattr(transport, "_sock", None)
    buffer = getattr(transport, "_buffer", None)
    protocol = getattr(transport, "_protocol", None)
    usual = transport.sendto
    if sock is None or buffer is None or protocol is None:
        return usual  # type: ignore[no-any-return]
    raw = sock.sendto

    def sendto(data: bytes, addr: Any) -> None:
        if buffer or transport.is_closing():
            usual(data, addr)
            return
        try:
            raw(data, addr)
        except (BlockingIOError, InterruptedError):
            usual(data, addr)  # queued by the transport, sent when writable
        except OSError as exc:
            protocol.error_received(exc)  # what the transport does

    return sendto


class PortRangeExhausted(RuntimeError):
    """No even RTP port (with its odd RTCP neighbour) is free in the configured range."""


class PortRange:
    """Even/odd port pairs from [start, end]; remembers what this process holds.

    Allocation walks the range round-robin from where it last stopped, so a just-released port
    is reused last and stray packets of an old call are unlikely to hit a new one.
    """

    def __init__(self, start: int = 20000, end: int = 20999) -> None:
        first = start + (start % 2)  # RTP on even ports (RFC 3550 §11)
        if first + 1 > end:
            raise ValueError(f"port range {start}-{end} holds no even/odd pair")
        self.start = start
        self.end = end
        self._pairs = list(range(first, end, 2))  # even ports whose +1 is still in range
        self._cursor = random.randrange(len(self._pairs))
        self.in_use: set[int] = set()

    def candidates(self) -> Iterator[int]:
        n = len(self._pairs)
        for i in range(n):
            port = self._pairs[(self._cursor + i) % n]
            if port not in self.in_use:
                yield port

    def take(self, port: int) -> None:
        self.in_use.add(port)
        self._cursor = (self._pairs.index(port) + 1) % len(self._pairs)

    def release(self, port: int) -> None:
        self.in_use.discard(port)

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


_DEFAULT_RANGES: dict[tuple[int, int], PortRange] = {}


def _port_range(spec: PortRange | tuple[int, int]) -> PortRange:
    if isinstance(spec, PortRange):
        return spec
    # Legs configured with the same numbers share one allocator, so they don't race each other.
    if spec not in _DEFAULT_RANGES:
        _DEFAULT_RANGES[spec] = PortRange(*spec)
    return _DEFAULT_RANGES[spec]


class MediaTicker:
    """One 20 ms clock per event loop that drives many legs.

    Ticks are scheduled on an absolute grid (t0 + k * 20 ms) with `loop.call_at`, so timer
    error does not accumulate into drift. If the loop was blocked and slots were missed, the
    next tick reports how many slots elapsed and each leg advances its media clock by that
    much (the far end sees a loss, not a slowly drifting stream).
    """

    _per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaTicker] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, interval: float = TICK) -> None:
        self.interval = interval
        self._legs: dict[int, RtpLeg] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._k = 0
        self.ticks = 0
        self.missed_slots = 0

    @classmethod
    def shared(cls) -> MediaTicker:
        loop = asyncio.get_running_loop()
        ticker = cls._per_loop.get(loop)
        if ticker is None:
            ticker = cls._per_loop[loop] = cls()
        return ticker

    def add(self, leg: RtpLeg) -> None:
        self._legs[id(leg)] = leg
        if self._handle is None:
            self._loop = asyncio.get_running_loop()
            self._t0 = self._loop.time()
            self._k = 0
            self._schedule()

    def discard(self, leg: RtpLeg) -> None:
        self._legs.pop(id(leg), None)
        if not self._legs and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def __len__(self) -> int:
        return len(self._legs)

    def _schedule(self) -> None:
        assert self._loop is not None
        self._k += 1
        self._handle = self._loop.call_at(self._t0 + self._k * self.interval, self._fire)

    def _fire(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        late = now - (self._t0 + self._k * self.interval)
        slots = 1
        if late >= self.interval:
            slots += int(late / self.interval)
            self._k += slots - 1
            self.missed_slots += slots - 1
        self.ticks += 1
        self._schedule()
        for leg in list(self._legs.values()):
            try:
                leg._on_tick(now, slots)
            except Exception:  # one broken leg must not silence every other call
                log.exception("RTP leg tick failed; closing it")
                leg.close()


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(
        self,
        on_datagram: Callable[[bytes, tuple[str, int]], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.on_datagram = on_datagram
        self.on_lost = on_lost
        # asyncio looks the method up on the protocol per datagram: the leg's handler itself
        # answers, one Python call less per packet than the method below.
        self.datagram_received = on_datagram  # type: ignore[method-assign,assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a far end that is not listening (yet): not fatal for RTP.
        log.debug("RTP socket error: %s", exc)


@dataclass(slots=True, frozen=True)
class LegStats:
    packets_sent: int
    octets_sent: int
    packets_received: int
    octets_received: int
    cumulative_lost: int
    fraction_lost: float  # of the last RTCP interval, 0..1
    jitter_ms: float
    rtt_ms: float | None
    remote_fraction_lost: float | None  # what the far end reported about our stream
    remote_jitter_ms: float | None
    played: int
    concealed: int
    late: int
    parse_errors: int
    foreign_packets: int  # from an address other than the latched far end
    dtmf_sent: int
    dtmf_received: int
    rtcp_sent: int
    rtcp_received: int
    srtp: bool = False  # SRTP/SRTCP on the wire (RFC 3711)
    srtp_auth_failures: int = 0  # received packets dropped: failed authentication or replay


def _addr_key(host: str, port: int) -> tuple[str, int]:
    return (host, port)


class RtpLeg:
    """A G.711 RTP leg on an even local port (RTCP on the next one).

    Create with `await RtpLeg.open(...)`, point at the far end with `set_remote()` (from the
    SDP; call again on re-INVITE), `close()` when the call ends.
    """

    def __init__(
        self,
        *,
        payload_type: int = g711.PAYLOAD_TYPE_PCMU,
        dtmf_payload_type: int = 101,
        target_delay: float = 0.040,
        max_delay: float | None = 0.100,
        rx_queue_frames: int = 10,
        tx_queue_frames: int = 5,
        rtcp_interval: float = 5.0,
        symmetric: bool = True,
        send_silence: bool = True,
        on_dtmf: Callable[[DtmfEvent], None] | None = None,
        cname: str | None = None,
        ticker: MediaTicker | None = None,
    ) -> None:
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self.symmetric = symmetric
        self.send_silence = send_silence
        self.on_dtmf = on_dtmf
        self.rtcp_interval = rtcp_interval
        self._source: ToneSource | None = None
        self.sender = RtpSender(payload_type)
        # Re-timed receive only (decoded, pull_frame, a transcoding bridge): 40 ms behind
        # arrival, growing towards max_delay if the far end's jitter needs it (playout doc).
        self.playout = PlayoutBuffer(target_delay=target_delay, max_delay=max_delay)
        self.dtmf_receiver = DtmfReceiver(dtmf_payload_type)
        self.cname = cname or f"leg-{self.sender.ssrc:08x}@{socket.gethostname()}"
        self._ticker = ticker
        self._rx: deque[PlayoutFrame] = deque(maxlen=rx_queue_frames)
        self._rx_waiter: asyncio.Future[None] | None = None
        self._unconsumed = False  # nobody pulls received frames: the playout buffer rests
        self._tx: deque[bytes] = deque(maxlen=tx_queue_frames)
        self._tx_floor = 1 << 30  # smallest send-queue depth seen in this drain window
        self._tx_ticks = 0
        self._silence = g711.silence_payload(payload_type)
        self._dtmf_jobs: deque[tuple[Iterator[DtmfPacket | None], asyncio.Future[None]]] = deque()
        self._dtmf_ts: int | None = None
        self._last_pcm: np.ndarray | None = None
        self._lost_run = 0
        self._remote_stats: ReceiverStats | None = None
        self._rtp_transport: asyncio.DatagramTransport | None = None
        self._rtp_sendto: Callable[[bytes, tuple[str, int]], None] | None = None
        self._rtcp_transport: asyncio.DatagramTransport | None = None
        self._ports: PortRange | None = None
        self.local_host = ""
        self.local_port = 0
        self.remote: tuple[str, int] | None = None
        self.remote_rtcp: tuple[str, int] | None = None
        self._latched = False
        self._rtcp_latched = False
        self._previous_remote: tuple[str, int] | None = None
        self._lost_endpoints = 0
        self._endpoints_closed: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_rtcp = 0.0
        self._sent_since_report = False
        self.rtt: float | None = None
        self.remote_report: ReportBlock | None = None
        self._parse_errors = 0
        self._foreign = 0
        self._dtmf_sent = 0
        self._rtcp_sent = 0
        self._rtcp_received = 0
        self.closed = False
        # Direct mode (module doc): who takes received packets as they arrive, whose packets
        # are sent as they arrive, and whether that is happening right now.
        self._listener: LegListener | None = None
        self.relay_owner: object | None = None  # who relays into this leg (relay_from)
        self._relay_idle = False
        self._last_relay = 0.0
        self._forwarder = RtpForwarder(self.sender)
        self.direct = False  # relayed packets leave at once (no tick, no queue)
        self._mark_next = False  # the next ticked audio packet carries the marker bit
        self._started = False
        self._ticking = False
        self._timer: asyncio.TimerHandle | None = None
        self.relayed = 0  # packets sent directly
        self.listened = 0  # packets handed to the listener
        # SRTP (RFC 3711, keyed by SDES): set_srtp(). While `srtp_required` and no keys are
        # known yet, nothing is sent and nothing received is played: never plain RTP on a
        # stream the offer/answer made secure.
        self.srtp: SrtpContext | None = None
        self.srtp_required = False

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str = "0.0.0.0",
        port_range: PortRange | tuple[int, int] = (20000, 20999),
        **kwargs: object,
    ) -> RtpLeg:
        """Bind an even RTP port and port + 1 for RTCP from `port_range` and start ticking."""
        leg = cls(**kwargs)  # type: ignore[arg-type]
        await leg._bind(host, _port_range(port_range))
        leg._start()
        return leg

    async def _bind(self, host: str, ports: PortRange) -> None:
        loop = self._loop = asyncio.get_running_loop()
        for port in ports.candidates():
            try:
                rtp_t, _ = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(self._on_rtp, self._on_endpoint_lost), local_addr=(host, port)
                )
            except OSError:
                continue
            try:
                rtcp_t, _ = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(self._on_rtcp, self._on_endpoint_lost),
                    local_addr=(host, port + 1),
                )
            except OSError:
                rtp_t.close()
                continue
            ports.take(port)
            self._ports = ports
            self._rtp_transport = rtp_t
            self._rtp_sendto = socket_sendto(rtp_t)
            self._rtcp_transport = rtcp_t
            self.local_host = host
            self.local_port = port
            return
        raise PortRangeExhausted(
            f"no free RTP/RTCP port pair in {ports} on {host} ({len(ports.in_use)} held by us)"
        )

    def _start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        # RFC 3550 §6.3.5: randomise report times (0.5..1.5 x interval) so legs don't sync up.
        self._next_rtcp = loop.time() + self.rtcp_interval * random.uniform(0.5, 1.5)
        if self._ticker is None:
            self._ticker = MediaTicker.shared()
        self._started = True
        self._update_mode()

    def close(self) -> None:
        """Stop sending, send RTCP BYE (RFC 3550 §6.6), release both ports. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._listener = None
        self.relay_owner = None
        self.direct = False
        if self._ticker is not None:
            self._ticker.discard(self)
        self._ticking = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(Exception):
            if self.remote_rtcp is not None and self._rtcp_transport is not None:
                report = self._build_report(time.monotonic())
                self._send_rtcp(build_compound(report, RtcpBye([self.sender.ssrc])))
        if self._rtp_transport is None or self._loop is None:
            return  # never bound
        self._endpoints_closed = self._loop.create_future()
        for t in (self._rtp_transport, self._rtcp_transport):
            if t is not None:
                t.close()
        for _, fut in self._dtmf_jobs:
            if not fut.done():
                fut.cancel()
        self._dtmf_jobs.clear()
        if self._rx_waiter is not None and not self._rx_waiter.done():
            self._rx_waiter.set_exception(ConnectionError("RTP leg closed"))

    def _on_endpoint_lost(self) -> None:
        # asyncio closes sockets on a later loop iteration; only then is the port really free,
        # so the allocator learns about it here rather than in close().
        if not self.closed:
            return
        self._lost_endpoints += 1
        if self._lost_endpoints >= 2:
            if self._ports is not None:
                self._ports.release(self.local_port)
                self._ports = None
            if self._endpoints_closed is not None and not self._endpoints_closed.done():
                self._endpoints_closed.set_result(None)

    async def aclose(self) -> None:
        """close() and wait until both sockets are released (the ports can be bound again)."""
        self.close()
        if self._endpoints_closed is not None:
            await self._endpoints_closed

    async def __aenter__(self) -> RtpLeg:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def local_rtcp_port(self) -> int:
        return self.local_port + 1

    def set_remote(self, host: str, port: int, rtcp_port: int | None = None) -> None:
        """Where to send (from the SDP c=/m= lines; RFC 3605 a=rtcp gives rtcp_port).

        `host` must be an IP literal (ValueError otherwise). Called again on re-INVITE: the
        new address wins and symmetric-RTP learning starts over,
        since the new far end may sit behind a different NAT.
        """
        # SDP c= lines carry addresses; a name here would mean a blocking DNS lookup in
        # sendto() on every packet, so insist on a literal.
        ipaddress.ip_address(host)
        new = _addr_key(host, port)
        if self.remote is not None and self.remote != new:
            # The old far end may keep sending for a moment after the re-INVITE; its packets
            # must not win the symmetric-RTP latch back.
            self._previous_remote = self.remote
        self.remote = new
        self.remote_rtcp = _addr_key(host, rtcp_port if rtcp_port is not None else port + 1)
        self._latched = False
        self._rtcp_latched = False

    def set_payload_type(self, payload_type: int) -> None:
        """Switch G.711 law after an offer/answer picked one (RFC 3264 §6.1); the sequence and
        timestamp run on (RFC 3550 §5.1: one clock for the stream, whatever the payload)."""
        if payload_type == self.payload_type:
            return
        g711.silence_payload(payload_type)  # raises for anything but PCMU/PCMA
        self.payload_type = payload_type
        self.sender.payload_type = payload_type
        self._silence = g711.silence_payload(payload_type)
        self._tx.clear()  # frames queued in the old law would play as noise

    def set_srtp(self, context: SrtpContext | None) -> None:
        """Protect and unprotect with `context` from now on (None: plain RTP again). Every
        path shares it - ticked frames (tones, DTMF, re-timed audio), relayed packets and
        RTCP - because they all leave through _sendto/relay/_send_rtcp and arrive through
        _on_rtp/_on_rtcp."""
        self.srtp = context
        if context is not None:
            self.srtp_required = True

    def set_dtmf_payload_type(self, payload_type: int) -> None:
        """RFC 4733 §7.1.1: the telephone-event payload type is the offerer's choice."""
        self.dtmf_payload_type = payload_type
        self.dtmf_receiver = DtmfReceiver(payload_type)

    # -- sending API ------------------------------------------------------------------------

    @property
    def source(self) -> ToneSource | None:
        """A tone the far end hears when nothing is queued or relayed (music on hold)."""
        return self._source

    @source.setter
    def source(self, source: ToneSource | None) -> None:
        self._source = source
        self._update_mode()

    def send_payload(self, payload: bytes) -> None:
        """Queue one already-encoded 20 ms G.711 frame (re-timed; no transcoding)."""
        self._tx.append(payload)

    def trim_queue(self, keep: int) -> None:
        """Drop the oldest queued frames beyond `keep` (a relay must not build up delay)."""
        while len(self._tx) > keep:
            self._tx.popleft()

    def send_pcm(self, pcm: np.ndarray) -> None:
        """Queue int16 8 kHz PCM, cut into 20 ms frames (a short tail is zero-padded)."""
        samples = np.asarray(pcm, dtype=np.int16)
        for i in range(0, len(samples), FRAME_SAMPLES):
            frame = samples[i : i + FRAME_SAMPLES]
            if len(frame) < FRAME_SAMPLES:
                frame = np.pad(frame, (0, FRAME_SAMPLES - len(frame)))
            self._tx.append(g711.encode(frame, self.payload_type))

    def send_dtmf(
        self, digits: str, duration_ms: int = 100, gap_ms: int = 60
    ) -> asyncio.Future[None]:
        """Send digits as RFC 4733 events; the future completes after the last end packet.

        Events are paced by the 20 ms tick, so a leg in direct mode hands its output back to
        the tick until the last digit is out (relayed audio is queued meanwhile, and dropped
        while an event is on the wire: RFC 4733 §2.5.1.2, audio pauses)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._dtmf_jobs.append((dtmf_ticks(digits, duration_ms, gap_ms), fut))
        self._update_mode()
        return fut

    # -- direct mode (see the module doc) ---------------------------------------------------

    def listen(self, listener: LegListener | None) -> None:
        """Hand every received audio packet to `listener` as it arrives (no playout buffer);
        None goes back to the playout buffer, which starts afresh."""
        if listener is self._listener:
            return
        self._listener = listener
        self.playout.reset()
        self._rx.clear()
        self._unconsumed = False
        self._update_mode()

    def unlisten(self, listener: LegListener) -> None:
        """listen(None), if `listener` is still the one listening."""
        if self._listener is listener:
            self.listen(None)

    def relay_from(self, owner: object | None) -> None:
        """`owner` will relay() a live packet stream into this leg (None: nobody does)."""
        if owner is self.relay_owner:
            return
        self.relay_owner = owner
        self._relay_idle = False
        self._update_mode()

    def release_relay(self, owner: object) -> None:
        """relay_from(None), if `owner` is still the one relaying."""
        if self.relay_owner is owner:
            self.relay_from(None)

    def relay_skip(self) -> None:
        """The relay's source had a packet that is not forwarded (an event, comfort noise):
        the next relayed packet is renumbered to follow on, so no loss shows downstream."""
        self._forwarder.skip()

    def relay(
        self, payload: bytes, ssrc: int, seq: int, timestamp: int, marker: bool, now: float
    ) -> bool:
        """Send a relayed packet (G.711 in the leg's law) now, renumbered into the leg's stream.

        False if the leg is not in direct mode (tone, DTMF, no relay_from): then the caller
        queues the audio with send_payload() instead. `now` is time.monotonic()."""
        if not self.direct:
            if self.closed:
                return True  # the call is over: nothing to queue either
            if not self._relay_idle or self.relay_owner is None:
                return False
            self._relay_idle = False  # the stream is back: forward again
            self._update_mode()
            if not self.direct:
                return False
        self._last_relay = now
        octets = len(payload)
        out = self._forwarder.forward(ssrc, seq, timestamp, marker, octets, now)
        sendto, remote = self._rtp_sendto, self.remote
        if out is None or sendto is None or remote is None:
            return True
        out_seq, out_ts, out_marker = out
        sender = self.sender
        pt = self.payload_type
        data = _pack_header(0x80, 0x80 | pt if out_marker else pt, out_seq, out_ts, sender.ssrc)
        data += payload
        if self.srtp_required:
            protected = self.srtp.protect(data) if self.srtp is not None else None
            if protected is None:
                return True
            data = protected
        sendto(data, remote)
        st = sender.stats  # SenderStats.count, inline: this runs for every relayed packet
        st.packets_sent += 1
        st.octets_sent += octets
        st.last_rtp_timestamp = out_ts
        self._sent_since_report = True
        self.relayed += 1
        return True

    def _update_mode(self) -> None:
        """Choose direct or ticked output, and whether the leg needs the ticker at all."""
        if self.closed or not self._started:
            return
        direct = (
            self.relay_owner is not None
            and self._source is None
            and not self._dtmf_jobs
            and not self._relay_idle
        )
        if direct != self.direct:
            self.direct = direct
            now = time.monotonic()
            # Whichever numbering ran so far, the other continues it (RtpForwarder): relayed
            # packets from the first one on (the clock counts the wait for it), the tick now.
            if direct:
                self._forwarder.pause(now)
                self._tx.clear()
                self._last_relay = now
            else:
                self._forwarder.interrupt(now)
                self._mark_next = True  # another source starts: RFC 3551 §4.1
        # The tick is needed to send frames of our own, or to feed the playout buffer's
        # consumers (pull_frame/recv_pcm/LegJoin/a re-timing bridge).
        ticking = not self.direct or self._listener is None
        if ticking != self._ticking:
            self._ticking = ticking
            assert self._ticker is not None
            if ticking:
                self._ticker.add(self)
            else:
                self._ticker.discard(self)
        if ticking:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        elif self._timer is None:
            assert self._loop is not None
            self._timer = self._loop.call_later(_HOUSEKEEPING, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed or self._ticking:
            return
        assert self._loop is not None
        self._timer = self._loop.call_later(_HOUSEKEEPING, self._on_timer)
        self._housekeeping(self._loop.time(), time.monotonic())

    def _housekeeping(self, now: float, mono: float) -> None:
        """What runs besides audio: the relay idle check and RTCP reports."""
        if self.direct and mono - self._last_relay > RELAY_IDLE:
            self._relay_idle = True
            self._update_mode()
        if now >= self._next_rtcp and self.remote is not None:
            self._next_rtcp = now + self.rtcp_interval * random.uniform(0.5, 1.5)
            self._send_rtcp(
                build_compound(self._build_report(mono), RtcpSdes(self.sender.ssrc, self.cname))
            )

    # -- receiving API ----------------------------------------------------------------------

    def pull_frame(self) -> PlayoutFrame | None:
        """Oldest received frame (raw payload, None payload = lost), or None if none waits."""
        self._unconsumed = False
        return self._rx.popleft() if self._rx else None

    async def recv_frame(self) -> PlayoutFrame:
        self._unconsumed = False
        while not self._rx:
            if self.closed:
                raise ConnectionError("RTP leg closed")
            self._rx_waiter = asyncio.get_running_loop().create_future()
            await self._rx_waiter
        return self._rx.popleft()

    def pull_pcm(self) -> np.ndarray | None:
        frame = self.pull_frame()
        return None if frame is None else self._decode(frame)

    async def recv_pcm(self) -> np.ndarray:
        return self._decode(await self.recv_frame())

    def _decode(self, frame: PlayoutFrame) -> np.ndarray:
        if frame.payload is not None and frame.payload_type in (
            g711.PAYLOAD_TYPE_PCMU,
            g711.PAYLOAD_TYPE_PCMA,
        ):
            pcm = g711.decode(frame.payload, frame.payload_type)
            self._last_pcm = pcm
            self._lost_run = 0
            return pcm
        # Minimal concealment: replay the last good frame at half level once, then silence.
        # (G.711 Appendix I pitch-repetition PLC would sound better; not needed for speech
        # intelligibility at the loss rates a LAN PBX sees.)
        self._lost_run += 1
        if self._last_pcm is not None and self._lost_run == 1:
            return (self._last_pcm // 2).astype(np.int16)
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)

    # -- datagrams --------------------------------------------------------------------------

    def _on_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.closed:
            return
        if self.srtp_required:
            # RFC 3711 §3.3: authenticate (and replay-check) before anything else, so that
            # a forged packet can neither play nor win the symmetric-RTP latch below.
            plain = self.srtp.unprotect(data) if self.srtp is not None else None
            if plain is None:
                return
            data = plain
        # Only the fixed header is unpacked (no packet object): a listener gets the payload
        # bytes; the playout buffer and the DTMF receiver get an RtpPacket.
        end = len(data)
        if data[0] == 0x80 and end >= 12:  # V=2, no padding, extension or CSRC: the usual
            start = 12
        else:
            try:
                start, end = payload_bounds(data)
            except RtpParseError:
                self._parse_errors += 1
                return
        src = addr if len(addr) == 2 else (addr[0], addr[1])
        if src != self.remote:
            if self.symmetric and not self._latched and src != self._previous_remote:
                # RFC 4961 symmetric RTP: answer where the media really comes from.
                self.remote = src
                if not self._rtcp_latched:
                    self.remote_rtcp = _addr_key(addr[0], addr[1] + 1)
            else:
                self._foreign += 1
                return
        self._latched = True
        _, b1, seq, ts, ssrc = _unpack_header(data)
        pt = b1 & 0x7F
        now = _monotonic()
        stats = self._remote_stats
        if stats is None or stats.ssrc != ssrc:
            stats = self._remote_stats = ReceiverStats(ssrc)
        is_event = pt == self.dtmf_payload_type
        # Events share the sequence space (loss counts them) but not the media clock.
        stats.on_packet(seq, ts, now, end - start, timing=not is_event)
        if is_event:
            event = self.dtmf_receiver.on_packet(
                RtpPacket(pt, seq, ts, ssrc, bytes(data[start:end]), bool(b1 & 0x80))
            )
            if event is not None and self.on_dtmf is not None:
                self.on_dtmf(event)
            if self._listener is not None:
                self._listener(b"", pt, seq, ts, ssrc, False, now)  # not audio: a gap
            return
        listener = self._listener
        if listener is not None:
            self.listened += 1
            listener(data[start:end], pt, seq, ts, ssrc, b1 > 0x7F, now)
            return
        if not self._unconsumed:
            self.playout.put(RtpPacket(pt, seq, ts, ssrc, data[start:end], b1 > 0x7F), now)

    def _on_rtcp(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.closed:
            return
        if self.srtp_required:
            plain = self.srtp.unprotect_rtcp(data) if self.srtp is not None else None
            if plain is None:
                return
            data = plain
        try:
            packets = parse_rtcp(data)
        except RtcpParseError:
            self._parse_errors += 1
            return
        if self.symmetric and not self._rtcp_latched:
            self.remote_rtcp = _addr_key(addr[0], addr[1])
            self._rtcp_latched = True
        self._rtcp_received += 1
        now = time.monotonic()
        arrival_ntp = ntp_from_unix(time.time())
        for pkt in packets:
            rs = self._remote_stats
            if isinstance(pkt, RtcpSenderReport) and rs is not None and pkt.ssrc == rs.ssrc:
                rs.on_sender_report(pkt, now)
            if isinstance(pkt, (RtcpSenderReport, RtcpReceiverReport)):
                for block in pkt.reports:
                    if block.ssrc == self.sender.ssrc:
                        self.remote_report = block
                        rtt = round_trip_time(block, arrival_ntp)
                        if rtt is not None:
                            self.rtt = rtt

    # -- the tick ---------------------------------------------------------------------------

    def _on_tick(self, now: float, slots: int) -> None:
        # Receive side first: one frame per elapsed slot into the (bounded) receive queue.
        mono = time.monotonic()
        if self._listener is None and not self._unconsumed:
            rx = self._rx
            for _ in range(slots):
                frame = self.playout.get(mono)
                if frame is not None:
                    rx.append(frame)
            if rx:
                waiter = self._rx_waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
                elif len(rx) == rx.maxlen:
                    # Nobody pulled for rx_queue_frames ticks (a held call's leg, a leg no
                    # bridge carries): stop running the playout buffer for nobody, and keep
                    # no backlog - a consumer that starts later must get the newest audio,
                    # not the queue's 200 ms of delay for good. The next pull starts afresh.
                    rx.clear()
                    self.playout.reset()
                    self._unconsumed = True
        if self.remote is not None and not self.direct:
            # Slots the loop missed are lost media: advance the clock so timing stays true.
            if slots > 1:
                self.sender.skip(FRAME_SAMPLES * (slots - 1))
            self._send_frame()
        self._housekeeping(now, mono)

    def _send_frame(self) -> None:
        while self._dtmf_jobs:
            plan, fut = self._dtmf_jobs[0]
            step = next(plan, _DONE)
            if step is _DONE:
                self._dtmf_jobs.popleft()
                self._dtmf_ts = None
                if not fut.done():
                    fut.set_result(None)
                if not self._dtmf_jobs:
                    self._update_mode()  # back to direct output, if that is what we had
                    if self.direct:
                        return  # the relay sends this slot's audio
                continue
            if isinstance(step, DtmfPacket):
                if step.marker:
                    # RFC 4733 §2.3.1: every packet of the event carries its start timestamp.
                    self._dtmf_ts = self.sender.timestamp
                if self._tx:
                    self._tx.popleft()  # audio is paused, not delayed: drop this frame's audio
                if self._source is not None:
                    self._source.skip()
                packet = self.sender.next_packet(
                    step.payload,
                    marker=step.marker,
                    payload_type=self.dtmf_payload_type,
                    timestamp=self._dtmf_ts,
                )
                if step.marker:
                    self._dtmf_sent += 1
                self._sendto(packet)
                return
            break  # a gap between digits: an ordinary audio frame goes out
        tx = self._tx
        self._drain()
        if tx:
            payload = tx.popleft()
        elif self._source is not None:
            payload = self._source.next_payload(self.payload_type)
        elif self.send_silence:
            payload = self._silence
        else:
            self.sender.skip()
            return
        # What sender.next_packet(payload).serialize() gives, without a packet object.
        sender = self.sender
        seq, ts = sender.sequence, sender.timestamp
        sender.sequence = (seq + 1) & 0xFFFF
        sender.timestamp = (ts + FRAME_SAMPLES) & 0xFFFF_FFFF
        st = sender.stats
        st.packets_sent += 1
        st.octets_sent += len(payload)
        st.last_rtp_timestamp = ts
        pt = sender.payload_type
        marker = self._mark_next
        self._mark_next = False
        self._send_data(
            _pack_header(0x80, 0x80 | pt if marker else pt, seq, ts, sender.ssrc) + payload
        )

    def _drain(self) -> None:
        """Drop a standing backlog of the send queue: a queue that never held fewer than
        _TX_KEEP + n frames over a window of ticks delays every frame by n frames for good
        (the deque's bound alone would keep up to its length of delay forever)."""
        depth = len(self._tx)
        if depth < self._tx_floor:
            self._tx_floor = depth
        self._tx_ticks += 1
        if self._tx_ticks < _DRAIN_TICKS:
            return
        for _ in range(self._tx_floor - _TX_KEEP):
            self._tx.popleft()
        self._tx_ticks = 0
        self._tx_floor = 1 << 30

    def _sendto(self, packet: RtpPacket) -> None:
        self._send_data(packet.serialize())

    def _send_data(self, data: bytes) -> None:
        sendto = self._rtp_sendto
        if sendto is None or self.remote is None:
            return
        if self.srtp_required:
            protected = self.srtp.protect(data) if self.srtp is not None else None
            if protected is None:
                return
            data = protected
        sendto(data, self.remote)
        self._sent_since_report = True

    # -- RTCP -------------------------------------------------------------------------------

    def _build_report(self, mono: float) -> RtcpSenderReport | RtcpReceiverReport:
        blocks = [self._remote_stats.report_block(mono)] if self._remote_stats else []
        if self._sent_since_report:
            # RFC 3550 §6.4: SR if we sent data since the last report, RR otherwise.
            self._sent_since_report = False
            st = self.sender.stats
            return RtcpSenderReport(
                ssrc=self.sender.ssrc,
                ntp_timestamp=ntp_from_unix(time.time()),
                rtp_timestamp=self.sender.timestamp,
                packet_count=st.packets_sent,
                octet_count=st.octets_sent,
                reports=blocks,
            )
        return RtcpReceiverReport(self.sender.ssrc, blocks)

    def _send_rtcp(self, data: bytes) -> None:
        if self._rtcp_transport is not None and self.remote_rtcp is not None:
            if self.srtp_required:
                # RFC 3711 §3.4: SRTCP is mandatory wherever SRTP is used.
                protected = self.srtp.protect_rtcp(data) if self.srtp is not None else None
                if protected is None:
                    return
                data = protected
            self._rtcp_transport.sendto(data, self.remote_rtcp)
            self._rtcp_sent += 1

    # -- stats ------------------------------------------------------------------------------

    @property
    def stats(self) -> LegStats:
        rs = self._remote_stats
        rr = self.remote_report
        ps = self.playout.stats
        return LegStats(
            packets_sent=self.sender.stats.packets_sent,
            octets_sent=self.sender.stats.octets_sent,
            packets_received=rs.received if rs else 0,
            octets_received=rs.octets_received if rs else 0,
            cumulative_lost=rs.cumulative_lost if rs else 0,
            fraction_lost=(rs.last_fraction_lost / 256) if rs else 0.0,
            jitter_ms=(rs.jitter / 8) if rs else 0.0,
            rtt_ms=None if self.rtt is None else self.rtt * 1000,
            remote_fraction_lost=None if rr is None else rr.fraction_lost / 256,
            remote_jitter_ms=None if rr is None else rr.jitter / 8,
            played=ps.played,
            concealed=ps.concealed,
            late=ps.late,
            parse_errors=self._parse_errors,
            foreign_packets=self._foreign,
            dtmf_sent=self._dtmf_sent,
            dtmf_received=len(self.dtmf_receiver.digits),
            rtcp_sent=self._rtcp_sent,
            rtcp_received=self._rtcp_received,
            srtp=self.srtp is not None,
            srtp_auth_failures=self.srtp.counters.auth_failures if self.srtp else 0,
        )
