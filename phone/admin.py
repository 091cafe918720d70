from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from phone.models import CallRecord, Contact, LineButton, ParkGroup, Phonebook
from phone.numbers import display_number
from phone.quality import FAIR_MOS
from portal.admin import LabelledFieldsMixin, column
from portal.admin_scoping import TenantScopedAdmin, TenantScopedInline, admin_tenant_id


class ContactInline(LabelledFieldsMixin, TenantScopedInline):
    model = Contact
    fields = ["name", "kana", "number"]


@admin.register(Phonebook)
class PhonebookAdmin(LabelledFieldsMixin, TenantScopedAdmin):
    """Tenant admins manage the shared phonebooks; personal ones stay with their owners."""

    list_display = ["name", "owner_col", "tenant_col"]
    owner_col = column("owner")
    tenant_col = column("tenant")
    inlines = [ContactInline]

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if admin_tenant_id(request) is not None:
            qs = qs.filter(owner__isnull=True)
        return qs

    def get_exclude(self, request, obj=None):
        exclude = super().get_exclude(request, obj)
        if admin_tenant_id(request) is not None:
            exclude.append("owner")
        return exclude


@admin.register(ParkGroup)
class ParkGroupAdmin(LabelledFieldsMixin, TenantScopedAdmin):
    list_display = ["name", "slot_count", "tenant_col"]
    tenant_col = column("tenant")
    filter_horizontal = ["members"]


@admin.register(LineButton)
class LineButtonAdmin(LabelledFieldsMixin, TenantScopedAdmin):
    list_display = ["position", "kind", "number", "label", "user_col", "tenant_col"]
    user_col = column("user")
    tenant_col = column("tenant")
    list_filter = ["kind"]
    list_select_related = ["user", "tenant"]


class QualityFilter(admin.SimpleListFilter):
    """通話品質: the calls whose MOS-style score was poor (phone.quality; issue 13, item 5).
    Narrows the admin's own (tenant-scoped) queryset, so it never widens what is listed."""

    title = _("call quality")
    parameter_name = "quality"

    def lookups(self, request, model_admin):
        return [("poor", _("Poor quality")), ("ok", _("Good or fair"))]

    def queryset(self, request, queryset):
        if self.value() == "poor":
            return queryset.filter(quality_mos__lt=FAIR_MOS)
        if self.value() == "ok":
            return queryset.filter(quality_mos__gte=FAIR_MOS)
        return queryset


@admin.register(CallRecord)
class CallRecordAdmin(LabelledFieldsMixin, TenantScopedAdmin):
    """History is written by the server; admins read it."""

    list_display = ["started_at", "direction", "remote", "remote_name", "user_col", "quality_mos"]
    user_col = column("user")
    # Read-only: every field shown by name, those without a translated verbose_name by a method.
    fields = readonly_fields = [
        "started_at", "direction", "remote", "remote_name", "called", "user_col",
        "answered_by_name", "answered_at", "ended_at", "end_reason", "call_id",
        "quality_mos", "quality_loss", "quality_jitter", "quality_rtt",
    ]  # fmt: skip

    @admin.display(description=_("Caller number"), ordering="remote_number")
    def remote(self, obj):
        return display_number(obj.remote_number)

    @admin.display(description=_("Called number"), ordering="called_number")
    def called(self, obj):
        return display_number(obj.called_number)

    @admin.display(description=_("SIP Call-ID"))
    def call_id(self, obj):
        return obj.sip_call_id

    list_filter = ["direction", QualityFilter]
    search_fields = ["remote_number", "remote_name", "called_number"]
    list_select_related = ["user"]
    date_hierarchy = "started_at"

    def has_add_permission(self, request, *args):
        return False

    def has_change_permission(self, request, obj=None):
        return False
