"""Customer screen-pop (CTI) settings and the built-in CRM (seed 5, design.md §4)."""

import string

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from phone.numbers import normalize_number, validate_number
from phone.text import kana_for_search
from portal.fields import EncryptedTextField
from portal.models import Tenant
from portal.urlsafety import UnsafeURL, browser_view, check_http_url, validate_delivery_url

PLACEHOLDERS = {"number", "called", "call_id", "extension", "customer_id"}


def validate_url_template(value: str) -> None:
    """An http(s) URL using only our placeholders (seed 5-2).

    On the model, so that the settings tab, the admin and any import all refuse the same
    values: a browser opens these URLs, and anything but http(s) (javascript:, data:, ...) could
    run script in the portal.
    """
    if not value:
        return
    try:
        names = {name for _text, name, _spec, _conv in string.Formatter().parse(value) if name}
    except ValueError as exc:
        raise ValidationError(_("Unbalanced { } in the URL."), code="unbalanced") from exc
    unknown = names - PLACEHOLDERS
    if unknown:
        raise ValidationError(
            _("Unknown placeholder: %(names)s. Use {number} {called} {call_id} {extension} "
              "{customer_id}.") % {"names": ", ".join(sorted(unknown))},
            code="placeholder",
        )  # fmt: skip
    try:
        check_http_url(value)
    except UnsafeURL as exc:
        raise ValidationError(
            _("Enter a URL such as https://crm.example.jp/?tel={number}."), code="unsafe_url"
        ) from exc


class CtiSettings(models.Model):
    """A user's 顧客情報表示 tab (seed 5-1)."""

    class ShowOn(models.TextChoices):
        RING = "ring", _("Show on ring")
        ANSWER = "answer", _("Show on answer")

    class Target(models.TextChoices):
        BUILTIN = "builtin", _("Built-in CRM")
        EXTERNAL_URL = "url", _("External URL")
        EXTERNAL_APP = "app", _("External app (URL scheme)")

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="cti_settings")
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="cti_settings"
    )
    enabled = models.BooleanField(_("Enable customer info display"), default=True)
    show_on = models.CharField(
        _("When to show"), max_length=8, choices=ShowOn.choices, default=ShowOn.RING
    )
    target = models.CharField(
        _("Target"), max_length=8, choices=Target.choices, default=Target.BUILTIN
    )
    # Placeholders: {number} {called} {call_id} {extension} {customer_id}, URL-encoded on use.
    reception_url = models.CharField(
        _("Reception URL"), max_length=500, blank=True, validators=[validate_url_template]
    )
    customer_list_url = models.CharField(
        _("Customer list URL"), max_length=500, blank=True, validators=[validate_url_template]
    )
    use_directory_url = models.BooleanField(_("Use the directory URL"), default=False)
    directory_url = models.CharField(
        _("Directory URL"), max_length=500, blank=True, validators=[validate_url_template]
    )

    URL_FIELDS = ("reception_url", "customer_list_url", "directory_url")

    class Meta:
        verbose_name = _("Customer info settings")
        verbose_name_plural = _("Customer info settings")

    def __str__(self) -> str:
        return str(self.user)

    def clean(self) -> None:
        # Validated as a browser reads them (portal.urlsafety); store exactly that reading.
        for name in self.URL_FIELDS:
            setattr(self, name, browser_view(getattr(self, name)))


class Customer(models.Model):
    """取引先 in the built-in CRM."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="customers")
    name = models.CharField(_("Customer"), max_length=200)
    kana = models.CharField(_("Kana"), max_length=200, blank=True)
    owner1 = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("Owner 1"),
    )
    owner2 = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("Owner 2"),
    )
    notes = models.TextField(_("Notes"), blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("Customers")
        verbose_name_plural = _("Customers")
        ordering = ["kana", "name", "id"]
        indexes = [models.Index(fields=["tenant", "kana"], name="customer_tenant_kana")]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        # Stored as search folds it (full-width katakana), whoever writes the row: the user's
        # form, the admin, an import or code.
        self.kana = kana_for_search(self.kana)
        super().save(*args, **kwargs)

    def clean_fields(self, exclude=None):
        # Before validation, so that max_length applies to what is stored.
        self.kana = kana_for_search(self.kana)
        super().clean_fields(exclude)


class CustomerPhone(models.Model):
    """A customer may be reached on several numbers (代表, 直通, 携帯 ...)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="phones")
    label = models.CharField(_("Type"), max_length=50, blank=True)
    number = models.CharField(_("Phone number"), max_length=32, validators=[validate_number])
    number_normalized = models.CharField(max_length=32, editable=False)

    class Meta:
        verbose_name = _("Customer phone number")
        verbose_name_plural = _("Customer phone number")
        indexes = [
            models.Index(fields=["tenant", "number_normalized"], name="customerphone_number")
        ]

    def __str__(self) -> str:
        return self.number

    def save(self, *args, **kwargs):
        self.number_normalized = normalize_number(self.number)
        if self.customer_id and not self.tenant_id:
            self.tenant_id = self.customer.tenant_id
        super().save(*args, **kwargs)


