import pytest

from phone.media.dtmf import (
    DtmfReceiver,
    TelephoneEvent,
    TelephoneEventError,
    dtmf_ticks,
    event_code,
)
from phone.media.rtp import RtpPacket, RtpSender


def send(digits, **kw):
    """Turn the tick plan into RTP packets the way RtpLeg does: one event timestamp per digit."""
    sender = RtpSender(0, ssrc=42, sequence=100, timestamp=1000)
    packets, event_ts = [], None
    for tick in dtmf_ticks(digits, **kw):
        if tick is None:
            sender.skip()  # the leg sends an audio frame here
            continue
        if tick.marker:  # first packet of an event: its start time is the event timestamp
            event_ts = sender.timestamp
        packets.append(
            sender.next_packet(
                tick.payload, marker=tick.marker, payload_type=101, timestamp=event_ts
            )
        )
    return packets


def test_it_maps_digits_to_event_codes():
    assert [event_code(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert event_code("a") == 12
    with pytest.raises(ValueError):
        event_code("E")


def test_a_digit_is_growing_updates_then_three_end_packets():
    ticks = list(dtmf_ticks("5", duration_ms=100))
    events = [TelephoneEvent.parse(t.payload) for t in ticks]
    assert [e.event for e in events] == [5] * 7
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert [t.marker for t in ticks] == [True] + [False] * 6
    assert all(e.volume == 10 for e in events)


def test_gaps_separate_digits_and_each_event_keeps_one_timestamp():
    ticks = list(dtmf_ticks("1#", duration_ms=60, gap_ms=60))
    # 2 updates + 3 ends, 3 gap ticks, 2 updates + 3 ends; no trailing gap.
    assert [t is None for t in ticks] == [False] * 5 + [True] * 3 + [False] * 5
    packets = send("1#", duration_ms=60, gap_ms=60)
    first, second = packets[:5], packets[5:]
    assert len({p.timestamp for p in first}) == 1
    assert len({p.timestamp for p in second}) == 1
    # The second event starts after 5 packet intervals + 3 gap intervals of media clock.
    assert second[0].timestamp - first[0].timestamp == 8 * 160
    assert [p.marker for p in packets] == [True, False, False, False, False] * 2
    seqs = [p.sequence_number for p in packets]
    assert seqs == list(range(100, 110))


def test_a_very_short_event_still_has_a_marker():
    ticks = list(dtmf_ticks("9", duration_ms=10))
    assert [t.marker for t in ticks] == [True, False, False]
    assert all(t.end for t in ticks)


def test_it_validates_before_sending_anything():
    with pytest.raises(ValueError):
        list(dtmf_ticks("12x"))
    with pytest.raises(ValueError):
        list(dtmf_ticks("1", volume=64))


def test_the_receiver_reports_each_event_once():
    rx = DtmfReceiver(payload_type=101)
    events = [rx.on_packet(p) for p in send("0123456789*#ABCD")]
    digits = [e.digit for e in events if e is not None]
    assert "".join(digits) == "0123456789*#ABCD"
    assert rx.digits == "0123456789*#ABCD"


def test_repeated_digits_are_separate_events():
    rx = DtmfReceiver()
    for p in send("1100"):
        rx.on_packet(p)
    assert rx.digits == "1100"


def test_the_receiver_survives_loss_of_all_but_one_end_packet():
    rx = DtmfReceiver()
    packets = send("73")
    survivors = [p for p in packets if TelephoneEvent.parse(p.payload).end][::3]
    assert len(survivors) == 2
    for p in survivors:
        rx.on_packet(p)
    assert rx.digits == "73"


def test_the_receiver_ignores_duplicates_reordering_and_other_payload_types():
    rx = DtmfReceiver()
    packets = send("42")
    shuffled = packets[::-1] + packets
    got = [e.digit for p in shuffled if (e := rx.on_packet(p)) is not None]
    assert sorted(got) == ["2", "4"]
    audio = RtpPacket(0, 1, 2, 42, b"\xff" * 160)
    assert rx.on_packet(audio) is None
    bad = RtpPacket(101, 1, 99999, 42, b"\x01")
    assert rx.on_packet(bad) is None


def test_non_dtmf_events_are_not_digits():
    rx = DtmfReceiver()
    flash = RtpPacket(101, 1, 5, 42, TelephoneEvent(16, True, 10, 800).pack())
    assert rx.on_packet(flash) is None
    assert rx.digits == ""


def test_telephone_event_payload_round_trip_and_errors():
    ev = TelephoneEvent(11, True, 63, 65535)
    assert ev.pack() == bytes([11, 0x80 | 63, 0xFF, 0xFF])
    assert TelephoneEvent.parse(ev.pack()) == ev
    assert ev.digit == "#"
    with pytest.raises(TelephoneEventError):
        TelephoneEvent.parse(b"\x01\x02")
