from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from portal.admin_scoping import (
    TenantScopedAdmin,
    TenantScopedInline,
    TenantScopingMixin,
    admin_tenant_id,
)
from portal.models import Profile, SipAccount, Tenant

User = get_user_model()

admin.site.site_header = _("BrowserPhone administration")
admin.site.site_title = _("BrowserPhone administration")

# Labels of model fields that have no verbose_name (Django then shows the English field name,
# untranslated): the admin's forms use these instead.  Set verbose_name on the model fields
# and these become unnecessary.
FIELD_LABELS = {
    "tenant": _("Tenant"),
    "user": _("User"),
    "owner": _("Owner"),
    "members": _("Members"),
    "customer": _("Customer"),
    "call_record": _("Call history"),
    "taken_by": _("Taken by"),
    "answered_by": _("Answered by"),
    "endpoint": _("Webhook"),
    "phonebook": _("Phonebook"),
    "sip_call_id": _("SIP Call-ID"),
}


# django-axes (login throttling) ships no Japanese catalogue: its admin's words are translated in
# ours (locale/ja), which Django consults first.  Listed here so that makemessages keeps them.
AXES_LABELS = [
    gettext_noop("access attempt"), gettext_noop("access attempts"),
    gettext_noop("access failure"), gettext_noop("access failures"),
    gettext_noop("access log"), gettext_noop("access logs"),
    gettext_noop("access attempt expiration"), gettext_noop("access attempt expirations"),
    gettext_noop("User Agent"), gettext_noop("IP Address"), gettext_noop("Username"),
    gettext_noop("HTTP Accept"), gettext_noop("Path"), gettext_noop("Attempt Time"),
    gettext_noop("Access lock out"), gettext_noop("GET Data"), gettext_noop("POST Data"),
    gettext_noop("Failed Logins"), gettext_noop("Access Attempt"), gettext_noop("Expires At"),
    gettext_noop("Logout Time"), gettext_noop("Session key hash (sha256)"),
    gettext_noop("Locked Out"), gettext_noop("Form Data"), gettext_noop("Meta Data"),
    gettext_noop("Clean up expired attempts"), gettext_noop("Not set"),
    gettext_noop("Attempt Remaining"),
    gettext_noop("The time when access attempt expires and is no longer valid."),
]  # fmt: skip


def _has_default_label(db_field) -> bool:
    return str(db_field.verbose_name) == db_field.name.replace("_", " ")


class LabelledFieldsMixin:
    """Translated form labels for the fields of FIELD_LABELS (admin forms and inlines)."""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name in FIELD_LABELS and _has_default_label(db_field):
            kwargs.setdefault("label", FIELD_LABELS[db_field.name])
        return super().formfield_for_dbfield(db_field, request, **kwargs)


def column(name: str, *, ordering: str | None = None):
    """A list_display column for a field without a verbose_name, headed by FIELD_LABELS."""

    @admin.display(description=FIELD_LABELS[name], ordering=ordering or name)
    def show(self, obj):
        value = getattr(obj, name)
        return "" if value is None else str(value)

    return show


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    """Tenants themselves are the operator's business: superusers only."""

    list_display = ["code", "name", "pbx_domain", "outbound_proxy", "transport", "media_encryption"]
    search_fields = ["code", "name"]

    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


