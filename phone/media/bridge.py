"""MediaBridge: audio between one browser's WebRTC peer and one call's RtpLeg.

The sipworker is a back-to-back user agent. Per call there is an RtpLeg towards the PBX
(G.711); per browser session there is a MediaBridge holding an aiortc RTCPeerConnection. The
bridge moves audio between the two, both ways - each packet the moment it arrives, or re-timed
on a 20 ms tick while the worker adds audio of its own (see "Two ways to carry a call"):

    bridge = MediaBridge(ice_servers=[], prefer_passthrough=True, on_state=callback)
    answer_sdp = await bridge.accept_offer(offer_sdp)  # non-trickle: full SDP with candidates
    bridge.connect(leg)       # bridge audio with this call's leg (replaces a previous leg)
    bridge.disconnect()       # stop bridging; the leg keeps running (reload, park, hold)
    bridge.play(JapaneseRingback())   # send a generated sound to the browser instead ...
    bridge.play(None)                 # ... and back to the leg's audio
    bridge.state              # "new" | "connecting" | "connected" | "failed" | "closed"
    bridge.codec, bridge.passthrough, bridge.forwarding, bridge.stats
    await bridge.close()      # closes the peer connection, never the leg

One MediaBridge per browser peer connection: a reloaded page makes a new offer, so the call
gets a new bridge (and `connect(leg)` on it). A leg must feed one bridge at a time (two
bridges pulling frames would each get half): the sipworker's line decides which session's
bridge carries which call, in one place (phone.worker.line). Losing the browser (ICE/DTLS
failure, or the page closing its peer) never ends the call: the bridge disconnects itself,
goes to "failed" and/or "closed", calls `on_state`, and the leg keeps running for whatever the
call does next.

Codec choice (answer to the browser's offer)
--------------------------------------------
The answer carries exactly one audio codec, chosen from what the browser offered:

- the G.711 law the leg uses (`payload_type=` before `connect()`, the leg's once connected):
  payloads pass through untouched in both directions ("passthrough"), forwarded as they
  arrive (below);
- the other G.711 law: each payload byte is mapped through a 256-entry table
  (`bytes.translate`, still no PCM in between);
- opus only when the browser offers no G.711 (or `prefer_passthrough=False`): transcoded,
  opus 48 kHz <-> 8 kHz PCM <-> G.711.

aiortc picks codecs from a transceiver's preferences only if that transceiver exists before
`setRemoteDescription`, so the bridge reads the offer first, creates its transceiver with
`setCodecPreferences([chosen])`, and only then applies the offer.

Two ways to carry a call: forwarding and re-timing
-------------------------------------------------
Forwarding (direct) is what a call normally uses: when the browser's codec is G.711 and the
worker adds no audio of its own, every packet leaves the moment it arrives, both ways -
browser -> PBX from aiortc's receive hook straight to the leg's socket (`RtpLeg.relay`),
PBX -> browser from the leg's `datagram_received` straight to the SRTP send towards the
browser (`RtpLeg.listen`). Nothing waits for a tick, a playout buffer or a send queue; each
direction adds what one pass through the event loop costs. The payload is untouched (or
mapped through the 256-entry law table when the browser picked the other G.711 law); the
header is rewritten: our SSRC, and sequence number and timestamp shifted by an offset chosen
at each splice (`phone.media.rtp.RtpForwarder`), so each direction stays one continuous
stream to its receiver (RFC 3550 §5.1, §8.2), losses upstream stay visible as gaps, and the
first packet after a splice carries the marker bit.

Re-timing runs only while the worker produces or mixes audio: a tone to the browser
(`play()`), music on hold or DTMF on the leg (the leg suspends direct output by itself while
it has a source or digits to send), opus transcoding, or `direct=False`. Then frames cross on
the shared 20 ms `MediaTicker`: the leg's playout buffer releases one frame per tick and the
bridge's tick hook (registered after the leg) forwards it in the same tick; browser payloads
are queued on the leg and sent on its tick. Switching between the two modes keeps both
streams continuous: whichever numbering takes over continues the other's sequence number
and media clock (with the time that passed in between added to the clock).

How the media bypasses aiortc's media pipeline
----------------------------------------------
aiortc is used for what it is good at: SDP, ICE, DTLS and SRTP. Its media path is not used,
because per packet it costs far more than the G.711 work itself: on receive a jitter buffer, a
`datetime.now()`, statistics, a hand-off to a decoder thread and back to the loop with
`run_coroutine_threadsafe` (a self-pipe wake-up per 20 ms frame), then an asyncio.Queue and a
task wake-up for the track reader; on send a task wake-up per frame, a thread-pool hop for
the encoder, a resampler, and the generic RTP serializer with header extensions. There is no
public "encoded frames" API, and a custom pass-through encoder/decoder pair would still pay
for all of the above, so the bridge hooks in one level lower, at two narrow points:

- receive: the DTLS transport hands every SRTP-decrypted, parsed RTP packet to
  `receiver._handle_rtp_packet(packet, arrival_time_ms)` and awaits the result. The bridge
  replaces that method on its own receiver instance (nothing global is patched) with a plain
  function (no coroutine per packet: it returns an already-finished awaitable) that hands
  `packet.payload` to the leg. aiortc's decoder thread for this receiver is started but stays
  idle. The handler also feeds aiortc's per-SSRC receive statistics (loss, jitter), so the
  receiver's RTCP task keeps sending receiver reports (RFC 3550 §6.4.2) to the browser.
- send: the bridge builds the RTP packet itself (own sequence number and timestamp, the SSRC
  aiortc announced in the answer, the negotiated payload type and MID header extension),
  protects it with the DTLS transport's SRTP session and hands it to the nominated ICE pair's
  datagram transport - what `RTCDtlsTransport._send_rtp` does, minus its two coroutine
  layers. (A TURN-relayed pair, or an aiortc that no longer has these attributes, goes
  through `_send_rtp` itself, driven without a task: see `_drive`.) The aiortc sender gets
  a track that never yields a frame, so its RTP loop sleeps.
- RTCP: aiortc's sender and receiver each send a report every 0.5-1.5 s, whether media flows
  or not: two SRTCP packets a second for every open page, a call or none. The bridge runs one
  report loop instead (`_run_reports`, in place of the sender's RTCP task; the receiver's
  waits idle for its stop): one compound packet (RFC 3550 §6.1) every `rtcp_interval`
  (default 5 s, §6.2's minimum, randomised 0.5-1.5x as §6.3.1 does), an SR once we have sent
  media (else an RR), with the report block about the browser's stream from the statistics
  the receive hook keeps, and SDES CNAME; an RTCP BYE when the sender stops (§6.6). Without
  the aiortc internals it needs, aiortc's own loops run.

In the re-timed mode, a lost leg frame (playout concealment) is not sent at all: the browser's
own jitter buffer conceals better than a repeated G.711 frame, and the RTP timestamp keeps
counting so the gap is visible to it. The first packet after a pause carries the marker bit
(RFC 3551 §4.1).

ICE and addresses
-----------------
The peer connection always gets `RTCConfiguration(iceServers=...)` from the configured list
(empty by default): aiortc's default would send STUN to a public server. aioice gathers host
candidates on every interface address except 127.0.0.1. On a machine with another address
(here eth0) both ends simply pair on that address; Chromium with
`--allow-loopback-in-peer-connection` also offers 127.0.0.1, which our non-loopback host
candidates still reach through the kernel's local routes. For tests and benchmarks that must
work on a loopback-only box, `ice_host_addresses(["127.0.0.1"])` (a context manager) makes
aioice gather exactly the listed addresses for every peer connection created inside it;
it patches `aioice.ice.get_host_addresses`, process-wide, so production code does not use it.

Nothing here imports Django; everything runs on the event loop that owns the legs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import random
import struct
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import pylibsrtp
from aioice.ice import StunProtocol
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RtcpByePacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

from phone.media import g711
from phone.media.leg import LegListener, MediaTicker, RtpLeg, socket_sendto
from phone.media.rtp import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    RtpForwarder,
    RtpParseError,
    RtpSender,
    ntp_from_unix,
    payload_bounds,
)
from phone.media.srtp import rtp_protector, rtp_unprotector
from phone.media.tones import ToneSource

__all__ = ["BridgeError", "BridgeStats", "MediaBridge", "ice_host_addresses"]

log = logging.getLogger(__name__)

PCMU, PCMA, OPUS = "PCMU", "PCMA", "opus"
_LAW_NAME = {g711.PAYLOAD_TYPE_PCMU: PCMU, g711.PAYLOAD_TYPE_PCMA: PCMA}
_MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
_RTP_HEADER = struct.Struct("!BBHII")
_pack_header = _RTP_HEADER.pack
_unpack_header = _RTP_HEADER.unpack_from
# Sender-report counters are refreshed every this many packets (an SR goes out every few
# seconds, _run_reports; the NTP and RTP times are taken together, so the SR's clock mapping
# is exact whenever they were taken, and counts up to 500 ms old are invisible there).
_SR_EVERY = 25
# RFC 3550 §6.2: the minimum interval between a participant's RTCP reports.
RTCP_INTERVAL = 5.0


class BridgeError(ValueError):
    """The offer cannot be answered (no usable audio codec), or the bridge is in use/closed."""


@dataclass(slots=True)
class BridgeStats:
    from_browser: int = 0  # RTP packets of the negotiated codec received from the browser
    to_leg: int = 0  # G.711 payloads handed to the leg (relayed, or queued as 20 ms frames)
    from_leg: int = 0  # audio packets/frames taken from the leg (lost frames included)
    to_browser: int = 0  # RTP packets sent to the browser
    played: int = 0  # of which generated by a play() source
    decode_errors: int = 0
    send_errors: int = 0


# -- ICE host addresses (tests, benchmarks, loopback-only machines) -------------------------


@contextlib.contextmanager
def ice_host_addresses(addresses: list[str]) -> Iterator[None]:
    """Within the block, aioice gathers host candidates on exactly `addresses`.

    aioice skips 127.0.0.1 when it lists interface addresses; tests that want both ends on
    loopback (and nothing else) wrap peer-connection setup in this. Process-wide.
    """
    import aioice.ice

    original = aioice.ice.get_host_addresses

    def listed(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = listed
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


# -- helpers ----------------------------------------------------------------------------------


def _drive(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that is expected to finish without suspending, without a task.

    `RTCDtlsTransport._send_rtp` only awaits down to `transport.sendto()`, so one `send()`
    runs it to completion. If it ever does suspend, resume it when the awaited future is done
    (what a Task would do), so the packet is still sent and nothing is left un-awaited.
    """
    try:
        awaited = coro.send(None)
    except StopIteration:
        return
    except ConnectionError:  # not connected (any more): the packet is dropped, like aiortc does
        return
    if awaited is None:  # bare yield (asyncio.sleep(0)): try again on the next loop pass
        asyncio.get_running_loop().call_soon(_drive, coro)
    else:
        awaited.add_done_callback(lambda _f: _drive(coro))


