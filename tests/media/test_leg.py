import asyncio
import itertools
import random
import time
from collections import deque

import numpy as np
import pytest

from phone.media import g711
from phone.media.leg import MediaTicker, PortRange, PortRangeExhausted, RtpLeg, socket_sendto
from phone.media.rtp import RtpPacket
from phone.media.tones import SineTone
from tests.support import analysis
from tests.support.fake_browser import wait_for

HOST = "127.0.0.1"


@pytest.fixture
def ports():
    # A private allocator per test; a random slice of a high range keeps parallel runs apart.
    base = random.randrange(40000, 60000, 200)
    return PortRange(base, base + 199)


async def open_pair(ports, **kw):
    a = await RtpLeg.open(HOST, ports, **kw)
    b = await RtpLeg.open(HOST, ports, **kw)
    a.set_remote(HOST, b.local_port)
    b.set_remote(HOST, a.local_port)
    return a, b


async def collect(leg, frames):
    """`frames` received 20 ms frames of decoded PCM, concatenated."""
    out = [await asyncio.wait_for(leg.recv_pcm(), 2) for _ in range(frames)]
    return np.concatenate(out)


async def test_it_binds_an_even_rtp_port_with_rtcp_on_the_next(ports):
    leg = await RtpLeg.open(HOST, ports)
    try:
        assert leg.local_port % 2 == 0
        assert leg.local_rtcp_port == leg.local_port + 1
        assert ports.start <= leg.local_port < ports.end
        assert leg.local_port in ports.in_use
    finally:
        await leg.aclose()
    assert leg.local_port not in ports.in_use


async def test_two_legs_exchange_tones_detected_by_frequency_at_the_other_end(ports):
    a, b = await open_pair(ports)
    a.source = SineTone(1000)
    b.source = SineTone(700)
    try:
        got_b, got_a = await asyncio.gather(collect(b, 50), collect(a, 50))
    finally:
        a.close()
        b.close()
    heard_b = analysis.non_silent(got_b)
    heard_a = analysis.non_silent(got_a)
    assert len(heard_b) > 4000 and len(heard_a) > 4000
    assert analysis.dominant_frequency(heard_b) == pytest.approx(1000, abs=5)
    assert analysis.dominant_frequency(heard_a) == pytest.approx(700, abs=5)
    assert analysis.has_tone(heard_b[-4000:], 1000)
    assert a.stats.packets_sent >= 50 and b.stats.packets_received >= 45


async def test_symmetric_rtp_answers_where_media_comes_from(ports):
    a = await RtpLeg.open(HOST, ports)
    b = await RtpLeg.open(HOST, ports)
    try:
        a.set_remote(HOST, b.local_port)
        # b was told a wrong address (e.g. a private address in the SDP behind NAT).
        b.set_remote("127.0.0.1", 9)
        a.source = SineTone(1000)
        b.source = SineTone(700)
        got = analysis.non_silent(await collect(a, 30))
        assert b.remote == (HOST, a.local_port)
        assert analysis.dominant_frequency(got) == pytest.approx(700, abs=5)
    finally:
        a.close()
        b.close()


async def test_packets_from_a_stranger_are_ignored_once_latched(ports):
    a, b = await open_pair(ports)
    stranger = await RtpLeg.open(HOST, ports)
    try:
        await collect(b, 5)  # b has latched to a
        stranger.set_remote(HOST, b.local_port)
        await asyncio.sleep(0.2)
        assert b.stats.foreign_packets > 0
        assert b.remote == (HOST, a.local_port)
    finally:
        for leg in (a, b, stranger):
            leg.close()


class LossyRelay(asyncio.DatagramProtocol):
    """A UDP relay between two legs that drops every `nth` packet from a to b."""

    def __init__(self, target, nth):
        self.target = target
        self.nth = nth
        self.count = 0
        self.peer = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if addr == self.target:
            if self.peer:
                self.transport.sendto(data, self.peer)
            return
        self.peer = addr
        self.count += 1
        if self.count % self.nth:
            self.transport.sendto(data, self.target)


