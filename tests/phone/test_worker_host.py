"""The sipworker host's own loop (phone.worker.host.SipWorkerHost.run), without a PBX."""

import asyncio

from redis.exceptions import TimeoutError as RedisTimeoutError

from phone.worker import host as host_module
from phone.worker.host import SipWorkerHost


class FlakyLayer:
    """A channel layer whose first receive fails the way channels_redis does when redis-py's
    5 s socket timeout beats its 5 s BZPOPMIN; then one message, then silence."""

    def __init__(self, message: dict):
        self.message = message
        self.receives = 0

    async def receive(self, channel: str) -> dict:
        self.receives += 1
        if self.receives == 1:
            raise RedisTimeoutError("Timeout reading from 127.0.0.1:6379")
        if self.receives == 2:
            return self.message
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_it_keeps_receiving_after_a_channel_layer_error(monkeypatch):
    monkeypatch.setattr(host_module, "RECEIVE_RETRY_SECONDS", 0.01)
    worker = SipWorkerHost("sipworker-test")
    message = {"type": "worker.detach", "user_id": 1, "session": "s1"}
    worker.layer = FlakyLayer(message)
    dispatched: list[dict] = []

    async def dispatch(msg: dict) -> None:
        dispatched.append(msg)

    worker.dispatch = dispatch  # type: ignore[method-assign]
    runner = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            if dispatched or runner.done():
                break
            await asyncio.sleep(0.01)
        assert not runner.done(), "the receive loop ended on the first channel-layer error"
        assert dispatched == [message]
    finally:
        runner.cancel()
