"""The 設定 panel: account, devices, customer-info and other (pad buttons) tabs."""

import json
import re

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.urls import reverse

from cti.models import CtiSettings
from phone.models import LineButton
from phone.signalling import events
from portal.models import SipAccount

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def listen():
    """listen(group) → receive(): the next channel-layer event sent to that group."""
    layer = get_channel_layer()

    def _listen(group):
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(group, channel)
        return lambda: async_to_sync(layer.receive)(channel)

    return _listen


@pytest.mark.parametrize("tab", ["account", "devices", "cti", "other"])
def test_it_renders_every_tab_as_fragment_and_page(cast, login, tab):
    client = login(cast.alice)
    fragment = client.get(reverse("phone:settings"), {"tab": tab}, **HTMX).content.decode()
    page = client.get(reverse("phone:settings"), {"tab": tab}).content.decode()
    assert "<html" not in fragment and "<html" in page
    assert f'data-tab="{tab}"' in fragment


def test_it_shows_the_account_tab_hooks_with_the_active_account(cast, login):
    html = login(cast.alice).get(reverse("phone:settings"), **HTMX).content.decode()
    for hook in ("acct-slot-1", "acct-slot-2", "acct-extension", "acct-password", "acct-domain",
                 "acct-proxy", "acct-tenant", "acct-save"):  # fmt: skip
        assert f'data-testid="{hook}"' in html, hook
    assert re.search(
        r'value="1001"[^>]*data-testid="acct-extension"|data-testid="acct-extension"[^>]*value="1001"',
        html,
    )
    assert 'value="tenant-a"' in html
    assert "alice-sip-pw" not in html


def test_it_saves_account_two_makes_it_active_and_announces_it(
    cast, login, listen, django_capture_on_commit_callbacks
):
    receive = listen(events.user_group(cast.alice.pk))
    client = login(cast.alice)
    data = {"slot": "2", "extension": "1101", "password": "pw-two", "pbx_domain": "",
            "outbound_proxy": "198.51.100.7:5080"}  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("phone:settings_account"), data, **HTMX)
    assert 'data-testid="settings-saved"' in response.content.decode()
    assert json.loads(response["HX-Trigger"]) == {"account-changed": True}
    active = SipAccount.objects.get(user=cast.alice, is_active=True)
    assert (active.slot, active.extension, active.password, active.proxy) == (
        2, "1101", "pw-two", "198.51.100.7:5080",
    )  # fmt: skip
    assert active.tenant == cast.tenant_a
    assert SipAccount.objects.filter(user=cast.alice).count() == 2
    assert receive() == {"type": "phone.account_changed", "slot": 2}


def test_it_keeps_the_password_when_left_empty_and_switches_back(cast, login):
    client = login(cast.alice)
    data = {"slot": "1", "extension": "1001", "password": "", "pbx_domain": "",
            "outbound_proxy": ""}  # fmt: skip
    client.post(reverse("phone:settings_account"), data, **HTMX)
    assert SipAccount.objects.get(user=cast.alice, slot=1).password == "alice-sip-pw"


def test_it_needs_a_password_for_a_new_account_and_reports_bad_fields(cast, login):
    client = login(cast.alice)
    data = {"slot": "2", "extension": "bad ext!", "password": "", "outbound_proxy": "no good:x"}
    html = client.post(reverse("phone:settings_account"), data, **HTMX).content.decode()
    for field in ("extension", "password", "outbound_proxy"):
        assert f'data-testid="acct-error-{field}"' in html, field
    assert not SipAccount.objects.filter(user=cast.alice, slot=2).exists()
    assert SipAccount.objects.get(user=cast.alice, is_active=True).slot == 1


