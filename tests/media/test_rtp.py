import struct

import pytest

from phone.media import rtp
from phone.media.rtp import (
    ReceiverStats,
    ReportBlock,
    RtcpBye,
    RtcpParseError,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    RtpExtension,
    RtpPacket,
    RtpParseError,
    RtpSender,
)

# A PCMU packet as it appears on the wire: V=2, PT=0, seq=0x1234, ts=0x00000a0, SSRC=0xdeadbeef.
WIRE = bytes.fromhex("80001234000000a0deadbeef") + b"\xff" * 160


def test_it_parses_a_plain_g711_packet():
    pkt = RtpPacket.parse(WIRE)
    assert pkt.payload_type == 0
    assert pkt.sequence_number == 0x1234
    assert pkt.timestamp == 0xA0
    assert pkt.ssrc == 0xDEADBEEF
    assert pkt.payload == b"\xff" * 160
    assert not pkt.marker
    assert pkt.csrc == ()
    assert pkt.extension is None
    assert pkt.padding == 0
    assert pkt.serialize() == WIRE


def test_it_round_trips_marker_csrc_extension_and_padding():
    pkt = RtpPacket(
        payload_type=101,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=1,
        payload=b"abc",
        marker=True,
        csrc=(10, 20, 30),
        extension=RtpExtension(0xBEDE, b"\x10\x01\x00\x00"),
        padding=5,
    )
    data = pkt.serialize()
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert data[1] == 0x80 | 101
    assert data[-1] == 5
    assert len(data) == 12 + 12 + 4 + 4 + 3 + 5
    assert RtpPacket.parse(data) == pkt


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "too short"),
        (b"\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00", "too short"),
        (b"\x40" + WIRE[1:], "version"),
        (bytes([0x82]) + WIRE[1:12] + b"\x00\x00\x00\x01", "CSRC"),
        (bytes([0x90]) + WIRE[1:12] + b"\xbe\xde", "extension header"),
        (bytes([0x90]) + WIRE[1:12] + b"\xbe\xde\x00\x02\x00\x00\x00\x00", "extension data"),
        (bytes([0xA0]) + WIRE[1:12] + b"\x01\x02\x00", "padding"),
        (bytes([0xA0]) + WIRE[1:12] + b"\x01\x02\x09", "padding"),
        (bytes([0xA0]) + WIRE[1:12], "padding"),
    ],
)
def test_it_rejects_malformed_packets_with_a_specific_error(data, why):
    with pytest.raises(RtpParseError, match=why):
        RtpPacket.parse(data)


def test_parse_error_is_a_value_error_so_generic_handlers_still_catch_it():
    assert issubclass(RtpParseError, ValueError)


def test_it_numbers_packets_from_random_initial_values_with_wraparound():
    senders = [RtpSender(0) for _ in range(4)]
    # Random initial values: four senders agreeing on all three is astronomically unlikely.
    assert len({(s.ssrc, s.sequence, s.timestamp) for s in senders}) == 4
    s = RtpSender(8, ssrc=7, sequence=65534, timestamp=0xFFFFFF00)
    pkts = [s.next_packet(b"\xd5" * rtp.FRAME_SAMPLES) for _ in range(3)]
    assert [p.sequence_number for p in pkts] == [65534, 65535, 0]
    assert [p.timestamp for p in pkts] == [0xFFFFFF00, 0xFFFFFFA0, 0x40]
    assert all(p.payload_type == 8 and p.ssrc == 7 for p in pkts)
    assert s.stats.packets_sent == 3
    assert s.stats.octets_sent == 480
    s.skip()
    assert s.next_packet(b"").timestamp == 0x40 + 320


def test_it_uses_20ms_g711_frames():
    assert rtp.FRAME_SAMPLES == 160
    assert rtp.SAMPLE_RATE == 8000


def test_seq_diff_handles_wraparound():
    assert rtp.seq_diff(0, 65535) == 1
    assert rtp.seq_diff(65535, 0) == -1
    assert rtp.seq_diff(100, 90) == 10
    assert rtp.seq_diff(32767, 0) == 32767


