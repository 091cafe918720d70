"""State changes that other pages, tabs or processes must see live (design.md §7).

Views and consumers call these instead of saving models themselves; each one saves in a
transaction and announces the change with phone.signalling.events.send_on_commit.
"""

from django.db import transaction
from django.utils import timezone

from cti import webhooks
from cti.models import CtiSettings
from phone.models import CallRecord, LineButton, ParkGroup, ParkSlot
from phone.signalling import events, protocol
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
    events.send_to_worker_on_commit(protocol.Reload(user_id=user.pk))
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


def do_open_call(user_id: int, worker: str, record: dict, tenant_id: int | None = None) -> int:
    """Write a call's history row the moment it starts (seed 4), open (owned by `worker`), so
    that a crash of the worker cannot lose it; do_close_call completes it. Returns its id.
    `tenant_id`: the user's tenant, if the caller knows it already (one query less)."""
    if tenant_id is None:
        tenant_id = Profile.objects.values_list("tenant_id", flat=True).get(user_id=user_id)
    call = CallRecord.objects.create(tenant_id=tenant_id, user_id=user_id, worker=worker, **record)
    return call.pk


def do_mark_answered(user_id: int, record_id: int, answered_at) -> None:
    """The open row learns the call was answered: a crash later still logs its talk time."""
    CallRecord.objects.filter(pk=record_id, user_id=user_id).exclude(worker="").update(
        answered_at=answered_at
    )


@transaction.atomic
def do_close_call(user_id: int, record_id: int | None, record: dict) -> CallRecord:
    """Complete a call's history row when it ends (opened by do_open_call; written whole if
    opening failed), tell the tenant's webhook (call.ended) and the user's open pages. The
    browser never writes history."""
    profile = Profile.objects.select_related("tenant", "user").get(user_id=user_id)
    call = CallRecord.objects.filter(pk=record_id, user_id=user_id).first() if record_id else None
    if call is None:
        call = CallRecord(tenant=profile.tenant, user_id=user_id)
    for name, value in record.items():
        setattr(call, name, value)
    call.worker = ""
    call.save()
    _announce_ended(profile, call)
    return call


def do_close_orphaned_calls(worker: str, alive: frozenset[str] = frozenset()) -> int:
    """A sipworker starting: close the rows a dead worker left open (ended "worker restart"),
    so history shows those calls and the pages that re-attach show them ended.

    Rows of the workers in `alive` (with several sipworkers: those still beating) are theirs."""
    closed = 0
    open_rows = CallRecord.objects.exclude(worker="").exclude(worker=worker)
    if alive:
        open_rows = open_rows.exclude(worker__in=alive)
    for record_id in list(open_rows.values_list("pk", flat=True)[:10_000]):
        with transaction.atomic():
            call = (
                CallRecord.objects.select_for_update(of=("self",))
                .select_related("user__profile")
                .filter(pk=record_id)
                .exclude(worker="")
                .first()
            )
            if call is None:
                continue
            call.ended_at = timezone.now()
            call.end_reason = "worker restart"
            call.worker = ""
            call.save()
            _announce_ended(call.user.profile, call)
            closed += 1
    return closed


def park_slots(group: ParkGroup) -> list[dict]:
    """Every slot of a park group as the pages show it (who parked, which caller)."""
    taken = {
        slot.number: slot
        for slot in ParkSlot.objects.filter(group=group)
        .exclude(call_id="")
        .select_related("parked_by__profile")
    }
    slots = []
    for number in range(1, group.slot_count + 1):
        slot = taken.get(number)
        slots.append(
            {
                "slot": number,
                "parked_by_id": slot.parked_by_id if slot else None,
                "parked_by": slot.parked_by.profile.name
                if slot and slot.parked_by and hasattr(slot.parked_by, "profile")
                else "",
                "caller": slot.remote_number if slot else "",
                "caller_name": slot.remote_name if slot else "",
            }
        )
    return slots


def _announce_park(group: ParkGroup) -> None:
    events.send_on_commit(
        events.park_group(group.pk),
        {"type": events.PARK_CHANGED, "group": group.pk, "slots": park_slots(group)},
    )


@transaction.atomic
def do_park(
    user_id: int, group_id: int, number: int, call_id: str, worker: str, remote: str, name: str
) -> bool:
    """Put a call in a free slot of the user's park group (seed 3-4); False if it is taken."""
    group = ParkGroup.objects.select_for_update().get(pk=group_id, members__id=user_id)
    if not 1 <= number <= group.slot_count:
        return False
    slot, _ = ParkSlot.objects.get_or_create(group=group, number=number)
    if slot.call_id:
        return False
    slot.call_id, slot.worker, slot.parked_by_id = call_id, worker, user_id
    slot.parked_at = timezone.now()
    slot.remote_number, slot.remote_name = remote[:64], name[:100]
    slot.save()
    _announce_park(group)
    return True


@transaction.atomic
def do_unpark(group_id: int, number: int, call_id: str) -> None:
    """The parked call left its slot (taken, hung up, timed out)."""
    group = ParkGroup.objects.select_for_update().get(pk=group_id)
    if ParkSlot.objects.filter(group=group, number=number, call_id=call_id).update(
        call_id="", worker="", parked_by=None, parked_at=None, remote_number="", remote_name=""
    ):
        _announce_park(group)


def do_clear_orphaned_slots(worker: str, alive: frozenset[str] = frozenset()) -> int:
    """Free the slots whose calls died with another worker (no ghost slots); the slots of the
    workers in `alive` are theirs."""
    cleared = 0
    keep = {worker, *alive}
    groups = ParkGroup.objects.filter(slots__worker__gt="").exclude(slots__worker__in=keep)
    for group in groups.distinct():
        with transaction.atomic():
            locked = ParkGroup.objects.select_for_update().get(pk=group.pk)
            cleared += (
                ParkSlot.objects.filter(group=locked)
                .exclude(worker="")
                .exclude(worker__in=keep)
                .update(
                    call_id="",
                    worker="",
                    parked_by=None,
                    parked_at=None,
                    remote_number="",
                    remote_name="",
                )
            )
            _announce_park(locked)
    return cleared


def _announce_ended(profile, call: CallRecord) -> None:
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
            "end_reason": call.end_reason,
        },
    )
    events.send_on_commit(
        events.user_group(call.user_id),
        {"type": events.HISTORY_CHANGED, "call_id": call.sip_call_id},
    )


def do_call_event(user_id: int, event: str, payload: dict) -> None:
    """call.ringing / call.answered for the tenant's webhooks."""
    profile = Profile.objects.select_related("user").get(user_id=user_id)
    with transaction.atomic():
        webhooks.queue_call_event(
            profile.tenant_id, event, {"user": profile.user.get_username(), **payload}
        )