class _SilentTrack(MediaStreamTrack):
    """The aiortc sender's track: never yields a frame, so the sender's RTP loop just waits.

    (With no track at all the loop would poll every 20 ms; with a real track it would encode.)
    The bridge sends its packets itself; the sender is kept for its SSRC and RTCP reports.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._never: asyncio.Future[None] | None = None

    async def recv(self) -> av.AudioFrame:
        if self._never is None:
            self._never = asyncio.get_running_loop().create_future()
        await self._never  # cancelled when the sender stops
        raise AssertionError("unreachable")


class _BrowserCodec:
    """Converts between the browser's negotiated codec and the leg's G.711 law.

    to_leg(payload, leg_pt)  -> list of 20 ms G.711 payloads for the leg (usually one)
    from_leg(payload, leg_pt)-> payload for the browser
    encode_pcm(pcm)          -> payload for the browser from 8 kHz int16 PCM (play sources)
    """

    name: str
    clock_rate: int
    samples_per_frame: int

    def to_leg(self, payload: bytes, leg_pt: int) -> list[bytes]:
        raise NotImplementedError

    def from_leg(self, payload: bytes, leg_pt: int) -> bytes | None:
        raise NotImplementedError

    def encode_pcm(self, pcm: np.ndarray) -> bytes | None:
        raise NotImplementedError

    def from_source(self, source: ToneSource) -> bytes | None:
        """The source's next 20 ms (8 kHz) frame, for the browser."""
        return self.encode_pcm(source.next_frame())


