"""PhoneConsumer (/ws/phone/): the browser's only line to the phone service (design.md §3).

Thin on purpose: authenticate, join the user's group, validate each message against
phone.signalling.schema, and pass it to the sipworker host through the channel layer. A bad
message gets an `error` reply; the connection and any call survive.
"""

import json
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.serializers.json import DjangoJSONEncoder

from phone.signalling import events
from phone.signalling.schema import SchemaError, error_message, parse_client_message, server_message
from phone.worker import embedded
from phone.worker.host import WORKER_CHANNEL
from portal.models import Profile


@database_sync_to_async
def _tenant_id(user_id: int) -> int | None:
    return Profile.objects.filter(user_id=user_id).values_list("tenant_id", flat=True).first()


class PhoneConsumer(AsyncWebsocketConsumer):
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
        self.groups_joined = [events.user_group(self.user_id)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        embedded.ensure_started()
        await self._to_worker("worker.attach", opened_at=time.time())

    async def disconnect(self, code):
        if not getattr(self, "groups_joined", None):
            return
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        await self._to_worker("worker.detach")

    async def receive(self, text_data=None, bytes_data=None):
        try:
            message = parse_client_message(text_data if text_data is not None else bytes_data)
        except SchemaError as exc:
            await self.send_message(error_message(exc.code, exc.message, exc.request))
            return
        if message.type == "ping":
            await self.send_message(server_message("pong", id=message.data.get("id")))
            return
        await self._to_worker("worker.command", command=message.type, data=message.data)

    async def _to_worker(self, kind: str, **fields):
        await self.channel_layer.send(
            WORKER_CHANNEL,
            {"type": kind, "user_id": self.user_id, "session": self.channel_name, **fields},
        )

    async def send_message(self, message: dict):
        await self.send(text_data=json.dumps(message, cls=DjangoJSONEncoder, ensure_ascii=False))

    # -- channel-layer events (type phone.x → method phone_x) ------------------------------------

    async def phone_message(self, event):
        """A server message from the sipworker host for this page."""
        await self.send_message(event["message"])

    async def phone_account_changed(self, event):
        await self.send_message(server_message("settings.changed", what="account"))

    async def phone_settings_changed(self, event):
        await self.send_message(server_message("settings.changed", what=event["what"]))

    async def phone_history_changed(self, event):
        await self.send_message(server_message("settings.changed", what="history"))

    async def phone_dial_request(self, event):
        await self.send_message(
            server_message("dial.request", number=event["number"], source=event["source"])
        )
