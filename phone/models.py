"""Phonebooks, call history, park groups and line buttons (design.md §4)."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from phone.numbers import normalize_number, strip_separators, validate_number
from phone.text import kana_for_search
from portal.models import Tenant


class Phonebook(models.Model):
    """A tenant-shared phonebook (owner empty) or a user's personal one (個別電話帳)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="phonebooks")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="phonebooks",
        help_text=_("Leave empty for a phonebook shared by the tenant."),
    )
    name = models.CharField(_("Name"), max_length=100)

    class Meta:
        verbose_name = _("Phonebook")
        verbose_name_plural = _("Phonebook")
        ordering = ["tenant_id", "owner_id", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_shared(self) -> bool:
        return self.owner_id is None


class Contact(models.Model):
    # No index of their own: the indexes below start with them (one index fewer to maintain for
    # each row an import writes while it holds the database).
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="contacts", db_index=False
    )
    phonebook = models.ForeignKey(
        Phonebook, on_delete=models.CASCADE, related_name="contacts", db_index=False
    )
    name = models.CharField(_("Name"), max_length=100, blank=True)
    kana = models.CharField(_("Kana"), max_length=100, blank=True)
    number = models.CharField(_("Phone number"), max_length=32, validators=[validate_number])
    number_normalized = models.CharField(max_length=32, editable=False, db_index=False)

    class Meta:
        verbose_name = _("Contact")
        verbose_name_plural = _("Contact")
        ordering = ["kana", "name", "id"]
        indexes = [
            # Caller-name lookup on every incoming call and the number search in the panel.
            models.Index(fields=["tenant", "number_normalized"], name="contact_tenant_number"),
            models.Index(fields=["phonebook", "kana"], name="contact_book_kana"),
            # The CSV import's duplicate check: which of the file's numbers the book has.
            models.Index(fields=["phonebook", "number"], name="contact_book_number"),
            # Name and kana search on PostgreSQL: GIN indexes over their 1- and 2-character
            # grams (migration 0006), whatever the database's locale.  SQLite scans.
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.number}".strip()

    def save(self, *args, **kwargs):
        self.number = strip_separators(self.number)
        self.number_normalized = normalize_number(self.number)
        # Stored as search folds it (full-width katakana), whoever writes the row: the panel's
        # form, the admin or code.  (The CSV import writes in bulk, without save(), and applies
        # the same functions itself: phone.phonebook.plan_import.)
        self.kana = kana_for_search(self.kana)
        if self.phonebook_id and not self.tenant_id:
            self.tenant_id = self.phonebook.tenant_id
        super().save(*args, **kwargs)

    def clean_fields(self, exclude=None):
        # Before validation, so that max_length applies to what is stored.
        self.kana = kana_for_search(self.kana)
        super().clean_fields(exclude)

    def clean(self) -> None:
        if self.phonebook_id and self.tenant_id and self.phonebook.tenant_id != self.tenant_id:
            raise ValidationError({"phonebook": _("This phonebook belongs to another tenant.")})


