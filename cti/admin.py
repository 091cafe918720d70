from django import forms
from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from cti.models import (
    ApiToken,
    CtiSettings,
    Customer,
    CustomerContact,
    CustomerPhone,
    Reception,
    WebhookDelivery,
    WebhookEndpoint,
)
from cti.tokens import create_token
from portal.admin import LabelledFieldsMixin, column
from portal.admin_scoping import TenantScopedAdmin, TenantScopedInline, admin_tenant_id
from portal.models import Tenant


class CustomerPhoneInline(LabelledFieldsMixin, TenantScopedInline):
    model = CustomerPhone
    fields = ["label", "number"]


@admin.register(Customer)
class CustomerAdmin(LabelledFieldsMixin, TenantScopedAdmin):
    list_display = ["name", "kana", "owner1", "owner2"]
    search_fields = ["name", "kana", "phones__number_normalized"]
    inlines = [CustomerPhoneInline]


@admin.register(CustomerContact)
class CustomerContactAdmin(LabelledFieldsMixin, TenantScopedAdmin):
    list_display = ["name", "kana", "department", "number", "customer_col"]
    customer_col = column("customer")
    search_fields = ["name", "kana", "number_normalized"]


@admin.register(Reception)
class ReceptionAdmin(LabelledFieldsMixin, TenantScopedAdmin):
    list_display = ["created_at", "caller_number", "customer_col", "taken_by_col"]
    customer_col = column("customer")
    taken_by_col = column("taken_by")
    search_fields = ["caller_number", "memo"]


@admin.register(CtiSettings)
class CtiSettingsAdmin(LabelledFieldsMixin, TenantScopedAdmin):
    list_display = ["user_col", "enabled", "show_on", "target"]
    user_col = column("user")


def _https_by_default(db_field, **kwargs):
    if db_field.name == "url":
        kwargs["assume_scheme"] = "https"
    return db_field.formfield(**kwargs)


class WebhookEndpointForm(forms.ModelForm):
    """The events as checkboxes, not the JSON list the model stores."""

    events = forms.MultipleChoiceField(
        label=_("Events"),
        choices=WebhookEndpoint.Event.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text=_("None checked: every event."),
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["tenant", "url", "secret", "events", "active"]
        # The admin builds the fields again with its own formfield_for_dbfield (below); this
        # only keeps the form class itself from using the old http default.
        formfield_callback = _https_by_default

    def clean_events(self):
        # In the order of the choices, whatever order the browser sent them in.
        chosen = set(self.cleaned_data["events"])
        return [value for value, _label in WebhookEndpoint.Event.choices if value in chosen]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(LabelledFieldsMixin, TenantScopedAdmin):
    form = WebhookEndpointForm
    list_display = ["url", "active", "event_names"]

    @admin.display(description=_("Events"))
    def event_names(self, obj):
        if not obj.events:
            return _("Every event")
        labels = dict(WebhookEndpoint.Event.choices)
        return ", ".join(str(labels.get(event, event)) for event in obj.events)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "secret":
            kwargs["widget"] = forms.PasswordInput(render_value=True)
        if db_field.name == "url":
            kwargs["assume_scheme"] = "https"  # a URL typed without a scheme means https
        return super().formfield_for_dbfield(db_field, request, **kwargs)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(LabelledFieldsMixin, TenantScopedAdmin):
    """The delivery log: read-only."""

    list_display = ["created_at", "event", "endpoint_col", "status", "attempts", "response_code"]
    endpoint_col = column("endpoint")
    list_filter = ["status", "event"]
    list_select_related = ["endpoint"]

    def has_add_permission(self, request, *args):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(LabelledFieldsMixin, TenantScopedAdmin):
    """Click-to-dial keys.  The key is shown once, when the token is created."""

    list_display = ["name", "prefix", "active", "created_at", "last_used_at"]
    fields = ["name", "active"]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        tenant_id = admin_tenant_id(request) or obj.tenant_id
        token, key = create_token(Tenant.objects.get(pk=tenant_id), obj.name)
        obj.pk, obj.prefix, obj.key_hash = token.pk, token.prefix, token.key_hash
        obj.tenant_id = tenant_id
        messages.warning(
            request, _("Copy this key now; it is not shown again: %(key)s") % {"key": key}
        )

    def get_fields(self, request, obj=None):
        if admin_tenant_id(request) is None and obj is None:
            return ["tenant", "name", "active"]
        return self.fields
