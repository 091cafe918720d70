from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from phone.models import Contact, LineButton, ParkGroup
from portal.models import Profile, SipAccount, Tenant


def run(*args, **env):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_it_seeds_the_demo_tenant_idempotently(db):
    first = run("seed_demo")
    counts = (
        get_user_model().objects.count(),
        SipAccount.objects.count(),
        Contact.objects.count(),
        LineButton.objects.count(),
    )
    second = run("seed_demo")
    assert counts == (
        get_user_model().objects.count(),
        SipAccount.objects.count(),
        Contact.objects.count(),
        LineButton.objects.count(),
    )
    assert first == second
    assert "alice" in first and "bob" in first and "demoadmin" in first
    tenant = Tenant.objects.get(code="demo")
    alice = get_user_model().objects.get(username="alice")
    assert alice.check_password("demo-alice-pass")
    assert alice.profile.tenant == tenant
    assert SipAccount.objects.get(user=alice, is_active=True).extension == "1001"
    admin = get_user_model().objects.get(username="demoadmin")
    assert admin.is_staff and admin.profile.role == Profile.Role.TENANT_ADMIN
    group = ParkGroup.objects.get(tenant=tenant)
    assert set(group.members.values_list("username", flat=True)) == {"alice", "bob"}


def test_it_creates_and_updates_a_sip_account_from_the_shell(cast, monkeypatch):
    monkeypatch.setenv("NEW_SIP_PW", "s3cret!")
    out = run(
        "set_sip_account",
        "alice",
        "--slot",
        "2",
        "--extension",
        "1101",
        "--password-env",
        "NEW_SIP_PW",
        "--domain",
        "pbx2.example.jp",
        "--proxy",
        "203.0.113.5:5060",
    )
    assert "created" in out
    account = SipAccount.objects.get(user=cast.alice, slot=2)
    assert (account.extension, account.password, account.domain, account.proxy) == (
        "1101",
        "s3cret!",
        "pbx2.example.jp",
        "203.0.113.5:5060",
    )
    assert not account.is_active  # slot 1 stays active until asked
    run("set_sip_account", "alice", "--slot", "2", "--activate")
    assert SipAccount.objects.get(user=cast.alice, is_active=True).slot == 2
    assert SipAccount.objects.filter(user=cast.alice, is_active=True).count() == 1
    assert SipAccount.objects.get(user=cast.alice, slot=2).tenant == cast.tenant_a


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody", "--extension", "1"], "no such user"),
        (["root", "--extension", "1"], "belongs to no tenant"),
        (["alice", "--slot", "2"], "--extension is required"),
        (["alice", "--proxy", "bad host!"], "invalid SIP account"),
    ],
)
def test_it_reports_bad_shell_input_clearly(cast, args, message):
    with pytest.raises(CommandError, match=message):
        run("set_sip_account", *args)
