"""Phonebook search and CSV import/export (seed 2-5, issue 5).

Export: django-import-export's resource, every formula cell defused (phone.resources).  Import:
our own two steps, check everything then write in one short transaction (below); progress of a
long import is reported through celery-progress.
"""

import codecs
import csv
import io
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import reduce
from operator import or_

from django.core.exceptions import ValidationError
from django.db import connections, transaction
from django.db.models import BooleanField, Func, Q, QuerySet, Value
from django.db.models.functions import Upper
from django.utils.translation import gettext as _
from import_export import resources

from phone.models import Contact, Phonebook
from phone.numbers import clean_number, normalize_number
from phone.resources import export_csv, restore_formula
from phone.text import kana_for_search, search_terms

# The CSV columns are headed as the seed's screens say; English and common variants are accepted.
NAME, KANA, NUMBER = "名前", "カナ", "電話番号"
HEADER_ALIASES = {
    "名前": NAME,
    "氏名": NAME,
    "name": NAME,
    "カナ": KANA,
    "フリガナ": KANA,
    "kana": KANA,
    "電話番号": NUMBER,
    "番号": NUMBER,
    "number": NUMBER,
    "phone": NUMBER,
}


class _HasGrams(Func):
    """PostgreSQL: phone_grams(<text column>) @> phone_query_grams(<search text>), i.e. the
    column holds every bigram of the search text (migration 0006), answered by a GIN index."""

    output_field = BooleanField()

    def as_sql(self, compiler, connection, **extra_context):
        column, text = self.get_source_expressions()
        column_sql, column_params = compiler.compile(column)
        text_sql, text_params = compiler.compile(text)
        return (
            f"phone_grams({column_sql}) @> phone_query_grams({text_sql})",
            (*column_params, *text_params),
        )


def search_contacts(book: Phonebook, query: str) -> QuerySet:
    """Name or kana (any kana script, any width) or a number fragment, separators ignored."""
    contacts = Contact.objects.filter(phonebook=book)
    text, katakana, digits = search_terms(query)
    if not text:
        return contacts
    terms = [("name", text), ("kana", katakana)]
    if katakana != text:
        terms.append(("name", katakana))
    match = reduce(or_, (Q(**{f"{column}__icontains": value}) for column, value in terms))
    if digits:
        match |= Q(number_normalized__contains=digits)  # the trigram index (0002)
    contacts = contacts.filter(match)
    if connections[contacts.db].vendor != "postgresql":
        return contacts
    # What the indexes answer: a row the match finds holds every bigram of the term it matched,
    # so ANDing this changes no result; as a clause of its own (not inside the match's OR) it is
    # exactly the index condition, and PostgreSQL needs not compute a row's grams to recheck it.
    candidates = reduce(
        or_, (Q(_HasGrams(Upper(column), Upper(Value(value)))) for column, value in terms)
    )
    if digits:
        candidates |= Q(number_normalized__contains=digits)
    return contacts.filter(candidates)


class ContactResource(resources.ModelResource):
    """The export's columns (phone.resources.export_csv defuses formula cells); the import reads
    the same columns itself (read_contacts), restoring what the export defused."""

    name = resources.Field(attribute="name", column_name=NAME)
    kana = resources.Field(attribute="kana", column_name=KANA)
    number = resources.Field(attribute="number", column_name=NUMBER)

    class Meta:
        model = Contact
        fields = ("name", "kana", "number")


@dataclass
class ImportReport:
    total: int = 0
    created: int = 0
    updated: int = 0
    errors: list[tuple[int, list[str]]] = field(default_factory=list)
    # Seconds spent checking the file (no lock held) and writing it (one transaction).
    check_seconds: float = 0.0
    write_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "created": self.created,
            "updated": self.updated,
            "errors": [[line, [str(m) for m in messages]] for line, messages in self.errors],
            "check_seconds": self.check_seconds,
            "write_seconds": self.write_seconds,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ImportReport":
        return cls(
            total=data["total"],
            created=data["created"],
            updated=data["updated"],
            errors=[(line, messages) for line, messages in data["errors"]],
            check_seconds=data.get("check_seconds", 0.0),
            write_seconds=data.get("write_seconds", 0.0),
        )


