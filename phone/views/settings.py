"""The 設定 panel (seed 2-2, 2-4, 5-1, 6-1): tabs アカウント, デバイス, 顧客情報表示, その他.

Saving applies at once: the action announces the change (phone.signalling.events) so the sipworker
re-registers and open pages refresh, and the response tells this page through HX-Trigger.
"""

import json

from django import forms
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_POST

from cti.forms import CtiSettingsForm
from cti.models import CtiSettings
from phone import actions, presence
from phone.forms import AccountForm, LineButtonFormSet
from phone.models import LineButton, PhoneUserSettings
from phone.numbers import clean_number
from phone.pad import pad_for
from portal.access import get_profile, scoped
from portal.models import SipAccount

TABS = [
    ("account", _("Account")),
    ("devices", _("Devices")),
    ("cti", _("Customer info")),
    ("other", _("Other")),
]


def _render(request, tab, context, *, trigger=None):
    context = {"tab": tab, "tabs": TABS, "profile": get_profile(request.user), **context}
    template = "phone/settings.html#panel" if request.htmx else "phone/settings.html"
    response = render(request, template, context)
    if trigger:
        response["HX-Trigger"] = json.dumps({trigger: True})
    return response


def _accounts(user) -> dict[int, SipAccount]:
    return {a.slot: a for a in scoped(SipAccount, user).filter(user=user)}


def _account_form(user, slot=None, data=None):
    accounts = _accounts(user)
    active = next((s for s, a in accounts.items() if a.is_active), 1)
    slot = slot if slot in (1, 2) else active
    account = accounts.get(slot)
    initial = {"slot": slot}
    if account is not None:
        initial |= {
            "extension": account.extension,
            "pbx_domain": account.pbx_domain,
            "outbound_proxy": account.outbound_proxy,
        }
    form = AccountForm(data, initial=initial, has_password=bool(account and account.password))
    return form, {"account_slot": slot, "active_slot": active, "account": account}


def _cti_form(user, data=None):
    instance = CtiSettings.objects.filter(user=user).first() or CtiSettings(
        user=user, tenant=get_profile(user).tenant
    )
    return CtiSettingsForm(data, instance=instance)


class DndForm(forms.ModelForm):
    """応答不可: refuse (486) or forward (302) to a number (the line reads it per call)."""

    class Meta:
        model = PhoneUserSettings
        fields = ["dnd_action", "dnd_forward_to"]
        widgets = {
            "dnd_action": forms.RadioSelect,
            "dnd_forward_to": forms.TextInput(
                attrs={"data-testid": "dnd-forward-to", "inputmode": "tel", "autocomplete": "off"}
            ),
        }

    def clean_dnd_forward_to(self):
        value = self.cleaned_data["dnd_forward_to"]
        number = clean_number(value) if value else ""
        if number and number in {a.extension for a in _accounts(self.instance.user).values()}:
            # The caller's phone would be sent back to the line that refused it.
            raise forms.ValidationError(_("Calls cannot be forwarded to your own extension."))
        return number


def _dnd_form(user, data=None):
    # The user's own row, never one named by the request: nobody edits another's setting.
    instance = PhoneUserSettings.objects.filter(user=user).first() or PhoneUserSettings(user=user)
    return DndForm(data, instance=instance)


def _buttons_context(user, data=None):
    profile = get_profile(user)
    mine = scoped(LineButton, user).filter(user=user).order_by("position")
    formset = LineButtonFormSet(
        data, queryset=mine, prefix="buttons", limit=profile.tenant.max_user_buttons
    )
    shared = scoped(LineButton, user).filter(user__isnull=True).order_by("position")
    return {
        "dnd_form": _dnd_form(user),
        "formset": formset,
        "shared_buttons": shared,
        "buttons_allowed": profile.tenant.user_buttons_allowed,
        "max_buttons": profile.tenant.max_user_buttons,
    }


def _tab_context(request, tab):
    if tab == "account":
        slot = request.GET.get("slot")
        form, extra = _account_form(request.user, int(slot) if slot in ("1", "2") else None)
        return {"account_form": form, **extra}
    if tab == "cti":
        return {"cti_form": _cti_form(request.user)}
    if tab == "other":
        return _buttons_context(request.user)
    return {}


@login_required
@require_GET
def settings_panel(request):
    tab = request.GET.get("tab", "account")
    if tab not in dict(TABS):
        tab = "account"
    return _render(request, tab, _tab_context(request, tab))


@login_required
@require_POST
def save_account(request):
    slot = request.POST.get("slot")
    form, extra = _account_form(
        request.user, int(slot) if slot in ("1", "2") else None, request.POST
    )
    if not form.is_valid():
        return _render(request, "account", {"account_form": form, **extra})
    actions.do_save_sip_account(request.user, form.cleaned_data["slot"], form.account_values())
    form, extra = _account_form(request.user, form.cleaned_data["slot"])
    return _render(
        request, "account", {"account_form": form, "saved": True, **extra},
        trigger="account-changed",
    )  # fmt: skip


@login_required
@require_POST
def save_cti(request):
    form = _cti_form(request.user, request.POST)
    if not form.is_valid():
        return _render(request, "cti", {"cti_form": form})
    actions.do_save_cti_settings(request.user, form)
    return _render(
        request, "cti", {"cti_form": _cti_form(request.user), "saved": True},
        trigger="settings-changed",
    )  # fmt: skip


@login_required
@require_POST
def save_buttons(request):
    context = _buttons_context(request.user, request.POST)
    if not context["buttons_allowed"]:
        return _render(request, "other", _buttons_context(request.user), trigger=None)
    formset = context["formset"]
    if not formset.is_valid():
        return _render(request, "other", context)
    actions.do_save_line_buttons(request.user, formset)
    return _render(
        request, "other", {**_buttons_context(request.user), "saved": True},
        trigger="buttons-changed",
    )  # fmt: skip


@login_required
@require_POST
def save_dnd(request):
    form = _dnd_form(request.user, request.POST)
    if not form.is_valid():
        return _render(request, "other", {**_buttons_context(request.user), "dnd_form": form})
    form.save()
    return _render(request, "other", {**_buttons_context(request.user), "saved": True})


@login_required
@require_GET
def external_pad(request):
    """The 外線パッド fragment, fetched again when the buttons change."""
    return render(
        request,
        "phone/_external_pad.html",
        {
            "line_buttons": pad_for(request.user),
            "presence_extensions": presence.lamp_extensions(request.user),
        },
    )