class _G711Codec(_BrowserCodec):
    clock_rate = SAMPLE_RATE
    samples_per_frame = FRAME_SAMPLES

    def __init__(self, payload_type: int) -> None:
        self.law = payload_type
        self.name = _LAW_NAME[payload_type]
        self._pending = b""  # a browser sending other than 20 ms packets gets reframed

    def to_leg(self, payload: bytes, leg_pt: int) -> list[bytes]:
        payload = g711.convert(payload, self.law, leg_pt)
        if len(payload) == FRAME_SAMPLES and not self._pending:
            return [payload]  # the normal case: 20 ms in, 20 ms out
        data = self._pending + payload
        cut = len(data) - len(data) % FRAME_SAMPLES
        self._pending = data[cut:]
        return [data[i : i + FRAME_SAMPLES] for i in range(0, cut, FRAME_SAMPLES)]

    def from_leg(self, payload: bytes, leg_pt: int) -> bytes:
        return g711.convert(payload, leg_pt, self.law)

    def encode_pcm(self, pcm: np.ndarray) -> bytes:
        return g711.encode(pcm, self.law)

    def from_source(self, source: ToneSource) -> bytes:
        return source.next_payload(self.law)  # periodic tones: sliced, not encoded per frame


class _OpusCodec(_BrowserCodec):
    """opus <-> 8 kHz PCM, inline on the loop (tens of microseconds per frame in libopus).

    Decoding: libopus (through PyAV) always decodes at 48 kHz; mono output, then swresample
    down to 8 kHz, then cut into 160-sample frames (the resampler's output sizes vary by a
    few samples around its start-up delay). Encoding: libopus takes 8 kHz mono directly
    (narrowband: what the PBX side carries anyway); the RTP clock stays 48 kHz (RFC 7587 §4.1).
    """

    name = OPUS
    clock_rate = 48000
    samples_per_frame = 960

    def __init__(self) -> None:
        self._decoder = av.CodecContext.create("libopus", "r")
        self._decoder.format = "s16"
        self._decoder.layout = "mono"
        self._decoder.sample_rate = 48000
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._encoder = av.CodecContext.create("libopus", "w")
        self._encoder.format = "s16"
        self._encoder.layout = "mono"
        self._encoder.sample_rate = SAMPLE_RATE
        self._encoder.bit_rate = 24000
        self._encoder.time_base = fractions.Fraction(1, SAMPLE_RATE)
        # SILK ("voip") at complexity 3 of 10: ~40 us instead of ~70 us per frame here, and
        # the difference is not audible on narrowband telephone audio.
        self._encoder.options = {"application": "voip", "compression_level": "3"}
        self._pts = 0
        self._pending = np.empty(0, dtype=np.int16)

    def decode_pcm(self, payload: bytes) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for frame in self._decoder.decode(av.Packet(payload)):
            for low in self._resampler.resample(frame):
                pcm = low.to_ndarray()[0]
                if len(pcm) == FRAME_SAMPLES and not len(self._pending):
                    out.append(pcm)
                    continue
                data = np.concatenate((self._pending, pcm))
                cut = len(data) - len(data) % FRAME_SAMPLES
                out.extend(data[i : i + FRAME_SAMPLES] for i in range(0, cut, FRAME_SAMPLES))
                self._pending = data[cut:]
        return out

    def to_leg(self, payload: bytes, leg_pt: int) -> list[bytes]:
        return [g711.encode(pcm, leg_pt) for pcm in self.decode_pcm(payload)]

    def from_leg(self, payload: bytes, leg_pt: int) -> bytes | None:
        return self.encode_pcm(g711.decode(payload, leg_pt))

    def encode_pcm(self, pcm: np.ndarray) -> bytes | None:
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        self._pts += len(pcm)
        packets = self._encoder.encode(frame)
        return bytes(packets[0]) if packets else None


def _make_codec(name: str) -> _BrowserCodec:
    if name == OPUS:
        return _OpusCodec()
    return _G711Codec(g711.PAYLOAD_TYPE_PCMU if name == PCMU else g711.PAYLOAD_TYPE_PCMA)


def _offered_codecs(offer_sdp: str) -> list[str]:
    """Audio codec names of the first audio m-line, in the browser's order of preference."""
    description = aiortc_sdp.SessionDescription.parse(offer_sdp)
    for media in description.media:
        if media.kind == "audio":
            return [c.name for c in media.rtp.codecs]
    return []