# --- CSV import (seed 2-5) ---------------------------------------------------------------------
#
# In two steps, so that no lock is held while a large file is read: first the whole file is
# decoded, parsed and checked, and the book's contacts with the file's numbers are looked up
# (the (phonebook, number) index); then, only if every row is good, everything is written in one
# short transaction with bulk statements.  Either every row is imported or none.

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # 100 000 rows of Japanese names fit with room to spare
MAX_ROWS = 100_000
MAX_REPORTED_ERRORS = 100
WRITE_BATCH = 1000
ANALYZE_AFTER_ROWS = 10_000
_LOOKUP_BATCH = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ImportRefused(Exception):
    """The file cannot be imported: `errors` as (line, messages), the header being line 1."""

    def __init__(self, errors: list[tuple[int, list[str]]]):
        super().__init__(errors)
        self.errors = errors


def decode_csv(raw: bytes) -> str:
    """The text of an uploaded CSV file: UTF-8 with or without a BOM, UTF-16 (with a BOM, as
    Excel's "Unicode text" writes it, or without one when its NUL bytes give it away) or
    Shift_JIS as Excel on Japanese Windows saves CSV (cp932).  Anything else raises
    ImportRefused naming the line of the first byte that none of them reads."""
    if raw.startswith(codecs.BOM_UTF8):
        encodings = ["utf-8-sig"]
    elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encodings = ["utf-16"]
    elif utf16 := _utf16_without_bom(raw[:4096]):
        encodings = [utf16]
    else:
        encodings = ["utf-8", "cp932"]
    failures = []
    for encoding in encodings:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError as exc:
            failures.append((exc.start, encoding))
            if encoding == "utf-8" and not raw[: exc.start].isascii():
                # Japanese text read as UTF-8 up to here: UTF-8 with a broken byte, which
                # Shift_JIS might well "read" too, as mojibake.
                break
    start, encoding = max(failures)  # the reading that got furthest names the likeliest line
    if encoding.startswith("utf-16"):
        line = raw[:start].decode(encoding, errors="replace").count("\n") + 1
    else:
        line = raw[:start].count(b"\n") + 1
    message = _(
        "This line cannot be read as UTF-8, UTF-16 or Shift_JIS text: save the file as "
        "CSV (UTF-8) and import it again."
    )
    raise ImportRefused([(line, [message])])


