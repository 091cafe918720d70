"""Our own UA (tests/support/ua.Phone) as a far end for browser tests, on a thread of its own:
Playwright's sync API owns this thread's event loop. Unlike baresip's recorder it keeps every
frame it receives, across re-INVITEs, so the page's audio can be followed through a hold."""

import asyncio
import threading

from phone.sip.useragent import CallState, CallStateChanged, IncomingCall
from tests.support.ua import Phone


class ThreadedPhone:
    def __init__(self, pbx, ext: str, tone_hz: float = 700.0):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.phone = self.run(self._open(pbx, ext, tone_hz))

    def run(self, coro, timeout: float = 15):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _open(self, pbx, ext, tone_hz):
        phone = await Phone.open(pbx, ext, tone_hz=tone_hz)
        await phone.register()
        return phone

    async def _answer_next(self):
        event = await self.phone.wait_for(IncomingCall, timeout=15)
        self.phone.ring(event.call_id)
        await self.phone.answer(event.call_id)
        return event.call_id

    def answer_next_call(self) -> str:
        return self.run(self._answer_next(), timeout=20)

    def wait_ended(self, call_id: str, timeout: float = 10):
        return self.run(
            self.phone.wait_for(
                CallStateChanged, call_id=call_id, state=CallState.TERMINATED, timeout=timeout
            ),
            timeout=timeout + 5,
        )

    def heard(self, call_id: str):
        return self.run(self._heard(call_id))

    async def _heard(self, call_id):
        return self.phone.heard(call_id, skip_seconds=0)

    def close(self):
        try:
            self.run(self.phone.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
