"""Django admin for tenant admins: a staff role that sees and changes only its own tenant.

Superusers keep the stock admin.  A tenant admin (Profile.role == admin, is_staff) gets every model
registered with `TenantScopedAdmin`, restricted to its tenant: querysets are filtered, objects of
another tenant are a 404, the tenant field is hidden and forced on save, and every foreign key or
many-to-many choice offers only the tenant's own objects and users.
"""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.http import Http404

from portal.models import Profile


def admin_tenant_id(request) -> int | None:
    """The tenant a (non-superuser) admin request acts for; None for superusers."""
    user = request.user
    if user.is_superuser:
        return None
    cached = getattr(request, "_admin_tenant_id", False)
    if cached is not False:
        return cached
    profile = Profile.objects.filter(user=user, role=Profile.Role.TENANT_ADMIN).first()
    request._admin_tenant_id = profile.tenant_id if profile else -1  # -1: matches nothing
    return request._admin_tenant_id


def is_tenant_admin(request) -> bool:
    user = request.user
    return (
        user.is_active
        and user.is_staff
        and not user.is_superuser
        and admin_tenant_id(request) not in (None, -1)
    )


def _model_has_tenant(model) -> bool:
    return any(f.name == "tenant" for f in model._meta.get_fields())


class TenantScopingMixin:
    """Shared by ModelAdmin and inlines."""

    # Where the tenant lives, as an ORM path (e.g. "profile__tenant" for users).
    tenant_path = "tenant"

    def _allowed(self, request) -> bool:
        return request.user.is_superuser or is_tenant_admin(request)

    def has_module_permission(self, request):
        return self._allowed(request)

    def has_view_permission(self, request, obj=None):
        return self._allowed(request)

    def has_add_permission(self, request, *args):
        return self._allowed(request)

    def has_change_permission(self, request, obj=None):
        return self._allowed(request)

    def has_delete_permission(self, request, obj=None):
        return self._allowed(request)

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        tenant_id = admin_tenant_id(request)
        if tenant_id is None:
            return qs
        return qs.filter(**{f"{self.tenant_path}_id": tenant_id})

    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or [])
        if admin_tenant_id(request) is not None and self.tenant_path == "tenant":
            exclude.append("tenant")
        return exclude

    def _limit_choices(self, request, db_field, kwargs):
        tenant_id = admin_tenant_id(request)
        if tenant_id is None:
            return
        related = db_field.related_model
        if related is get_user_model():
            kwargs["queryset"] = related._default_manager.filter(
                profile__tenant_id=tenant_id, is_superuser=False
            )
        elif _model_has_tenant(related):
            kwargs["queryset"] = related._default_manager.filter(tenant_id=tenant_id)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        self._limit_choices(request, db_field, kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        self._limit_choices(request, db_field, kwargs)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def get_object(self, request, object_id, from_field=None):
        """(ModelAdmins) another tenant's object looks exactly like a missing one: 404."""
        obj = super().get_object(request, object_id, from_field)
        if obj is None and admin_tenant_id(request) is not None:
            raise Http404
        return obj


class TenantScopedAdmin(TenantScopingMixin, admin.ModelAdmin):
    def save_model(self, request, obj, form, change):
        tenant_id = admin_tenant_id(request)
        if tenant_id is not None and self.tenant_path == "tenant":
            obj.tenant_id = tenant_id
        super().save_model(request, obj, form, change)

    def save_formset(self, request, form, formset, change):
        tenant_id = admin_tenant_id(request)
        instances = formset.save(commit=False)
        for instance in instances:
            if _model_has_tenant(type(instance)):
                # Inline rows belong to the parent's tenant whoever edits them.
                parent_tenant = getattr(form.instance, "tenant_id", None)
                instance.tenant_id = tenant_id if tenant_id is not None else parent_tenant
            instance.save()
        for obj in formset.deleted_objects:
            obj.delete()
        formset.save_m2m()


class TenantScopedInline(TenantScopingMixin, admin.TabularInline):
    extra = 0

    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or [])
        if _model_has_tenant(self.model) and "tenant" not in exclude:
            # Inline rows take the parent's tenant (see TenantScopedAdmin.save_formset).
            exclude.append("tenant")
        return exclude
