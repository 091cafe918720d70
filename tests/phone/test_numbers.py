"""Numbers as Japanese offices write them (issue 13, item 9): a caller id in E.164 or in national
form finds the same contact, customer and history; numbers are shown grouped; what was dialled
is stored as dialled."""

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.template import Context, Template
from django.urls import reverse
from django.utils import timezone

from cti.lookup import caller_info
from cti.models import Customer, CustomerContact, CustomerPhone
from phone.models import CallRecord, Contact, Phonebook
from phone.numbers import display_number, normalize_number
from phone.phonebook import name_in_phonebooks, phonebook_name


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        ("+81312345678", "0312345678"),
        ("+81 3-1234-5678", "0312345678"),
        ("81312345678", "0312345678"),  # a caller id whose + the PBX dropped
        ("03-1234-5678", "0312345678"),
        ("０３（１２３４）５６７８", "0312345678"),
        ("+819012345678", "09012345678"),
        ("090-1234-5678", "09012345678"),
        ("0120-123-456", "0120123456"),
        ("010-1-415-555-0100", "+14155550100"),  # international call from Japan
        ("+1 415 555 0100", "+14155550100"),
        # Not public numbers: left as typed (digits * # +).
        ("1001", "1001"),
        ("0322", "0322"),
        ("*2191", "*2191"),
        ("110", "110"),
        ("+81 3 1234", "+8131234"),
        ("", ""),
    ],
)
def test_it_normalises_every_way_of_writing_a_number_to_one_form(written, normalized):
    assert normalize_number(written) == normalized


def test_it_reads_numbers_in_the_tenants_country():
    # A US tenant: its own numbers in national form, Japanese ones in E.164.
    assert normalize_number("+1 415 555 0100", "US") == "4155550100"
    assert normalize_number("(415) 555-0100", "US") == "4155550100"
    assert normalize_number("+81312345678", "US") == "+81312345678"


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("0312345678", "03-1234-5678"),
        ("+81312345678", "03-1234-5678"),
        ("09012345678", "090-1234-5678"),
        ("0466123456", "0466-12-3456"),
        ("0120123456", "0120-123-456"),
        ("05012345678", "050-1234-5678"),
        ("+14155550100", "+1 415-555-0100"),
        ("1001", "1001"),
        ("*2191", "*2191"),
        ("anonymous", "anonymous"),
        ("", ""),
        (None, ""),
    ],
)
def test_it_shows_numbers_grouped_for_people(stored, shown):
    rendered = Template("{% load phone_tags %}{{ number|phone_display }}").render(
        Context({"number": stored})
    )
    assert rendered == shown
    assert display_number(stored or "") == shown


@pytest.fixture
def saved(cast):
    """A contact, a customer, a directory person and a call, saved in national form."""
    book = Phonebook.objects.create(tenant=cast.tenant_a, name="共有")
    contact = Contact.objects.create(
        tenant=cast.tenant_a, phonebook=book, name="オフィス花子", number="03-1234-5678"
    )
    customer = Customer.objects.create(tenant=cast.tenant_a, name="株式会社テスト", owner1=cast.bob)
    CustomerPhone.objects.create(customer=customer, number="090-4411-0011", label="携帯")
    person = CustomerContact.objects.create(
        tenant=cast.tenant_a, customer=customer, name="営業 山田", number="0359890925"
    )
    call = CallRecord.objects.create(
        tenant=cast.tenant_a, user=cast.bob, direction="in", remote_number="03-1234-5678",
        answered_by_name="ボブ", started_at=timezone.now() - timedelta(hours=1),
    )  # fmt: skip
    return {"contact": contact, "customer": customer, "person": person, "call": call}


def test_it_stores_numbers_as_dialled_and_looks_them_up_normalised(saved):
    contact = saved["contact"]
    assert (contact.number, contact.number_normalized) == ("0312345678", "0312345678")
    call = CallRecord.objects.create(
        tenant=contact.tenant, user=saved["call"].user, direction="in",
        remote_number="+81312345678", started_at=timezone.now(),
    )  # fmt: skip
    assert (call.remote_number, call.remote_number_normalized) == ("+81312345678", "0312345678")


def test_it_finds_the_contact_for_an_e164_caller_id(cast, saved):
    # As the sipworker does on an INVITE (phone.worker.db) and the screen-pop (cti.lookup).
    assert phonebook_name(cast.alice, "+81312345678") == "オフィス花子"
    assert phonebook_name(cast.alice, "0312345678") == "オフィス花子"
    assert phonebook_name(cast.charlie, "+81312345678") == ""  # another tenant's
    # By ids, as the sipworker's call start-up does with its line's tenant.
    assert name_in_phonebooks(cast.tenant_a.pk, cast.alice.pk, "+81312345678") == "オフィス花子"
    assert name_in_phonebooks(cast.tenant_b.pk, cast.charlie.pk, "+81312345678") == ""
    info = caller_info(cast.alice, "+81312345678", called="+81359890925")
    assert info.display_name == "オフィス花子"
    assert info.last_call is not None and info.last_call.staff == "ボブ"