class CallRecord(models.Model):
    """One row of a user's history (seed 4), written by the server, never by the browser."""

    class Direction(models.TextChoices):
        OUTGOING = "out", _("Outgoing")
        INCOMING = "in", _("Incoming")
        MISSED = "missed", _("Missed")
        REJECTED = "rejected", _("Rejected")

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="call_records")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="call_records"
    )
    direction = models.CharField(_("Type"), max_length=8, choices=Direction.choices)
    remote_number = models.CharField(_("Caller number"), max_length=64, blank=True)
    remote_number_normalized = models.CharField(max_length=64, blank=True, editable=False)
    remote_name = models.CharField(_("Remote name"), max_length=100, blank=True)
    called_number = models.CharField(_("Called number"), max_length=64, blank=True)
    answered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    answered_by_name = models.CharField(_("Answered by"), max_length=100, blank=True)
    started_at = models.DateTimeField(_("Time"))
    answered_at = models.DateTimeField(_("Answered at"), null=True, blank=True)
    ended_at = models.DateTimeField(_("Ended at"), null=True, blank=True)
    # Talk time, stored so that history sorts by it with an index; None: never answered.
    talk_seconds = models.PositiveIntegerField(null=True, blank=True, editable=False)
    sip_call_id = models.CharField(max_length=255, blank=True)
    # Why the call ended ("remote-bye", "no-answer", "worker restart", ...).
    end_reason = models.CharField(_("End reason"), max_length=32, blank=True)
    # The sipworker (one boot of one process) whose call this row is, while the call goes on
    # (empty once it ended): a row is written when the call starts and completed when it ends,
    # so no crash loses a call.
    worker = models.CharField(max_length=64, blank=True, editable=False)
    # Call quality (issue 13, item 5): a MOS-style score over the call and what it came from,
    # the worst direction (phone.quality); None for calls never connected or before 0010.
    quality_mos = models.FloatField(_("MOS"), null=True, blank=True, editable=False)
    quality_loss = models.FloatField(_("Packet loss (%)"), null=True, blank=True, editable=False)
    quality_jitter = models.FloatField(_("Jitter (ms)"), null=True, blank=True, editable=False)
    quality_rtt = models.FloatField(_("Round trip (ms)"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("Call history")
        verbose_name_plural = _("Call history")
        ordering = ["-started_at", "-id"]
        # One index per sortable column of the history panel (seed 4-3), each ending in id so
        # that ORDER BY col, id LIMIT n is an index scan even for a user with 200 000 calls.
        indexes = [
            models.Index(fields=["user", "-started_at", "-id"], name="callrecord_user_time"),
            models.Index(
                fields=["user", "direction", "-started_at", "-id"], name="callrecord_user_dir_time"
            ),
            models.Index(
                fields=["user", "remote_name", "remote_number", "id"], name="callrecord_user_name"
            ),
            # (user, talk_seconds DESC NULLS LAST, id DESC) and the trigram search indexes are
            # PostgreSQL-only: migration 0002_postgres_indexes.
            models.Index(
                fields=["tenant", "remote_number_normalized", "-started_at"],
                name="callrecord_tenant_number",
            ),
            models.Index(fields=["sip_call_id"], name="callrecord_call_id"),
            # Calls still open: a starting sipworker closes those a dead one left behind.
            models.Index(fields=["worker"], condition=~Q(worker=""), name="callrecord_open"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.get_direction_display()} {self.remote_number} {self.started_at:%Y-%m-%d %H:%M}"
        )

    def save(self, *args, **kwargs):
        self.remote_number_normalized = normalize_number(self.remote_number)
        self.talk_seconds = self.compute_talk_seconds(self.answered_at, self.ended_at)
        super().save(*args, **kwargs)

    @staticmethod
    def compute_talk_seconds(answered_at, ended_at) -> int | None:
        if answered_at is None or ended_at is None:
            return None
        return max(0, int((ended_at - answered_at).total_seconds()))

    @property
    def quality_state(self) -> str:
        """good | fair | poor from quality_mos ("" when the call has no score)."""
        from phone.quality import quality_state

        return "" if self.quality_mos is None else quality_state(self.quality_mos)

    @property
    def duration_seconds(self) -> int | None:
        """Talk time; None when the call was never answered (shown as キャンセル)."""
        return self.compute_talk_seconds(self.answered_at, self.ended_at)


class ParkGroup(models.Model):
    """Users sharing park buttons 1-6 (seed 3-4)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="park_groups")
    name = models.CharField(_("Name"), max_length=100)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="park_groups", blank=True
    )
    slot_count = models.PositiveSmallIntegerField(
        _("Park slots"), default=6, validators=[MinValueValidator(1), MaxValueValidator(6)]
    )
    park_timeout = models.PositiveSmallIntegerField(
        _("Park timeout (seconds)"),
        default=60,
        validators=[MinValueValidator(5), MaxValueValidator(3600)],
        help_text=_("A parked call nobody takes rings the user who parked it again after this."),
    )

    class Meta:
        verbose_name = _("Park group")
        verbose_name_plural = _("Park group")
        ordering = ["tenant_id", "name"]

    def __str__(self) -> str:
        return self.name


class ParkSlot(models.Model):
    group = models.ForeignKey(ParkGroup, on_delete=models.CASCADE, related_name="slots")
    number = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(6)]
    )
    # The worker-side call parked here; empty when the slot is free.
    call_id = models.CharField(max_length=255, blank=True)
    # The sipworker (one boot of one process) holding the parked call: a slot of a dead worker
    # is freed when a worker starts, so no ghost slot stays yellow.
    worker = models.CharField(max_length=64, blank=True, editable=False)
    parked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    parked_at = models.DateTimeField(null=True, blank=True)
    remote_number = models.CharField(max_length=64, blank=True)
    remote_name = models.CharField(max_length=100, blank=True)

    class Meta:
        verbose_name = _("Park")
        verbose_name_plural = _("Park")
        ordering = ["group_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["group", "number"], name="parkslot_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.group} #{self.number}"

    @property
    def is_free(self) -> bool:
        return not self.call_id


class LineButton(models.Model):
    """A button on the external-line pad (外線パッド, seed 6-1)."""

    class Kind(models.TextChoices):
        LINE = "line", _("Line button")
        ONE_TOUCH = "onetouch", _("One-touch")
        VM_START = "vm_start", _("Voicemail on")
        VM_STOP = "vm_stop", _("Voicemail off")
        VM_STATUS = "vm_status", _("Voicemail status")

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="line_buttons")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="line_buttons",
        help_text=_("Leave empty to show it to everyone in the tenant."),
    )
    position = models.PositiveSmallIntegerField(_("Position"), default=1)
    kind = models.CharField(_("Function"), max_length=10, choices=Kind.choices)
    number = models.CharField(
        _("Line number"), max_length=32, blank=True, validators=[validate_number]
    )
    label = models.CharField(_("Line name"), max_length=50, blank=True)
    ring_tone = models.CharField(_("Ring tone"), max_length=50, blank=True)

    class Meta:
        verbose_name = _("External pad button")
        verbose_name_plural = _("External pad button")
        ordering = ["tenant_id", "user_id", "position"]
        indexes = [models.Index(fields=["tenant", "user", "position"], name="linebutton_owner")]

    def __str__(self) -> str:
        return self.label or self.number or self.get_kind_display()

    def clean(self) -> None:
        if self.kind in (self.Kind.LINE, self.Kind.ONE_TOUCH) and not self.number:
            raise ValidationError({"number": _("Enter the line number.")})


class PhoneUserSettings(models.Model):
    """Per-user phone state that outlives a page: do-not-disturb (応答不可, issue 13)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="phone_settings"
    )
    # While on, calls to the user's line are refused with 486 Busy Here without ringing a page
    # (history: 拒否, end reason "DND"); colleagues' lamps show dnd.
    dnd = models.BooleanField(_("Do not disturb"), default=False)
    dnd_changed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class DndAction(models.TextChoices):
        REJECT = "reject", _("Reject (busy)")
        FORWARD = "forward", _("Forward to a number")

    # What 応答不可 does with a call: 486 Busy Here, or 302 Moved Temporarily with a Contact
    # naming dnd_forward_to at the PBX (RFC 3261 §21.3.3; history: 拒否 "DND forward <number>",
    # which is why the number is kept short enough for end_reason).
    dnd_action = models.CharField(
        _("When do not disturb is on"),
        max_length=8,
        choices=DndAction.choices,
        default=DndAction.REJECT,
    )
    dnd_forward_to = models.CharField(
        _("Forward to"), max_length=20, blank=True, validators=[validate_number]
    )

    class Meta:
        verbose_name = _("Phone settings")
        verbose_name_plural = _("Phone settings")

    def __str__(self) -> str:
        return f"{self.user} dnd={'on' if self.dnd else 'off'}"

    def clean(self) -> None:
        if self.dnd_action == self.DndAction.FORWARD and not self.dnd_forward_to:
            raise ValidationError({"dnd_forward_to": _("Enter the number to forward calls to.")})
