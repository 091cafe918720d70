"""Phone-number cleaning shared by phonebooks, history and CTI lookups.

Three forms of a number (issue 13, item 9):
- as dialled: what a user typed or a caller id said, separators dropped (clean_number,
  strip_separators); stored in the `number` columns and sent to the PBX unchanged;
- for lookups: normalize_number, one form per number whichever way it was written, so that a
  caller id in E.164 (+81312345678) finds the contact saved as 03-1234-5678;
- for people: display_number, grouped as Japanese offices write them (03-1234-5678).
"""

import re
import unicodedata

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

# Characters people type between digit groups; they carry no meaning for dialling.
_SEPARATORS = re.compile(r"[\s\-‐－―ー().]")
_DIALABLE = re.compile(r"^\+?[0-9*#]+$")
# E.164 allows 15 digits; prefixes, feature codes and extensions add a few. Anything longer is
# a mistake or an attack, and would not fit the history's columns.
MAX_DIGITS = 32


# Numbers are read as written in this country unless the tenant says otherwise.
DEFAULT_REGION = "JP"


def default_region() -> str:
    return getattr(settings, "PHONE_REGION", "") or DEFAULT_REGION


def tenant_region(tenant) -> str:
    """The country whose numbering a tenant's staff write in (ISO 3166 code, e.g. "JP")."""
    return (getattr(tenant, "country", "") or default_region()).upper()


def _dialable_chars(value: str) -> str:
    folded = unicodedata.normalize("NFKC", value or "")
    return "".join(ch for ch in folded if ch.isdigit() or ch in "*#+")


def _parse(chars: str, region: str) -> "phonenumbers.PhoneNumber | None":
    """A valid public number (by the `phonenumbers` metadata), else None: extensions (1001),
    feature codes (*2191), short numbers (110) and fragments (0312) are no such thing."""
    if not chars or "*" in chars or "#" in chars or len(chars) > MAX_DIGITS:
        return None
    try:
        number = phonenumbers.parse(chars, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def _national_as_dialled(chars: str, region: str) -> bool:
    """Written with the region's trunk prefix and not its international prefix (JP: 0 but not
    010): then the number already is its national form, and parsing it would change nothing."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or not metadata.national_prefix:
        return False
    if not chars.startswith(metadata.national_prefix):
        return False
    intl = metadata.international_prefix
    return not (intl and re.match(intl, chars))


def normalize_number(value: str, region: str | None = None) -> str:
    """The form every number column is looked up by (`*_normalized`).

    A valid number of the region (Japan unless the tenant says otherwise) in its national form,
    digits only: +81312345678, 81312345678 (a caller id without its +), 03-1234-5678 and
    ０３１２３４５６７８ are all 0312345678. A valid foreign number in E.164 (+14155550100, also
    when written 010-1-415-555-0100 from Japan). Anything else (extensions, feature codes, short
    numbers, fragments) as its digits and * # +, as typed."""
    region = (region or default_region()).upper()
    chars = _dialable_chars(value)
    if _national_as_dialled(chars, region):
        return chars  # the common case, without the parser's cost (e.g. a 100 000-row import)
    number = _parse(chars, region)
    if number is None:
        return chars
    if number.country_code == phonenumbers.country_code_for_region(region):
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        return "".join(ch for ch in national if ch.isdigit())
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def display_number(value: str, region: str | None = None) -> str:
    """A number as people read it: grouped (03-1234-5678, 090-1234-5678, 0120-123-456) when it is
    the region's, with its country code (+1 415-555-0100) when foreign, else as given."""
    if not value:
        return ""
    region = (region or default_region()).upper()
    number = _parse(_dialable_chars(value), region)
    if number is None:
        return value
    if number.country_code == phonenumbers.country_code_for_region(region):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


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