class SipAccountForm(forms.ModelForm):
    """Never shows a stored password; leaving the field empty keeps it."""

    password = forms.CharField(
        label=_("Password"),
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("Fill in only to change it."),
    )

    class Meta:
        model = SipAccount
        fields = [
            "tenant",
            "user",
            "slot",
            "extension",
            "auth_user",
            "password",
            "pbx_domain",
            "outbound_proxy",
            "is_active",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stored_password = self.instance.password if self.instance.pk else ""

    def clean_password(self):
        return self.cleaned_data.get("password") or self._stored_password


class ProfileInline(LabelledFieldsMixin, TenantScopingMixin, admin.StackedInline):
    model = Profile
    can_delete = False
    tenant_path = "tenant"
    fields = ["tenant", "role", "display_name"]

    def get_fields(self, request, obj=None):
        if admin_tenant_id(request) is not None:
            return ["role", "display_name"]
        return self.fields


class SipAccountInline(LabelledFieldsMixin, TenantScopedInline):
    model = SipAccount
    form = SipAccountForm
    fk_name = "user"
    fields = [
        "slot",
        "extension",
        "auth_user",
        "password",
        "pbx_domain",
        "outbound_proxy",
        "is_active",
    ]


if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class TenantUserAdmin(TenantScopingMixin, UserAdmin):
    tenant_path = "profile__tenant"
    inlines = [ProfileInline, SipAccountInline]
    list_display = ["username", "display_name", "tenant", "role", "is_active"]
    list_select_related = ["profile", "profile__tenant"]
    tenant_admin_fieldsets = (
        (None, {"fields": ("username", "password")}),
        (_("Personal info"), {"fields": ("first_name", "last_name", "email")}),
        (_("Status"), {"fields": ("is_active",)}),
    )

    @admin.display(description=_("Display name"))
    def display_name(self, obj):
        profile = getattr(obj, "profile", None)
        return profile.name if profile else ""

    @admin.display(description=_("Tenant"))
    def tenant(self, obj):
        profile = getattr(obj, "profile", None)
        return profile.tenant.code if profile else ""

    @admin.display(description=_("Role"))
    def role(self, obj):
        profile = getattr(obj, "profile", None)
        return profile.get_role_display() if profile else ""

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if admin_tenant_id(request) is not None:
            # A tenant admin never sees (and so can never edit) a superuser.
            qs = qs.filter(is_superuser=False)
        return qs

    def get_fieldsets(self, request, obj=None):
        if obj is not None and admin_tenant_id(request) is not None:
            return self.tenant_admin_fieldsets
        return super().get_fieldsets(request, obj)

    def get_list_filter(self, request):
        if admin_tenant_id(request) is not None:
            return ["is_active"]
        return ["is_superuser", "is_active", "profile__tenant"]

    def save_model(self, request, obj, form, change):
        if admin_tenant_id(request) is not None:
            # Belt and braces: these fields are not on a tenant admin's form at all.
            obj.is_superuser = False
        super().save_model(request, obj, form, change)

    def save_formset(self, request, form, formset, change):
        tenant_id = admin_tenant_id(request)
        instances = formset.save(commit=False)
        for instance in instances:
            if tenant_id is not None:
                instance.tenant_id = tenant_id
            elif isinstance(instance, SipAccount) and not instance.tenant_id:
                instance.tenant_id = form.instance.profile.tenant_id
            instance.save()
        for obj in formset.deleted_objects:
            obj.delete()
        formset.save_m2m()

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        user = form.instance
        profile = Profile.objects.filter(user=user).first()
        if profile is not None and not user.is_superuser:
            # Admin access follows the tenant role, so nobody grants staff status by hand.
            should_be_staff = profile.role == Profile.Role.TENANT_ADMIN
            if user.is_staff != should_be_staff:
                user.is_staff = should_be_staff
                user.save(update_fields=["is_staff"])

    def get_inline_instances(self, request, obj=None):
        # SIP accounts need the user's tenant, known once the user exists.
        inlines = super().get_inline_instances(request, obj)
        if obj is None:
            inlines = [i for i in inlines if not isinstance(i, SipAccountInline)]
        return inlines


@admin.register(SipAccount)
class SipAccountAdmin(LabelledFieldsMixin, TenantScopedAdmin):
    form = SipAccountForm
    list_display = ["extension", "user_col", "slot", "is_active", "pbx_domain", "outbound_proxy"]
    user_col = column("user")
    list_filter = ["slot", "is_active"]
    search_fields = ["extension", "user__username"]
    list_select_related = ["user", "tenant"]