def _utf16_without_bom(sample: bytes) -> str | None:
    """UTF-16 gives itself away by NUL bytes, on one side of each pair (the high byte of every
    ASCII character: commas, digits, line ends); a stray NUL in other text does not."""
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    if max(even, odd) < max(1, len(sample) // 10) or min(even, odd) * 10 > max(even, odd):
        return None
    return "utf-16-le" if odd > even else "utf-16-be"


@dataclass(frozen=True)
class ContactRow:
    line: int
    name: str
    kana: str
    number: str


def _cell(value: str) -> str:
    """A cell as the user meant it: our export's formula defusing undone (a name exported as
    '=x reads back as =x), surrounding spaces dropped."""
    return restore_formula(value).strip()


def _check_row(line: int, name: str, kana: str, number: str) -> tuple[ContactRow | None, list]:
    messages = []
    name_max = Contact._meta.get_field("name").max_length
    kana_max = Contact._meta.get_field("kana").max_length
    if _CONTROL.search(name):
        messages.append(f"{NAME}: {_('Control characters are not allowed.')}")
    elif len(name) > name_max:
        messages.append(f"{NAME}: {_('At most %(max)d characters.') % {'max': name_max}}")
    kana = kana_for_search(kana)
    if _CONTROL.search(kana):
        messages.append(f"{KANA}: {_('Control characters are not allowed.')}")
    elif len(kana) > kana_max:
        messages.append(f"{KANA}: {_('At most %(max)d characters.') % {'max': kana_max}}")
    try:
        number = clean_number(number)
    except ValidationError as exc:
        messages.append(f"{NUMBER}: {' '.join(exc.messages)}")
    if messages:
        return None, messages
    return ContactRow(line, name, kana, number), []


def _header(cells: list[str]) -> dict[str, int]:
    """Column index of 名前, カナ (optional) and 電話番号, or ImportRefused for line 1."""
    columns = [HEADER_ALIASES.get(cell.strip().lstrip("\ufeff").lower()) for cell in cells]
    if (
        NAME not in columns
        or NUMBER not in columns
        or any(columns.count(column) > 1 for column in (NAME, KANA, NUMBER))
    ):
        wanted = ", ".join((NAME, KANA, NUMBER))
        message = _("The first line must name the columns: %(columns)s") % {"columns": wanted}
        raise ImportRefused([(1, [message])])
    return {column: columns.index(column) for column in (NAME, KANA, NUMBER) if column in columns}


def _ragged(cells: list[str], width: int) -> bool:
    # Empty cells past the last column are fine (spreadsheets write trailing commas).
    return len(cells) < width or any(cell.strip() for cell in cells[width:])


def read_contacts(text: str, progress=None) -> list[ContactRow]:
    """Every row of the CSV text, checked; ImportRefused lists the bad ones by line (the header
    is line 1, as in a spreadsheet)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    errors: list[tuple[int, list[str]]] = []
    rows: list[ContactRow] = []
    total = max(1, text.count("\n"))
    line = 1
    try:
        header = next(reader, [])
        at, width = _header(header), len(header)
        for line, cells in enumerate(reader, start=2):
            if not any(cell.strip() for cell in cells):
                continue  # a blank line
            if len(rows) + len(errors) >= MAX_ROWS:
                message = _("More than %(max)d rows: split the file.") % {"max": MAX_ROWS}
                raise ImportRefused([(line, [message])])
            if _ragged(cells, width):
                found = {"found": len(cells), "expected": width}
                message = _("%(found)d columns, but the first line names %(expected)d.") % found
                errors.append((line, [message]))
                continue
            row, messages = _check_row(
                line,
                _cell(cells[at[NAME]]),
                _cell(cells[at[KANA]]) if KANA in at else "",
                _cell(cells[at[NUMBER]]),
            )
            if row is None:
                errors.append((line, messages))
            else:
                rows.append(row)
            if line % 1000 == 0:
                if progress is not None:
                    progress.set_progress(line, total, description="checking")
                time.sleep(0.001)  # let the threads of calls and pages have the GIL
    except csv.Error as exc:  # e.g. a field of over 128 KiB
        errors.append((max(line, reader.line_num), [f"CSV: {exc}"]))
    if len(errors) > MAX_REPORTED_ERRORS:
        more = len(errors) - MAX_REPORTED_ERRORS
        unlisted = errors[MAX_REPORTED_ERRORS][0]
        message = _("… and %(count)d more lines with errors.") % {"count": more}
        errors = [*errors[:MAX_REPORTED_ERRORS], (unlisted, [message])]
    if errors:
        raise ImportRefused(errors)
    return rows


@dataclass
class ImportPlan:
    """What an import writes: (name, kana, number, digits) of new contacts, (name, kana, id) of
    those it changes."""

    book: Phonebook
    create: list[tuple[str, str, str, str]]
    update: list[tuple[str, str, int]]
    unchanged: int


def plan_import(book: Phonebook, rows: list[ContactRow]) -> ImportPlan:
    """Match the file's rows with the book's contacts by number: a row updates a contact with
    its number (the one with the same name first, else the oldest not yet matched), or adds one.
    So a book with several contacts sharing a number (a company's main line) round-trips
    through export and import unchanged, and importing the same file twice adds nothing."""
    by_number: dict[str, list[ContactRow]] = defaultdict(list)
    for row in rows:
        by_number[row.number].append(row)
    existing: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    numbers = list(by_number)
    for start in range(0, len(numbers), _LOOKUP_BATCH):
        batch = numbers[start : start + _LOOKUP_BATCH]
        # The (phonebook, number) index; no ORDER BY, which could make it walk the table by id.
        found = Contact.objects.filter(phonebook=book, number__in=batch).order_by()
        for number, pk, name, kana in found.values_list("number", "pk", "name", "kana"):
            existing[number].append((pk, name, kana))
    plan = ImportPlan(book=book, create=[], update=[], unchanged=0)
    for number, file_rows in by_number.items():
        free = sorted(existing.get(number, []))  # oldest first
        pairs, unmatched = [], []
        for row in file_rows:
            same = next((c for c in free if c[1] == row.name), None)
            if same is None:
                unmatched.append(row)
            else:
                free.remove(same)
                pairs.append((row, same))
        pairs += zip(unmatched, free, strict=False)  # as many as both have
        for row, (pk, name, kana) in pairs:
            if (name, kana) == (row.name, row.kana):
                plan.unchanged += 1
            else:
                plan.update.append((row.name, row.kana, pk))
        for row in unmatched[len(free) :]:
            # As Contact.normalise() stores it: the number is clean_number's (no separators).
            plan.create.append((row.name, row.kana, row.number, normalize_number(row.number)))
    return plan


_COLUMNS = "tenant_id, phonebook_id, name, kana, number, number_normalized"


def write_import(plan: ImportPlan) -> None:
    """One transaction of bulk statements, their parameters prepared beforehand: on SQLite the
    write lock is held this long.  PostgreSQL: COPY (a third of the time of batched INSERTs, most
    of it the GIN indexes), and the updates as one UPDATE from a COPYed temporary table."""
    table = Contact._meta.db_table
    tenant_id, book_id = plan.book.tenant_id, plan.book.pk
    with transaction.atomic(), transaction.get_connection().cursor() as cursor:
        if cursor.db.vendor == "postgresql":
            with cursor.copy(f"COPY {table} ({_COLUMNS}) FROM STDIN") as copy:
                for row in plan.create:
                    copy.write_row((tenant_id, book_id, *row))
            if plan.update:
                cursor.execute(
                    "CREATE TEMPORARY TABLE contact_import (name text, kana text, id bigint)"
                    " ON COMMIT DROP"
                )
                with cursor.copy("COPY contact_import (name, kana, id) FROM STDIN") as copy:
                    for row in plan.update:
                        copy.write_row(row)
                cursor.execute(
                    f"UPDATE {table} AS contact SET name = new.name, kana = new.kana"
                    " FROM contact_import AS new WHERE contact.id = new.id"
                )
            return
        for start in range(0, len(plan.create), WRITE_BATCH):
            cursor.executemany(
                f"INSERT INTO {table} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)",
                [(tenant_id, book_id, *row) for row in plan.create[start : start + WRITE_BATCH]],
            )
        if plan.update:
            update = f"UPDATE {table} SET name = %s, kana = %s WHERE id = %s"
            cursor.executemany(update, plan.update)


def _analyze_after(plan: ImportPlan) -> None:
    """After a large import PostgreSQL's statistics (those of the gram indexes included) no
    longer describe the table: without them it may plan the next searches as scans."""
    if len(plan.create) + len(plan.update) < ANALYZE_AFTER_ROWS:
        return
    with transaction.get_connection().cursor() as cursor:
        if cursor.db.vendor == "postgresql":
            cursor.execute(f"ANALYZE {Contact._meta.db_table}")


def import_contacts(book: Phonebook, text: str, progress=None) -> ImportReport:
    """Import every row of the CSV text or none (errors by line)."""
    started = time.monotonic()
    try:
        rows = read_contacts(text, progress=progress)
    except ImportRefused as refused:
        return ImportReport(errors=refused.errors, check_seconds=time.monotonic() - started)
    plan = plan_import(book, rows)
    checked = time.monotonic()
    if progress is not None:
        progress.set_progress(len(rows), len(rows), description="saving")
    write_import(plan)
    written = time.monotonic()
    _analyze_after(plan)
    return ImportReport(
        total=len(rows),
        created=len(plan.create),
        updated=len(plan.update),
        check_seconds=checked - started,
        write_seconds=written - checked,
    )


def export_contacts(book: Phonebook) -> str:
    """CSV of the book; cells that a spreadsheet would run as formulas are escaped
    (IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT)."""
    contacts = Contact.objects.filter(phonebook=book).order_by("kana", "name", "id")
    return export_csv(ContactResource(), contacts)


def phonebook_name(user, number: str, region: str | None = None) -> str:
    """The caller's name from the user's personal phonebook, else the tenant's shared ones.
    Any way of writing the number finds it (+81312345678 the contact saved as 03-1234-5678)."""
    return name_in_phonebooks(user.profile.tenant_id, user.pk, number, region)


def name_in_phonebooks(tenant_id: int, user_id: int, number: str, region: str | None = None) -> str:
    """phonebook_name by ids, one query: for the sipworker, which knows the line's tenant."""
    digits = normalize_number(number, region)
    if not digits:
        return ""
    contacts = Contact.objects.filter(tenant_id=tenant_id, number_normalized=digits).filter(
        Q(phonebook__owner_id=user_id) | Q(phonebook__owner__isnull=True)
    )
    # Personal entries win over shared ones.
    contact = contacts.order_by("-phonebook__owner_id", "id").first()
    return contact.name if contact else ""
