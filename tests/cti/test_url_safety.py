"""URLs that admins and users type: webhooks never reach internal machines (SSRF), screen-pop
links only ever open http(s), and the delivery log keeps a short, harmless reason (issue 10)."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from cti.models import CtiSettings, WebhookDelivery, WebhookEndpoint
from portal.urlsafety import HostNotResolved, UnsafeURL, check_delivery_url
from tests.portal.admin_forms import admin_form_data

PUBLIC = "https://93.184.216.34/hook"  # a public address literal: no DNS needed on this machine


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",  # loopback
        "http://127.1/hook",  # loopback, short form
        "http://[::1]/hook",
        "http://10.0.0.5/hook",  # private
        "http://192.168.1.10/hook",
        "http://172.16.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata service
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped IPv6 loopback
        "http://[::ffff:10.0.0.5]/hook",
        "http://[fd00::1]/hook",  # unique local
        "http://0.0.0.0/hook",  # unspecified
        "http://[::]/hook",
        "http://224.0.0.1/hook",  # multicast
        "http://[ff02::1]/hook",
        "http://240.0.0.1/hook",  # reserved
        "http://100.64.0.1/hook",  # carrier-grade NAT, not public
        "http://2130706433/hook",  # 127.0.0.1 as one number: judged by what it resolves to
        "http://0x7f.1/hook",
        "http://[0:0:0:0:0:ffff:7f00:1]/hook",
        "http://[2002:7f00:1::]/hook",  # 6to4 around 127.0.0.1
        "http://localhost/hook",  # a name that resolves to loopback
        "http://LOCALHOST./hook",
    ],
)
def test_it_refuses_webhooks_to_internal_addresses(url):
    with pytest.raises(UnsafeURL):
        check_delivery_url(url)


@pytest.mark.parametrize(
    "url", ["ftp://93.184.216.34/", "file:///etc/passwd", "javascript:alert(1)", "gopher://x/"]
)
def test_it_refuses_webhooks_that_are_not_http(url):
    with pytest.raises(UnsafeURL):
        check_delivery_url(url)


def test_it_accepts_public_addresses():
    check_delivery_url(PUBLIC)
    check_delivery_url("http://[2606:2800:220:1:248:1893:25c8:1946]/hook")


def test_it_accepts_an_internal_host_the_operator_allowed(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.internal", "127.0.0.1"]
    check_delivery_url("https://hooks.internal/crm")  # not even resolved: trusted by name
    check_delivery_url("http://127.0.0.1:8000/hook")
    with pytest.raises(UnsafeURL):
        check_delivery_url("http://10.0.0.5/hook")  # other internal hosts stay refused


def test_it_tells_an_unresolvable_host_apart(settings):
    # A DNS failure may be temporary: the delivery code can retry it, unlike a refusal.
    with pytest.raises(HostNotResolved):
        check_delivery_url("https://no-such-host.invalid/hook")


def test_it_refuses_internal_webhooks_at_model_level(cast):
    hook = WebhookEndpoint(tenant=cast.tenant_a, url="http://169.254.169.254/", secret="s")
    with pytest.raises(ValidationError) as exc:
        hook.full_clean()
    assert "url" in exc.value.message_dict
    WebhookEndpoint(tenant=cast.tenant_a, url=PUBLIC, secret="s").full_clean()


def test_it_shows_a_field_error_in_the_admin_for_an_internal_webhook(cast, login):
    client = login(cast.admin_a)
    url = reverse("admin:cti_webhookendpoint_add")
    data = admin_form_data(client.get(url), url="http://localhost:6379/", secret="s3cret")
    response = client.post(url, data)
    assert response.status_code == 200  # the form again, not a redirect
    errors = response.context["adminform"].form.errors
    # The message names the setting that would allow it (in Japanese or English).
    assert "url" in errors and "WEBHOOK_ALLOWED_HOSTS" in str(errors["url"])
    assert not WebhookEndpoint.objects.exists()
    response = client.post(url, {**data, "url": PUBLIC})
    assert response.status_code == 302
    assert WebhookEndpoint.objects.get().tenant == cast.tenant_a


def test_it_keeps_only_a_short_escaped_reason_in_the_delivery_log(cast):
    hook = WebhookEndpoint.objects.create(tenant=cast.tenant_a, url=PUBLIC, secret="s")
    body = "<html>\x1b[31mroot:x:0:0\n" + "internal page " * 500
    delivery = WebhookDelivery.objects.create(
        tenant=cast.tenant_a, endpoint=hook, event="call.ended", payload={}, error=body
    )
    delivery.refresh_from_db()
    assert len(delivery.error) <= 200
    assert "\x1b" not in delivery.error and "\n" not in delivery.error
    assert delivery.error.startswith("<html>\\x1b[31mroot:x:0:0\\n")


# --- CTI URL templates: a browser opens them -----------------------------------------------------

HOSTILE_TEMPLATES = [
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "java\tscript:alert(1)",  # browsers drop tabs and newlines inside the scheme
    "java\nscript:alert(1)",
    " javascript:alert(1)",  # and leading spaces and controls
    "\x01javascript:alert(1)",
    "java\x00script:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "file:///C:/Windows/",
    "https:evil.example/{number}",  # no //host
    "//evil.example/?tel={number}",  # no scheme
    "ht\x01tp://crm.example.jp/",  # a control character left inside
    "https://crm.example.jp/?tel={number} x",  # a space inside
]


@pytest.mark.parametrize("url", HOSTILE_TEMPLATES)
def test_it_refuses_non_http_cti_urls_at_model_level(cast, url):
    settings = CtiSettings(tenant=cast.tenant_a, user=cast.alice, target="url", reception_url=url)
    with pytest.raises(ValidationError) as exc:
        settings.full_clean()
    assert "reception_url" in exc.value.message_dict


def test_it_stores_a_cti_url_as_the_browser_reads_it(cast):
    settings = CtiSettings(
        tenant=cast.tenant_a,
        user=cast.alice,
        target="url",
        reception_url=" https://crm.example.jp/r?\ttel={number}\n",
    )
    settings.full_clean()
    assert settings.reception_url == "https://crm.example.jp/r?tel={number}"


@pytest.mark.parametrize("url", ["java\tscript:alert(1)", " javascript:alert(1)"])
def test_it_refuses_hidden_javascript_in_the_users_cti_settings(cast, login, url):
    data = {"enabled": "on", "show_on": "ring", "target": "url", "reception_url": url}
    html = login(cast.alice).post(reverse("phone:settings_cti"), data, HTTP_HX_REQUEST="true")
    assert 'data-testid="cti-error-reception_url"' in html.content.decode()
    assert not CtiSettings.objects.filter(user=cast.alice).exists()


def test_it_refuses_javascript_cti_urls_in_the_admin(cast, login):
    client = login(cast.admin_a)
    url = reverse("admin:cti_ctisettings_add")
    data = admin_form_data(
        client.get(url),
        user=str(cast.alice.pk),
        target="url",
        show_on="ring",
        reception_url="java\tscript:alert(document.cookie)",
    )
    response = client.post(url, data)
    assert response.status_code == 200
    assert "reception_url" in response.context["adminform"].form.errors
    assert not CtiSettings.objects.exists()


def test_it_never_renders_a_stored_javascript_url_into_the_popup(cast, login):
    CtiSettings.objects.create(
        tenant=cast.tenant_a, user=cast.alice, target="url", show_on="ring",
        reception_url="https://crm.example.jp/r?tel={number}",
    )  # fmt: skip
    # Written around validation (an old row, a raw update): the popup still must not use it.
    CtiSettings.objects.filter(user=cast.alice).update(
        customer_list_url="javascript:alert(1)//{number}",
        reception_url="java\tscript:alert(2)",
        use_directory_url=True,
        directory_url="data:text/html,<script>alert(3)</script>",
    )
    client = login(cast.alice)
    html = client.get(reverse("cti:popup"), {"number": "0311", "phase": "ring"}).content.decode()
    for bad in ("javascript", "java\tscript", "java&#x9;script", "data:"):
        assert bad not in html.lower()
    # The buttons fall back to the built-in pages.
    assert reverse("cti:customers") + "?q=0311" in html
    assert reverse("cti:directory") + "?q=0311" in html
