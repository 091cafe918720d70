"""The worker's database access: small synchronous functions, called through
`database_sync_to_async` from the asyncio host (Channels' rule: no ORM on the event loop)."""

import logging
from dataclasses import dataclass
from typing import Any

from phone.phonebook import name_in_phonebooks
from portal.models import Profile, SipAccount

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LineConfig:
    """What a user agent needs, read once per (re)registration."""

    user_id: int
    tenant_id: int
    account_id: int
    slot: int
    extension: str
    auth_user: str
    password: str
    domain: str
    proxy: str  # host[:port], may be empty: then the domain itself
    transport: str
    display_name: str
    caller_id_method: str = "from"
    ring_timeout: int = 60
    media_encryption: str = "none"  # phone.sip.sdp.ENCRYPTIONS: SRTP towards the PBX

    @property
    def proxy_hostport(self) -> tuple[str, int]:
        target = self.proxy or self.domain
        default = 5061 if self.transport == "tls" else 5060  # RFC 3261 §19.1.2
        if target.startswith("["):
            host, _, rest = target[1:].partition("]")
            return host, int(rest[1:]) if rest.startswith(":") else default
        host, _, port = target.partition(":")
        return host, int(port) if port else default


def load_line(user_id: int) -> LineConfig | None:
    account = (
        SipAccount.objects.filter(user_id=user_id, is_active=True)
        .select_related("tenant", "user__profile")
        .first()
    )
    if account is None:
        return None
    return LineConfig(
        user_id=user_id,
        tenant_id=account.tenant_id,
        account_id=account.pk,
        slot=account.slot,
        extension=account.extension,
        auth_user=account.username,
        password=account.password,
        domain=account.domain,
        proxy=account.proxy,
        transport=account.tenant.transport,
        display_name=account.user.profile.name,
        caller_id_method=account.tenant.caller_id_method,
        ring_timeout=account.tenant.ring_timeout,
        media_encryption=account.tenant.media_encryption,
    )


def tenant_of(user_id: int) -> int | None:
    """The user's tenant (None: no profile)."""
    tenant_id: int | None = (
        Profile.objects.filter(user_id=user_id).values_list("tenant_id", flat=True).first()
    )
    return tenant_id


def line_numbers(user_id: int) -> set[str]:
    """The numbers this user may present (line buttons of the pad, seed 6-1): their own and
    their tenant's, never another tenant's."""
    from django.db.models import Q

    from phone.models import LineButton

    tenant_id = tenant_of(user_id)
    return set(
        LineButton.objects.filter(tenant_id=tenant_id, kind=LineButton.Kind.LINE)
        .filter(Q(user_id=user_id) | Q(user__isnull=True))
        .values_list("number", flat=True)
    )


def display_name_for(user_id: int, number: str, tenant_id: int | None = None) -> str:
    """The phonebook's name for a number, as the display and history show it (seed 3-3).
    `tenant_id`: the user's tenant, if the caller knows it (one query less)."""
    if tenant_id is None:
        tenant_id = tenant_of(user_id)
    if tenant_id is None or not number:
        return ""
    return name_in_phonebooks(tenant_id, user_id, number)


def user_display_name(user_id: int) -> str:
    profile = Profile.objects.select_related("user").filter(user_id=user_id).first()
    return profile.name if profile else ""


@dataclass(frozen=True)
class ParkInfo:
    group_id: int
    slot_count: int
    timeout: int


def park_group_for(user_id: int) -> ParkInfo | None:
    """The park group the user belongs to (in their own tenant), if any (seed 3-4)."""
    from phone.models import ParkGroup

    tenant_id = tenant_of(user_id)
    # The same group the phone page shows: the model's ordering, first one.
    group = ParkGroup.objects.filter(tenant_id=tenant_id, members__id=user_id).first()
    if group is None:
        return None
    return ParkInfo(group.pk, group.slot_count, group.park_timeout)


@dataclass(frozen=True)
class ParkedCall:
    owner_id: int
    call_id: str
    remote: str
    remote_name: str


def parked_in(group_id: int, number: int) -> ParkedCall | None:
    from phone.models import ParkSlot

    slot = ParkSlot.objects.filter(group_id=group_id, number=number).exclude(call_id="").first()
    if slot is None or slot.parked_by_id is None:
        return None
    return ParkedCall(slot.parked_by_id, slot.call_id, slot.remote_number, slot.remote_name)


@dataclass(frozen=True)
class Line:
    label: str
    ring: str  # the page's ring tone for calls to this line


def lines_for(user_id: int, tenant_id: int | None = None) -> dict[str, Line]:
    """The line buttons (seed 6-1) whose calls ring this user: the user's own and the tenant's
    (`tenant_id`, if the caller knows it), by number. A button without a chosen ring tone
    rings with one by its position (1-4)."""
    from django.db.models import Q

    from phone.models import LineButton

    if tenant_id is None:
        tenant_id = tenant_of(user_id)
    buttons = LineButton.objects.filter(tenant_id=tenant_id, kind=LineButton.Kind.LINE).filter(
        Q(user_id=user_id) | Q(user__isnull=True)
    )
    return {
        button.number: Line(button.label, button.ring_tone or str((button.position - 1) % 4 + 1))
        for button in buttons.exclude(number="")
    }


