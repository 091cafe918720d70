"""The built-in CRM pages: customers with several numbers, 名簿, 電話受付; tenant isolation."""

import pytest
from django.urls import reverse
from django.utils import timezone

from cti.models import Customer, CustomerContact, CustomerPhone, Reception
from phone.models import CallRecord


@pytest.fixture
def customers(cast):
    a = Customer.objects.create(
        tenant=cast.tenant_a, name="株式会社テスト", kana="カブシキガイシャテスト"
    )
    CustomerPhone.objects.create(customer=a, number="0359890925", label="代表")
    CustomerPhone.objects.create(customer=a, number="09044110011", label="携帯")
    b = Customer.objects.create(tenant=cast.tenant_b, name="B社", kana="ビーシャ")
    CustomerPhone.objects.create(customer=b, number="0311112222")
    CustomerContact.objects.create(
        tenant=cast.tenant_a, customer=a, name="山田 花子", kana="ヤマダハナコ", department="総務",
        number="0312340000",
    )  # fmt: skip
    CustomerContact.objects.create(tenant=cast.tenant_b, name="B社の人", number="0399990000")
    return {"a": a, "b": b}


def names(response, key="page"):
    return [obj.name for obj in response.context[key]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [("テスト", ["株式会社テスト"]), ("かぶしき", ["株式会社テスト"]),
     ("090-4411", ["株式会社テスト"]), ("B社", []), ("", ["株式会社テスト"])],
)  # fmt: skip
def test_it_searches_customers_within_the_tenant(cast, customers, login, query, expected):
    response = login(cast.alice).get(reverse("cti:customers"), {"q": query})
    assert names(response) == expected


def test_it_lists_every_number_of_a_customer_as_a_dialable_link(cast, customers, login):
    html = login(cast.alice).get(reverse("cti:customers")).content.decode()
    assert html.count('data-testid="crm-tel"') == 2
    assert 'href="tel:09044110011"' in html and "株式会社テストに発信しますか?" in html


def test_it_creates_a_customer_with_several_numbers(cast, login):
    client = login(cast.alice)
    data = {
        "name": "新規商事", "kana": "しんきしょうじ", "owner1": cast.bob.pk, "notes": "",
        "phones-TOTAL_FORMS": "2", "phones-INITIAL_FORMS": "0",
        "phones-MIN_NUM_FORMS": "0", "phones-MAX_NUM_FORMS": "1000",
        "phones-0-label": "代表", "phones-0-number": "03-5555-0000",
        "phones-1-label": "携帯", "phones-1-number": "080 1111 2222",
    }  # fmt: skip
    response = client.post(reverse("cti:customer_new"), data)
    assert response.status_code == 302
    customer = Customer.objects.get(name="新規商事")
    assert customer.tenant == cast.tenant_a and customer.kana == "シンキショウジ"
    assert sorted(p.number_normalized for p in customer.phones.all()) == [
        "0355550000", "08011112222",
    ]  # fmt: skip
    assert {p.tenant_id for p in customer.phones.all()} == {cast.tenant_a.pk}


def test_it_rejects_bad_numbers_and_owners_of_another_tenant(cast, login):
    data = {
        "name": "X", "kana": "", "owner1": cast.charlie.pk, "notes": "",
        "phones-TOTAL_FORMS": "1", "phones-INITIAL_FORMS": "0",
        "phones-MIN_NUM_FORMS": "0", "phones-MAX_NUM_FORMS": "1000",
        "phones-0-label": "", "phones-0-number": "03-abc",
    }  # fmt: skip
    response = login(cast.alice).post(reverse("cti:customer_new"), data)
    assert response.status_code == 200
    assert "owner1" in response.context["form"].errors
    assert 'data-testid="customer-phone-error"' in response.content.decode()
    assert not Customer.objects.filter(name="X").exists()


def test_it_hides_other_tenants_customers(cast, customers, login):
    client = login(cast.alice)
    url = reverse("cti:customer_edit", args=[customers["b"].pk])
    assert client.get(url).status_code == 404
    assert client.post(url, {"name": "乗っ取り"}).status_code == 404
    customers["b"].refresh_from_db()
    assert customers["b"].name == "B社"


