"""Scoped lookups for CRM data (see portal.access)."""

from cti.models import Customer, Reception
from portal.access import get_scoped_or_404


def get_customer_for_user(user, pk) -> Customer:
    return get_scoped_or_404(Customer, user, pk=pk)


def get_reception_for_user(user, pk) -> Reception:
    return get_scoped_or_404(Reception, user, pk=pk)