def test_it_saves_cti_settings_with_url_templates(cast, login):
    client = login(cast.alice)
    data = {"enabled": "on", "show_on": "answer", "target": "url",
            "reception_url": "https://crm.example.jp/r?tel={number}&to={called}",
            "customer_list_url": "", "directory_url": ""}  # fmt: skip
    response = client.post(reverse("phone:settings_cti"), data, **HTMX)
    assert 'data-testid="settings-saved"' in response.content.decode()
    settings = CtiSettings.objects.get(user=cast.alice)
    assert (settings.show_on, settings.target, settings.tenant) == ("answer", "url", cast.tenant_a)


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "https://x/{password}", "https://x/{number", "no-scheme"]
)
def test_it_rejects_unsafe_or_unknown_url_templates(cast, login, url):
    data = {"enabled": "on", "show_on": "ring", "target": "url", "reception_url": url}
    html = login(cast.alice).post(reverse("phone:settings_cti"), data, **HTMX).content.decode()
    assert 'data-testid="cti-error-reception_url"' in html
    assert not CtiSettings.objects.filter(user=cast.alice).exists()


def button_data(rows, existing=0):
    data = {"buttons-TOTAL_FORMS": str(len(rows)), "buttons-INITIAL_FORMS": str(existing),
            "buttons-MIN_NUM_FORMS": "0", "buttons-MAX_NUM_FORMS": "1000"}  # fmt: skip
    for i, row in enumerate(rows):
        for key, value in row.items():
            data[f"buttons-{i}-{key}"] = value
    return data


def test_it_saves_the_users_own_pad_buttons_and_refreshes_the_pad(cast, login):
    client = login(cast.alice)
    rows = [{"position": "7", "kind": "onetouch", "number": "03-9999-9999", "label": "ABC様"},
            {"position": "8", "kind": "vm_status", "number": "", "label": ""}]  # fmt: skip
    response = client.post(reverse("phone:settings_buttons"), button_data(rows), **HTMX)
    assert json.loads(response["HX-Trigger"]) == {"buttons-changed": True}
    mine = LineButton.objects.filter(user=cast.alice).order_by("position")
    assert [(b.kind, b.number, b.tenant_id) for b in mine] == [
        ("onetouch", "0399999999", cast.tenant_a.pk), ("vm_status", "", cast.tenant_a.pk),
    ]  # fmt: skip
    pad = client.get(reverse("phone:external_pad")).content.decode()
    assert 'data-testid="onetouch-btn-1"' in pad and 'data-number="921001"' in pad
    assert "ABC様" not in login(cast.bob).get(reverse("phone:external_pad")).content.decode()


def test_it_limits_pad_buttons_to_what_the_tenant_allows(cast, login):
    cast.tenant_a.max_user_buttons = 1
    cast.tenant_a.save()
    client = login(cast.alice)
    rows = [{"position": "1", "kind": "onetouch", "number": "1", "label": ""},
            {"position": "2", "kind": "onetouch", "number": "2", "label": ""}]  # fmt: skip
    html = client.post(reverse("phone:settings_buttons"), button_data(rows), **HTMX)
    assert 'data-testid="buttons-error"' in html.content.decode()
    assert not LineButton.objects.filter(user=cast.alice).exists()
    cast.tenant_a.user_buttons_allowed = False
    cast.tenant_a.save()
    client.post(reverse("phone:settings_buttons"), button_data(rows[:1]), **HTMX)
    assert not LineButton.objects.filter(user=cast.alice).exists()


def test_it_cannot_edit_another_users_or_tenants_buttons(cast, login):
    bobs = LineButton.objects.create(
        tenant=cast.tenant_a, user=cast.bob, position=1, kind="onetouch", number="1"
    )
    charlies = LineButton.objects.create(
        tenant=cast.tenant_b, user=cast.charlie, position=1, kind="onetouch", number="2"
    )
    client = login(cast.alice)
    for victim in (bobs, charlies):
        rows = [{"id": str(victim.pk), "position": "1", "kind": "onetouch", "number": "666",
                 "label": "", "DELETE": "on"}]  # fmt: skip
        client.post(reverse("phone:settings_buttons"), button_data(rows, existing=1), **HTMX)
        victim.refresh_from_db()
        assert victim.number != "666"
    assert LineButton.objects.filter(pk__in=[bobs.pk, charlies.pk]).count() == 2
