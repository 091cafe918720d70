import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection

from cti.models import Customer, CustomerPhone
from phone.models import CallRecord, Contact, LineButton, Phonebook
from phone.numbers import clean_number, normalize_number
from portal.models import SipAccount, Tenant


def test_it_defaults_voicemail_feature_codes_like_the_seed(cast):
    tenant = Tenant.objects.get(code="tenant-a")
    assert tenant.feature_code("start", "5030") == "*21915030"
    assert tenant.feature_code("stop", "5030") == "*21"
    assert tenant.feature_code("status", "5030") == "925030"


def test_it_stores_sip_passwords_encrypted_at_rest(cast):
    account = SipAccount.objects.get(user=cast.alice)
    assert account.password == "alice-sip-pw"
    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM portal_sipaccount WHERE id = %s", [account.pk])
        (raw,) = cursor.fetchone()
    assert "alice-sip-pw" not in raw
    assert raw.startswith("gAAAA")  # a Fernet token
    # And it still reads back after a fresh load.
    assert SipAccount.objects.get(pk=account.pk).password == "alice-sip-pw"


def test_it_allows_one_account_per_slot_and_one_active_account(cast):
    with pytest.raises(IntegrityError):
        SipAccount.objects.create(
            tenant=cast.tenant_a, user=cast.alice, slot=2, extension="1009", is_active=True
        )


def test_it_rejects_a_sip_account_for_a_user_of_another_tenant(cast):
    account = SipAccount(tenant=cast.tenant_a, user=cast.charlie, slot=2, extension="1010")
    with pytest.raises(ValidationError) as exc:
        account.full_clean()
    assert "user" in exc.value.message_dict


def test_it_falls_back_to_the_tenant_pbx_settings(cast):
    account = SipAccount.objects.get(user=cast.alice)
    assert account.domain == "a.pbx.test"
    assert account.username == "1001"
    account.pbx_domain, account.auth_user = "other.pbx.test", "auth1001"
    assert account.domain == "other.pbx.test"
    assert account.username == "auth1001"


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("03-1234-5678", "0312345678"),
        ("０３ １２３４ ５６７８", "0312345678"),
        ("*2191", "*2191"),
        ("+81 3 1234", "+8131234"),
        ("(03)1234", "031234"),
    ],
)
def test_it_cleans_numbers_as_people_type_them(typed, expected):
    assert clean_number(typed) == expected
    assert normalize_number(typed) == expected


@pytest.mark.parametrize("typed", ["03-abcd", "", "1234x", "12+34", "1" * 33, "1-" * 200])
def test_it_rejects_undialable_numbers_with_a_clear_error(typed):
    with pytest.raises(ValidationError) as exc:
        clean_number(typed)
    assert exc.value.messages


def test_it_normalizes_contact_numbers_for_lookup(cast):
    book = Phonebook.objects.create(tenant=cast.tenant_a, name="shared")
    contact = Contact(
        tenant=cast.tenant_a, phonebook=book, name="花子", kana="ハナコ", number="03-1111-2222"
    )
    contact.full_clean()  # separators are fine as typed...
    contact.save()
    assert contact.number == "0311112222"  # ...and are not stored
    assert contact.tenant_id == cast.tenant_a.pk
    assert Contact.objects.get(tenant=cast.tenant_a, number_normalized="0311112222") == contact


def test_it_computes_call_duration_or_none_when_never_answered(cast):
    from datetime import timedelta

    from django.utils import timezone

    start = timezone.now()
    answered = CallRecord.objects.create(
        tenant=cast.tenant_a,
        user=cast.alice,
        direction=CallRecord.Direction.OUTGOING,
        remote_number="03-9999-0000",
        started_at=start,
        answered_at=start + timedelta(seconds=3),
        ended_at=start + timedelta(seconds=65),
    )
    missed = CallRecord.objects.create(
        tenant=cast.tenant_a,
        user=cast.alice,
        direction=CallRecord.Direction.MISSED,
        remote_number="0399990000",
        started_at=start,
        ended_at=start + timedelta(seconds=9),
    )
    assert answered.duration_seconds == 62
    assert missed.duration_seconds is None
    assert answered.remote_number_normalized == "0399990000"
    assert str(answered.get_direction_display()) == "発信"


def test_it_requires_a_number_for_line_and_one_touch_buttons(cast):
    button = LineButton(tenant=cast.tenant_a, kind=LineButton.Kind.LINE, position=1)
    with pytest.raises(ValidationError) as exc:
        button.full_clean()
    assert "number" in exc.value.message_dict
    LineButton(tenant=cast.tenant_a, kind=LineButton.Kind.VM_STOP, position=2).full_clean()


def test_it_finds_customers_by_any_of_their_numbers(cast):
    customer = Customer.objects.create(tenant=cast.tenant_a, name="株式会社テスト")
    CustomerPhone.objects.create(customer=customer, number="0359890925", label="代表")
    CustomerPhone.objects.create(customer=customer, number="09044110011", label="携帯")
    found = Customer.objects.filter(
        tenant=cast.tenant_a, phones__number_normalized=normalize_number("090-4411-0011")
    )
    assert list(found) == [customer]
    assert not Customer.objects.filter(
        tenant=cast.tenant_b, phones__number_normalized="09044110011"
    ).exists()
