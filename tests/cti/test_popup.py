"""Screen-pop lookups (seed 5-2) and the popup fragment's buttons."""

from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.urls import reverse
from django.utils import timezone

from cti.lookup import caller_info, expand_url
from cti.models import CtiSettings, Customer, CustomerContact, CustomerPhone
from phone.models import CallRecord, Contact, Phonebook


@pytest.fixture
def crm(cast):
    customer = Customer.objects.create(
        tenant=cast.tenant_a, name="株式会社テスト", kana="カブシキガイシャテスト",
        owner1=cast.bob, owner2=cast.admin_a,
    )  # fmt: skip
    CustomerPhone.objects.create(customer=customer, number="0359890925", label="代表")
    CustomerPhone.objects.create(customer=customer, number="09044110011", label="携帯")
    other = Customer.objects.create(tenant=cast.tenant_b, name="B社")
    CustomerPhone.objects.create(customer=other, number="0311112222")
    now = timezone.now()
    for minutes, user, who in ((60, cast.alice, ""), (5, cast.bob, "ボブ")):
        CallRecord.objects.create(
            tenant=cast.tenant_a, user=user, direction="in", remote_number="090-4411-0011",
            started_at=now - timedelta(minutes=minutes), answered_by_name=who,
        )  # fmt: skip
    CallRecord.objects.create(
        tenant=cast.tenant_b, user=cast.charlie, direction="in", remote_number="09044110011",
        started_at=now,
    )  # fmt: skip
    return {"customer": customer, "other": other, "now": now}


def test_it_finds_the_customer_owners_and_last_call_by_any_number(cast, crm):
    info = caller_info(cast.alice, "090-4411-0011", called="0359890925")
    assert info.customer_name == "株式会社テスト" and info.customer_id == crm["customer"].pk
    assert (info.owner1, info.owner2) == ("Bob", "Admin_A")
    assert info.called == "0359890925"
    # The latest call of the tenant, not charlie's in tenant B (which is even later).
    assert info.last_call.staff == "ボブ"
    assert abs(info.last_call.at - (crm["now"] - timedelta(minutes=5))) < timedelta(seconds=1)


def test_it_leaves_out_the_current_call_from_the_last_call(cast, crm):
    CallRecord.objects.filter(answered_by_name="ボブ").update(sip_call_id="current@pbx")
    info = caller_info(cast.alice, "09044110011", call_id="current@pbx")
    assert info.last_call.staff == "Alice"


def test_it_does_not_match_another_tenants_customer(cast, crm):
    info = caller_info(cast.alice, "0311112222")
    assert info.customer_id is None and info.customer_name == "" and info.last_call is None


def test_it_falls_back_to_the_directory_then_the_phonebook(cast, crm):
    CustomerContact.objects.create(
        tenant=cast.tenant_a, customer=crm["customer"], name="営業 山田", number="0312340000"
    )
    assert caller_info(cast.alice, "03-1234-0000").customer_name == "株式会社テスト"
    book = Phonebook.objects.create(tenant=cast.tenant_a, name="共有")
    Contact.objects.create(tenant=cast.tenant_a, phonebook=book, name="取引先X", number="0399")
    info = caller_info(cast.alice, "0399")
    assert info.customer_name == "" and info.display_name == "取引先X"


def test_it_url_encodes_every_placeholder(cast, crm):
    info = caller_info(cast.alice, "+81 90&x", called="0359890925")
    url = expand_url(
        "https://crm.example.jp/p?tel={number}&to={called}&id={call_id}&ext={extension}",
        info=info, call_id="a b@c", extension="1001",
    )  # fmt: skip
    query = parse_qs(urlparse(url).query)
    assert query == {"tel": ["+81 90&x"], "to": ["0359890925"], "id": ["a b@c"], "ext": ["1001"]}


def popup(client, **params):
    return client.get(reverse("cti:popup"), params)


def test_it_renders_the_popup_with_builtin_links(cast, crm, login):
    response = popup(login(cast.alice), number="09044110011", called="0359890925", call_id="c1")
    html = response.content.decode()
    for hook in ("cti-number", "cti-customer", "cti-called", "cti-last-call"):
        assert f'data-testid="{hook}"' in html
    assert "株式会社テスト" in html and "ボブ" in html
    assert reverse("cti:customer_edit", args=[crm["customer"].pk]) in html
    assert "/cti/crm/receptions/new/?number=09044110011&amp;call_id=c1" in html
    assert 'data-auto-open=""' in html


def test_it_answers_204_when_the_user_wants_the_popup_at_another_moment(cast, crm, login):
    client = login(cast.alice)
    CtiSettings.objects.create(tenant=cast.tenant_a, user=cast.alice, show_on="answer")
    assert popup(client, number="1", phase="ring").status_code == 204
    assert popup(client, number="1", phase="answer").status_code == 200
    CtiSettings.objects.filter(user=cast.alice).update(enabled=False)
    assert popup(client, number="1", phase="answer").status_code == 204
    assert popup(client, number="1").status_code == 200  # the 顧客情報▶ button still works


def test_it_opens_external_urls_by_itself_on_ring(cast, crm, login):
    CtiSettings.objects.create(
        tenant=cast.tenant_a, user=cast.alice, target="url", show_on="ring",
        reception_url="https://crm.example.jp/r?tel={number}&c={customer_id}",
        customer_list_url="https://crm.example.jp/list?ext={extension}",
    )  # fmt: skip
    html = popup(login(cast.alice), number="09044110011", phase="ring").content.decode()
    expected = f"https://crm.example.jp/r?tel=09044110011&amp;c={crm['customer'].pk}"
    assert f'data-auto-open="{expected}"' in html
    assert "https://crm.example.jp/list?ext=1001" in html
    # The directory button keeps the built-in page when no directory URL is in use.
    assert "/cti/crm/directory/?q=09044110011" in html


def test_it_needs_a_tenant_user(cast, login, client):
    assert popup(client, number="1").status_code == 302
    assert popup(login(cast.superuser), number="1").status_code == 403