# -- presence, pickup and do-not-disturb (issue 13) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class DndSetting:
    on: bool = False
    forward_to: str = ""  # 応答不可 forwards (302) to this number; "": refuse with 486


def dnd_for(user_id: int) -> DndSetting:
    from phone.models import PhoneUserSettings

    row = (
        PhoneUserSettings.objects.filter(user_id=user_id)
        .values_list("dnd", "dnd_action", "dnd_forward_to")
        .first()
    )
    if row is None:
        return DndSetting()
    on, action, number = row
    forwards = action == PhoneUserSettings.DndAction.FORWARD and bool(number)
    return DndSetting(bool(on), number if forwards else "")


def set_dnd(user_id: int, on: bool) -> None:
    """応答不可 on or off, stored for the user (it outlives the page and the line)."""
    from django.utils import timezone

    from phone.models import PhoneUserSettings

    PhoneUserSettings.objects.update_or_create(
        user_id=user_id, defaults={"dnd": on, "dnd_changed_at": timezone.now()}
    )


def colleague_with_extension(user_id: int, extension: str) -> int | None:
    """The user of the same tenant whose active SIP account is `extension` (never another
    tenant's: pickup and presence stay within the tenant)."""
    tenant_id = tenant_of(user_id)
    if tenant_id is None or not extension:
        return None
    found: int | None = (
        SipAccount.objects.filter(tenant_id=tenant_id, extension=extension, is_active=True)
        .values_list("user_id", flat=True)
        .first()
    )
    return found


def pickup_group_members(user_id: int) -> set[int]:
    """グループ代理応答: the members of the user's park group (the park group doubles as the
    pickup group: the people who share calls by park are the ones who answer for each other)."""
    info = park_group_for(user_id)
    if info is None:
        return set()
    from phone.models import ParkGroup

    return set(ParkGroup.objects.get(pk=info.group_id).members.values_list("id", flat=True))


def pickup_code(user_id: int, extension: str) -> str:
    """The tenant's PBX call-pickup feature code for an extension ("*8{ext}")."""
    from portal.models import Tenant

    tenant = Tenant.objects.filter(profiles__user_id=user_id).first()
    return tenant.feature_code("pickup", extension) if tenant else ""


@dataclass(frozen=True)
class CallOpened:
    """What the database says about a call that just started (phone.worker.line.Line._open)."""

    record_id: int | None  # its open history row; None if it could not be written
    name: str  # the phonebook's name for the remote number ("" if none, or not looked up)
    line: Line | None  # the line button an incoming call came in on (seed 6-1), if any


def open_call(
    user_id: int,
    worker: str,
    record: dict[str, Any],
    *,
    tenant_id: int | None = None,
    name_of: str | None = None,
    line_of: str | None = None,
) -> CallOpened:
    """All the database work of a call's start, as one job on the database thread: the line
    button `line_of` rang on, the phonebook name of `name_of`, then the history row opened
    with that name (actions.do_open_call; a worker crash later still leaves a named row).
    `tenant_id`, the line's tenant when the line knows it, saves a query in each of the last
    two: this job's CPU competes with the call's own messages on the worker's core.

    One job, not three: the order is the code's, not the order asyncio happens to start
    three tasks in, and the call pays one thread hop. Nothing here may fail the call: a
    failed lookup leaves the name or line empty, a failed INSERT leaves the row to be
    written whole when the call ends (actions.do_close_call with no id)."""
    from phone import actions

    line = None
    if line_of is not None:
        try:
            line = lines_for(user_id, tenant_id).get(line_of)
        except Exception:
            log.exception("user %s: could not read the line buttons", user_id)
    name = ""
    if name_of is not None:
        try:
            name = display_name_for(user_id, name_of, tenant_id)
        except Exception:
            log.exception("user %s: could not look up the phonebook name", user_id)
    if name:
        record = {**record, "remote_name": name}
    try:
        record_id: int | None = actions.do_open_call(user_id, worker, record, tenant_id)
    except Exception:
        log.exception("user %s: could not open a history row", user_id)
        record_id = None
    return CallOpened(record_id, name, line)


def set_answered_by(record_id: int | None, answerer_id: int) -> None:
    """A colleague took the call (代理応答): the row of the user it rang for names them."""
    from phone.models import CallRecord

    if record_id is None:
        return
    name = user_display_name(answerer_id)
    CallRecord.objects.filter(pk=record_id).update(
        answered_by_id=answerer_id, answered_by_name=name[:100]
    )


def pbx_extensions(tenant_id: int) -> list[str]:
    """The tenant's PBX extensions a line watches (phone.worker.blf)."""
    from phone.presence import pbx_extensions as extensions

    return extensions(tenant_id)
