"""Tenant admins see and change only their own tenant in Django admin; superusers see all."""

import pytest
from django.urls import reverse

from cti.models import Customer
from phone.models import LineButton, ParkGroup, Phonebook
from portal.models import Profile, SipAccount
from tests.portal.admin_forms import admin_form_data


def change_url(obj):
    meta = obj._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])


def changelist_url(model):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def add_url(model):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_add")


def test_it_lists_only_the_admins_own_tenant_users(cast, login):
    client = login(cast.admin_a)
    response = client.get(changelist_url(type(cast.alice)))
    assert response.status_code == 200
    usernames = {u.username for u in response.context["cl"].result_list}
    assert usernames == {"alice", "bob", "admin_a"}


def test_it_hides_other_tenants_objects_behind_404(cast, login):
    client = login(cast.admin_a)
    charlie_account = SipAccount.objects.get(user=cast.charlie)
    book_b = Phonebook.objects.create(tenant=cast.tenant_b, name="B shared")
    customer_b = Customer.objects.create(tenant=cast.tenant_b, name="B顧客")
    for obj in (cast.charlie, charlie_account, book_b, customer_b, cast.superuser):
        assert client.get(change_url(obj)).status_code == 404, obj
        delete = change_url(obj).replace("/change/", "/delete/")
        assert client.post(delete, {"post": "yes"}).status_code == 404, obj
    assert SipAccount.objects.filter(pk=charlie_account.pk).exists()
    assert Phonebook.objects.filter(pk=book_b.pk).exists()


def test_it_keeps_tenants_themselves_for_superusers(cast, login):
    from portal.models import Tenant

    assert login(cast.admin_a).get(changelist_url(Tenant)).status_code == 403
    assert login(cast.superuser).get(changelist_url(Tenant)).status_code == 200


def test_it_refuses_admin_to_plain_staff(cast, login):
    response = login(cast.alice).get(reverse("admin:index"))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_it_does_not_let_a_tenant_admin_escalate(cast, login):
    client = login(cast.admin_a)
    url = change_url(cast.alice)
    page = client.get(url)
    assert "is_superuser" not in page.context["adminform"].form.fields
    assert "user_permissions" not in page.context["adminform"].form.fields
    data = admin_form_data(page, is_superuser="on", is_staff="on", groups="1")
    response = client.post(url, data)
    assert response.status_code == 302, response.context and response.context["errors"]
    cast.alice.refresh_from_db()
    assert not cast.alice.is_superuser
    assert not cast.alice.is_staff
    # Nor on themselves.
    url = change_url(cast.admin_a)
    data = admin_form_data(client.get(url), is_superuser="on")
    assert client.post(url, data).status_code == 302
    cast.admin_a.refresh_from_db()
    assert not cast.admin_a.is_superuser


def test_it_makes_role_the_only_way_to_admin_access(cast, login):
    client = login(cast.admin_a)
    url = change_url(cast.bob)
    data = admin_form_data(client.get(url), **{"profile-0-role": Profile.Role.TENANT_ADMIN})
    assert client.post(url, data).status_code == 302
    cast.bob.refresh_from_db()
    assert cast.bob.is_staff
    assert cast.bob.profile.tenant == cast.tenant_a


def test_it_pins_new_objects_to_the_admins_tenant(cast, login):
    client = login(cast.admin_a)
    response = client.post(
        add_url(ParkGroup),
        {
            "name": "営業",
            "slot_count": 6,
            "park_timeout": 60,
            "members": [cast.alice.pk],
            "tenant": cast.tenant_b.pk,
        },
    )
    assert response.status_code == 302
    group = ParkGroup.objects.get(name="営業")
    assert group.tenant == cast.tenant_a


def test_it_offers_only_own_tenant_users_as_choices(cast, login):
    client = login(cast.admin_a)
    page = client.get(add_url(ParkGroup))
    choices = {u.username for u in page.context["adminform"].form.fields["members"].queryset}
    assert choices == {"alice", "bob", "admin_a"}
    response = client.post(
        add_url(ParkGroup),
        {"name": "混在", "slot_count": 6, "park_timeout": 60, "members": [cast.charlie.pk]},
    )
    assert response.status_code == 200
    assert "members" in response.context["adminform"].form.errors
    assert not ParkGroup.objects.filter(name="混在").exists()


def test_it_cannot_attach_a_sip_account_to_another_tenants_user(cast, login):
    client = login(cast.admin_a)
    response = client.post(
        add_url(SipAccount),
        {"user": cast.charlie.pk, "slot": 2, "extension": "1099", "password": "x", "is_active": ""},
    )
    assert response.status_code == 200
    assert "user" in response.context["adminform"].form.errors
    assert not SipAccount.objects.filter(extension="1099").exists()


def test_it_never_shows_a_stored_sip_password_and_keeps_it_when_left_blank(cast, login):
    client = login(cast.admin_a)
    account = SipAccount.objects.get(user=cast.alice)
    page = client.get(change_url(account))
    assert "alice-sip-pw" not in page.content.decode()
    data = admin_form_data(page, extension="1011", password="")
    assert client.post(change_url(account), data).status_code == 302
    account.refresh_from_db()
    assert account.extension == "1011"
    assert account.password == "alice-sip-pw"


def test_it_creates_users_inside_the_admins_tenant(cast, login):
    from django.contrib.auth import get_user_model

    client = login(cast.admin_a)
    page = client.get(add_url(get_user_model()))
    data = admin_form_data(
        page,
        username="dave",
        password1="a-long-enough-pass-42",
        password2="a-long-enough-pass-42",
        **{"profile-0-role": Profile.Role.STAFF, "profile-0-display_name": "デイブ"},
    )
    data.pop("usable_password", None)
    response = client.post(add_url(get_user_model()), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    dave = get_user_model().objects.get(username="dave")
    assert dave.profile.tenant == cast.tenant_a
    assert not dave.is_staff and not dave.is_superuser


@pytest.mark.parametrize("model", [SipAccount, Phonebook, ParkGroup, LineButton, Customer])
def test_it_shows_a_superuser_every_tenant(cast, login, model):
    response = login(cast.superuser).get(changelist_url(model))
    assert response.status_code == 200


def test_it_shows_only_shared_phonebooks_to_tenant_admins(cast, login):
    shared = Phonebook.objects.create(tenant=cast.tenant_a, name="共有")
    personal = Phonebook.objects.create(tenant=cast.tenant_a, owner=cast.alice, name="個別")
    client = login(cast.admin_a)
    listed = list(client.get(changelist_url(Phonebook)).context["cl"].result_list)
    assert listed == [shared]
    assert client.get(change_url(personal)).status_code == 404