def test_it_tells_rtcp_from_rtp():
    assert not rtp.is_rtcp(WIRE)
    assert rtp.is_rtcp(RtcpReceiverReport(1).serialize())


def _block(**kw):
    base = dict(
        ssrc=0x11223344,
        fraction_lost=64,
        cumulative_lost=-3,
        highest_sequence=0x0001_0005,
        jitter=42,
        lsr=0xAABBCCDD,
        dlsr=0x00010000,
    )
    base.update(kw)
    return ReportBlock(**base)


def test_it_builds_and_parses_a_compound_sr_with_sdes():
    sr = RtcpSenderReport(
        ssrc=0xCAFE,
        ntp_timestamp=rtp.ntp_from_unix(1_700_000_000.5),
        rtp_timestamp=123456,
        packet_count=250,
        octet_count=40000,
        reports=[_block(), _block(ssrc=9, cumulative_lost=1000)],
    )
    data = rtp.build_compound(sr, RtcpSdes(0xCAFE, "leg@worker"))
    # Header: V=2, RC=2, PT=200, length = (28 + 48) / 4 - 1 words.
    assert data[:4] == struct.pack("!BBH", 0x82, 200, 18)
    assert len(data) % 4 == 0
    parsed = rtp.parse_rtcp(data)
    assert parsed == [sr, RtcpSdes(0xCAFE, "leg@worker")]
    assert parsed[0].reports[0].cumulative_lost == -3
    assert (sr.ntp_timestamp >> 32) == 1_700_000_000 + 2_208_988_800


def test_it_builds_and_parses_rr_and_bye():
    rr = RtcpReceiverReport(ssrc=5, reports=[_block(fraction_lost=255)])
    data = rtp.build_compound(rr, RtcpBye([5]))
    assert rtp.parse_rtcp(data) == [rr, RtcpBye([5])]


def test_it_keeps_unknown_rtcp_packets_opaque():
    app = rtp.RtcpPacket(204, 0, b"name1234")
    assert rtp.parse_rtcp(rtp.build_compound(app)) == [app]


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\xc8",
        b"\x40\xc9\x00\x01\x00\x00\x00\x01",
        b"\x81\xc9\x00\x01\x00\x00\x00\x01",  # RC=1 but no report block
        b"\x80\xc9\x00\x05\x00\x00\x00\x01",  # length beyond datagram
        b"\x80\xc9\x00\x01\x00\x00\x00\x01\x80",  # trailing garbage
        b"\xa0\xc9\x00\x01\x00\x00\x00\x09",  # padding count larger than packet
    ],
)
def test_it_rejects_malformed_rtcp(data):
    with pytest.raises(RtcpParseError):
        rtp.parse_rtcp(data)


def _feed(stats, seqs, start_ts=1000, arrival0=10.0, jitter_fn=None):
    for i, seq in enumerate(seqs):
        ts = (start_ts + (seq - seqs[0]) * 160) & 0xFFFFFFFF
        arrival = arrival0 + (seq - seqs[0]) * 0.02 + (jitter_fn(i) if jitter_fn else 0)
        stats.on_packet(seq & 0xFFFF, ts, arrival, 160)


def test_receiver_stats_count_loss_cumulative_and_fraction():
    st = ReceiverStats(ssrc=1)
    seqs = [s for s in range(100, 200) if s % 10 != 5]  # 10 % loss
    _feed(st, seqs)
    block = st.report_block(now=20.0)
    assert block.highest_sequence == 199
    assert block.cumulative_lost == 10
    assert block.fraction_lost == (10 * 256) // 99  # first packet only validates the source
    # Next interval: no loss.
    _feed(st, list(range(200, 300)), start_ts=1000 + 100 * 160, arrival0=12.0)
    block = st.report_block(now=22.0)
    assert block.fraction_lost == 0
    assert block.cumulative_lost == 10


def test_receiver_stats_extend_the_sequence_across_wraparound():
    st = ReceiverStats(ssrc=1)
    _feed(st, list(range(65530, 65536 + 10)))
    block = st.report_block(now=0)
    assert block.highest_sequence == (1 << 16) + 9
    assert block.cumulative_lost == 0