class CustomerContact(models.Model):
    """名簿: people at customers, the 連携先電話帳."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="customer_contacts")
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, null=True, blank=True, related_name="contacts"
    )
    name = models.CharField(_("Name"), max_length=100)
    kana = models.CharField(_("Kana"), max_length=100, blank=True)
    department = models.CharField(_("Department"), max_length=100, blank=True)
    number = models.CharField(
        _("Phone number"), max_length=32, blank=True, validators=[validate_number]
    )
    number_normalized = models.CharField(max_length=32, editable=False, blank=True)
    email = models.EmailField(_("Email"), blank=True)

    class Meta:
        verbose_name = _("Customer directory")
        verbose_name_plural = _("Customer directory")
        ordering = ["kana", "name", "id"]
        indexes = [models.Index(fields=["tenant", "number_normalized"], name="custcontact_number")]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        self.number_normalized = normalize_number(self.number)
        self.kana = kana_for_search(self.kana)  # as Customer.save: searchable however written
        super().save(*args, **kwargs)

    def clean_fields(self, exclude=None):
        self.kana = kana_for_search(self.kana)
        super().clean_fields(exclude)


class Reception(models.Model):
    """電話受付: a memo taken while (or after) talking to a caller."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="receptions")
    customer = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, null=True, blank=True, related_name="receptions"
    )
    call_record = models.ForeignKey(
        "phone.CallRecord", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    caller_number = models.CharField(_("Caller number"), max_length=64, blank=True)
    taken_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    memo = models.TextField(_("Message"))
    created_at = models.DateTimeField(_("Received at"), auto_now_add=True)

    class Meta:
        verbose_name = _("Reception")
        verbose_name_plural = _("Reception")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="reception_tenant_time")]

    def __str__(self) -> str:
        return f"{self.caller_number} {self.created_at:%Y-%m-%d %H:%M}"


class WebhookEndpoint(models.Model):
    """A tenant's URL that receives call events (ringing, answered, ended) as signed JSON."""

    class Event(models.TextChoices):
        RINGING = "call.ringing", _("Ringing")
        ANSWERED = "call.answered", _("Answered")
        ENDED = "call.ended", _("Ended")

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhooks")
    # Refused when it points into our own network (SSRF); checked again at each delivery.
    url = models.URLField(_("URL"), max_length=500, validators=[validate_delivery_url])
    secret = EncryptedTextField(
        _("Signing secret"), help_text=_("HMAC-SHA256 key; the receiver checks the signature.")
    )
    events = models.JSONField(_("Events"), default=list, blank=True)
    active = models.BooleanField(_("Active"), default=True)

    class Meta:
        verbose_name = _("Webhook")
        verbose_name_plural = _("Webhooks")

    def __str__(self) -> str:
        return self.url

    def wants(self, event: str) -> bool:
        return self.active and (not self.events or event in self.events)

    def clean(self) -> None:
        # The validator judged the URL as a browser or HTTP client reads it; store that reading.
        self.url = browser_view(self.url)


class WebhookDelivery(models.Model):
    """The delivery log: one row per event sent to an endpoint, with its retries."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.CharField(_("Event"), max_length=32)
    payload = models.JSONField(_("Payload"))
    status = models.CharField(
        _("Status"), max_length=10, choices=Status.choices, default=Status.PENDING
    )
    attempts = models.PositiveSmallIntegerField(_("Attempts"), default=0)
    response_code = models.PositiveSmallIntegerField(_("Response code"), null=True, blank=True)
    # A short reason only ("HTTP 500", "connection refused"): never the receiver's response
    # body, which may be a page from a machine the tenant should not read (see save()).
    error = models.TextField(_("Last error"), blank=True)
    created_at = models.DateTimeField(_("Created at"), auto_now_add=True)
    delivered_at = models.DateTimeField(_("Delivered at"), null=True, blank=True)

    class Meta:
        verbose_name = _("Webhook delivery")
        verbose_name_plural = _("Webhook deliveries")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="webhookdelivery_time")]

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint}"

    def save(self, *args, **kwargs):
        # Whatever the caller put here, the log keeps one short line with control characters
        # escaped: the admin shows it to tenant admins and log viewers print it.
        self.error = short_reason(self.error)
        super().save(*args, **kwargs)


REASON_MAX_CHARS = 200


def short_reason(text: str, limit: int = REASON_MAX_CHARS) -> str:
    """One line of at most `limit` characters; newlines and other control characters (terminal
    escapes included) are written escaped (\\n, \\x1b), never stored raw.  HTML needs no
    escaping here: templates and the admin escape it when they show it."""
    escaped = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        for ch in str(text or "")
    )
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


class ApiToken(models.Model):
    """A CRM's credential for click-to-dial.  Only a hash is stored; the key is shown once."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(_("Name"), max_length=100)
    prefix = models.CharField(max_length=8, editable=False, db_index=True)
    key_hash = models.CharField(max_length=64, editable=False, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    active = models.BooleanField(_("Active"), default=True)

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
