"""State changes that other pages, tabs or processes must see live (design.md §7).

Views and consumers call these instead of saving models themselves; each one saves in a
transaction and announces the change with phone.signalling.events.send_on_commit.
"""

from django.db import transaction

from cti import webhooks
from cti.models import CtiSettings
from phone.models import CallRecord, LineButton
from phone.signalling import events
from portal.models import Profile, SipAccount


@transaction.atomic
def do_save_sip_account(user, slot: int, values: dict) -> SipAccount:
    """Save one of the user's two accounts and make it the active one (seed 2-2, 6-2)."""
    profile = user.profile
    account = SipAccount.objects.select_for_update().filter(
        user=user, slot=slot
    ).first() or SipAccount(user=user, tenant=profile.tenant, slot=slot, is_active=False)
    for name, value in values.items():
        setattr(account, name, value)
    SipAccount.objects.filter(user=user, is_active=True).exclude(pk=account.pk).update(
        is_active=False
    )
    account.is_active = True
    account.save()
    events.send_on_commit(
        events.user_group(user.pk), {"type": events.ACCOUNT_CHANGED, "slot": account.slot}
    )
    # The worker registers the new account at once: saved settings apply without a reload.
    events.send_to_worker_on_commit({"type": "worker.reload", "user_id": user.pk})
    return account


@transaction.atomic
def do_save_cti_settings(user, form) -> CtiSettings:
    settings = form.save(commit=False)
    settings.user = user
    settings.tenant = user.profile.tenant
    settings.save()
    events.send_on_commit(
        events.user_group(user.pk), {"type": events.SETTINGS_CHANGED, "what": "cti"}
    )
    return settings


@transaction.atomic
def do_save_line_buttons(user, formset) -> list[LineButton]:
    tenant = user.profile.tenant
    buttons = formset.save(commit=False)
    for button in buttons:
        button.user = user
        button.tenant = tenant
        button.save()
    for button in formset.deleted_objects:
        button.delete()
    events.send_on_commit(
        events.user_group(user.pk), {"type": events.SETTINGS_CHANGED, "what": "buttons"}
    )
    return buttons


def do_request_dial(user, number: str, *, source: str) -> None:
    """Ask the user's phone page to dial (click-to-dial). Nothing is stored; the page decides."""
    events.send_on_commit(
        events.user_group(user.pk),
        {"type": events.DIAL_REQUEST, "number": number, "source": source},
    )


@transaction.atomic
def do_log_call(user_id: int, record: dict) -> CallRecord:
    """Write one history row (seed 4) from the worker's view of a finished call, and tell the
    tenant's webhook (call.ended). The browser never writes history."""
    profile = Profile.objects.select_related("tenant").get(user_id=user_id)
    call = CallRecord.objects.create(tenant=profile.tenant, user_id=user_id, **record)
    webhooks.queue_call_event(
        profile.tenant_id,
        "call.ended",
        {
            "call_id": call.sip_call_id,
            "direction": call.direction,
            "remote_number": call.remote_number,
            "called_number": call.called_number,
            "user": profile.user.get_username(),
            "started_at": call.started_at,
            "answered_at": call.answered_at,
            "ended_at": call.ended_at,
            "talk_seconds": call.talk_seconds,
        },
    )
    events.send_on_commit(
        events.user_group(user_id), {"type": events.HISTORY_CHANGED, "call_id": call.sip_call_id}
    )
    return call


def do_call_event(user_id: int, event: str, payload: dict) -> None:
    """call.ringing / call.answered for the tenant's webhooks."""
    profile = Profile.objects.select_related("user").get(user_id=user_id)
    with transaction.atomic():
        webhooks.queue_call_event(
            profile.tenant_id, event, {"user": profile.user.get_username(), **payload}
        )