def _ice_server(entry: str | RTCIceServer) -> RTCIceServer:
    return entry if isinstance(entry, RTCIceServer) else RTCIceServer(urls=entry)


class _Finished:
    """An awaitable that is already done: what the receive hook returns instead of a
    coroutine (aiortc awaits the hook's result; nothing in the hook ever waits)."""

    __slots__ = ()

    def __await__(self) -> Iterator[None]:
        return iter(())


_FINISHED = _Finished()


def _browser_sender(dtls: Any) -> Callable[[bytes], None]:
    """A synchronous send of one RTP packet to the browser over `dtls` (see module doc)."""

    def via_aiortc(data: bytes) -> None:
        _drive(dtls._send_rtp(data))

    try:
        protect = rtp_protector(dtls._tx_srtp)
        nominated = dtls.transport._connection._nominated
        connected = dtls._state.__class__.CONNECTED
    except AttributeError:
        return via_aiortc

    # The nominated pair's address and socket, looked up again only when the pair changes
    # (CandidatePair.remote_addr builds a tuple per call).
    route: list[Any] = [None, None, None]  # pair, remote address, sendto

    def send(data: bytes) -> None:
        if dtls._state is not connected:
            return  # what aiortc does: ConnectionError, the packet is dropped
        pair = nominated.get(1)  # ICE component 1 (RTP; BUNDLE + rtcp-mux: everything)
        if pair is None:
            return
        if pair is not route[0]:
            protocol = pair.protocol
            if type(protocol) is not StunProtocol:
                via_aiortc(data)  # a TURN allocation wraps data its own way
                return
            route[:] = [pair, pair.remote_addr, socket_sendto(protocol.transport)]
        route[2](protect(data), route[1])

    return send


class _Probe:
    """What aiortc's StreamStatistics.add() reads of a packet."""

    __slots__ = ("sequence_number", "timestamp")

    def __init__(self) -> None:
        self.sequence_number = 0
        self.timestamp = 0


class _TickHook:
    """What MediaTicker drives: it calls `_on_tick(now, slots)` each 20 ms and `close()` if
    that raised (the ticker logs the exception; the call must go on without this bridge)."""

    __slots__ = ("bridge",)

    def __init__(self, bridge: MediaBridge) -> None:
        self.bridge = bridge

    def _on_tick(self, now: float, slots: int) -> None:
        self.bridge._tick(slots)

    def close(self) -> None:
        self.bridge._source = None
        self.bridge.disconnect()
        self.bridge._update_mode()


