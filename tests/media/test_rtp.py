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
