"""A line's diagnostics: the line test (回線テスト, issue 13, item 4) and call quality (item 5).

Part of the line's actor (phone.worker.line): every method runs on the line's task, from the
line's queue; timers post LineTestTick / QualityTick to that queue, never act themselves.

Line test: the page asks (linetest.start); its own bridge plays back what the page sends,
about a second later (phone.media.echo), and the page hears how loud it arrived. It never
touches a call: refused while the line has one, ended when a call comes in or is placed, and
it stops by itself after LINE_TEST_SECONDS.

Quality: while a call is up, every QUALITY_SECONDS the leg's RTCP view (what we receive from
the PBX, and the far end's receiver reports about what we send: loss, jitter, RTT by LSR/DLSR,
RFC 3550 §6.4) is folded into the call's QualityTracker with what the page reports from
getStats; the pages get a `quality` message, the history row the summary (phone.quality).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from phone.media.echo import SILENT_DBFS, EchoSource, level_percent
from phone.signalling.protocol import QualityStats
from phone.signalling.schema import error_message, server_message
from phone.worker.call import LineCall, Phase

if TYPE_CHECKING:
    from phone.media.bridge import MediaBridge
    from phone.worker.line import Line

LINE_TEST_SECONDS = 10.0
LINE_TEST_DELAY = 1.0
LINE_TEST_REPORT_SECONDS = 0.5
QUALITY_SECONDS = 2.0
PAGE_STATS_MIN_SECONDS = 1.0  # the page's quality.stats: at most one a second per call


@dataclass(eq=False)
class LineTest:
    session: str
    bridge: MediaBridge
    echo: EchoSource
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class LineTestTick:
    test: LineTest


@dataclass(frozen=True, slots=True)
class QualityTick:
    pass


class Diagnostics:
    def __init__(self, line: Line) -> None:
        self.line = line
        self.test: LineTest | None = None
        self._quality_timer: asyncio.TimerHandle | None = None

    # -- line test ------------------------------------------------------------------------------

    async def start_test(self, session: str) -> None:
        line = self.line
        if line.calls or line.joined:
            await line.send(session, error_message("in_call", request="linetest.start"))
            return
        if self.test is not None:
            await self.end_test(self.test, "stopped")
        bridge = line.host.media.bridge_for(session)
        if bridge is None or bridge.state != "connected":
            # The page's peer connection never came up (ICE/DTLS): nothing to test with.
            await line.send(session, self._message("done", "no_media", None))
            return
        test = self.test = LineTest(session, bridge, EchoSource(LINE_TEST_DELAY))
        bridge.tap_browser(test.echo.feed)
        line.tones[session] = test.echo
        line.route_media()
        await line.send(session, self._message("running", "", test))
        self._tick_later(test)

    async def stop_test(self, session: str) -> None:
        if self.test is not None and self.test.session == session:
            await self.end_test(self.test, "")

    async def on_tick(self, test: LineTest) -> None:
        if self.test is not test:
            return  # ended meanwhile
        if time.monotonic() - test.started >= LINE_TEST_SECONDS:
            await self.end_test(test, "")
            return
        await self.line.send(test.session, self._message("running", "", test))
        self._tick_later(test)

    async def end_test(self, test: LineTest, result: str, *, tell: bool = True) -> None:
        """result "" = judge from what was heard (ok | silent | no_media)."""
        if self.test is not test:
            return
        self.test = None
        test.bridge.tap_browser(None)
        line = self.line
        if line.tones.get(test.session) is test.echo:
            del line.tones[test.session]
        line.route_media()
        if tell and test.session in line.sessions:
            await line.send(test.session, self._message("done", result or _judge(test), test))

    async def interrupt(self, result: str = "stopped") -> None:
        """A call starts (comes in, is dialled, picked up): the test gives way at once."""
        if self.test is not None:
            await self.end_test(self.test, result)

    async def media_replaced(self, session: str) -> None:
        """The page negotiated a new peer connection: the test's bridge is gone with the old
        one; the page may start again."""
        if self.test is not None and self.test.session == session:
            await self.end_test(self.test, "stopped")

    async def session_gone(self, session: str) -> None:
        if self.test is not None and self.test.session == session:
            await self.end_test(self.test, "", tell=False)

    def _tick_later(self, test: LineTest) -> None:
        asyncio.get_running_loop().call_later(
            LINE_TEST_REPORT_SECONDS, self.line.post, LineTestTick(test)
        )

    @staticmethod
    def _message(state: str, result: str, test: LineTest | None) -> dict[str, object]:
        echo = test.echo if test is not None else None
        dbfs = echo.peak_dbfs if echo is not None else -90.0
        return server_message(
            "linetest",
            state=state,
            result=result,
            level=level_percent(dbfs),
            dbfs=round(dbfs, 1),
            packets=echo.frames_in if echo is not None else 0,
            delay_ms=echo.delay_ms if echo is not None else 0,
        )

    # -- call quality ---------------------------------------------------------------------------

    def watch_quality(self) -> None:
        """A call is up: sample every QUALITY_SECONDS while any is (idempotent)."""
        if self._quality_timer is None:
            self._quality_timer = asyncio.get_running_loop().call_later(
                QUALITY_SECONDS, self.line.post, QualityTick()
            )

    async def on_quality_tick(self) -> None:
        self._quality_timer = None
        up = [c for c in self.line.calls.values() if c.phase is Phase.INCALL and c.media]
        for call in up:
            sample_leg(call)
            await self._tell(call)
        if any(c.live for c in self.line.calls.values()):
            self.watch_quality()

    async def page_stats(self, session: str, stats: QualityStats) -> None:
        call = self.line.calls.get(stats.call_id)
        if call is None or not call.live:
            return  # a late report of an ended call: nothing to fold it into
        now = time.monotonic()
        if now - call.quality_from_page_at < PAGE_STATS_MIN_SECONDS:
            return  # rate limit: one a second is plenty for a 2 s indicator
        call.quality_from_page_at = now
        try:
            loss, jitter = float(stats.loss), float(stats.jitter)
            rtt = None if stats.rtt is None else float(stats.rtt)
        except (OverflowError, TypeError, ValueError):
            return  # a 400-digit integer is valid JSON: not a measurement
        call.quality.add("browser", loss, jitter, rtt)

    async def _tell(self, call: LineCall) -> None:
        now = call.quality.current()
        if now is None or call.internal:
            return
        await self.line.broadcast(
            server_message(
                "quality",
                call_id=call.id,
                state=now.state,
                mos=round(now.mos, 2),
                loss=round(now.loss_pct, 2),
                jitter=round(now.jitter_ms, 1),
                rtt=None if now.rtt_ms is None else round(now.rtt_ms, 1),
            )
        )


def sample_leg(call: LineCall) -> None:
    """Fold the leg's RTCP view into the call's quality (module doc)."""
    if call.media is None:
        return
    leg = call.media.leg
    stats = leg.stats
    if stats.packets_received:
        # What we receive from the PBX (our own receiver statistics, RFC 3550 §A.3, §A.8).
        call.quality.add("pbx-rx", stats.fraction_lost, stats.jitter_ms, stats.rtt_ms)
    report = leg.remote_report
    if report is not None and report is not call.quality_report:
        # What the far end receives from us: each of its receiver reports about our SSRC,
        # folded once (they come every ~5 s, we look every QUALITY_SECONDS).
        call.quality_report = report
        call.quality.add(
            "pbx-tx", stats.remote_fraction_lost or 0.0, stats.remote_jitter_ms or 0.0, stats.rtt_ms
        )


def _judge(test: LineTest) -> str:
    echo = test.echo
    if echo.frames_in == 0:
        return "no_media"
    if echo.peak_dbfs < SILENT_DBFS:
        return "silent"
    return "ok"
