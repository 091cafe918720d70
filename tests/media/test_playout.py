from phone.media.playout import PlayoutBuffer
from phone.media.rtp import RtpPacket

TICK = 0.02


def pkt(seq, ssrc=1, ts=None):
    seq &= 0xFFFF
    return RtpPacket(
        0, seq, (ts if ts is not None else seq * 160) & 0xFFFFFFFF, ssrc, bytes([seq & 0xFF])
    )


def simulate(buf, arrivals, duration, tick_offset=0.005):
    """arrivals: list of (time, packet). Ticks every 20 ms. Returns the list of get() results."""
    arrivals = sorted(arrivals, key=lambda a: a[0])
    out = []
    i = 0
    n_ticks = round(duration / TICK)
    for k in range(n_ticks):
        now = k * TICK + tick_offset
        while i < len(arrivals) and arrivals[i][0] <= now:
            buf.put(arrivals[i][1], arrivals[i][0])
            i += 1
        out.append(buf.get(now))
    return out


def seqs(frames):
    """The played sequence, with 'L' for concealment; leading/idle Nones dropped."""
    return [("L" if f.lost else f.sequence) for f in frames if f is not None]


def steady(seq_list, start=0.0, ssrc=1):
    # Packet with sequence s is sent at (s - first) * 20 ms.
    first = seq_list[0]
    return [(start + ((s - first) & 0xFFFF) * TICK, pkt(s, ssrc)) for s in seq_list]


def test_it_plays_a_steady_stream_in_order_after_the_target_delay():
    buf = PlayoutBuffer(target_delay=0.06)
    frames = simulate(buf, steady(list(range(100, 150))), duration=1.2)
    # Held for ~60 ms before the first frame: the first three ticks yield nothing.
    assert frames[:3] == [None, None, None]
    assert frames[3].sequence == 100
    assert seqs(frames)[:50] == list(range(100, 150))
    assert buf.stats.concealed <= buf.idle_after + 1  # only the tail after the stream ends
    assert buf.stats.late == 0


def test_a_single_loss_gives_exactly_one_concealment_frame_and_playout_continues():
    buf = PlayoutBuffer()
    arr = [a for a in steady(list(range(0, 50))) if a[1].sequence_number != 20]
    played = seqs(simulate(buf, arr, duration=1.2))
    assert played[:50] == [*range(0, 20), "L", *range(21, 50)]


def test_burst_loss_is_concealed_frame_by_frame_and_playout_resumes():
    buf = PlayoutBuffer()
    lost = set(range(10, 18))
    arr = [a for a in steady(list(range(0, 60))) if a[1].sequence_number not in lost]
    played = seqs(simulate(buf, arr, duration=1.3))
    assert played[:60] == [*range(0, 10), *["L"] * 8, *range(18, 60)]


def test_a_loss_at_the_head_when_the_buffer_runs_dry_does_not_stall():
    # Small target delay so the buffer is often empty when a tick comes.
    buf = PlayoutBuffer(target_delay=0.02)
    arr = [a for a in steady(list(range(0, 40))) if a[1].sequence_number not in (5, 6)]
    played = seqs(simulate(buf, arr, duration=0.9))
    assert played[:40] == [*range(0, 5), "L", "L", *range(7, 40)]


def test_reordered_packets_are_played_in_sequence_order():
    buf = PlayoutBuffer(target_delay=0.06)
    arr = steady(list(range(0, 40)))
    # Swap arrival times of neighbours: 1 arrives after 2, 3 after 4, ...
    for i in range(1, 38, 2):
        (t1, p1), (t2, p2) = arr[i], arr[i + 1]
        arr[i], arr[i + 1] = (t2, p1), (t1, p2)
    played = seqs(simulate(buf, arr, duration=0.9))
    assert played[:40] == list(range(0, 40))
    assert buf.stats.late == 0


def test_duplicates_are_dropped_and_counted():
    buf = PlayoutBuffer()
    arr = steady(list(range(0, 30)))
    arr += [(t + 0.001, p) for t, p in arr[5:10]]
    played = seqs(simulate(buf, arr, duration=0.7))
    assert played[:30] == list(range(0, 30))
    assert buf.stats.duplicates == 5


def test_it_plays_across_the_16_bit_sequence_wraparound():
    buf = PlayoutBuffer()
    seq_list = [(65530 + i) & 0xFFFF for i in range(20)]
    played = seqs(simulate(buf, steady(seq_list), duration=0.5))
    assert played[:20] == [65530, 65531, 65532, 65533, 65534, 65535, *range(0, 14)]


def test_it_starts_correctly_when_the_first_packets_straddle_the_wrap_out_of_order():
    buf = PlayoutBuffer(target_delay=0.06)
    buf.put(pkt(0), 0.0)
    buf.put(pkt(65535), 0.001)
    buf.put(pkt(1), 0.02)
    assert buf.get(0.07).sequence == 65535
    assert buf.get(0.09).sequence == 0
    assert buf.get(0.11).sequence == 1


def test_a_late_packet_is_dropped_and_its_slot_concealed():
    buf = PlayoutBuffer(target_delay=0.04)
    arr = steady(list(range(0, 30)))
    arr[10] = (arr[10][0] + 0.2, arr[10][1])  # 200 ms late: its slot has long passed
    played = seqs(simulate(buf, arr, duration=0.7))
    assert played[:30] == [*range(0, 10), "L", *range(11, 30)]
    assert buf.stats.late == 1