async def test_loss_is_concealed_counted_and_playout_never_stalls(ports):
    a = await RtpLeg.open(HOST, ports)
    b = await RtpLeg.open(HOST, ports)
    loop = asyncio.get_running_loop()
    relay_t, _ = await loop.create_datagram_endpoint(
        lambda: LossyRelay((HOST, b.local_port), nth=10), local_addr=(HOST, 0)
    )
    try:
        a.set_remote(HOST, relay_t.get_extra_info("sockname")[1])
        b.set_remote(HOST, relay_t.get_extra_info("sockname")[1])
        a.source = SineTone(1000)
        frames = [await asyncio.wait_for(b.recv_frame(), 2) for _ in range(75)]
    finally:
        a.close()
        b.close()
        relay_t.close()
    lost = sum(f.lost for f in frames)
    assert 4 <= lost <= 12  # ~10 % of 75 frames
    assert not any(f.lost for f in frames[-10:]) or lost < 12  # still flowing at the end
    st = b.stats
    assert st.cumulative_lost >= 4
    assert st.concealed >= 4
    pcm = np.concatenate([g711.ulaw_decode(f.payload) for f in frames if not f.lost])
    assert analysis.dominant_frequency(pcm) == pytest.approx(1000, abs=5)


async def test_dtmf_round_trip_reports_digits_in_order(ports):
    got = []
    a, b = await open_pair(ports, on_dtmf=lambda ev: got.append(ev.digit))
    a.source = SineTone(1000)
    try:
        await asyncio.wait_for(a.send_dtmf("12#*9D", duration_ms=60, gap_ms=40), 5)
        await asyncio.sleep(0.1)
    finally:
        a.close()
        b.close()
    assert "".join(got) == "12#*9D"
    assert a.stats.dtmf_sent == 6
    assert b.stats.dtmf_received == 6


async def test_dtmf_pauses_audio_and_uses_rfc4733_packets(ports):
    a = await RtpLeg.open(HOST, ports)
    seen = []
    loop = asyncio.get_running_loop()

    class Sniffer(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            seen.append(RtpPacket.parse(data))

    sniff_t, _ = await loop.create_datagram_endpoint(Sniffer, local_addr=(HOST, 0))
    try:
        a.set_remote(HOST, sniff_t.get_extra_info("sockname")[1])
        await asyncio.sleep(0.1)
        await asyncio.wait_for(a.send_dtmf("5", duration_ms=100), 2)
        await asyncio.sleep(0.1)
    finally:
        a.close()
        sniff_t.close()
    events = [p for p in seen if p.payload_type == 101]
    assert len(events) == 7  # 4 updates + 3 end packets
    assert events[0].marker and not any(p.marker for p in events[1:])
    assert len({p.timestamp for p in events}) == 1
    # No audio packet between the first and the last event packet: audio paused.
    i0, i1 = seen.index(events[0]), seen.index(events[-1])
    assert all(p.payload_type == 101 for p in seen[i0 : i1 + 1])
    # Sequence numbers are contiguous across audio and events.
    seqs = [p.sequence_number for p in seen]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))


async def test_passthrough_forwards_payload_bytes_unchanged(ports):
    a, b = await open_pair(ports, payload_type=g711.PAYLOAD_TYPE_PCMA)
    tone = SineTone(700)
    sent = [g711.alaw_encode(tone.next_frame()) for _ in range(30)]

    async def feed():
        for payload in sent:
            a.send_payload(payload)
            await asyncio.sleep(0.02)

    async def drain():
        return [await asyncio.wait_for(b.recv_frame(), 2) for _ in range(50)]

    try:
        _, frames = await asyncio.gather(feed(), drain())
    finally:
        a.close()
        b.close()
    got = [f for f in frames if not f.lost and f.payload != g711.silence_payload(8)]
    assert len(got) >= 20
    assert all(f.payload_type == 8 for f in got)
    payloads = [f.payload for f in got]
    # Byte-exact and in order: a contiguous run of what was sent.
    start = sent.index(payloads[0])
    assert payloads == sent[start : start + len(payloads)]


async def test_set_remote_moves_media_to_a_new_far_end(ports):
    a, b = await open_pair(ports)
    c = await RtpLeg.open(HOST, ports)
    a.source = SineTone(1000)
    try:
        await collect(b, 5)
        a.set_remote(HOST, c.local_port)  # re-INVITE: media now goes to c
        c.set_remote(HOST, a.local_port)
        heard = analysis.non_silent(await collect(c, 25))
        assert analysis.dominant_frequency(heard) == pytest.approx(1000, abs=5)
        c.source = SineTone(700)
        # a relearns the far end from c's packets (its latch was reset by set_remote).
        await collect(a, 10)
        assert a.remote == (HOST, c.local_port)
    finally:
        for leg in (a, b, c):
            leg.close()


