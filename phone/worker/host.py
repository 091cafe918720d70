"""The sipworker host: the process side of design.md §2. It receives the consumers' messages
(phone.signalling.protocol) on WORKER_CHANNEL and hands each to its user's line
(phone.worker.line), tells every page it is alive (heartbeat), and when it starts closes the
history rows a dead worker left open.

Calls live here, not in the browser: a reload re-attaches the page to the running call, and a
closed tab does not drop it. The embedded default runs this host inside the web process
(phone.worker.embedded); production runs `manage.py sipworker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings

from phone import actions
from phone.media_network import configure_ice
from phone.signalling import owners, protocol
from phone.signalling.protocol import (
    HEARTBEAT_SECONDS,
    WORKERS_GROUP,
    Attach,
    Command,
    Detach,
    Handover,
    Heartbeat,
    ProtocolError,
    Reload,
    ToPage,
)
from phone.signalling.schema import error_message
from phone.sip.transaction import Addr
from phone.sip.transport import SharedSipSocket
from phone.sip.useragent import UserAgent
from phone.worker import blf
from phone.worker.db import LineConfig
from phone.worker.line import LeaseLost, Line, SipPort
from phone.worker.media import CallMedia, MediaHub
from portal import health, metrics

log = logging.getLogger(__name__)

# After a failed channel-layer receive, wait this long before the next one (no busy loop).
RECEIVE_RETRY_SECONDS = 1.0
# With several workers, each looks for calls and park slots of dead workers this often.
SWEEP_SECONDS = 10.0


class SipWorkerHost:
    """Hosts the Lines of every user with an open phone page (many per process)."""

    def __init__(self, channel: str | None = None) -> None:
        # One id per boot: pages that see it change know this worker restarted.
        # (A channel-name part: letters, digits, hyphens.)
        host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:20]
        self.worker_id = f"{host}-{os.getpid()}-{secrets.token_hex(4)}"
        # With several workers (Redis) each reads its own channel; pages reach the owner of
        # their line there (phone.signalling.owners).
        self.channel = channel or owners.channel_of(self.worker_id)
        self.layer = get_channel_layer()
        self.lines: dict[int, Line] = {}
        self.blf = blf.Watchers()  # which line watches each tenant's PBX extensions
        self.media = MediaHub()
        self.open_sip: Callable[..., Awaitable[SipPort]] = self.open_shared_sip
        # One socket per transport for all lines (issue 11): file descriptors do not grow with
        # the number of lines. Opened with the first line that needs it, closed at shutdown.
        self._shared: dict[str, SharedSipSocket] = {}
        self._shared_lock = asyncio.Lock()
        self.open_media: Callable[[], Awaitable[CallMedia]] = CallMedia.open
        self._heartbeat: asyncio.Task[None] | None = None

    async def open_shared_sip(
        self,
        config: LineConfig,
        make_ua: Callable[[Addr], UserAgent],
        on_event: Callable[[Any], None],
    ) -> SipPort:
        """The host's `open_sip`: every line gets a port on the shared socket of its transport
        (over TLS, of its PBX domain); phone.sip.demux routes what arrives."""
        shared = await self.shared_socket(config.transport, config.domain)
        return shared.open_line(make_ua, on_event, seed=f"{config.extension}@{config.domain}")

    async def shared_socket(self, transport: str, domain: str = "") -> SharedSipSocket:
        """The host's socket for `transport`; over TLS one per PBX domain and CA file, since
        the connection's certificate check is for that domain (RFC 3261 §26.2)."""
        ca_file = settings.SIP_TLS_CA_FILE or None
        key = f"tls {domain} {ca_file}" if transport == "tls" else transport
        async with self._shared_lock:  # two lines starting together must not bind two
            shared = self._shared.get(key)
            if shared is None:
                bind = settings.SIP_BIND_ADDRESS
                if transport == "tls":
                    shared = await SharedSipSocket.shared_tls(
                        bind, 0, server_hostname=domain, ca_file=ca_file
                    )
                elif transport == "tcp":
                    shared = await SharedSipSocket.shared_tcp(bind, 0)
                else:
                    shared = await SharedSipSocket.shared_udp(bind, 0)
                self._shared[key] = shared
                log.info("sipworker: shared SIP %s socket on %s:%s", key, *shared.local_addr)
            return shared

    def line(self, user_id: int) -> Line:
        line = self.lines.get(user_id)
        if line is None:
            line = self.lines[user_id] = Line(self, user_id)
        return line

    def forget(self, line: Line) -> None:
        if self.lines.get(line.user_id) is line:
            del self.lines[line.user_id]

    async def run(self) -> None:
        configure_ice()  # ICE_HOST_ADDRESSES / ICE_NAT_1TO1 for every bridge of this process
        await self.recover()
        self._heartbeat = asyncio.create_task(self._beat(), name="sipworker-heartbeat")
        log.info("sipworker %s listening on channel %s", self.worker_id, self.channel)
        try:
            while True:
                try:
                    wire = await self.layer.receive(self.channel)
                except Exception:
                    # A channel-layer error (Redis restarting, a read timeout) must not end
                    # this loop: the process would stay up holding its lines and never hear
                    # a command.
                    log.exception("sipworker: receiving on %s failed; retrying", self.channel)
                    await asyncio.sleep(RECEIVE_RETRY_SECONDS)
                    continue
                try:
                    self.dispatch(protocol.from_wire(wire))
                except ProtocolError as exc:
                    log.warning("sipworker: dropped a message: %s", exc)
        finally:
            self._heartbeat.cancel()

    async def recover(self) -> None:
        """Close the history rows of calls a dead worker left open ("worker restart") and free
        the park slots it held (no ghost slots)."""
        try:
            alive = frozenset(await owners.live_workers()) if owners.enabled() else frozenset()
            closed = await database_sync_to_async(actions.do_close_orphaned_calls)(
                self.worker_id, alive
            )
            freed = await database_sync_to_async(actions.do_clear_orphaned_slots)(
                self.worker_id, alive
            )
        except Exception:
            log.exception("sipworker: could not close orphaned calls")
            return
        if closed or freed:
            log.warning(
                "sipworker: closed %d call(s) and freed %d park slot(s) of a previous worker",
                closed,
                freed,
            )

    def dispatch(self, message: protocol.ToWorker | protocol.FromWorker) -> None:
        """Hand a message to its user's line; each line works through its own in order."""
        match message:
            case Detach(user_id=user_id) | Reload(user_id=user_id) if user_id not in self.lines:
                return  # nothing runs for this user: nothing to detach or reload
            case Handover(user_id=user_id, to_session=session) if user_id not in self.lines:
                # The parker's line is gone, and its calls with it.
                refusal = error_message("no_slot", request="park.pickup")
                asyncio.get_running_loop().create_task(self.send(session, refusal))
            case Attach() | Detach() | Command() | Reload() | Handover():
                self.line(message.user_id).post(message)
            case _:
                log.warning("sipworker: not a message for the worker: %r", message)

    async def send(self, session: str, message: dict[str, Any]) -> None:
        try:
            await self.layer.send(session, protocol.to_wire(ToPage(message)))
        except ChannelFull:
            # A page that stopped reading (a frozen tab, a web process gone without detaching)
            # loses its messages, as group_send drops them too: raised, it would cut short
            # the line's handler and so its work for every other page and call. The page
            # that reads again re-attaches and gets the whole state (registration, calls).
            log.warning(
                "sipworker: channel %s is full; %s message dropped", session, message.get("type")
            )

    async def to_worker(self, message: protocol.ToWorker) -> None:
        """A message for another line, wherever it runs: the worker that owns it."""
        owner = await owners.owner_of(message.user_id) if owners.enabled() else None
        if owners.enabled() and owner is None:
            log.info("sipworker: no owner for user %s; %s dropped", message.user_id, message)
            return
        await self.layer.send(owners.channel_of(owner), protocol.to_wire(message))

    async def _beat(self) -> None:
        beat = protocol.to_wire(Heartbeat(self.worker_id))
        renewed = swept = time.monotonic()
        while True:
            if owners.enabled():
                renewed = await self._hold_leases(renewed)
                if time.monotonic() - swept > SWEEP_SECONDS:
                    # A worker that died while another was starting was still "alive" then.
                    swept = time.monotonic()
                    await self.recover()
            try:
                await self.layer.group_send(WORKERS_GROUP, beat)
            except Exception:
                log.exception("sipworker: heartbeat failed")
            health.worker_alive(self.worker_id)  # /healthz; returns at once
            metrics.sample_bridge_cpu(sum(len(line.calls) for line in self.lines.values()))
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _hold_leases(self, renewed: float) -> float:
        """Renew the leases of our lines (and say we live); a line whose lease is gone, or all
        of them when renewing has failed for FENCE_MS, stops at once (fencing)."""
        try:
            await owners.announce(self.worker_id, len(self.lines))
            lost = await owners.renew(self.worker_id, list(self.lines))
            renewed = time.monotonic()
            metrics.set_leases(len(self.lines) - len(lost))
        except Exception:
            log.exception("sipworker: renewing leases failed")
            lost = set()
            if (time.monotonic() - renewed) * 1000 > owners.FENCE_MS:
                lost = set(self.lines)
        for user_id in lost:
            line = self.lines.get(user_id)
            if line is not None:
                log.warning("sipworker: lost the lease of user %s; stopping the line", user_id)
                line.post(LeaseLost())
        return renewed

    async def shutdown(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        health.worker_gone(self.worker_id)
        if owners.enabled():
            with contextlib.suppress(Exception):
                await owners.retire(self.worker_id)
        # Every line at once: each keeps its transport 0.2-2 s (Line.stop: until its
        # un-REGISTER is answered), so one after the other 100 lines took 20 s or more, past a
        # service manager's stop timeout (then SIGKILL, and the rest stay registered); and one
        # line failing must not keep the others registered.
        lines = list(self.lines.values())
        for line in lines:
            line.task.cancel()  # nothing else of theirs runs while they stop
        results = await asyncio.gather(*(line.stop() for line in lines), return_exceptions=True)
        for line, result in zip(lines, results, strict=True):
            if isinstance(result, Exception):
                log.error("line %s: stopping failed", line.user_id, exc_info=result)
        if owners.enabled():
            for line in lines:
                with contextlib.suppress(Exception):
                    await owners.release(self.worker_id, line.user_id)
        # The lines have sent their un-REGISTERs: now the shared sockets may go.
        shared, self._shared = list(self._shared.values()), {}
        for sock in shared:
            with contextlib.suppress(Exception):
                await sock.close()
        await self.media.close()
