from django.contrib import admin

from phone.models import CallRecord, Contact, LineButton, ParkGroup, Phonebook
from portal.admin_scoping import TenantScopedAdmin, TenantScopedInline, admin_tenant_id


class ContactInline(TenantScopedInline):
    model = Contact
    fields = ["name", "kana", "number"]


@admin.register(Phonebook)
class PhonebookAdmin(TenantScopedAdmin):
    """Tenant admins manage the shared phonebooks; personal ones stay with their owners."""

    list_display = ["name", "owner", "tenant"]
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
class ParkGroupAdmin(TenantScopedAdmin):
    list_display = ["name", "slot_count", "tenant"]
    filter_horizontal = ["members"]


@admin.register(LineButton)
class LineButtonAdmin(TenantScopedAdmin):
    list_display = ["position", "kind", "number", "label", "user", "tenant"]
    list_filter = ["kind"]
    list_select_related = ["user", "tenant"]


@admin.register(CallRecord)
class CallRecordAdmin(TenantScopedAdmin):
    """History is written by the server; admins read it."""

    list_display = ["started_at", "direction", "remote_number", "remote_name", "user"]
    list_filter = ["direction"]
    search_fields = ["remote_number", "remote_name", "called_number"]
    list_select_related = ["user"]
    date_hierarchy = "started_at"

    def has_add_permission(self, request, *args):
        return False

    def has_change_permission(self, request, obj=None):
        return False