def test_receiver_stats_jitter_is_zero_for_a_steady_stream_and_grows_with_variance():
    steady = ReceiverStats(ssrc=1)
    _feed(steady, list(range(0, 200)))
    assert steady.report_block(0).jitter == 0
    jittery = ReceiverStats(ssrc=1)
    # Alternate ±5 ms arrival offsets: |D| = 10 ms = 80 timestamp units each packet.
    _feed(jittery, list(range(0, 400)), jitter_fn=lambda i: 0.005 if i % 2 else -0.005)
    assert 75 <= jittery.report_block(0).jitter <= 80


def test_receiver_stats_ignore_a_single_wild_jump_but_follow_a_restart():
    st = ReceiverStats(ssrc=1)
    _feed(st, list(range(0, 10)))
    assert not st.on_packet(30000, 0, 11.0)
    assert st.max_seq == 9
    assert st.on_packet(30001, 0, 11.02)
    assert st.max_seq == 30001


def test_lsr_dlsr_and_round_trip_time():
    st = ReceiverStats(ssrc=1)
    sr = RtcpSenderReport(1, rtp.ntp_from_unix(100.0), 0, 0, 0)
    st.on_sender_report(sr, arrival=50.0)
    block = st.report_block(now=50.25)
    assert block.lsr == rtp.ntp_middle32(sr.ntp_timestamp)
    assert block.dlsr == 65536 // 4
    # The SR sender gets our RR back at its time 100.35: RTT = 0.35 - 0.25.
    rtt = rtp.round_trip_time(block, rtp.ntp_from_unix(100.35))
    assert rtt == pytest.approx(0.1, abs=1e-4)


def test_receiver_stats_can_count_a_packet_without_timing_it():
    st = ReceiverStats(ssrc=1)
    _feed(st, list(range(0, 50)))
    # DTMF event packets keep their start timestamp: counted, but not jitter.
    for i in range(50, 60):
        st.on_packet(i, 50 * 160, 10.0 + i * 0.02, 4, timing=False)
    block = st.report_block(0)
    assert block.jitter == 0
    assert block.highest_sequence == 59 and block.cumulative_lost == 0


# -- RtpForwarder: forwarded packets spliced into one outgoing stream (fake clock) -----------


def forwarder(seq=1000, ts=50_000):
    sender = RtpSender(0, ssrc=0xABCD, sequence=seq, timestamp=ts)
    return sender, rtp.RtpForwarder(sender)


def test_forwarder_continues_the_senders_numbering_and_keeps_upstream_distances():
    sender, fwd = forwarder()
    # Incoming stream: its own SSRC and numbers; packet 7 is lost upstream, 9 comes late.
    out = [fwd.forward(0x77, seq, seq * 160, False, 160, now=seq * 0.02) for seq in (5, 6, 8)]
    late = fwd.forward(0x77, 7, 7 * 160, False, 160, now=0.2)
    assert out == [(1000, 50_000, True), (1001, 50_160, False), (1003, 50_480, False)]
    assert late == (1002, 50_320, False)  # reordering stays reordering
    assert fwd.forward(0x77, 8, 8 * 160, False, 160, now=0.2) is None  # a duplicate
    # The sender stands right behind the newest packet: its own frames would continue there.
    assert (sender.sequence, sender.timestamp) == (1004, 50_640)


def test_forwarder_splices_after_the_sender_sent_frames_of_its_own():
    sender, fwd = forwarder()
    fwd.forward(0x77, 10, 1600, False, 160, now=0.0)
    fwd.interrupt(now=0.005)  # e.g. DTMF: the tick numbers packets now
    for _ in range(5):
        sender.next_packet(b"\x00" * 4)  # the tick's own packets: 1001..1005
    out = fwd.forward(0x77, 11, 1760, False, 160, now=0.105)
    assert out == (1006, 50_160 + 5 * 160, True)  # continues, marked as a new talkspurt
    assert fwd.forward(0x77, 12, 1920, False, 160, now=0.125) == (1007, 50_160 + 6 * 160, False)
    # Anything from before the splice could collide with the tick's numbers: dropped.
    assert fwd.forward(0x77, 9, 1440, False, 160, now=0.13) is None


