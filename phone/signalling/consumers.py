"""PhoneConsumer (/ws/phone/): the browser's only line to the phone service (design.md §3).

Thin on purpose: authenticate, join the user's group, validate each message against
phone.signalling.schema, and pass it to the sipworker host through the channel layer
(phone.signalling.protocol). A bad message gets an `error` reply; the connection and any call
survive, whatever the message did to us.

The consumer also watches the sipworker's heartbeat: when it stops, the page is told (lamp red)
within WORKER_LOST_SECONDS; when a worker beats again (or a new one starts) the consumer
attaches the page to it again, so the line registers and the page recovers without a reload.
"""

import asyncio
import contextlib
import json
import logging
import time

from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull, StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.serializers.json import DjangoJSONEncoder

from phone import presence
from phone.signalling import events, owners, protocol
from phone.signalling.protocol import WORKER_LOST_SECONDS, WORKERS_GROUP
from phone.signalling.schema import SchemaError, error_message, parse_client_message, server_message
from portal.models import Profile

log = logging.getLogger(__name__)


@database_sync_to_async
def _tenant_id(user_id: int) -> int | None:
    return Profile.objects.filter(user_id=user_id).values_list("tenant_id", flat=True).first()


@database_sync_to_async
def _park_group(user_id: int, tenant_id: int) -> tuple[int, list[dict]] | None:
    """The user's park group (the one the phone page shows) and its slots."""
    from phone.actions import park_slots
    from phone.models import ParkGroup

    group = ParkGroup.objects.filter(tenant_id=tenant_id, members__id=user_id).first()
    return None if group is None else (group.pk, park_slots(group))


