"""The fixed test cast, built in one place.

Tenant A: alice, bob (staff), admin_a (tenant admin); tenant B: charlie, admin_b; plus a superuser.

Import nothing from here in tests; use the fixtures.
"""

import functools
import gc
from dataclasses import dataclass

import pytest

pytest_plugins = ["tests.support.fixtures"]

PASSWORD = "correct-horse-battery"


@dataclass
class Cast:
    tenant_a: object
    tenant_b: object
    alice: object
    bob: object
    admin_a: object
    charlie: object
    admin_b: object
    superuser: object
    password: str = PASSWORD


@functools.cache
def _password_hash(algorithm: str) -> str:
    """PASSWORD hashed once per hasher and session: the e2e servers check real PBKDF2 hashes,
    and hashing it for each of the cast's six users took 3.6 s of every e2e test's setup."""
    from django.contrib.auth.hashers import make_password

    return make_password(PASSWORD)


def _hashed_password() -> str:
    from django.contrib.auth.hashers import get_hasher

    return _password_hash(get_hasher().algorithm)


def _make_user(tenant, username, role, extension=None, sip_password="sip-secret"):
    from django.contrib.auth import get_user_model

    from portal.models import Profile, SipAccount

    user = get_user_model().objects.create(
        username=username, password=_hashed_password(), is_staff=role == Profile.Role.TENANT_ADMIN
    )
    Profile.objects.create(user=user, tenant=tenant, role=role, display_name=username.title())
    if extension:
        SipAccount.objects.create(
            tenant=tenant, user=user, slot=1, extension=extension, password=sip_password
        )
    return user


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's test database, and at the end of the session the connections that other
    threads left open on it closed first (the executor threads behind database_sync_to_async
    keep theirs): otherwise PostgreSQL waits 5 s for them, then refuses DROP DATABASE, and the
    test database of this run (of each pytest-xdist worker) is left behind."""
    yield
    from django.db.backends.base.base import BaseDatabaseWrapper

    # type(), not isinstance(): that would evaluate lazy objects (SimpleLazyObject) on the way.
    for wrapper in gc.get_objects():
        if issubclass(type(wrapper), BaseDatabaseWrapper) and wrapper.connection is not None:
            wrapper.inc_thread_sharing()
            try:
                wrapper.close()
            finally:
                wrapper.dec_thread_sharing()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The cast logs in a lot; PBKDF2's deliberate slowness buys a test nothing.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def cast(db):
    from django.contrib.auth import get_user_model

    from portal.models import Profile, Tenant

    tenant_a = Tenant.objects.create(code="tenant-a", name="Tenant A", pbx_domain="a.pbx.test")
    tenant_b = Tenant.objects.create(code="tenant-b", name="Tenant B", pbx_domain="b.pbx.test")
    staff, admin = Profile.Role.STAFF, Profile.Role.TENANT_ADMIN
    return Cast(
        tenant_a=tenant_a,
        tenant_b=tenant_b,
        alice=_make_user(tenant_a, "alice", staff, "1001", "alice-sip-pw"),
        bob=_make_user(tenant_a, "bob", staff, "1002", "bob-sip-pw"),
        admin_a=_make_user(tenant_a, "admin_a", admin),
        charlie=_make_user(tenant_b, "charlie", staff, "2001", "charlie-sip-pw"),
        admin_b=_make_user(tenant_b, "admin_b", admin),
        superuser=get_user_model().objects.create(
            username="root",
            password=_hashed_password(),
            email="root@example.test",
            is_staff=True,
            is_superuser=True,
        ),
    )


@pytest.fixture
def login(client):
    """login(user) -> the Django test client logged in as that user (through the real form)."""

    def _login(user):
        client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
        return client

    return _login


@pytest.fixture
def on_pbx(cast, kamailio):
    """Tenant A on the test PBX (the `kamailio` fixture): alice is 1001 there, password pw1001."""
    from portal.models import SipAccount

    cast.tenant_a.pbx_domain = kamailio.domain
    cast.tenant_a.outbound_proxy = kamailio.hostport
    cast.tenant_a.save()
    account = SipAccount.objects.get(user=cast.alice)
    account.password = "pw1001"
    account.save()
    return kamailio


@pytest.fixture
def office(cast, on_pbx):
    """alice (1001) and bob (1002) of tenant A on the test PBX, in one park (= pickup) group."""
    from phone.models import ParkGroup
    from portal.models import SipAccount

    account = SipAccount.objects.get(user=cast.bob)
    account.password = "pw1002"
    account.save()
    group = ParkGroup.objects.create(tenant=cast.tenant_a, name="Sales")
    group.members.add(cast.alice, cast.bob)
    return on_pbx


@pytest.fixture
def loopback_ice():
    """This process's WebRTC (the embedded sipworker, FakeBrowser) offers 127.0.0.1, which
    aioice leaves out by itself (phone.media_network: ICE_HOST_ADDRESSES in production)."""
    from phone.media.bridge import ice_host_addresses

    with ice_host_addresses(["127.0.0.1"]):
        yield