def test_it_searches_the_directory_within_the_tenant(cast, customers, login):
    client = login(cast.alice)
    assert names(client.get(reverse("cti:directory"), {"q": "やまだ"})) == ["山田 花子"]
    assert names(client.get(reverse("cti:directory"), {"q": "総務"})) == ["山田 花子"]
    assert names(client.get(reverse("cti:directory"), {"q": "0399"})) == []
    assert names(client.get(reverse("cti:directory"))) == ["山田 花子"]


def test_it_prefills_a_reception_and_links_it_to_the_customer_and_the_call(cast, customers, login):
    call = CallRecord.objects.create(
        tenant=cast.tenant_a, user=cast.alice, direction="in", remote_number="09044110011",
        started_at=timezone.now(), sip_call_id="call-1@pbx",
    )  # fmt: skip
    client = login(cast.alice)
    page = client.get(
        reverse("cti:reception_new"), {"number": "09044110011", "call_id": "call-1@pbx"}
    )
    form = page.context["form"]
    assert form.initial["caller_number"] == "09044110011"
    assert form.initial["customer"] == customers["a"]
    response = client.post(
        reverse("cti:reception_new"),
        {"caller_number": "09044110011", "customer": customers["a"].pk, "memo": "折り返し希望",
         "call_id": "call-1@pbx"},
    )  # fmt: skip
    assert response.status_code == 302
    reception = Reception.objects.get()
    assert (reception.tenant, reception.customer, reception.call_record, reception.taken_by) == (
        cast.tenant_a, customers["a"], call, cast.alice,
    )  # fmt: skip
    listing = client.get(reverse("cti:receptions")).content.decode()
    assert "折り返し希望" in listing
    assert "折り返し希望" not in login(cast.charlie).get(reverse("cti:receptions")).content.decode()


def test_it_will_not_link_a_reception_to_another_tenants_customer_or_call(cast, customers, login):
    CallRecord.objects.create(
        tenant=cast.tenant_b, user=cast.charlie, direction="in", remote_number="1",
        started_at=timezone.now(), sip_call_id="b-call@pbx",
    )  # fmt: skip
    client = login(cast.alice)
    response = client.post(
        reverse("cti:reception_new"),
        {"caller_number": "1", "customer": customers["b"].pk, "memo": "x", "call_id": "b-call@pbx"},
    )
    assert response.status_code == 200 and "customer" in response.context["form"].errors
    client.post(
        reverse("cti:reception_new"), {"caller_number": "1", "memo": "y", "call_id": "b-call@pbx"}
    )
    assert Reception.objects.get(memo="y").call_record is None


def test_it_stores_kana_entered_in_the_admin_so_search_finds_it(cast, login):
    from tests.portal.admin_forms import admin_form_data

    client = login(cast.admin_a)
    for model, name in (("customer", "山田商事"), ("customercontact", "山田 次郎")):
        url = reverse(f"admin:cti_{model}_add")
        data = admin_form_data(client.get(url), name=name, kana="やまだ")
        assert client.post(url, data).status_code == 302
    assert Customer.objects.get(name="山田商事").kana == "ヤマダ"
    assert CustomerContact.objects.get(name="山田 次郎").kana == "ヤマダ"
    alice = login(cast.alice)
    for query in ("ヤマダ", "ﾔﾏﾀﾞ"):
        assert names(alice.get(reverse("cti:customers"), {"q": query})) == ["山田商事"]
        assert names(alice.get(reverse("cti:directory"), {"q": query})) == ["山田 次郎"]


def test_it_folds_crm_kana_stored_before_the_models_did(cast):
    import importlib

    from django.apps import apps

    customer = Customer.objects.create(tenant=cast.tenant_a, name="佐藤商店", kana="ｻﾄｳ")
    assert customer.kana == "サトウ"
    Customer.objects.filter(pk=customer.pk).update(kana="さとう")
    person = CustomerContact.objects.create(tenant=cast.tenant_a, name="佐藤")
    CustomerContact.objects.filter(pk=person.pk).update(kana=" ｻﾄｳ")
    importlib.import_module("cti.migrations.0004_normalise_kana").normalise_kana(apps, None)
    customer.refresh_from_db()
    person.refresh_from_db()
    assert (customer.kana, person.kana) == ("サトウ", "サトウ")
