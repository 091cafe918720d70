"""回線テスト (issue 13, item 4) on the real stack: the phone WebSocket to the real ASGI app,
the embedded sipworker in this process, Kamailio as the PBX, and an aiortc peer as the page
(its microphone a tone, or silence; it records what it hears).

The worker plays the page's own audio back about a second later over the page's peer
connection: the tone comes back, late, and the reported level is high; a silent microphone
gives "silent"; the test gives way to an incoming call and is refused during a call.
"""

import asyncio
import time

import numpy as np
import pytest
from channels.db import database_sync_to_async

from phone.media.bridge import ice_host_addresses
from phone.worker import diagnostics
from tests.integration.test_call_control import Desk
from tests.phone.ws import communicator
from tests.support import analysis
from tests.support.fake_browser import FakeBrowser

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("loopback_ice"),
]

PAGE_HZ, OTHER_HZ = 1000, 1300


class Page(Desk):
    """A phone page (the call-control tests' Desk) that may open unregistered and waits
    for its peer connection."""

    @classmethod
    async def open(cls, user, tone_hz=PAGE_HZ, *, registered=True):
        ws = await database_sync_to_async(communicator)(user)
        assert (await ws.connect())[0]
        browser = FakeBrowser(tone_hz)
        page = cls(ws, browser)
        await page.send("webrtc.offer", sdp=await browser.offer())
        await browser.accept_answer((await page.next("webrtc.answer"))["sdp"])
        if registered:
            await page.next("registration", state="registered")
        await wait_connected(browser)
        return page

    def mute(self):
        """The microphone goes silent (digital zeros: a muted or dead input)."""
        track = self.browser.pc.getTransceivers()[0].sender.track
        track.tone.level = 0.0


async def wait_connected(browser, timeout=10.0):
    deadline = time.monotonic() + timeout
    while browser.pc.connectionState != "connected":
        assert time.monotonic() < deadline, "the page's peer connection did not come up"
        await asyncio.sleep(0.05)


@pytest.fixture
async def pages(office):
    opened = []

    async def open_page(user, tone_hz=PAGE_HZ, **kwargs):
        page = await Page.open(user, tone_hz, **kwargs)
        opened.append(page)
        return page

    yield open_page
    for page in opened:
        await page.close()


def first_sound(heard, since, threshold_dbfs=-40.0):
    """Arrival time of the first 20 ms the page heard after `since` above the threshold."""
    for at, pcm in heard:
        if at >= since and len(pcm) and analysis.rms_dbfs(pcm) > threshold_dbfs:
            return at
    return None


async def test_the_page_hears_its_own_tone_a_second_later_with_a_high_level(pages, cast):
    page = await pages(cast.alice)
    started = time.monotonic()
    await page.send("linetest.start")
    running = await page.next("linetest", state="running")
    assert running["delay_ms"] == 1000
    await asyncio.sleep(3.0)
    await page.send("linetest.stop")
    done = await page.next("linetest", state="done")
    assert done["result"] == "ok"
    assert done["level"] >= 60 and done["dbfs"] > -20  # a 0.3 full-scale sine: -13.5 dBFS
    assert done["packets"] > 50

    back = first_sound(page.browser.heard, started)
    assert back is not None, "the echo never came back"
    assert 0.8 <= back - started <= 2.5, f"echo after {back - started:.2f} s"
    pcm = np.concatenate([p for at, p in page.browser.heard if back <= at <= back + 1.5])
    assert analysis.dominant_frequency(pcm, page.browser.rate) == pytest.approx(PAGE_HZ, abs=15)

    # Stopped: the echo stops too (at most the buffered second is still in flight).
    await asyncio.sleep(1.0)
    after = time.monotonic()
    await asyncio.sleep(1.0)
    assert first_sound(page.browser.heard, after) is None


async def test_a_silent_microphone_gives_no_sound_input(pages, cast):
    page = await pages(cast.alice)
    page.mute()
    await page.send("linetest.start")
    await page.next("linetest", state="running")
    await asyncio.sleep(2.0)
    update = await page.next("linetest", state="running")
    assert update["packets"] > 0 and update["level"] == 0
    await page.send("linetest.stop")
    done = await page.next("linetest", state="done")
    assert done["result"] == "silent" and done["level"] == 0


async def test_it_stops_by_itself(pages, cast, monkeypatch):
    monkeypatch.setattr(diagnostics, "LINE_TEST_SECONDS", 1.5)
    page = await pages(cast.alice)
    await page.send("linetest.start")
    started = time.monotonic()
    done = await page.next("linetest", state="done", timeout=5)
    assert done["result"] == "ok"
    assert 1.4 <= time.monotonic() - started <= 3.0


async def test_it_runs_without_registration_the_page_tells_why(cast, settings):
    # No PBX answers for tenant B: the lamp is not green, but the page's half of the path
    # (microphone → server → speaker) can still be tested.
    with ice_host_addresses(["127.0.0.1"]):
        page = await Page.open(cast.charlie, registered=False)
        try:
            await page.send("linetest.start")
            await page.next("linetest", state="running")
            await asyncio.sleep(1.5)
            await page.send("linetest.stop")
            done = await page.next("linetest", state="done")
            assert done["result"] == "ok"
            registration = await page.next("registration")
            assert registration["state"] != "registered"
        finally:
            await page.close()


async def test_an_incoming_call_ends_the_test_and_a_call_refuses_it(pages, cast):
    bob = await pages(cast.bob, OTHER_HZ)
    alice = await pages(cast.alice)
    await bob.send("linetest.start")
    await bob.next("linetest", state="running")

    await alice.send("dial", number="1002")
    incoming = await bob.next("incoming")
    done = await bob.next("linetest", state="done")
    assert done["result"] == "incoming"

    # The caller's line has a call (ringing): refused with a clear error, the call goes on.
    await alice.send("linetest.start")
    error = await alice.next("error", request="linetest.start")
    assert error["code"] == "in_call"
    await bob.send("answer", call_id=incoming["id"])
    call = await bob.next("call", id=incoming["id"], state="incall")
    await bob.send("linetest.start")
    error = await bob.next("error", request="linetest.start")
    assert error["code"] == "in_call" and "call" in error["message"]
    # ... and the call is untouched: bob hears alice's tone.
    since = time.monotonic()
    await asyncio.sleep(1.5)
    sound = analysis.non_silent(page_pcm(bob, since), bob.browser.rate)
    assert analysis.dominant_frequency(sound, bob.browser.rate) == pytest.approx(PAGE_HZ, abs=15)
    await bob.send("hangup", call_id=call["id"])
    await bob.next("call", id=call["id"], state="ended")


def page_pcm(page, since):
    return page.browser.since(since)


async def test_a_page_without_media_gets_no_media(office, cast):
    # The page's peer connection never came up (here: never offered): nothing can be echoed.
    ws = await database_sync_to_async(communicator)(cast.alice)
    assert (await ws.connect())[0]
    page = Page(ws, FakeBrowser())
    try:
        await page.next("registration", state="registered")
        await page.send("linetest.start")
        done = await page.next("linetest", state="done")
        assert done["result"] == "no_media" and done["packets"] == 0
    finally:
        await page.close()
