import json
import re

from django.urls import reverse

from phone.models import LineButton, ParkGroup
from phone.signalling.schema import ERROR_CODES

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
    # Call control (issue 9).
    "calls",
    "call-timer",
    "notice",
    "blind-transfer-btn",
    "call-swap",
    "line-chosen",
    "line-clear",
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


def labels_of(html):
    found = re.search(r'<script id="phone-labels"[^>]*>(.*?)</script>', html, re.S)
    return json.loads(found.group(1))


# The notice codes the server sends (issue 9) and what a Japanese user reads for each.
NOTICES_JA = {
    "busy": "話し中",
    "no-answer": "応答がありません",
    "not-found": "この番号は存在しません",
    "unavailable": "接続できません",
    "declined": "拒否されました",
    "failed": "接続できませんでした",
    "hold_refused": "保留できませんでした",
    "transfer-failed": "転送できませんでした",
    "park-timeout": "パーク保留の時間切れです",
    "line-refused": "この回線は使えません",
    "pickup-failed": "代理応答できませんでした",  # issue 13: a colleague's line did not take it
}


def test_it_gives_the_page_a_japanese_text_for_every_notice_and_error_code(cast, login):
    labels = labels_of(login(cast.alice).get(reverse("phone:index")).content.decode())
    assert labels["notices"] == NOTICES_JA
    # Every error the server may answer with has a translated text (never the English message).
    assert set(labels["errors"]) == set(ERROR_CODES)
    assert all(re.search(r"[ぁ-んァ-ヶ一-龠]", text) for text in labels["errors"].values())
    assert labels["answer"] == "応答" and labels["reject"] == "拒否" and labels["hangup"] == "切断"


def test_it_gives_english_texts_to_an_english_page(cast, login):
    client = login(cast.alice)
    client.cookies["django_language"] = "en"
    labels = labels_of(client.get(reverse("phone:index")).content.decode())
    assert labels["notices"]["busy"] == "The line is busy"
    assert labels["errors"]["slot_busy"] == "That park slot is taken"


def test_it_labels_line_buttons_for_the_chosen_line_display(cast, login):
    make_pad(cast.tenant_a)
    html = login(cast.alice).get(reverse("phone:index")).content.decode()
    button = r'data-testid="line-btn-1"[^>]*data-number="0311111111" data-label="総務部"'
    assert re.search(button, html)
    assert re.search(r'data-testid="line-chosen"[^>]*hidden', html)
