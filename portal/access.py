"""Tenant-scoped lookups.  Views and consumers reach tenant data only through these helpers.

Every helper takes the acting user and returns objects of that user's tenant only; an object of
another tenant is indistinguishable from one that does not exist (404), so ids leak nothing.
"""

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404

from portal.models import Profile, SipAccount, Tenant


def get_profile(user) -> Profile:
    """The acting user's profile; users without a tenant cannot use the phone portal."""
    if not user.is_authenticated:
        raise PermissionDenied
    try:
        return user.profile
    except Profile.DoesNotExist as exc:
        raise PermissionDenied("this user belongs to no tenant") from exc


def get_tenant(user) -> Tenant:
    return get_profile(user).tenant


def scoped(queryset: QuerySet | type[Model], user) -> QuerySet:
    """Restrict a queryset (or a model's default manager) to the user's tenant."""
    if isinstance(queryset, type):
        queryset = queryset._default_manager.all()
    return queryset.filter(tenant_id=get_profile(user).tenant_id)


def get_scoped_or_404(queryset: QuerySet | type[Model], user, **lookup):
    """One object of the user's tenant; missing, foreign or a malformed id alike are a 404."""
    qs = scoped(queryset, user)
    try:
        return qs.get(**lookup)
    except (qs.model.DoesNotExist, ValueError, TypeError):
        raise Http404 from None


def get_active_sip_account(user) -> SipAccount | None:
    return (
        scoped(SipAccount, user).filter(user=user, is_active=True).select_related("tenant").first()
    )
