"""Phone-number cleaning shared by phonebooks, history and CTI lookups."""

import re
import unicodedata

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

# Characters people type between digit groups; they carry no meaning for dialling.
_SEPARATORS = re.compile(r"[\s\-‐－―ー().]")
_DIALABLE = re.compile(r"^\+?[0-9*#]+$")
# E.164 allows 15 digits; prefixes, feature codes and extensions add a few. Anything longer is
# a mistake or an attack, and would not fit the history's columns.
MAX_DIGITS = 32


def normalize_number(value: str) -> str:
    """Digits (and * # +) only, for lookups: '03-1234 5678' and '０３１２３４５６７８' match."""
    folded = unicodedata.normalize("NFKC", value or "")
    return "".join(ch for ch in folded if ch.isdigit() or ch in "*#+")


def strip_separators(value: str) -> str:
    """The number as typed, full-width folded and without spaces, hyphens or brackets."""
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", value or "").strip())


def clean_number(value: str) -> str:
    """Validate a dialable number as typed by a user and return it without separators."""
    if len(value or "") > 4 * MAX_DIGITS:  # before any work on it
        raise ValidationError(
            _("A phone number is at most %(max)d digits."),
            code="too_long",
            params={"max": MAX_DIGITS},
        )
    folded = strip_separators(value)
    if not folded:
        raise ValidationError(_("Enter a phone number."), code="required")
    if not _DIALABLE.match(folded):
        raise ValidationError(
            _("A phone number may only contain digits, * # and +."), code="invalid_number"
        )
    if len(folded) > MAX_DIGITS:
        raise ValidationError(
            _("A phone number is at most %(max)d digits."),
            code="too_long",
            params={"max": MAX_DIGITS},
        )
    return folded


def validate_number(value: str) -> None:
    clean_number(value)
