"""The line test's echo source (phone.media.echo) on its own: a second late, bounded, and the
level it reports. No network: the integration tests (test_line_test.py) run it for real."""

import numpy as np
import pytest

from phone.media import g711
from phone.media.echo import FLOOR_DBFS, EchoSource, frame_dbfs, level_percent
from phone.media.tones import SineTone
from tests.support import analysis


def test_it_plays_back_what_it_heard_a_second_later():
    echo = EchoSource(delay=1.0)
    tone = SineTone(1000)
    out = []
    for _ in range(150):  # 3 s: one frame in, one out, as the bridge does every 20 ms
        echo.feed(tone.next_frame())
        out.append(echo.next_frame())
    silent = [i for i, frame in enumerate(out) if not frame.any()]
    assert silent == list(range(50))  # the first second: nothing yet
    played = np.concatenate(out[50:])
    assert analysis.dominant_frequency(played) == pytest.approx(1000, abs=10)
    assert echo.delay_ms == 1000


def test_it_keeps_a_bounded_buffer_and_stays_a_second_behind():
    echo = EchoSource(delay=1.0, slack=0.5)
    for _ in range(10_000):  # a page sending far faster than we play: older audio is dropped
        echo.feed(np.full(160, 1000, dtype=np.int16))
    assert len(echo._frames) == 75
    for _ in range(25):
        assert echo.next_frame().any()
    assert not echo.next_frame().any()  # down to the delay again: waits for more


def test_it_recuts_odd_sized_packets_and_plays_encoded():
    echo = EchoSource(delay=0.02)
    for _ in range(4):
        echo.feed(SineTone(500).next_frame(240))  # 30 ms packets
    assert echo.frames_in == 6
    assert len(echo.next_payload(g711.PAYLOAD_TYPE_PCMU)) == 160


def test_levels():
    assert frame_dbfs(np.zeros(160, dtype=np.int16)) == FLOOR_DBFS
    full = SineTone(1000, level=1.0).next_frame()
    assert frame_dbfs(full) == pytest.approx(-3.0, abs=0.1)
    assert level_percent(FLOOR_DBFS) == 0 and level_percent(-3.0) == 95
    echo = EchoSource()
    echo.feed(SineTone(1000, level=0.3).next_frame())
    assert echo.peak_dbfs == pytest.approx(-13.5, abs=0.2)
