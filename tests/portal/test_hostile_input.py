"""Search boxes, filters and ids from the address bar: hostile or broken input is a 400 (or is
ignored), never a 500.  PostgreSQL refuses NUL in text, so `%00` must not reach a query."""

import json

import pytest
from django.urls import reverse

from cti.models import Customer
from cti.tokens import create_token
from phone.models import Phonebook

HTMX = {"HTTP_HX_REQUEST": "true"}

# Every GET page that takes a search text or a filter from the query string.
SEARCHABLE = [
    ("phone:history", "q"),
    ("phone:history", "type"),
    ("phone:history", "sort"),
    ("phone:history", "page"),
    ("phone:history_export", "q"),
    ("phone:phonebook", "q"),
    ("phone:phonebook", "book"),
    ("cti:customers", "q"),
    ("cti:directory", "q"),
    ("cti:receptions", "page"),
    ("cti:popup", "call_id"),
    ("cti:popup", "number"),
    ("cti:reception_new", "customer"),
]


@pytest.mark.parametrize(("name", "param"), SEARCHABLE)
def test_it_answers_400_to_a_nul_character_in_a_parameter(cast, login, name, param):
    response = login(cast.alice).get(f"{reverse(name)}?{param}=a%00b")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "name", ["phone:history", "phone:history_export", "phone:phonebook", "cti:customers",
             "cti:directory"],
)  # fmt: skip
def test_it_answers_400_to_an_overlong_search(cast, login, name):
    client = login(cast.alice)
    assert client.get(reverse(name), {"q": "あ" * 200}).status_code == 200
    response = client.get(reverse(name), {"q": "あ" * 201}, **HTMX)
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("phone:history", {"type": "nonsense", "sort": "-" * 300, "page": "9" * 5000}),
        ("phone:history", {"page": "-1"}),
        ("phone:phonebook", {"page": "1e9999", "book": "abc"}),
        ("cti:customers", {"page": "²"}),
        ("cti:receptions", {"page": "x" * 500}),
        ("cti:reception_new", {"customer": "²"}),  # "²".isdigit() is True, int("²") fails
        ("cti:reception_new", {"customer": "9" * 30}),
        ("cti:popup", {"number": "x" * 3000, "called": "☎" * 300, "phase": "nonsense"}),
    ],
)
def test_it_ignores_or_refuses_malformed_filters_without_a_500(cast, login, name, params):
    response = login(cast.alice).get(reverse(name), params)
    assert response.status_code in (200, 204, 400, 404)


def test_it_refuses_a_nul_in_a_form_field_and_in_the_path(cast, login, client):
    # The login name reaches django-axes' log of attempts (a database row) before any form.
    response = client.post(reverse("login"), {"username": "alice\x00", "password": "x"})
    assert response.status_code == 400
    book = Phonebook.objects.create(tenant=cast.tenant_a, name="共有")
    url = reverse("phone:phonebook_import_progress", args=[book.pk, "task"])
    assert login(cast.alice).get(url.replace("task", "ta%00sk")).status_code == 400


def test_it_refuses_a_nul_in_the_admin_search(cast, login):
    Customer.objects.create(tenant=cast.tenant_a, name="テスト")
    client = login(cast.admin_a)
    url = reverse("admin:cti_customer_changelist")
    assert client.get(url, {"q": "テスト"}).status_code == 200
    assert client.get(url + "?q=%00").status_code == 400


def test_it_answers_a_100_kb_query_string_with_a_clear_error(cast, login):
    client = login(cast.admin_a)
    huge = "a+" * 50_000  # 100 KB: 50 000 search words for the admin's search
    assert client.get(reverse("admin:cti_customer_changelist") + "?q=" + huge).status_code == 414
    assert login(cast.alice).get(reverse("phone:history") + "?q=" + huge).status_code == 414


def test_it_refuses_nul_in_the_click_to_dial_api(cast, client):
    _token, key = create_token(cast.tenant_a, "crm")
    for body in ({"user": "ali\x00ce", "number": "0311"}, {"extension": "10\x0001", "number": "1"}):
        response = client.post(
            reverse("cti:api_dial"), json.dumps(body), content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {key}",
        )  # fmt: skip
        assert response.status_code == 400
        assert response.json()["error"]["code"] in ("bad_user", "bad_extension")
