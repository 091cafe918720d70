"""Create or update one of a user's SIP accounts from the shell (for admins' scripts).

    manage.py set_sip_account alice --slot 1 --extension 1001 --password-env SIP_PW \
        --domain pbx.example.jp --proxy 203.0.113.5:5060 --activate
"""

import os

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from portal.models import Profile, SipAccount


class Command(BaseCommand):
    help = "Create or update a user's SIP account (slot 1 or 2)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--slot", type=int, choices=[1, 2], default=1)
        parser.add_argument("--extension")
        parser.add_argument("--auth-user", default=None)
        pw = parser.add_mutually_exclusive_group()
        pw.add_argument("--password", help="visible in the process list; prefer --password-env")
        pw.add_argument("--password-env", metavar="VAR", help="read the password from $VAR")
        parser.add_argument("--domain", default=None, help="PBX domain (empty: the tenant's)")
        parser.add_argument("--proxy", default=None, help="outbound proxy host:port")
        parser.add_argument("--activate", action="store_true", help="make this the active slot")

    @transaction.atomic
    def handle(self, *args, **opts):
        User = get_user_model()
        try:
            user = User.objects.get(username=opts["username"])
            profile = user.profile
        except User.DoesNotExist as exc:
            raise CommandError(f"no such user: {opts['username']}") from exc
        except Profile.DoesNotExist as exc:
            raise CommandError(f"{user.username} belongs to no tenant") from exc

        password = opts["password"]
        if opts["password_env"]:
            password = os.environ.get(opts["password_env"])
            if password is None:
                raise CommandError(f"${opts['password_env']} is not set")

        account = SipAccount.objects.filter(user=user, slot=opts["slot"]).first()
        created = account is None
        if created:
            if not opts["extension"]:
                raise CommandError("--extension is required for a new account")
            account = SipAccount(
                user=user, tenant=profile.tenant, slot=opts["slot"], is_active=False
            )
        for option, field in (
            ("extension", "extension"),
            ("auth_user", "auth_user"),
            ("domain", "pbx_domain"),
            ("proxy", "outbound_proxy"),
        ):
            if opts[option] is not None:
                setattr(account, field, opts[option])
        if password is not None:
            account.password = password
        activate = opts["activate"] or (
            created and not SipAccount.objects.filter(user=user, is_active=True).exists()
        )
        if activate:
            SipAccount.objects.filter(user=user, is_active=True).exclude(pk=account.pk).update(
                is_active=False
            )
            account.is_active = True
        try:
            account.full_clean()
        except ValidationError as exc:
            raise CommandError(f"invalid SIP account: {exc.message_dict}") from exc
        account.save()
        verb = "created" if created else "updated"
        state = "active" if account.is_active else "inactive"
        self.stdout.write(f"{verb} {account} for {user.username} ({state})")
