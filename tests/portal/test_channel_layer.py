"""portal.channel_layer: channels_redis's layer with a one-round-trip send, on a real Redis."""

import asyncio

import pytest
import redis
from channels.exceptions import ChannelFull

from portal.channel_layer import RedisChannelLayer


def layer(redis_url, **config):
    return RedisChannelLayer(hosts=[{"address": redis_url}], **config)


async def test_it_delivers_in_order_to_named_and_process_local_channels(redis_url):
    sender, receiver = layer(redis_url), layer(redis_url)
    local = await receiver.new_channel()  # "specific.xxx!yyy", as a page's consumer has
    for i in range(5):
        await sender.send("sipworker", {"type": "worker.command", "n": i})
        await sender.send(local, {"type": "to.page", "n": i})
    assert [(await receiver.receive("sipworker"))["n"] for _ in range(5)] == list(range(5))
    assert [(await receiver.receive(local))["n"] for _ in range(5)] == list(range(5))
    await sender.close_pools()
    await receiver.close_pools()


async def test_a_full_channel_refuses_the_message_and_stores_nothing(redis_url):
    small = layer(redis_url, capacity=2)
    await small.send("page", {"type": "m", "n": 1})
    await small.send("page", {"type": "m", "n": 2})
    with pytest.raises(ChannelFull):
        await small.send("page", {"type": "m", "n": 3})
    client = redis.Redis.from_url(redis_url)
    assert client.zcard(small.prefix + "page") == 2
    assert [(await small.receive("page"))["n"] for _ in range(2)] == [1, 2]
    await small.send("page", {"type": "m", "n": 4})  # room again
    assert (await small.receive("page"))["n"] == 4
    await small.close_pools()


async def test_it_drops_expired_messages_and_keeps_the_key_expiring(redis_url):
    short = layer(redis_url, expiry=1, capacity=1)
    await short.send("page", {"type": "m", "n": 1})
    client = redis.Redis.from_url(redis_url)
    assert 0 < client.ttl(short.prefix + "page") <= 1
    await asyncio.sleep(2.1)  # the stored message is now older than the expiry
    await short.send("page", {"type": "m", "n": 2})  # not ChannelFull: the stale one went
    assert (await short.receive("page"))["n"] == 2
    await short.close_pools()


async def test_group_messages_still_arrive(redis_url):
    sender, receiver = layer(redis_url), layer(redis_url)
    channel = await receiver.new_channel()
    await receiver.group_add("lamps", channel)
    await sender.group_send("lamps", {"type": "lamp", "state": "busy"})
    assert (await receiver.receive(channel))["state"] == "busy"
    await sender.close_pools()
    await receiver.close_pools()


async def test_a_web_process_takes_a_burst_for_all_its_pages_at_once(redis_url):
    """channels_redis counts the capacity of process-local channels on the process's one inbox:
    with its default (100), a sipworker's answers to 50 pages of one web process attaching at
    once (5 messages each) overflowed it. The production configuration leaves room."""
    from portal.settings import redis_channel_layer

    config = redis_channel_layer(redis_url)["CONFIG"]
    worker, web = RedisChannelLayer(**config), RedisChannelLayer(**config)
    pages = [await web.new_channel() for _ in range(50)]
    for n in range(5):
        for page in pages:
            await worker.send(page, {"type": "phone.message", "n": n})
    for page in pages:
        assert [(await web.receive(page))["n"] for _ in range(5)] == list(range(5))
    await worker.close_pools()
    await web.close_pools()


async def test_it_sends_after_redis_forgot_its_script(redis_url):
    """The send goes by the script's hash; a Redis that lost its script cache (restart,
    SCRIPT FLUSH) gets the script again and nothing is lost."""
    sender, receiver = layer(redis_url), layer(redis_url)
    await sender.send("page-flush", {"type": "m", "n": 1})
    redis.Redis.from_url(redis_url).script_flush()
    await sender.send("page-flush", {"type": "m", "n": 2})
    await sender.send("page-flush", {"type": "m", "n": 3})
    assert [(await receiver.receive("page-flush"))["n"] for _ in range(3)] == [1, 2, 3]
    await sender.close_pools()
    await receiver.close_pools()
