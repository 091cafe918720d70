"""The admin as tenant admins use it (issue 13, item 8): webhook events are checkboxes, not raw
JSON; the labels of every form are in Japanese."""

import re

import pytest
from django.contrib import admin
from django.urls import reverse

from cti.models import WebhookEndpoint
from tests.portal.admin_forms import admin_form_data

PUBLIC = "https://hooks.example.com/bp"


@pytest.fixture
def public_dns(monkeypatch):
    """example.com resolves to a public address without asking a resolver (no network here)."""
    import socket

    def fake(host, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def test_it_chooses_webhook_events_with_checkboxes(cast, login, public_dns):
    client = login(cast.admin_a)
    url = reverse("admin:cti_webhookendpoint_add")
    page = client.get(url)
    html = page.content.decode()
    for value in ("call.ringing", "call.answered", "call.ended"):
        assert re.search(rf'<input type="checkbox" name="events" value="{value}"', html), value
    assert "<label>イベント:</label>" in html and "着信中</label>" in html
    assert 'name="url"' in html and 'name="secret"' in html  # the rest of the form is there
    data = admin_form_data(page, url=PUBLIC, secret="s3cret")
    data["events"] = ["call.ended", "call.ringing"]
    assert client.post(url, data).status_code == 302
    hook = WebhookEndpoint.objects.get()
    assert hook.events == ["call.ringing", "call.ended"]  # stored as the JSON list it was
    assert hook.tenant == cast.tenant_a
    # Shown checked again; the list names them.
    html = client.get(reverse("admin:cti_webhookendpoint_change", args=[hook.pk])).content
    assert b'value="call.ended" id="id_events_2" checked' in html
    listing = client.get(reverse("admin:cti_webhookendpoint_changelist")).content.decode()
    assert "終了" in listing and "call.ended" not in listing.split("<tbody>")[1]


def test_it_sends_every_event_when_none_is_checked(cast, login, public_dns):
    client = login(cast.admin_a)
    url = reverse("admin:cti_webhookendpoint_add")
    data = admin_form_data(client.get(url), url=PUBLIC, secret="s3cret")
    data.pop("events", None)
    assert client.post(url, data).status_code == 302
    hook = WebhookEndpoint.objects.get()
    assert hook.events == [] and hook.wants("call.answered")
    listing = client.get(reverse("admin:cti_webhookendpoint_changelist")).content.decode()
    assert "すべてのイベント" in listing


def test_every_admin_form_label_is_translated(cast, login):
    """No English field name left on an add form (a field without a verbose_name shows one)."""
    client = login(cast.superuser)
    english = {}
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in ("portal", "phone", "cti"):
            continue
        if not model_admin.has_add_permission(_request(cast.superuser)):
            continue
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_add")
        html = client.get(url).content.decode()
        labels = [re.sub(r"<[^>]+>|:", "", label).strip() for label in re.findall(
            r"<label[^>]*>(.*?)</label>", html, re.S
        )]  # fmt: skip
        # Acronyms and proper nouns are fine (URL, PBX ドメイン, SIP ...); words are not.
        untranslated = [
            label for label in labels if re.fullmatch(r"[A-Za-z][a-z]+( [a-z]+)*", label)
        ]
        if untranslated:
            english[model.__name__] = untranslated
    assert english == {}


def _request(user):
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = user
    return request