class PhoneConsumer(AsyncWebsocketConsumer):
    attached = False
    _watchdog: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        # However this consumer ends (a clean close, an exception, the server cancelling it),
        # the worker hears that the page went away: a line without pages must not stay
        # registered, ringing for nobody.
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            if self.attached:
                self.attached = False
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._to_worker_detach())

    async def dispatch(self, message):
        try:
            await super().dispatch(message)
        except StopConsumer:
            raise
        except Exception:
            # A bug of ours must not close the socket (code 1011) and drop the page.
            log.exception("phone consumer: %s failed", message.get("type"))
            if message.get("type") == "websocket.receive":
                with contextlib.suppress(Exception):
                    await self.send_message(error_message("internal"))

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.user_id = user.pk
        self.tenant_id = await _tenant_id(user.pk)
        if self.tenant_id is None:
            await self.close(code=4403)
            return
        self.groups_joined = [
            events.user_group(self.user_id),
            WORKERS_GROUP,
            # Colleague lamps: only the own tenant's lines (phone.presence).
            presence.tenant_group(self.tenant_id),
        ]
        park = await _park_group(self.user_id, self.tenant_id)
        if park is not None:
            self.groups_joined.append(events.park_group(park[0]))
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        if park is not None:
            await self.send_message(self._slots_message(park[1]))
        await self._send_presence_snapshot()
        self.opened_at = time.time()
        self.worker: str | None = None  # the worker whose heartbeat we hear (the line's owner)
        self.worker_lost = False
        self.last_beat = time.monotonic()
        if owners.enabled():
            self.worker = await owners.claim(self.user_id)
        if owners.enabled() and self.worker is None:
            # No live worker can take the line yet (none runs, or a dead one's lease has not
            # lapsed): the page shows it; the next heartbeat of a live worker claims again.
            self.worker_lost = True
            await self._tell_worker_lost()
        else:
            await self._attach()
        self._watchdog = asyncio.create_task(self._watch_worker())

    async def disconnect(self, code):
        if not getattr(self, "groups_joined", None):
            return
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        if self.attached:
            self.attached = False
            await self._to_worker_detach()

    async def receive(self, text_data=None, bytes_data=None):
        try:
            message = parse_client_message(text_data if text_data is not None else bytes_data)
        except SchemaError as exc:
            await self.send_message(error_message(exc.code, exc.message, exc.request))
            return
        if message.type == "ping":
            await self.send_message(server_message("pong", id=message.data.get("id")))
            return
        command = protocol.make_command(message.type, message.data)
        await self._to_worker(protocol.Command(self.user_id, self.channel_name, command))

    # -- the worker ----------------------------------------------------------------------------

    async def _attach(self):
        self.attached = True
        await self._to_worker(protocol.Attach(self.user_id, self.channel_name, self.opened_at))

    async def _to_worker_detach(self):
        await self._to_worker(protocol.Detach(self.user_id, self.channel_name))

    async def _to_worker(self, message: protocol.ToWorker):
        if owners.enabled() and self.worker is None:
            if isinstance(message, protocol.Command):
                request = protocol.command_name(message.command)
                await self.send_message(error_message("worker_unavailable", request=request))
            return
        try:
            channel = owners.channel_of(self.worker)
            await self.channel_layer.send(channel, protocol.to_wire(message))
        except ChannelFull:
            # Nobody reads the worker channel (the sipworker is down): say so, keep the page.
            request = (
                protocol.command_name(message.command)
                if isinstance(message, protocol.Command)
                else None
            )
            await self.send_message(error_message("worker_unavailable", request=request))

    async def _watch_worker(self):
        while True:
            await asyncio.sleep(WORKER_LOST_SECONDS / 3)
            if not self.worker_lost and time.monotonic() - self.last_beat > WORKER_LOST_SECONDS:
                self.worker_lost = True
                await self._tell_worker_lost()

    async def _tell_worker_lost(self):
        await self.send_message(
            server_message("worker", state="lost", reason="phone service not responding")
        )

    async def worker_heartbeat(self, event):
        worker = event["worker"]
        if owners.enabled():
            await self._owned_heartbeat(worker)
            return
        self.last_beat = time.monotonic()
        restarted = self.worker is not None and worker != self.worker
        self.worker = worker
        if self.worker_lost or restarted:
            # Back (or a new worker in its place, knowing nothing of this page): attach again;
            # the line registers and sends the page its state.
            self.worker_lost = False
            await self.send_message(server_message("worker", state="ok", reason=""))
            await self._attach()

    async def _owned_heartbeat(self, worker: str):
        """Several workers beat: only the owner's beat counts for this page; while the owner
        is lost, any live worker's beat is a chance to claim the line again."""
        if worker == self.worker and not self.worker_lost:
            self.last_beat = time.monotonic()
            return
        if not self.worker_lost and self.worker is not None:
            return
        owner = await owners.claim(self.user_id)
        if owner is None:
            return  # the dead owner's lease has not lapsed yet
        self.worker, self.worker_lost, self.last_beat = owner, False, time.monotonic()
        await self.send_message(server_message("worker", state="ok", reason=""))
        await self._attach()

    # -- to the page ---------------------------------------------------------------------------

    async def send_message(self, message: dict):
        try:
            text = json.dumps(message, cls=DjangoJSONEncoder, ensure_ascii=False)
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate from somewhere (a SIP display name...): escape rather than fail.
            text = json.dumps(message, cls=DjangoJSONEncoder)
        await self.send(text_data=text)

    # -- channel-layer events (type phone.x → method phone_x) ------------------------------------

    async def phone_message(self, event):
        """A server message from the sipworker host for this page."""
        message = event["message"]
        if message.get("type") == "worker" and message.get("state") == "lost":
            # The line's worker lost its lease (it stopped the line): find the new owner.
            self.worker_lost = True
            self.worker = None
        await self.send_message(message)

    async def phone_account_changed(self, event):
        await self.send_message(server_message("settings.changed", what="account"))

    async def phone_settings_changed(self, event):
        await self.send_message(server_message("settings.changed", what=event["what"]))

    async def phone_history_changed(self, event):
        await self.send_message(server_message("settings.changed", what="history"))

    def _slots_message(self, slots: list[dict]) -> dict:
        """The group's slots as this user sees them: their own parked calls are "mine"."""

        def state(slot: dict) -> str:
            if slot["parked_by_id"] is None:
                return "free"
            return "mine" if slot["parked_by_id"] == self.user_id else "parked"

        return server_message(
            "park.slots",
            slots=[
                {
                    "slot": slot["slot"],
                    "state": state(slot),
                    "parked_by": slot["parked_by"],
                    "caller": slot["caller"],
                    "caller_name": slot["caller_name"],
                }
                for slot in slots
            ],
        )

    async def park_changed(self, event):
        """A slot of our park group changed (state in the event: no database per member)."""
        await self.send_message(self._slots_message(event["slots"]))

    async def _send_presence_snapshot(self):
        try:
            entries = await presence.snapshot(self.tenant_id)
        except Exception:
            log.exception("phone consumer: presence snapshot failed")
            entries = []
        await self.send_message(
            server_message("presence", entries=[e.public() for e in entries], full=True)
        )

    async def presence_changed(self, event):
        """A line of our tenant changed state (the group is per tenant: nobody else's)."""
        await self.send_message(server_message("presence", entries=event["entries"], full=False))

    async def phone_dial_request(self, event):
        await self.send_message(
            server_message("dial.request", number=event["number"], source=event["source"])
        )
