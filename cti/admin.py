from django.contrib import admin

from cti.models import CtiSettings, Customer, CustomerContact, CustomerPhone, Reception
from portal.admin_scoping import TenantScopedAdmin, TenantScopedInline


class CustomerPhoneInline(TenantScopedInline):
    model = CustomerPhone
    fields = ["label", "number"]


@admin.register(Customer)
class CustomerAdmin(TenantScopedAdmin):
    list_display = ["name", "kana", "owner1", "owner2"]
    search_fields = ["name", "kana", "phones__number_normalized"]
    inlines = [CustomerPhoneInline]


@admin.register(CustomerContact)
class CustomerContactAdmin(TenantScopedAdmin):
    list_display = ["name", "kana", "department", "number", "customer"]
    search_fields = ["name", "kana", "number_normalized"]


@admin.register(Reception)
class ReceptionAdmin(TenantScopedAdmin):
    list_display = ["created_at", "caller_number", "customer", "taken_by"]
    search_fields = ["caller_number", "memo"]


@admin.register(CtiSettings)
class CtiSettingsAdmin(TenantScopedAdmin):
    list_display = ["user", "enabled", "show_on", "target"]
