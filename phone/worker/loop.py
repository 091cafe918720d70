"""The event loop `manage.py sipworker` runs on: uvloop's by default, asyncio's on request.

A worker relaying calls handles 100 datagrams per call per second (50 each way), each on its
own socket, and asyncio's loop spends more per datagram in its own Python (the selector
wrapper, a Handle per ready socket, the transport's read and send wrappers) than the relay
does with the packet. uvloop runs the same asyncio API on libuv, with that bookkeeping in C.
Measured on the issue's machine kind (2 cores, worker pinned to one):

- the least possible relay (benchmarks/relay_floor.py, N=100, recvfrom -> sendto and
  nothing else): 0.64 % of a core per call on asyncio's loop, 0.21 % on uvloop's;
- the whole sipworker (benchmarks/bridge_fullstack.py, passthrough): at N=30 1.23 -> 0.98 %
  per call; at N=100, where the busy loop already takes many ready sockets per wake-up,
  0.85 -> 0.81 %.

Nothing in the worker depends on which loop runs it: the per-packet send shortcut
(phone.media.leg.socket_sendto) falls back to the transport's own sendto on uvloop, and the
embedded default (inside daphne, on Twisted's asyncio reactor) keeps asyncio's loop.
SIPWORKER_EVENT_LOOP=asyncio chooses asyncio's loop for `manage.py sipworker` too.
"""

from __future__ import annotations

import asyncio

__all__ = ["LOOPS", "new_event_loop"]

LOOPS = ("uvloop", "asyncio")


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of `kind` (one of LOOPS)."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if kind == "asyncio":
        return asyncio.new_event_loop()
    raise ValueError(f"unknown event loop {kind!r}: one of {', '.join(LOOPS)}")