async def test_rtcp_reports_flow_both_ways(ports):
    a, b = await open_pair(ports, rtcp_interval=0.15)
    a.source = SineTone(1000)
    b.source = SineTone(700)
    try:
        await asyncio.sleep(0.8)
    finally:
        a.close()
        b.close()
    for leg in (a, b):
        st = leg.stats
        assert st.rtcp_sent >= 2 and st.rtcp_received >= 2
        assert st.remote_fraction_lost == 0
        assert st.rtt_ms is not None and 0 <= st.rtt_ms < 100


async def test_port_range_exhaustion_gives_a_clear_error(ports):
    tiny = PortRange(ports.start, ports.start + 3)  # two even/odd pairs
    legs = []
    try:
        with pytest.raises(PortRangeExhausted, match=rf"{tiny.start}-{tiny.end}"):
            for _ in range(3):
                legs.append(await RtpLeg.open(HOST, tiny))
        assert 1 <= len(legs) <= 2
        await legs.pop().aclose()  # releasing a leg frees its pair again
        legs.append(await RtpLeg.open(HOST, tiny))
    finally:
        for leg in legs:
            leg.close()


async def test_one_shared_ticker_drives_many_legs(ports):
    ticker = MediaTicker()
    legs = [await RtpLeg.open(HOST, ports, ticker=ticker) for _ in range(8)]
    for x, y in zip(legs[::2], legs[1::2], strict=True):
        x.set_remote(HOST, y.local_port)
        y.set_remote(HOST, x.local_port)
    try:
        await asyncio.sleep(0.3)
        assert len(ticker) == 8
        assert 10 <= ticker.ticks <= 20
        assert all(leg.stats.packets_received >= 8 for leg in legs)
    finally:
        for leg in legs:
            leg.close()
    assert len(ticker) == 0


async def test_closed_leg_wakes_receivers_and_is_idempotent(ports):
    leg = await RtpLeg.open(HOST, ports)
    waiter = asyncio.ensure_future(leg.recv_frame())
    await asyncio.sleep(0.05)
    leg.close()
    leg.close()
    with pytest.raises(ConnectionError):
        await waiter


def test_send_pcm_cuts_20ms_frames_and_pads_the_tail():
    leg = RtpLeg(payload_type=g711.PAYLOAD_TYPE_PCMU)
    leg.send_pcm(np.zeros(400, dtype=np.int16))
    assert [len(p) for p in leg._tx] == [160, 160, 160]
    assert leg._tx[-1] == g711.silence_payload(0)


