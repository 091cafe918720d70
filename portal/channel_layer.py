"""The Redis channel layer, with a send that costs one round trip to Redis instead of four.

channels_redis's RedisChannelLayer.send awaits four commands one after another: drop expired
messages, count the channel against its capacity, add the message, renew the expiry. Every
message a sipworker sends to a page pays those four round trips in its line's turn, and the
page's messages of a call set-up (dialing, ringing, incall) are sent in order, one after
another: at about 0.5 ms per round trip they were most of a call's set-up time in the worker
(benchmarks/bridge_fullstack.py). Here the same four commands run as one Lua script, atomically,
with the same results: expired messages dropped, ChannelFull at capacity, the message stored
with the time as its score, the key's expiry renewed. Receiving, groups and everything else is
channels_redis's own.

    CHANNEL_LAYERS = {"default": {"BACKEND": "portal.channel_layer.RedisChannelLayer", ...}}
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as _ChannelsRedisLayer
from redis.exceptions import NoScriptError

__all__ = ["RedisChannelLayer"]

# KEYS[1] the channel's sorted set; ARGV: expired-before score, capacity, score, message,
# expiry seconds. Returns 0 when full (nothing stored), 1 when stored.
_SEND = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
# Sent by its hash (EVALSHA): the script's text goes to Redis only when Redis does not have it
# cached yet (first use, a restart, SCRIPT FLUSH), not with every message.
_SEND_SHA = hashlib.sha1(_SEND.encode()).hexdigest()


class RedisChannelLayer(_ChannelsRedisLayer):
    """channels_redis's layer; send() in one round trip (module doc)."""

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        # As channels_redis does: a process-local channel ("name!suffix") is stored under its
        # non-local name, with the full name inside the message, on the server its name hashes to.
        target = channel
        if "!" in channel:
            message = {**message, "__asgi_channel__": channel}
            target = self.non_local_name(channel)
            index = self.consistent_hash(channel)
        else:
            index = next(self._send_index_generator)
        now = time.time()
        args = (
            self.prefix + target,
            int(now) - int(self.expiry),
            self.get_capacity(channel),
            now,
            self.serialize(message),
            int(self.expiry),
        )
        connection = self.connection(index)
        try:
            stored = await connection.evalsha(_SEND_SHA, 1, *args)
        except NoScriptError:
            stored = await connection.eval(_SEND, 1, *args)  # and Redis caches it again
        if not stored:
            raise ChannelFull()
