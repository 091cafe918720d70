"""The sipworker's event loop (phone.worker.loop): uvloop by default, asyncio's on request.

The whole worker on uvloop (calls, failover, audio both ways) is walked by
tests/phone/test_sipworker_redis.py, whose `manage.py sipworker` processes run on the default.
"""

import asyncio
import socket

import pytest
import uvloop
from django.core.exceptions import ImproperlyConfigured

from phone.media.leg import socket_sendto
from phone.worker.loop import new_event_loop


def test_it_makes_the_loop_asked_for():
    for kind, cls in (("uvloop", uvloop.Loop), ("asyncio", asyncio.SelectorEventLoop)):
        loop = new_event_loop(kind)
        try:
            assert isinstance(loop, cls)
        finally:
            loop.close()
    with pytest.raises(ValueError, match="unknown event loop"):
        new_event_loop("trio")


def test_the_default_is_uvloop_and_a_bad_setting_is_refused(monkeypatch):
    import importlib

    from portal import settings as portal_settings

    monkeypatch.delenv("SIPWORKER_EVENT_LOOP", raising=False)
    try:
        assert importlib.reload(portal_settings).SIPWORKER_EVENT_LOOP == "uvloop"
        monkeypatch.setenv("SIPWORKER_EVENT_LOOP", "twisted")
        with pytest.raises(ImproperlyConfigured, match="SIPWORKER_EVENT_LOOP"):
            importlib.reload(portal_settings)
    finally:
        monkeypatch.undo()
        importlib.reload(portal_settings)


def test_the_per_packet_send_works_on_uvloop():
    """phone.media.leg.socket_sendto reaches into asyncio's transport; on uvloop's it must
    fall back to the transport's own sendto, and the packet must arrive."""

    class Inbox(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.got: asyncio.Queue[bytes] = asyncio.Queue()

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.got.put_nowait(data)

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        receiver, inbox = await loop.create_datagram_endpoint(
            Inbox, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        sender, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        try:
            send = socket_sendto(sender)
            assert send == sender.sendto  # uvloop's transport: its own sendto
            send(b"\x80\x00rtp", receiver.get_extra_info("sockname"))
            return await asyncio.wait_for(inbox.got.get(), 2)
        finally:
            sender.close()
            receiver.close()

    with asyncio.Runner(loop_factory=lambda: new_event_loop("uvloop")) as runner:
        assert runner.run(main()) == b"\x80\x00rtp"
