"""Create (or bring back) the demo tenant, its users and data.  Safe to run any number of times."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from cti.models import CtiSettings, Customer, CustomerPhone
from phone.models import Contact, LineButton, ParkGroup, Phonebook
from portal.models import Profile, SipAccount, Tenant

# The development PBX (deploy/kamailio, users.demo) listens on 127.0.0.1:5060 with these users.
DEMO_PBX = "127.0.0.1"
# The demo tenant presents a line button's number in the From user: the dev PBX accepts there
# the lines of deploy/kamailio/lines.demo for their extensions (and asserts it in
# P-Asserted-Identity), and every callee, baresip and our own phone alike, shows the From user.
DEMO_CALLER_ID_METHOD = Tenant.CallerIdMethod.FROM_USER
DEMO_USERS = [
    # username, portal password, display name, role, extension, SIP password
    ("demoadmin", "demo-admin-pass", "管理者", Profile.Role.TENANT_ADMIN, None, None),
    ("alice", "demo-alice-pass", "アリス", Profile.Role.STAFF, "1001", "demo1001"),
    ("bob", "demo-bob-pass", "ボブ", Profile.Role.STAFF, "1002", "demo1002"),
]
DEMO_CONTACTS = [
    ("オフィス太郎 (本社内線/総務部)", "オフィスタロウ", "1002"),
    ("オフィス花子", "オフィスハナコ", "1001"),
    ("株式会社テスト", "カブシキガイシャテスト", "0359890925"),
]


class Command(BaseCommand):
    help = "Create the demo tenant with a tenant admin, staff users alice and bob, and sample data."

    @transaction.atomic
    def handle(self, *args, **options):
        User = get_user_model()
        tenant, _ = Tenant.objects.update_or_create(
            code="demo",
            defaults={
                "name": "デモ株式会社",
                "pbx_domain": DEMO_PBX,
                "outbound_proxy": "",
                "caller_id_method": DEMO_CALLER_ID_METHOD,
            },
        )
        users = {}
        for username, password, display, role, extension, sip_password in DEMO_USERS:
            user, _ = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.is_staff = role == Profile.Role.TENANT_ADMIN
            user.is_active = True
            user.save()
            Profile.objects.update_or_create(
                user=user, defaults={"tenant": tenant, "role": role, "display_name": display}
            )
            if extension:
                # The demo account is the active one again, whatever was switched since.
                SipAccount.objects.filter(user=user).exclude(slot=1).update(is_active=False)
                SipAccount.objects.update_or_create(
                    user=user,
                    slot=1,
                    defaults={
                        "tenant": tenant,
                        "extension": extension,
                        "password": sip_password,
                        "is_active": True,
                    },
                )
                CtiSettings.objects.get_or_create(user=user, defaults={"tenant": tenant})
            users[username] = user

        shared, _ = Phonebook.objects.get_or_create(
            tenant=tenant, owner=None, defaults={"name": "共有電話帳"}
        )
        for name, kana, number in DEMO_CONTACTS:
            Contact.objects.update_or_create(
                phonebook=shared,
                number=number,
                defaults={"tenant": tenant, "name": name, "kana": kana},
            )
        for username in ("alice", "bob"):
            Phonebook.objects.get_or_create(
                tenant=tenant, owner=users[username], defaults={"name": "個別電話帳"}
            )

        group, _ = ParkGroup.objects.get_or_create(tenant=tenant, name="代表グループ")
        group.members.set([users["alice"], users["bob"]])

        # The lines are numbers the dev PBX knows (deploy/kamailio/lines.demo: both belong to
        # alice 1001 and bob 1002; a call to one rings them both).
        buttons = [
            (1, LineButton.Kind.LINE, "0311112222", "サンプル (総務部)"),
            (2, LineButton.Kind.LINE, "0311113333", "業務部"),
            (3, LineButton.Kind.ONE_TOUCH, "1002", "ボブ"),
            (4, LineButton.Kind.VM_START, "", "留守電開始"),
            (5, LineButton.Kind.VM_STOP, "", "留守電終了"),
            (6, LineButton.Kind.VM_STATUS, "", "留守電状態"),
        ]
        for position, kind, number, label in buttons:
            LineButton.objects.update_or_create(
                tenant=tenant,
                user=None,
                position=position,
                defaults={"kind": kind, "number": number, "label": label},
            )

        customer, _ = Customer.objects.get_or_create(
            tenant=tenant, name="株式会社テスト", defaults={"kana": "カブシキガイシャテスト"}
        )
        CustomerPhone.objects.get_or_create(
            customer=customer, number="0359890925", defaults={"tenant": tenant, "label": "代表"}
        )

        self.stdout.write(self.style.SUCCESS("Demo tenant 'demo' is ready. Logins:"))
        for username, password, display, _role, extension, _sip in DEMO_USERS:
            extra = f"extension {extension}" if extension else "tenant admin (/admin/)"
            self.stdout.write(f"  {username:10} / {password:18} {display} — {extra}")
