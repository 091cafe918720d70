"""Events between the web processes, the sipworker and browsers: group names and the one helper
that sends them once the database change they announce is committed (design.md §3, §7).

The full catalogue of WebSocket message types lives in phone/schema.py with the call path.
"""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from phone.signalling import owners, protocol

# Channel-layer event types this module's callers send (consumer method = type with . → _).
ACCOUNT_CHANGED = "phone.account_changed"  # the user's SIP account settings changed
SETTINGS_CHANGED = "phone.settings_changed"  # CTI settings or pad buttons changed
DIAL_REQUEST = "phone.dial_request"  # click-to-dial: the page should dial this number
HISTORY_CHANGED = "phone.history_changed"  # a call was logged: open history panels refresh
PARK_CHANGED = "park.changed"  # a slot of a park group changed: {group, slots}


def user_group(user_id: int) -> str:
    """Every open phone page of one user."""
    return f"user.{user_id}"


def park_group(group_id: int) -> str:
    """Every open phone page of the members of one park group (seed 3-4)."""
    return f"park.{group_id}"


def tenant_group(tenant_id: int) -> str:
    return f"tenant.{tenant_id}"


def send_on_commit(group: str, event: dict) -> None:
    """Send `event` to `group` after the surrounding transaction commits (now, outside one).

    Nobody hears of a change that was rolled back, and whoever reacts reads committed data.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    transaction.on_commit(lambda: async_to_sync(layer.group_send)(group, event))


def send_to_worker_on_commit(message: protocol.ToWorker) -> None:
    """A message for the sipworker that owns the user's line (phone.signalling.owners), after
    commit; nothing when no worker runs a line for the user."""
    layer = get_channel_layer()
    if layer is None:
        return
    wire = protocol.to_wire(message)

    def send() -> None:
        owner = None
        if owners.enabled():
            owner = owners.owner_of_sync(message.user_id)
            if owner is None:
                return
        async_to_sync(layer.send)(owners.channel_of(owner), wire)

    transaction.on_commit(send)
