import re

from django.urls import reverse

from phone.models import LineButton, ParkGroup

# Every hook of design.md §5 that the phone page carries.
PHONE_HOOKS = [
    "reg-lamp",
    "status",
    "display",
    "dial-input",
    "dial-clear",
    "call-btn",
    "hangup-btn",
    *[f"key-{n}" for n in range(10)],
    "key-star",
    "key-hash",
    "hold-btn",
    "transfer-btn",
    "transfer-complete-btn",
    *[f"park-slot-{n}" for n in range(1, 7)],
    "phonebook-toggle",
    "history-toggle",
    "settings-toggle",
    "external-toggle",
    "cti-toggle",
    "confirm-yes",
    "confirm-no",
    "line-btn-1",
    "line-btn-2",
    "onetouch-btn-1",
    "vm-start-btn",
    "vm-stop-btn",
    "vm-status-btn",
    "cti-panel",
    "cti-number",
    "cti-customer",
    "cti-called",
    "cti-last-call",
]


def make_pad(tenant, user=None):
    rows = [
        (1, LineButton.Kind.LINE, "0311111111", "総務部"),
        (2, LineButton.Kind.ONE_TOUCH, "0399999999", "株式会社ABC様"),
        (3, LineButton.Kind.LINE, "0311112222", "業務部"),
        (4, LineButton.Kind.VM_START, "", ""),
        (5, LineButton.Kind.VM_STOP, "", ""),
        (6, LineButton.Kind.VM_STATUS, "", ""),
    ]
    for position, kind, number, label in rows:
        LineButton.objects.create(
            tenant=tenant, user=user, position=position, kind=kind, number=number, label=label
        )


def hooks_in(html):
    return dict(re.findall(r'data-testid="([^"]+)"((?:\s+data-state="[^"]*")?)', html))


def test_it_renders_every_hook_of_the_ui_contract(cast, login):
    make_pad(cast.tenant_a)
    group = ParkGroup.objects.create(tenant=cast.tenant_a, name="代表")
    group.members.add(cast.alice)
    html = login(cast.alice).get(reverse("phone:index")).content.decode()
    found = hooks_in(html)
    missing = [hook for hook in PHONE_HOOKS if hook not in found]
    assert not missing
    assert 'data-testid="reg-lamp" data-state="pending"' in html
    assert re.search(r'data-testid="status" data-state="idle"[^>]*>待機中<', html)
    assert html.count('data-testid="park-slot-') == 6


def test_it_fills_voicemail_buttons_with_the_tenants_feature_codes(cast, login):
    make_pad(cast.tenant_a)
    html = login(cast.alice).get(reverse("phone:index")).content.decode()
    assert re.search(r'data-testid="vm-start-btn"[^>]*data-number="\*21911001"', html)
    assert re.search(r'data-testid="vm-stop-btn"[^>]*data-number="\*21"', html)
    assert re.search(r'data-testid="vm-status-btn"[^>]*data-number="921001"', html)
    assert re.search(r'data-testid="line-btn-2"[^>]*data-number="0311112222"', html)


def test_it_shows_the_users_extension_and_no_other_tenants_buttons(cast, login):
    make_pad(cast.tenant_b)
    html = login(cast.alice).get(reverse("phone:index")).content.decode()
    assert 'data-testid="extension">1001<' in html
    assert "line-btn-1" not in html
    assert "0311111111" not in html


def test_it_shows_personal_buttons_only_to_their_owner(cast, login):
    LineButton.objects.create(
        tenant=cast.tenant_a, user=cast.bob, position=1, kind="onetouch", number="0120", label="B"
    )
    assert "onetouch-btn-1" not in login(cast.alice).get(reverse("phone:index")).content.decode()
    assert "onetouch-btn-1" in login(cast.bob).get(reverse("phone:index")).content.decode()


def test_it_disables_park_slots_for_users_outside_any_park_group(cast, login):
    html = login(cast.alice).get(reverse("phone:index")).content.decode()
    assert re.search(r'data-testid="park-slot-1"[^>]*disabled', html)


def test_it_refuses_the_phone_page_to_a_user_without_a_tenant(cast, login):
    assert login(cast.superuser).get(reverse("phone:index")).status_code == 403


def test_it_serves_htmx_from_our_own_static_files(cast, login):
    html = login(cast.alice).get(reverse("phone:index")).content.decode()
    assert "/static/vendor/htmx.min.js" in html
    assert "unpkg" not in html and "cdn" not in html.lower()
