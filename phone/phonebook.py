"""Phonebook search and CSV import/export (seed 2-5, issue 5).

CSV parsing, per-row validation and the all-or-nothing transaction come from django-import-export;
progress of a long import is reported through celery-progress.
"""

from dataclasses import dataclass, field

from django.db.models import Q, QuerySet
from import_export import resources

from phone.models import Contact, Phonebook
from phone.numbers import normalize_number, strip_separators
from phone.resources import CSV_FORMAT, export_csv
from phone.text import search_terms, to_katakana

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

COLUMN_OF = {"name": NAME, "kana": KANA, "number": NUMBER}


def search_contacts(book: Phonebook, query: str) -> QuerySet:
    """Name or kana (any kana script, any width) or a number fragment, separators ignored."""
    contacts = Contact.objects.filter(phonebook=book)
    text, katakana, digits = search_terms(query)
    if not text:
        return contacts
    match = Q(name__icontains=text) | Q(kana__icontains=katakana)
    if katakana != text:
        match |= Q(name__icontains=katakana)
    if digits:
        match |= Q(number_normalized__contains=digits)
    return contacts.filter(match)


class ContactResource(resources.ModelResource):
    """One phonebook's contacts; rows with a number already in the book update that contact."""

    def __init__(self, book: Phonebook, progress=None, total: int = 0):
        super().__init__()
        self.book = book
        self.progress = progress
        self.total = total

    name = resources.Field(attribute="name", column_name=NAME)
    kana = resources.Field(attribute="kana", column_name=KANA)
    number = resources.Field(attribute="number", column_name=NUMBER)

    class Meta:
        model = Contact
        fields = ("name", "kana", "number")
        import_id_fields = ("number",)
        clean_model_instances = True
        skip_unchanged = True

    def get_queryset(self):
        return Contact.objects.filter(phonebook=self.book)

    def init_instance(self, row=None):
        return Contact(phonebook=self.book, tenant_id=self.book.tenant_id)

    def before_import_row(self, row, **kwargs):
        row[NUMBER] = strip_separators(str(row.get(NUMBER) or ""))
        row[KANA] = to_katakana(str(row.get(KANA) or "")).strip()
        row[NAME] = str(row.get(NAME) or "").strip()

    def after_import_row(self, row, row_result, **kwargs):
        if self.progress is not None:
            done = kwargs.get("row_number") or 0
            self.progress.set_progress(done, self.total, description="importing")


@dataclass
class ImportReport:
    total: int = 0
    created: int = 0
    updated: int = 0
    errors: list[tuple[int, list[str]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "created": self.created,
            "updated": self.updated,
            "errors": [[line, messages] for line, messages in self.errors],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ImportReport":
        return cls(
            total=data["total"],
            created=data["created"],
            updated=data["updated"],
            errors=[(line, messages) for line, messages in data["errors"]],
        )


def read_csv(text: str):
    """Parse CSV text and map known headers (名前/カナ/電話番号 or name/kana/number)."""
    dataset = CSV_FORMAT.create_dataset(text)
    dataset.headers = [HEADER_ALIASES.get((h or "").strip().lower(), h) for h in dataset.headers]
    return dataset


def count_rows(text: str) -> int:
    return len(read_csv(text))


def import_contacts(book: Phonebook, text: str, progress=None) -> ImportReport:
    """Import every row or none: any invalid row rolls the whole file back."""
    try:
        dataset = read_csv(text)
    except Exception as exc:  # tablib raises several kinds for garbage input
        return ImportReport(errors=[(0, [f"CSV: {exc}"])])
    if {NAME, NUMBER} - set(dataset.headers or []):
        wanted = ", ".join((NAME, KANA, NUMBER))
        return ImportReport(
            total=len(dataset), errors=[(1, [f"header row must name the columns: {wanted}"])]
        )
    if KANA not in dataset.headers:
        dataset.append_col([""] * len(dataset), header=KANA)
    resource = ContactResource(book, progress=progress, total=len(dataset))
    result = resource.import_data(
        dataset,
        dry_run=False,
        use_transactions=True,
        rollback_on_validation_errors=True,
        raise_errors=False,
    )
    report = ImportReport(total=len(dataset))
    for invalid in result.invalid_rows:
        messages = [
            f"{COLUMN_OF.get(name, name)}: {' '.join(errs)}"
            for name, errs in invalid.error_dict.items()
        ]
        report.errors.append((invalid.number + 1, messages))  # +1: the header is line 1
    for number, errors in result.row_errors():
        report.errors.append((number + 1, [str(error.error) for error in errors]))
    report.errors.sort()
    if report.ok:
        report.created = result.totals.get("new", 0)
        report.updated = result.totals.get("update", 0)
    return report


def export_contacts(book: Phonebook) -> str:
    """CSV of the book; cells that a spreadsheet would run as formulas are escaped
    (IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT)."""
    contacts = Contact.objects.filter(phonebook=book).order_by("kana", "name", "id")
    return export_csv(ContactResource(book), contacts)


def phonebook_name(user, number: str) -> str:
    """The caller's name from the user's personal phonebook, else the tenant's shared ones."""
    digits = normalize_number(number)
    if not digits:
        return ""
    contacts = Contact.objects.filter(
        tenant_id=user.profile.tenant_id, number_normalized=digits
    ).filter(Q(phonebook__owner=user) | Q(phonebook__owner__isnull=True))
    # Personal entries win over shared ones.
    contact = contacts.order_by("-phonebook__owner_id", "id").first()
    return contact.name if contact else ""
