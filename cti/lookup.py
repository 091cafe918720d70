"""Who is calling? The screen-pop's facts for a number (seed 5-2: 相手番号, 顧客名, 着信先,
前回通話, 担当1, 担当2), read from the built-in CRM, the phonebooks and the call history."""

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from cti.models import CtiSettings, Customer, CustomerContact
from phone.models import CallRecord
from phone.numbers import normalize_number, tenant_region
from phone.phonebook import phonebook_name


@dataclass(frozen=True)
class LastCall:
    at: datetime
    staff: str
    direction: str


@dataclass(frozen=True)
class CallerInfo:
    number: str
    called: str
    customer_id: int | None
    customer_name: str
    contact_name: str  # the phonebook's name for the number, when no customer matches
    owner1: str
    owner2: str
    last_call: LastCall | None

    @property
    def display_name(self) -> str:
        return self.customer_name or self.contact_name


def _user_name(user) -> str:
    if user is None:
        return ""
    profile = getattr(user, "profile", None)
    return profile.name if profile else user.get_username()


def find_customer(tenant_id: int, number: str, region: str | None = None) -> Customer | None:
    # The stored *_normalized columns hold this same form (phone.numbers.normalize_number), so
    # +81312345678 from the PBX finds the customer saved as 03-1234-5678.
    digits = normalize_number(number, region)
    if not digits:
        return None
    customer = (
        Customer.objects.filter(tenant_id=tenant_id, phones__number_normalized=digits)
        .select_related("owner1__profile", "owner2__profile")
        .first()
    )
    if customer is None:
        person = (
            CustomerContact.objects.filter(
                tenant_id=tenant_id, number_normalized=digits, customer__isnull=False
            )
            .select_related("customer__owner1__profile", "customer__owner2__profile")
            .first()
        )
        customer = person.customer if person else None
    return customer


def last_call(
    tenant_id: int, number: str, before_call_id: str = "", region: str | None = None
) -> LastCall | None:
    digits = normalize_number(number, region)
    if not digits:
        return None
    records = CallRecord.objects.filter(
        tenant_id=tenant_id, remote_number_normalized=digits, worker=""
    )
    if before_call_id:
        records = records.exclude(sip_call_id=before_call_id)
    record = records.select_related("user__profile").order_by("-started_at").first()
    if record is None:
        return None
    staff = record.answered_by_name or _user_name(record.user)
    return LastCall(at=record.started_at, staff=staff, direction=record.get_direction_display())


def caller_info(user, number: str, called: str = "", call_id: str = "") -> CallerInfo:
    tenant_id = user.profile.tenant_id
    region = tenant_region(user.profile.tenant)
    customer = find_customer(tenant_id, number, region)
    return CallerInfo(
        number=number,
        called=called,
        customer_id=customer.pk if customer else None,
        customer_name=customer.name if customer else "",
        contact_name=phonebook_name(user, number, region),
        owner1=_user_name(customer.owner1) if customer else "",
        owner2=_user_name(customer.owner2) if customer else "",
        last_call=last_call(tenant_id, number, before_call_id=call_id, region=region),
    )


def expand_url(template: str, *, info: CallerInfo, call_id: str, extension: str) -> str:
    """Fill a CTI URL template; every value is URL-encoded (validated in cti.forms)."""
    values = {
        "number": info.number,
        "called": info.called,
        "call_id": call_id,
        "extension": extension,
        "customer_id": "" if info.customer_id is None else str(info.customer_id),
    }
    return template.format_map({k: quote(v, safe="") for k, v in values.items()})


def settings_for(user) -> CtiSettings:
    settings = CtiSettings.objects.filter(user=user).first()
    return settings or CtiSettings(user=user, tenant_id=user.profile.tenant_id)
