"""The sipworker host's own loop (phone.worker.host.SipWorkerHost.run), without a PBX."""

import asyncio

from redis.exceptions import TimeoutError as RedisTimeoutError

from phone.signalling import protocol
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
    dispatched: list = []

    async def recover() -> None:
        pass

    worker.recover = recover  # type: ignore[method-assign]
    worker.dispatch = dispatched.append  # type: ignore[method-assign]

    runner = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            if dispatched or runner.done():
                break
            await asyncio.sleep(0.01)
        assert not runner.done(), "the receive loop ended on the first channel-layer error"
        assert dispatched == [protocol.Detach(1, "s1")]
    finally:
        runner.cancel()


class SlowLine:
    """Stands in for a Line whose stop() waits for its un-REGISTER to leave."""

    running = 0
    most = 0

    def __init__(self, user_id: int, fail: bool = False):
        self.user_id = user_id
        self.fail = fail
        self.stopped = False
        self.task = asyncio.get_running_loop().create_future()  # what Line.task is to the host

    async def stop(self) -> None:
        SlowLine.running += 1
        SlowLine.most = max(SlowLine.most, SlowLine.running)
        try:
            await asyncio.sleep(0.05)
            if self.fail:
                raise OSError("socket already gone")
            self.stopped = True
        finally:
            SlowLine.running -= 1


async def test_it_stops_all_lines_together_on_shutdown():
    worker = SipWorkerHost("sipworker-test")
    lines = [SlowLine(1, fail=True)] + [SlowLine(user_id) for user_id in range(2, 11)]
    worker.lines = {line.user_id: line for line in lines}  # type: ignore[misc]
    await worker.shutdown()
    # Concurrently (100 lines one by one took 20 s), and one failure stops none of the others.
    assert SlowLine.most == len(lines)
    assert all(line.stopped for line in lines[1:])


async def test_a_full_page_channel_drops_the_message_instead_of_failing_the_line(caplog):
    from channels.layers import InMemoryChannelLayer

    worker = SipWorkerHost("sipworker-test")
    worker.layer = InMemoryChannelLayer(capacity=1)
    stuck = await worker.layer.new_channel()
    await worker.send(stuck, {"type": "registration", "state": "registered"})
    await worker.send(stuck, {"type": "call", "state": "ringing"})  # full: must not raise

    assert "full; call message dropped" in caplog.text
    kept = await worker.layer.receive(stuck)
    assert kept["message"]["type"] == "registration"
    await worker.send(stuck, {"type": "call", "state": "ended"})  # room again: delivered
    assert (await worker.layer.receive(stuck))["message"]["state"] == "ended"