class MediaBridge:
    """Audio between one browser peer connection and one call's RtpLeg (see module doc)."""

    def __init__(
        self,
        ice_servers: list[str | RTCIceServer] | tuple[str | RTCIceServer, ...] = (),
        prefer_passthrough: bool = True,
        *,
        payload_type: int = g711.PAYLOAD_TYPE_PCMU,
        on_state: Callable[[str], None] | None = None,
        ticker: MediaTicker | None = None,
        direct: bool = True,
        rtcp_interval: float = RTCP_INTERVAL,
    ) -> None:
        """ice_servers: "stun:host:port" / "turn:host:port" URLs (or RTCIceServer objects
        with credentials); empty = host candidates only. payload_type: the G.711 law the
        call's leg uses, for answering before `connect()`. prefer_passthrough=False answers
        opus whenever the browser offers it (transcoding). direct=False re-times every packet
        on the 20 ms tick even when it could be forwarded (for comparisons). rtcp_interval:
        seconds between RTCP reports to the browser (module doc)."""
        if payload_type not in _LAW_NAME:
            raise ValueError(f"not a G.711 payload type: {payload_type}")
        self.ice_servers = [_ice_server(s) for s in ice_servers]
        self.prefer_passthrough = prefer_passthrough
        self.payload_type = payload_type
        self.on_state = on_state
        self.direct = direct
        self.rtcp_interval = rtcp_interval
        self.stats = BridgeStats()
        self.setup_seconds: float | None = None  # accept_offer() start -> "connected"
        self._state = "new"
        self._ticker = ticker
        self._hook = _TickHook(self)
        self._hooked = False
        self._pc: RTCPeerConnection | None = None
        self._codec: _BrowserCodec | None = None
        self._leg: RtpLeg | None = None
        self._source: ToneSource | None = None
        self._dtls: Any = None  # RTCDtlsTransport once the answer is set
        self._browser_send: Callable[[bytes], None] | None = None
        self._sender: RTCRtpSender | None = None
        self._send_ok = False
        self._pt = 0
        self._ext = b""
        self._first_byte = 0x80
        # The stream to the browser: our numbering, whichever mode feeds it. Sequence numbers
        # start in the low half (see aiortc random_sequence_number: SRTP and early wraps).
        self._out = RtpSender(0, ssrc=0, sequence=random.randrange(1 << 15))
        self._forwarder = RtpForwarder(self._out)
        self._marker = True
        # Forwarding state (module doc): leg -> browser, browser -> leg.
        self._direct_in = False
        self._direct_out = False
        self._listener: LegListener = self._on_leg_rtp
        self._t0 = 0.0
        self._rx_ssrc: int | None = None
        self._rx_stats: StreamStatistics | None = None
        self._rx_probe = _Probe()
        self._fast_receive = False
        self._rx_streams: dict[int, StreamStatistics] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._close_task: asyncio.Future[None] | None = None
        self._tap: Callable[[np.ndarray], None] | None = None

    # -- public API ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def codec(self) -> str | None:
        """The browser-side codec of the answer: "PCMU", "PCMA" or "opus"."""
        return None if self._codec is None else self._codec.name

    @property
    def passthrough(self) -> bool:
        """True when payloads cross untouched (browser codec == the leg's G.711 law)."""
        law = self._leg.payload_type if self._leg is not None else self.payload_type
        return isinstance(self._codec, _G711Codec) and self._codec.law == law

    @property
    def forwarding(self) -> bool:
        """True while packets cross both ways the moment they arrive (no tick, no buffer)."""
        leg = self._leg
        return self._direct_in and leg is not None and leg.direct

    @property
    def leg(self) -> RtpLeg | None:
        return self._leg

    async def accept_offer(self, offer_sdp: str) -> str:
        """Answer the browser's offer; returns the complete answer SDP (ICE gathered)."""
        if self._pc is not None or self._state == "closed":
            raise BridgeError("accept_offer() once per bridge; make a new one for a new peer")
        self._t0 = time.monotonic()
        name = self._choose_codec(_offered_codecs(offer_sdp))
        self._codec = _make_codec(name)
        pc = self._pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        pc.on("connectionstatechange", self._on_pc_state)
        try:
            transceiver = pc.addTransceiver(_SilentTrack(), direction="sendrecv")
            capability = next(
                c
                for c in RTCRtpSender.getCapabilities("audio").codecs
                if c.mimeType.lower() == f"audio/{name.lower()}"
            )
            # Only honoured because the transceiver exists before setRemoteDescription.
            transceiver.setCodecPreferences([capability])
            # Hook the receive path before any packet can arrive (see module doc).
            receiver = transceiver.receiver
            receiver._handle_rtp_packet = self._on_browser_rtp  # type: ignore[method-assign,assignment]
            # Receiver reports are built from this (name-mangled) dict of aiortc's.
            self._rx_streams = getattr(receiver, "_RTCRtpReceiver__remote_streams", None)
            self._take_over_rtcp(transceiver.sender, receiver)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            await self.close()
            raise
        answer = pc.localDescription.sdp
        self._configure_sender(answer, transceiver.sender)
        self._update_mode()
        return answer

    def connect(self, leg: RtpLeg) -> None:
        """Bridge audio with `leg` (replacing any leg connected before)."""
        if self._state in ("failed", "closed"):
            raise BridgeError(f"bridge is {self._state}")
        if self._leg is leg:
            return
        self.disconnect()
        self._leg = leg
        self._marker = True
        # Re-timed, the hook must tick after the leg: MediaTicker calls in insertion order,
        # so re-adding the hook puts it behind the leg and a frame released this tick is
        # forwarded this tick.
        self._remove_hook()
        self._update_mode()

    def disconnect(self) -> None:
        """Stop bridging. The leg keeps running (it sends silence or its own source)."""
        leg = self._leg
        if leg is None:
            return
        leg.unlisten(self._listener)
        leg.release_relay(self)
        self._leg = None
        self._update_mode()

    @property
    def source(self) -> ToneSource | None:
        """What play() set: the tone the browser hears instead of the leg, if any."""
        return self._source

    def play(self, source: ToneSource | None) -> None:
        """Send `source` (8 kHz frames, e.g. JapaneseRingback()) to the browser instead of the
        leg's audio; None goes back to the leg. The browser's audio still reaches the leg."""
        self._source = source
        self._marker = True
        self._update_mode()

    def tap_browser(self, sink: Callable[[np.ndarray], None] | None) -> None:
        """Hand the browser's audio to `sink` as 8 kHz PCM (the line test's echo,
        phone.media.echo), besides the leg if one is connected; None stops it. Meant for a
        bridge without a call: with opus it shares the decoder the leg's path uses."""
        self._tap = sink

    def _feed_tap(self, payload: bytes, sink: Callable[[np.ndarray], None]) -> None:
        codec = self._codec
        try:
            if isinstance(codec, _G711Codec):
                sink(g711.decode(payload, codec.law))
            elif isinstance(codec, _OpusCodec):
                for pcm in codec.decode_pcm(payload):
                    sink(pcm)
        except av.FFmpegError:
            self.stats.decode_errors += 1

    async def close(self) -> None:
        """Close the browser side. The leg is left alone. Idempotent."""
        self._source = None
        self._send_ok = False
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        self.disconnect()
        self._update_mode()  # no leg, no source, closing: off the ticker
        try:
            if self._pc is not None:
                await self._pc.close()
        finally:
            self._set_state("closed")
            self._closing.set_result(None)

    # -- negotiation ------------------------------------------------------------------------

    def _choose_codec(self, offered: list[str]) -> str:
        law = _LAW_NAME[self._leg.payload_type if self._leg is not None else self.payload_type]
        other = PCMA if law == PCMU else PCMU
        order = [law, other, OPUS] if self.prefer_passthrough else [OPUS, law, other]
        lowered = {name.lower() for name in offered}
        for name in order:
            if name.lower() in lowered:
                return name
        raise BridgeError(f"browser offered no usable audio codec: {offered}")

    # -- RTCP to the browser (module doc) ---------------------------------------------------

    def _take_over_rtcp(self, sender: Any, receiver: Any) -> None:
        """Run `_run_reports` as the sender's RTCP task and an idle one as the receiver's.

        aiortc starts each task when the connection is up (`_run_rtcp`, looked up on the
        instance) and on stop cancels it and waits for its "exited" event; the replacements
        set the same events, so stop() behaves as before."""
        # The events stop() waits on, and what _report reads: checked once, here.
        needed = (
            [
                (receiver, "_RTCRtpReceiver__" + name)
                for name in ("rtcp_started", "rtcp_exited", "lsr", "lsr_time")
            ]
            + [
                (sender, "_RTCRtpSender__" + name)
                for name in (
                    "rtcp_started",
                    "rtcp_exited",
                    "cname",
                    "ntp_timestamp",
                    "rtp_timestamp",
                    "packet_count",
                    "octet_count",
                )
            ]
            + [(sender, "_send_rtcp")]
        )
        if not all(hasattr(owner, name) for owner, name in needed):
            return  # another aiortc: its own loops
        sender_started = sender._RTCRtpSender__rtcp_started
        sender_exited = sender._RTCRtpSender__rtcp_exited
        receiver_started = receiver._RTCRtpReceiver__rtcp_started
        receiver_exited = receiver._RTCRtpReceiver__rtcp_exited

        async def reports() -> None:
            sender_started.set()
            try:
                await self._run_reports(sender, receiver)
            finally:
                sender_exited.set()

        async def idle() -> None:
            receiver_started.set()
            try:
                await asyncio.Event().wait()  # until stop() cancels it
            except asyncio.CancelledError:
                pass
            finally:
                receiver_exited.set()

        sender._run_rtcp = reports
        receiver._run_rtcp = idle

    async def _run_reports(self, sender: Any, receiver: Any) -> None:
        try:
            while True:
                await asyncio.sleep(self.rtcp_interval * random.uniform(0.5, 1.5))
                await sender._send_rtcp(self._report(sender, receiver))
        except asyncio.CancelledError:
            # RFC 3550 §6.6: a BYE when the stream ends. Sent as aiortc's loop did, inside
            # the cancelled task: stop() waits for it.
            await sender._send_rtcp([RtcpByePacket(sources=[sender._ssrc])])

    def _report(self, sender: Any, receiver: Any) -> list[Any]:
        """One compound RTCP packet (RFC 3550 §6.1): SR (or RR before we sent media) with the
        report block about the browser's stream, then SDES CNAME."""
        blocks = []
        lsr, lsr_time = receiver._RTCRtpReceiver__lsr, receiver._RTCRtpReceiver__lsr_time
        now = time.time()
        for ssrc, stream in (self._rx_streams or {}).items():
            # LSR/DLSR (RFC 3550 §6.4.1): zero until the browser's SR arrived, or if it is too
            # old for DLSR's 16.16 seconds.
            delay = now - lsr_time[ssrc] if ssrc in lsr else -1.0
            heard = 0 <= delay < 65536
            blocks.append(
                RtcpReceiverInfo(
                    ssrc=ssrc,
                    fraction_lost=stream.fraction_lost,
                    packets_lost=stream.packets_lost,
                    # RFC 3550 §6.4.1: the extended highest sequence number.
                    highest_sequence=(stream.cycles + (stream.max_seq or 0)) & 0xFFFF_FFFF,
                    jitter=stream.jitter,
                    lsr=lsr[ssrc] if heard else 0,
                    dlsr=int(delay * 65536) if heard else 0,
                )
            )
        ssrc = sender._ssrc
        packets: list[Any]
        if self._out.stats.packets_sent:
            ntp = sender._RTCRtpSender__ntp_timestamp
            info = RtcpSenderInfo(
                ntp_timestamp=ntp,
                rtp_timestamp=sender._RTCRtpSender__rtp_timestamp,
                packet_count=sender._RTCRtpSender__packet_count & 0xFFFF_FFFF,
                octet_count=sender._RTCRtpSender__octet_count & 0xFFFF_FFFF,
            )
            packets = [RtcpSrPacket(ssrc=ssrc, sender_info=info, reports=blocks)]
            # What aiortc's sender keeps to match the browser's report of this SR (its RTT).
            sender._RTCRtpSender__lsr = (ntp >> 16) & 0xFFFF_FFFF
            sender._RTCRtpSender__lsr_time = now
        else:
            packets = [RtcpRrPacket(ssrc=ssrc, reports=blocks)]
        cname = sender._RTCRtpSender__cname
        if cname is not None:
            item = RtcpSourceInfo(ssrc=ssrc, items=[(1, cname.encode("utf8"))])
            packets.append(RtcpSdesPacket(chunks=[item]))
        return packets

    def _configure_sender(self, answer_sdp: str, sender: RTCRtpSender) -> None:
        description = aiortc_sdp.SessionDescription.parse(answer_sdp)
        media = next(m for m in description.media if m.kind == "audio")
        payload_type = media.rtp.codecs[0].payloadType
        if payload_type is None:
            raise BridgeError("the answer names no payload type")
        self._pt = payload_type
        self._out.payload_type = payload_type
        self._out.ssrc = sender._ssrc  # the SSRC announced in the answer's a=ssrc
        self._sender = sender
        self._dtls = sender.transport
        mid_id = next((e.id for e in media.rtp.headerExtensions if e.uri == _MID_URI), None)
        mid = (media.rtp.muxId or "").encode()
        if mid_id is not None and mid:
            # RFC 8285 one-byte header extension: the MID lets the browser demux under BUNDLE.
            element = bytes([(mid_id << 4) | (len(mid) - 1)]) + mid
            element += b"\0" * (-len(element) % 4)
            self._ext = struct.pack("!HH", 0xBEDE, len(element) // 4) + element
            self._first_byte = 0x90  # V=2, X=1
        else:
            self._ext = b""
            self._first_byte = 0x80

    def _on_pc_state(self) -> None:
        assert self._pc is not None
        state = self._pc.connectionState
        if state == "connected":
            if self.setup_seconds is None:
                self.setup_seconds = time.monotonic() - self._t0
            self._browser_send = _browser_sender(self._dtls)
            if not self._fast_receive:
                self._install_fast_receive()
            self._send_ok = True
        elif state in ("failed", "closed"):
            # The browser is gone; the call is not. Stop feeding the leg, free the peer.
            self._send_ok = False
            self._source = None
            self.disconnect()
            self._update_mode()
            if state == "failed" and self._closing is None:
                self._close_task = asyncio.ensure_future(self.close())
        if self._state != "closed":
            self._set_state(state)

    def _set_state(self, state: str) -> None:
        if state == self._state:
            return
        self._state = state
        if self.on_state is not None:
            try:
                self.on_state(state)
            except Exception:
                log.exception("on_state callback failed")

    # -- which mode (module doc) ------------------------------------------------------------

    def _update_mode(self) -> None:
        """Forward or re-time, per direction, from what the bridge carries right now."""
        leg = self._leg
        live = self._pc is not None and self._closing is None
        g711_direct = live and self.direct and isinstance(self._codec, _G711Codec)
        direct_in = leg is not None and g711_direct and self._source is None
        direct_out = leg is not None and g711_direct
        if leg is not None:
            if direct_in:
                leg.listen(self._listener)
            else:
                # Before the hook is (re-)added below: the leg goes back on the ticker first,
                # so the hook ticks after it.
                leg.unlisten(self._listener)
            if direct_out:
                leg.relay_from(self)
            else:
                leg.release_relay(self)
        self._direct_out = direct_out
        hooked = (
            live
            and self._codec is not None
            and (self._source is not None or (leg is not None and not direct_in))
        )
        if direct_in != self._direct_in or hooked != self._hooked:
            # Whichever numbering comes next continues the old one: the tick from now (the
            # clock is brought up to date), forwarding from its first packet (the clock
            # also counts the time until that packet arrives).
            now = time.monotonic()
            if hooked:
                self._forwarder.interrupt(now)
            else:
                self._forwarder.pause(now)
            self._marker = True
        self._direct_in = direct_in
        if hooked:
            self._add_hook()
        else:
            self._remove_hook()

    def _add_hook(self) -> None:
        if self._hooked:
            return
        if self._ticker is None:
            self._ticker = MediaTicker.shared()
        self._ticker.add(self._hook)  # type: ignore[arg-type]  # duck-typed: _on_tick/close
        self._hooked = True

    def _remove_hook(self) -> None:
        if self._ticker is not None:
            self._ticker.discard(self._hook)  # type: ignore[arg-type]
        self._hooked = False

    # -- media: browser -> leg ----------------------------------------------------------------

    def _on_browser_rtp(self, packet: Any, arrival_time_ms: int = 0) -> _Finished:
        # Replaces RTCRtpReceiver._handle_rtp_packet for this bridge's receiver only (the
        # path until the fast receive below is in place, and for a TURN-relayed pair).
        if packet.payload_type == self._pt:
            self._from_browser(
                packet.payload,
                packet.ssrc,
                packet.sequence_number,
                packet.timestamp,
                packet.marker,
            )
        return _FINISHED

    def _on_browser_datagram(self, data: bytes) -> None:
        # The fast receive (_install_fast_receive): one decrypted SRTP packet, as bytes.
        try:
            start, end = payload_bounds(data)
        except RtpParseError:
            return
        _, b1, seq, ts, ssrc = _unpack_header(data)
        if b1 & 0x7F == self._pt:
            self._from_browser(data[start:end], ssrc, seq, ts, b1 > 0x7F)

    def _from_browser(self, payload: bytes, ssrc: int, seq: int, ts: int, marker: bool) -> None:
        stats = self.stats
        stats.from_browser += 1
        rx = self._rx_stats
        if ssrc != self._rx_ssrc or rx is None:
            self._rx_ssrc = ssrc
            rx = self._rx_stats = StreamStatistics(self._codec.clock_rate)  # type: ignore[union-attr]
            if self._rx_streams is not None:
                self._rx_streams.clear()
                self._rx_streams[ssrc] = rx
        # aiortc's receiver reports (RTCP RR to the browser) are built from these statistics;
        # they read a packet's sequence number and timestamp only: one reused probe object.
        probe = self._rx_probe
        probe.sequence_number = seq
        probe.timestamp = ts
        rx.add(probe)  # type: ignore[arg-type]
        if self._tap is not None and payload:
            self._feed_tap(payload, self._tap)
        leg = self._leg
        if leg is None or not payload:
            return
        owner = leg.relay_owner
        if owner is not None and owner is not self:
            # Someone else relays into this leg now (the worker joined it to another call,
            # before its line disconnected this page): the page's audio is not part of it.
            return
        codec: Any = self._codec
        if self._direct_out:
            law = leg.payload_type
            relayed = payload if codec.law == law else g711.convert(payload, codec.law, law)
            if leg.relay(relayed, ssrc, seq, ts, marker, time.monotonic()):
                stats.to_leg += 1
                return
            # The leg sends audio of its own now (DTMF, a tone): queue ours, re-timed.
        try:
            payloads = codec.to_leg(payload, leg.payload_type)
        except av.FFmpegError:
            stats.decode_errors += 1
            return
        for frame in payloads:
            leg.send_payload(frame)
        stats.to_leg += len(payloads)

    def _install_fast_receive(self) -> None:
        """Take the browser's SRTP packets at the socket instead of through aiortc.

        aiortc's receive path costs, per packet: aioice trying to parse it as STUN (a raised
        and caught ValueError), an asyncio.Queue hand-off that wakes the DTLS transport's task,
        two coroutines, a `datetime.now()`, and a generic packet object with header-extension
        parsing, before the hook above sees it. Once DTLS is up the bridge wraps
        `datagram_received` of the nominated ICE pair's socket protocol (this instance only):
        SRTP packets are decrypted with the transport's own SRTP session and handled on the
        spot; everything else (STUN consent checks, DTLS, SRTCP for aiortc's RTCP) goes the
        usual way. Without those internals (another aioice, a TURN pair) nothing changes.
        """
        try:
            unprotect = rtp_unprotector(self._dtls._rx_srtp)
            pair = self._dtls.transport._connection._nominated.get(1)
        except AttributeError:
            return
        if pair is None or type(pair.protocol) is not StunProtocol:
            return
        protocol = pair.protocol
        usual = protocol.datagram_received
        handle = self._on_browser_datagram

        from_browser = self._from_browser

        def datagram_received(data: bytes, addr: tuple[str, int]) -> None:
            # RFC 7983 §7: a first octet of 128..191 is RTP or RTCP; RFC 5761 §4: a second
            # octet of 192..223 is RTCP (left to aiortc).
            if len(data) > 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:
                try:
                    plain = unprotect(data)
                except pylibsrtp.Error:
                    return  # what aiortc does: replayed or forged, dropped
                if plain[0] == 0x90 or plain[0] == 0x80:
                    # _on_browser_datagram inline for the usual header (an extension, no
                    # padding or CSRC: Chrome's audio); one Python call less per packet.
                    _, b1, seq, ts, ssrc = _unpack_header(plain)
                    start = 12
                    if plain[0] == 0x90:
                        if len(plain) < 16:
                            return
                        start = 16 + 4 * ((plain[14] << 8) | plain[15])
                    if b1 & 0x7F == self._pt and start <= len(plain):
                        from_browser(plain[start:], ssrc, seq, ts, b1 > 0x7F)
                    return
                handle(plain)
            else:
                usual(data, addr)

        protocol.datagram_received = datagram_received  # type: ignore[method-assign,assignment]
        self._fast_receive = True

    # -- media: leg -> browser ----------------------------------------------------------------

    def _on_leg_rtp(
        self, payload: bytes, pt: int, seq: int, ts: int, ssrc: int, marker: bool, now: float
    ) -> None:
        # The leg's listener while forwarding: called from its datagram_received.
        law = self._codec.law  # type: ignore[union-attr]  # direct only with G.711
        if pt != law:
            if pt not in _LAW_NAME or not payload:
                self._forwarder.skip()  # comfort noise, events: not for the browser
                return
            payload = g711.convert(payload, pt, law)
        self.stats.from_leg += 1
        if not self._send_ok:
            return
        out = self._forwarder.forward(ssrc, seq, ts, marker, len(payload), now)
        if out is not None:
            self._send(payload, *out)

    def _tick(self, slots: int) -> None:
        codec = self._codec
        if codec is None:
            return
        spf = codec.samples_per_frame
        leg = self._leg
        if leg is not None and leg.closed:
            self.disconnect()
            leg = None
        if self._direct_in:
            leg = None  # its packets come through _on_leg_rtp
        source = self._source
        out = self._out
        for _ in range(slots):
            payload: bytes | None = None
            if leg is not None:
                frame = leg.pull_frame()
                if frame is not None:
                    self.stats.from_leg += 1
                    # Only G.711 audio crosses; a lost frame or anything else the far end
                    # sends (comfort noise, PT 13) is left for the browser to conceal.
                    if (
                        source is None
                        and frame.payload is not None
                        and frame.payload_type in _LAW_NAME
                    ):
                        payload = codec.from_leg(frame.payload, frame.payload_type)
            if source is not None:
                payload = codec.from_source(source)
                if payload is not None:
                    self.stats.played += 1
            if payload is not None and self._send_ok:
                seq = out.sequence
                out.sequence = (seq + 1) & 0xFFFF
                self._send(payload, seq, out.timestamp, self._marker)
                self._marker = False
            else:
                self._marker = True  # next packet starts a talkspurt (RFC 3551 §4.1)
            out.timestamp = (out.timestamp + spf) & 0xFFFF_FFFF

    def _send(self, payload: bytes, seq: int, ts: int, marker: bool) -> None:
        pt = self._pt
        out = self._out
        data = _pack_header(self._first_byte, 0x80 | pt if marker else pt, seq, ts, out.ssrc)
        data += self._ext
        data += payload
        stats = self.stats
        stats.to_browser += 1
        st = out.stats  # SenderStats.count, inline: this runs for every packet to the browser
        st.packets_sent += 1
        st.octets_sent += len(payload)
        st.last_rtp_timestamp = ts
        try:
            if self._browser_send is not None:
                self._browser_send(data)
            else:
                _drive(self._dtls._send_rtp(data))
        except Exception:
            stats.send_errors += 1
            if stats.send_errors == 1:
                log.exception("sending RTP to the browser failed")
            return
        if stats.to_browser % _SR_EVERY == 1:
            self._update_sender_report()

    def _update_sender_report(self) -> None:
        # aiortc's RTCRtpSender builds its RTCP SR from these (name-mangled) counters; we send
        # around it, so keep them true or the browser's stats show a silent sender.
        sender = self._sender
        out = self._out
        sender._RTCRtpSender__ntp_timestamp = ntp_from_unix(time.time())  # type: ignore[union-attr]
        sender._RTCRtpSender__rtp_timestamp = out.stats.last_rtp_timestamp  # type: ignore[union-attr]
        sender._RTCRtpSender__packet_count = out.stats.packets_sent  # type: ignore[union-attr]
        sender._RTCRtpSender__octet_count = out.stats.octets_sent  # type: ignore[union-attr]