def test_long_silence_goes_idle_and_the_stream_resumes_after_it():
    buf = PlayoutBuffer(target_delay=0.06, idle_after=10)
    # Talk spurt, 3 s of nothing (contiguous sequence numbers, timestamp jumps), talk spurt.
    first = steady(list(range(0, 25)))
    second = [(4.0 + i * TICK, pkt(25 + i, ts=(25 + i) * 160 + 24000)) for i in range(25)]
    frames = simulate(buf, first + second, duration=5.0)
    played = seqs(frames)
    assert played[:25] == list(range(0, 25))
    # Concealment only for the idle_after+... frames before it gives up; then silence (None).
    assert played[25:35] == ["L"] * 10
    assert played[35:60] == list(range(25, 50))
    assert frames[100] is None  # deep in the silence: nothing, not a stream of losses


def test_a_short_pause_with_contiguous_sequence_numbers_re_anchors_instead_of_stalling():
    buf = PlayoutBuffer(target_delay=0.04, idle_after=50)
    first = steady(list(range(0, 20)))
    # Sender pauses 160 ms (e.g. our side played air meanwhile) and continues at seq 20.
    second = [(0.4 + 0.16 + i * TICK, pkt(20 + i)) for i in range(30)]
    played = seqs(simulate(buf, first + second, duration=1.4))
    real = [p for p in played if p != "L"]
    assert real == list(range(0, 50))  # everything after the pause played, nothing dropped
    assert buf.stats.late == 0


def test_ssrc_change_resets_and_plays_the_new_source():
    buf = PlayoutBuffer()
    a = steady(list(range(0, 20)), ssrc=1)
    b = steady(list(range(40000, 40020)), start=0.6, ssrc=2)
    played = seqs(simulate(buf, a + b, duration=1.4))
    assert [p for p in played if p != "L"] == [*range(0, 20), *range(40000, 40020)]
    assert buf.stats.resets == 1
    assert buf.ssrc == 2


def test_a_big_sequence_jump_on_the_same_ssrc_resets():
    buf = PlayoutBuffer()
    a = steady(list(range(0, 20)))
    b = steady(list(range(30000, 30020)), start=0.6)
    played = seqs(simulate(buf, a + b, duration=1.4))
    assert [p for p in played if p != "L"] == [*range(0, 20), *range(30000, 30020)]
    assert buf.stats.resets == 1


def test_a_sender_with_a_faster_clock_does_not_grow_latency_without_bound():
    buf = PlayoutBuffer(target_delay=0.06, max_extra_frames=3)
    # 1 % fast sender for 20 s: 2 frames of surplus per 10 s.
    arr = [(i * TICK * 0.99, pkt(i)) for i in range(1000)]
    simulate(buf, arr, duration=19.6)
    assert buf.depth <= buf.target_frames + 3
    assert buf.stats.overflow >= 1


def test_a_buffer_nobody_pulls_from_stays_bounded():
    buf = PlayoutBuffer(target_delay=0.06, max_extra_frames=4)
    for i in range(500):
        buf.put(pkt(i), i * TICK)
    depth = buf.depth
    assert depth <= buf.target_frames + 4
    assert buf.get(10.0).sequence == 500 - depth  # the newest frames were kept


def test_concealment_frames_carry_an_estimated_timestamp():
    buf = PlayoutBuffer(target_delay=0.02)
    buf.put(pkt(0), 0.0)
    buf.put(pkt(2), 0.04)
    assert buf.get(0.03).timestamp == 0
    lost = buf.get(0.05)
    assert lost.lost and lost.timestamp == 160 and lost.payload_type == 0
    assert buf.get(0.07).sequence == 2


def late(arrivals, seq, by):
    return [(t + by, p) if p.sequence_number == seq else (t, p) for t, p in arrivals]


def test_adaptive_delay_grows_one_frame_after_a_late_packet_and_then_holds_it():
    buf = PlayoutBuffer(target_delay=0.04, max_delay=0.10)
    # Slots play 45 ms after nominal arrival here (40 ms + the tick phase): 50 ms is late.
    arr = late(late(steady(list(range(0, 60))), 10, 0.05), 30, 0.05)
    frames = simulate(buf, arr, duration=1.5)
    assert frames[:2] == [None, None] and frames[2].sequence == 0  # 40 ms, not 60
    played = seqs(frames)
    # Packet 10 is lost to the jitter once; one stretch frame adds 20 ms; packet 30, just as
    # late, now plays in its slot.
    assert played[:61] == [*range(0, 10), "L", "L", *range(11, 60)]
    assert buf.stats.late == 1 and buf.stats.stretched == 1 and buf.extra == 1


def test_adaptive_delay_stops_at_max_delay():
    buf = PlayoutBuffer(target_delay=0.04, max_delay=0.08)
    arr = steady(list(range(0, 200)))
    for seq in range(10, 200, 10):
        arr = late(arr, seq, 0.07 + seq / 1000)  # ever later: more than any delay helps
    simulate(buf, arr, duration=4.5)
    assert buf.target_frames + buf.extra == 4  # 80 ms
    assert buf.stats.stretched == 2


def test_adaptive_delay_shrinks_back_when_the_jitter_is_gone():
    buf = PlayoutBuffer(target_delay=0.04, max_delay=0.10, shrink_after=100)
    arr = late(steady(list(range(0, 400))), 10, 0.05)
    frames = simulate(buf, arr, duration=8.2)
    assert buf.stats.stretched == 1 and buf.stats.shrunk == 1 and buf.extra == 0
    played = [p for p in seqs(frames) if p != "L"]
    assert played == sorted(played) and len(played) == 398  # 10 late, one dropped to shrink
    assert buf.stats.late == 1


def test_fixed_delay_is_the_default_of_the_buffer():
    buf = PlayoutBuffer(target_delay=0.04)
    arr = late(late(steady(list(range(0, 60))), 10, 0.05), 30, 0.05)
    simulate(buf, arr, duration=1.5)
    assert buf.stats.late == 2 and buf.extra == 0