def test_decoded_receive_conceals_a_loss_then_goes_silent():
    from phone.media.playout import PlayoutFrame

    leg = RtpLeg()
    tone = SineTone(1000).next_frame()
    good = PlayoutFrame(1, 0, 0, g711.ulaw_encode(tone))
    lost = PlayoutFrame(2, 160, 0, None)
    first = leg._decode(good)
    assert np.array_equal(first, g711.ulaw_decode(g711.ulaw_encode(tone)))
    assert np.array_equal(leg._decode(lost), first // 2)  # one frame of faded repeat
    assert not leg._decode(lost).any()  # then silence


async def test_a_blocked_loop_shows_up_as_lost_time_not_drift(ports):
    ticker = MediaTicker()
    a = await RtpLeg.open(HOST, ports, ticker=ticker)
    seen = []

    class Sniffer(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            seen.append(RtpPacket.parse(data))

    sniff_t, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Sniffer, local_addr=(HOST, 0)
    )
    try:
        a.set_remote(HOST, sniff_t.get_extra_info("sockname")[1])
        await asyncio.sleep(0.1)
        time.sleep(0.2)  # the event loop is stuck for 10 frame times
        await asyncio.sleep(0.1)
    finally:
        a.close()
        sniff_t.close()
    assert ticker.missed_slots >= 8
    steps = [(b.timestamp - x.timestamp) & 0xFFFFFFFF for x, b in itertools.pairwise(seen)]
    # Packets stay one per tick, but the media clock jumps over the stall.
    assert max(steps) >= 9 * 160
    assert all(s % 160 == 0 for s in steps)


def test_set_remote_wants_an_ip_literal():
    leg = RtpLeg()
    with pytest.raises(ValueError):
        leg.set_remote("pbx.example.com", 4000)
    leg.set_remote("::1", 4000)
    assert leg.remote_rtcp == ("::1", 4001)


async def test_a_relaying_leg_fills_a_pause_with_silence_and_splices_back(ports):
    """Direct output (relay) stops when the relayed stream does; the far end keeps getting a
    stream, numbered on, and the stream that comes back continues it."""
    leg = await RtpLeg.open(HOST, ports)
    seen = []

    class Sniffer(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            seen.append((time.monotonic(), RtpPacket.parse(data)))

    sniff_t, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Sniffer, local_addr=(HOST, 0)
    )
    tone = g711.ulaw_encode(SineTone(1000).next_frame())
    owner = object()

    async def talk(first_seq, frames):
        for i in range(frames):
            seq = first_seq + i
            assert leg.relay(tone, 0x77, seq, seq * 160, False, time.monotonic())
            await asyncio.sleep(0.02)

    try:
        leg.set_remote(HOST, sniff_t.get_extra_info("sockname")[1])
        await asyncio.sleep(0.1)
        leg.relay_from(owner)
        assert leg.direct
        await talk(100, 10)
        await asyncio.sleep(0.6)  # the source pauses (RELAY_IDLE is 0.2 s)
        assert not leg.direct  # sending silence, on the tick
        await talk(130, 10)  # back, with the pause in its own numbering too
        assert leg.direct
    finally:
        leg.close()
        sniff_t.close()
    payloads = [p.payload for _, p in seen]
    assert payloads.count(tone) == 20
    first = payloads.index(tone)
    resumed = payloads.index(tone, first + 10)
    assert all(p == g711.silence_payload(0) for p in payloads[first + 10 : resumed])
    assert resumed - first - 10 >= 10  # ~0.4 s of silence (after 0.2 s of waiting)
    assert seen[first][1].marker and seen[resumed][1].marker  # each splice is marked
    assert seen[first + 10][1].marker  # and so is the silence, another source
    seqs = [p.sequence_number for _, p in seen]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    stamps = [p.timestamp for _, p in seen]
    steps = [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(stamps)]
    # Frames all the way; the one jump is where the leg noticed the pause (RELAY_IDLE later).
    assert all(s % 160 == 0 and 0 < s <= 160 * 15 for s in steps)
    assert [i for i, s in enumerate(steps) if s > 160 * 3] == [first + 9]
    media = sum(steps) / 8000
    assert media == pytest.approx(seen[-1][0] - seen[0][0], abs=0.06)


def test_the_send_queue_drops_a_standing_backlog():
    leg = RtpLeg()
    frame = g711.silence_payload(0)
    for _ in range(4):
        leg.send_payload(frame)  # a burst: 4 frames (80 ms) waiting
    for _ in range(49):
        leg.send_payload(frame)  # then one per tick, as fast as they go
        leg._send_frame()
    assert len(leg._tx) == 4  # the backlog stands ...
    leg.send_payload(frame)
    leg._send_frame()
    assert len(leg._tx) == 0  # ... and after a window of ticks only _TX_KEEP (1) was kept


async def test_socket_sendto_goes_to_the_socket_and_falls_back_to_the_transport():
    """The per-packet send skips asyncio's wrapper only while that changes nothing: a full
    kernel buffer hands the packet (and the ones after it, while the transport still holds
    some) to the transport, which queues them in order."""
    loop = asyncio.get_running_loop()
    got: list[bytes] = []

    class Rx(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            got.append(data)

    rx, _ = await loop.create_datagram_endpoint(Rx, local_addr=(HOST, 0))
    tx, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(HOST, 0))
    addr = rx.get_extra_info("sockname")
    try:
        socket_sendto(tx)(b"direct", addr)
        await wait_for(lambda: got == [b"direct"])
    finally:
        rx.close()
        tx.close()

    class Sock:
        full = True

        def sendto(self, data, addr):
            if self.full:
                raise BlockingIOError
            sent.append(("socket", data))

    class Transport:
        def __init__(self) -> None:
            self._sock, self._buffer, self._protocol = Sock(), deque(), None

        def sendto(self, data, addr):
            sent.append(("transport", data))
            self._buffer.append(data)

        def is_closing(self):
            return False

    sent: list[tuple[str, bytes]] = []
    transport = Transport()
    transport._protocol = asyncio.DatagramProtocol()
    send = socket_sendto(transport)
    send(b"1", addr)  # the kernel buffer is full: queued by the transport
    transport._sock.full = False
    send(b"2", addr)  # the transport still holds 1: 2 goes behind it
    transport._buffer.clear()
    send(b"3", addr)  # drained: straight to the socket again
    assert sent == [("transport", b"1"), ("transport", b"2"), ("socket", b"3")]
    # Another loop's transport (no selector internals): its own sendto.
    plain = type("Plain", (), {"sendto": lambda self, data, addr: None})()
    assert socket_sendto(plain) == plain.sendto
