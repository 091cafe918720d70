"""Built-in CRM queries: customers, their numbers, the 名簿 directory, receptions."""

from django.db.models import Q, QuerySet

from cti.models import Customer, CustomerContact
from phone.text import search_terms


def search_customers(tenant_id: int, query: str) -> QuerySet:
    customers = Customer.objects.filter(tenant_id=tenant_id)
    text, katakana, digits = search_terms(query)
    if text:
        match = Q(name__icontains=text) | Q(kana__icontains=katakana)
        if digits:
            match |= Q(phones__number_normalized__contains=digits)
        customers = customers.filter(match).distinct()
    return customers.prefetch_related("phones").select_related("owner1__profile", "owner2__profile")


def search_directory(tenant_id: int, query: str) -> QuerySet:
    people = CustomerContact.objects.filter(tenant_id=tenant_id).select_related("customer")
    text, katakana, digits = search_terms(query)
    if text:
        match = (
            Q(name__icontains=text)
            | Q(kana__icontains=katakana)
            | Q(department__icontains=text)
            | Q(customer__name__icontains=text)
        )
        if digits:
            match |= Q(number_normalized__contains=digits)
        people = people.filter(match)
    return people