def test_it_finds_the_customer_for_either_form(cast, saved):
    for number in ("+819044110011", "09044110011", "090-4411-0011"):
        info = caller_info(cast.alice, number)
        assert info.customer_id == saved["customer"].pk, number
        assert info.owner1 == "Bob"
    # Through the directory (名簿): the person's customer.
    assert caller_info(cast.alice, "+81359890925").customer_id == saved["customer"].pk


def test_it_searches_the_history_by_either_form(cast, login):
    start = timezone.now() - timedelta(hours=2)
    for minutes, number in ((1, "+81312345678"), (2, "03-1234-5678"), (3, "0399990000")):
        CallRecord.objects.create(
            tenant=cast.tenant_a, user=cast.alice, direction="out", remote_number=number,
            started_at=start + timedelta(minutes=minutes),
        )  # fmt: skip
    client = login(cast.alice)
    for query in ("+81312345678", "03-1234-5678", "0312345678", "1234-5678"):
        response = client.get(reverse("phone:history"), {"q": query})
        numbers = sorted(r.remote_number for r in response.context["records"])
        assert numbers == ["+81312345678", "03-1234-5678"], query
    html = client.get(reverse("phone:history")).content.decode()
    # Shown grouped, whichever way it was dialled; dialled as stored.
    assert html.count('<span class="h-number">03-1234-5678</span>') == 2
    assert 'data-number="+81312345678"' in html


def test_it_shows_grouped_numbers_in_the_phonebook_popup_and_crm(cast, saved, login):
    client = login(cast.alice)
    book = saved["contact"].phonebook
    html = client.get(reverse("phone:phonebook"), {"book": book.pk}).content.decode()
    assert '<span role="cell" class="pb-number">03-1234-5678</span>' in html
    assert 'data-number="0312345678"' in html
    html = client.get(reverse("cti:popup"), {"number": "+81312345678"}).content.decode()
    assert '<dd data-testid="cti-number">03-1234-5678</dd>' in html
    html = client.get(reverse("cti:customers")).content.decode()
    assert 'href="tel:090-4411-0011"' in html and ">090-4411-0011</a>" in html


def test_the_data_migration_renormalises_stored_rows(cast, saved):
    # Rows written before: their lookup columns hold the digits as typed.
    Contact.objects.update(number="+81312345678", number_normalized="+81312345678")
    CallRecord.objects.update(remote_number_normalized="+81-3-1234-5678")
    CustomerPhone.objects.update(number="+819044110011", number_normalized="+819044110011")
    CustomerContact.objects.update(number_normalized="stale")
    phone_migration = importlib.import_module("phone.migrations.0008_renormalise_numbers")
    cti_migration = importlib.import_module("cti.migrations.0005_renormalise_numbers")
    phone_migration.forwards(apps, None)
    cti_migration.forwards(apps, None)
    assert Contact.objects.get().number_normalized == "0312345678"
    assert Contact.objects.get().number == "+81312345678"  # as dialled: unchanged
    assert CallRecord.objects.get().remote_number_normalized == "0312345678"
    assert CustomerPhone.objects.get().number_normalized == "09044110011"
    assert CustomerContact.objects.get().number_normalized == "0359890925"
    assert caller_info(cast.alice, "03-1234-5678").display_name == "オフィス花子"


def test_the_sipworker_opens_a_call_in_two_queries_when_it_knows_the_tenant(
    cast, saved, django_assert_num_queries
):
    """db.open_call runs on the worker's core beside the call's own messages: with the line's
    tenant it is the phonebook lookup and the INSERT, nothing else; the row is the same."""
    from phone.worker.db import open_call

    record = {
        "direction": "in", "remote_number": "+81312345678", "called_number": "",
        "started_at": timezone.now(), "sip_call_id": "open-1",
    }  # fmt: skip
    with django_assert_num_queries(2):
        opened = open_call(
            cast.alice.pk, "w1", record, tenant_id=cast.tenant_a.pk, name_of="+81312345678"
        )
    without = open_call(
        cast.alice.pk, "w1", {**record, "sip_call_id": "open-2"}, name_of="0312345678"
    )
    assert opened.name == without.name == "オフィス花子"
    rows = CallRecord.objects.filter(sip_call_id__in=["open-1", "open-2"]).order_by("sip_call_id")
    assert [(r.tenant_id, r.user_id, r.remote_name, r.worker) for r in rows] == [
        (cast.tenant_a.pk, cast.alice.pk, "オフィス花子", "w1")
    ] * 2
