"""Scoped lookups for phone data (see portal.access): another tenant's or another user's
personal object is a 404, exactly like one that does not exist."""

from django.db.models import Q, QuerySet

from phone.models import Contact, Phonebook
from portal.access import get_profile, get_scoped_or_404, scoped


def visible_phonebooks(user) -> QuerySet:
    """The tenant's shared phonebooks and the user's own personal one."""
    return scoped(Phonebook, user).filter(Q(owner__isnull=True) | Q(owner=user))


def personal_phonebook(user) -> Phonebook:
    """The user's 個別電話帳, created on first use."""
    profile = get_profile(user)
    book = Phonebook.objects.filter(tenant=profile.tenant, owner=user).order_by("id").first()
    if book is None:
        book = Phonebook.objects.create(tenant=profile.tenant, owner=user, name="個別電話帳")
    return book


def get_phonebook_for_user(user, pk) -> Phonebook:
    return get_scoped_or_404(visible_phonebooks(user), user, pk=pk)


def get_contact_for_user(user, pk) -> Contact:
    contacts = Contact.objects.filter(
        Q(phonebook__owner__isnull=True) | Q(phonebook__owner=user)
    ).select_related("phonebook")
    return get_scoped_or_404(contacts, user, pk=pk)


def can_edit_phonebook(user, book: Phonebook) -> bool:
    """Personal books by their owner; shared books by tenant admins only (issue 5)."""
    if book.owner_id is not None:
        return book.owner_id == user.pk
    return get_profile(user).is_tenant_admin
