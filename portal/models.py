"""Tenants, staff profiles and SIP accounts (design.md §4)."""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from portal.fields import EncryptedTextField

_HOSTPORT = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:]+\](:\d{1,5})?$")


def validate_hostport(value: str) -> None:
    """host, host:port or [v6]:port, as a SIP outbound proxy is written."""
    if not _HOSTPORT.match(value):
        raise ValidationError(_("Enter host or host:port."), code="hostport")
    if ":" in value.rsplit("]", 1)[-1]:
        port = int(value.rsplit(":", 1)[1])
        if not 0 < port < 65536:
            raise ValidationError(_("The port must be between 1 and 65535."), code="port")


validate_extension = RegexValidator(
    r"^[0-9A-Za-z*#+._-]{1,32}$", _("The extension contains characters that are not allowed.")
)


class Tenant(models.Model):
    class Transport(models.TextChoices):
        UDP = "udp", "UDP"
        TCP = "tcp", "TCP"
        TLS = "tls", "TLS"

    class CallerIdMethod(models.TextChoices):
        # How a line button's number (発番号) is presented to the PBX.
        FROM_USER = "from", _("User part of the From header")
        PPI = "ppi", _("P-Preferred-Identity header")
        PAI = "pai", _("P-Asserted-Identity header")
        PREFIX = "prefix", _("Prefix to the dialled number")

    class MediaEncryption(models.TextChoices):
        # SRTP keyed in the SDP (SDES, RFC 4568) on the RTP towards the PBX; the values are
        # phone.sip.sdp's ENCRYPTION_* (the browser leg is always DTLS-SRTP).
        NONE = "none", _("None (RTP)")
        SDES = "sdes", _("SRTP (SDES) required")
        SDES_OPTIONAL = "sdes-optional", _("SRTP (SDES) when the other side offers it")

    code = models.SlugField(_("Tenant code"), max_length=32, unique=True)
    name = models.CharField(_("Name"), max_length=100)
    pbx_domain = models.CharField(_("PBX domain"), max_length=255)
    outbound_proxy = models.CharField(
        _("Outbound proxy"),
        max_length=262,
        blank=True,
        validators=[validate_hostport],
        help_text=_("host:port. Leave empty to send straight to the PBX domain."),
    )
    transport = models.CharField(
        _("Transport"), max_length=3, choices=Transport.choices, default=Transport.UDP
    )
    caller_id_method = models.CharField(
        _("Caller ID method"),
        max_length=8,
        choices=CallerIdMethod.choices,
        default=CallerIdMethod.FROM_USER,
    )
    vm_start_template = models.CharField(
        _("Voicemail-on feature code"),
        max_length=32,
        default="*2191{ext}",
        help_text=_("{ext} = extension"),
    )
    vm_stop_template = models.CharField(
        _("Voicemail-off feature code"), max_length=32, default="*21"
    )
    vm_status_template = models.CharField(
        _("Voicemail-status feature code"),
        max_length=32,
        default="92{ext}",
        help_text=_("{ext} = extension"),
    )
    media_encryption = models.CharField(
        _("Media encryption"),
        max_length=16,
        choices=MediaEncryption.choices,
        default=MediaEncryption.NONE,
        help_text=_(
            "Encryption of the call audio towards the PBX. Required: calls without SRTP are "
            "refused (488)."
        ),
    )
    pickup_template = models.CharField(
        _("Call pickup feature code"),
        max_length=32,
        default="*8{ext}",
        help_text=_(
            "{ext} = extension. Dialled to pick up a colleague's ringing call when their line "
            "is not on the portal."
        ),
    )
    ring_timeout = models.PositiveSmallIntegerField(
        _("Ring timeout (seconds)"),
        default=60,
        validators=[MinValueValidator(5), MaxValueValidator(600)],
        help_text=_("An incoming call nobody answers ends after this long (480, logged missed)."),
    )
    user_buttons_allowed = models.BooleanField(
        _("Users may assign their own pad buttons"),
        default=True,
        help_text=_("Settings, Other tab (seed 6-1)."),
    )
    max_user_buttons = models.PositiveSmallIntegerField(
        _("Pad buttons per user"), default=12, validators=[MaxValueValidator(48)]
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("Tenant")
        verbose_name_plural = _("Tenant")
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    def feature_code(self, kind: str, extension: str) -> str:
        """The feature code of `kind` (voicemail start/stop/status, call pickup) for an
        extension."""
        template = {
            "start": self.vm_start_template,
            "stop": self.vm_stop_template,
            "status": self.vm_status_template,
            "pickup": self.pickup_template,
        }[kind]
        return template.replace("{ext}", extension)


class Profile(models.Model):
    class Role(models.TextChoices):
        STAFF = "staff", _("Staff")
        TENANT_ADMIN = "admin", _("Tenant admin")

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="profiles")
    role = models.CharField(_("Role"), max_length=8, choices=Role.choices, default=Role.STAFF)
    display_name = models.CharField(_("Display name"), max_length=100, blank=True)

    class Meta:
        verbose_name = _("Profile")
        verbose_name_plural = _("Profile")

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        return self.display_name or self.user.get_full_name() or self.user.get_username()

    @property
    def is_tenant_admin(self) -> bool:
        return self.role == self.Role.TENANT_ADMIN


class SipAccount(models.Model):
    """One of a user's two SIP accounts (seed 2-2, 6-2)."""

    class Slot(models.IntegerChoices):
        ONE = 1, _("Account 1")
        TWO = 2, _("Account 2")

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="sip_accounts")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sip_accounts"
    )
    slot = models.PositiveSmallIntegerField(_("Account"), choices=Slot.choices, default=1)
    extension = models.CharField(_("Extension"), max_length=32, validators=[validate_extension])
    auth_user = models.CharField(
        _("Auth user"), max_length=64, blank=True, help_text=_("Leave empty to use the extension.")
    )
    password = EncryptedTextField(_("Password"), blank=True)
    pbx_domain = models.CharField(
        _("PBX domain"),
        max_length=255,
        blank=True,
        help_text=_("Leave empty to use the tenant's setting."),
    )
    outbound_proxy = models.CharField(
        _("Proxy"),
        max_length=262,
        blank=True,
        validators=[validate_hostport],
        help_text=_("Leave empty to use the tenant's setting."),
    )
    is_active = models.BooleanField(_("Active"), default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("SIP account")
        verbose_name_plural = _("SIP account")
        ordering = ["user_id", "slot"]
        constraints = [
            models.UniqueConstraint(fields=["user", "slot"], name="sipaccount_one_per_slot"),
            models.UniqueConstraint(
                fields=["user"], condition=Q(is_active=True), name="sipaccount_one_active"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "extension"])]

    def __str__(self) -> str:
        return f"{self.extension}@{self.domain} ({self.get_slot_display()})"

    @property
    def domain(self) -> str:
        return self.pbx_domain or self.tenant.pbx_domain

    @property
    def proxy(self) -> str:
        return self.outbound_proxy or self.tenant.outbound_proxy

    @property
    def username(self) -> str:
        return self.auth_user or self.extension

    def clean(self) -> None:
        if self.user_id and self.tenant_id:
            profile = Profile.objects.filter(user_id=self.user_id).first()
            if profile is None or profile.tenant_id != self.tenant_id:
                raise ValidationError({"user": _("This user does not belong to this tenant.")})