def test_forwarder_counts_a_pause_into_the_clock_before_the_tick_takes_over():
    sender, fwd = forwarder()
    fwd.forward(0x77, 10, 1600, False, 160, now=1.0)
    fwd.interrupt(now=1.5)  # nothing forwarded for 500 ms, then music on hold starts
    # The tick's first frame carries a timestamp 25 frames after the last forwarded one.
    assert sender.sequence == 1001
    assert (sender.timestamp - 50_000) == 25 * 160


def test_forwarder_pause_counts_until_the_first_packet_after_it():
    _, fwd = forwarder()
    fwd.forward(0x77, 10, 1600, False, 160, now=1.0)
    fwd.pause(now=1.02)  # the browser side disconnects ...
    out = fwd.forward(0x99, 500, 123_456, False, 160, now=3.02)  # ... another call, 2 s later
    assert out == (1001, 50_000 + 101 * 160, True)  # 2.02 s after the last packet


def test_forwarder_starts_over_on_a_new_source_or_a_jump():
    _, fwd = forwarder()
    fwd.forward(0x77, 10, 1600, False, 160, now=0.0)
    assert fwd.forward(0x78, 40_000, 9, False, 160, now=0.02) == (1001, 50_160, True)
    # Same SSRC, but the numbering jumped (RFC 3550 §8.2 restart): still contiguous for us.
    assert fwd.forward(0x78, 20_000, 99, False, 160, now=0.04) == (1002, 50_320, True)
    assert fwd.splices == 3


def test_forwarder_renumbers_over_packets_it_did_not_forward_but_keeps_the_pause():
    _, fwd = forwarder()
    fwd.forward(0x77, 10, 1600, False, 160, now=0.0)
    fwd.skip()  # 11: comfort noise, not for this receiver
    fwd.skip()  # 12
    out = fwd.forward(0x77, 13, 1600 + 3 * 160, False, 160, now=0.06)
    assert out == (1001, 50_000 + 3 * 160, True)  # no false loss; the time is still there


def test_forwarder_wraps_sequence_and_timestamp():
    _, fwd = forwarder(seq=0xFFFF, ts=0xFFFF_FFC0)
    assert fwd.forward(1, 3, 0, False, 160, now=0.0) == (0xFFFF, 0xFFFF_FFC0, True)
    assert fwd.forward(1, 4, 160, False, 160, now=0.02) == (0, 0x60, False)


def test_payload_bounds_match_the_parser():
    for pkt in (
        RtpPacket(0, 1, 2, 3, b"\x01" * 160),
        RtpPacket(8, 1, 2, 3, b"\x02" * 80, marker=True, csrc=(7, 8)),
        RtpPacket(0, 1, 2, 3, b"\x03" * 10, extension=RtpExtension(0xBEDE, b"\x10\xaa\0\0")),
        RtpPacket(0, 1, 2, 3, b"\x04" * 10, padding=4),
    ):
        data = pkt.serialize()
        start, end = rtp.payload_bounds(data)
        assert data[start:end] == pkt.payload
    with pytest.raises(RtpParseError):
        rtp.payload_bounds(b"\x80\x00\x00")
    with pytest.raises(RtpParseError):
        rtp.payload_bounds(b"\x40" + bytes(11))  # version 1


def test_forwarder_marks_a_pause_the_source_did_not_mark():
    _, fwd = forwarder()
    fwd.forward(0x77, 10, 1600, False, 160, now=0.0)
    assert fwd.forward(0x77, 11, 1760, False, 160, now=0.02)[2] is False
    # Silence suppression: the next packet follows in sequence but 1 s later in media time.
    assert fwd.forward(0x77, 12, 1760 + 8160, False, 160, now=1.04) == (1002, 58_320, True)
    # A loss is not a pause: the timestamp advances by exactly the missing packets.
    assert fwd.forward(0x77, 14, 1760 + 8160 + 320, False, 160, now=1.08)[2] is False
