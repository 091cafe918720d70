"""CSV columns of what users export (django-import-export resources), and the one place every
CSV export passes through: formula cells defused, UTF-8 with a BOM."""

import tablib
from django.http import HttpResponse
from django.utils import timezone
from import_export import resources
from import_export.formats.base_formats import CSV

from phone.models import CallRecord

CSV_FORMAT = CSV()

# OWASP "CSV Injection": a spreadsheet runs a cell starting with one of these as a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def defuse_formula(value):
    """A leading single quote makes a spreadsheet show the text instead of running it.
    (django-import-export's IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT only deletes a first "=",
    which changes the value and leaves + - @ tab CR formulas live; it is off.)"""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def restore_formula(value: str) -> str:
    """The inverse for re-importing our own export: drop the quote defuse_formula added."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(FORMULA_TRIGGERS):
        return value[1:]
    return value


def export_csv(resource: resources.Resource, queryset) -> str:
    """The resource's rows as CSV text, every cell defused."""
    exported = resource.export(queryset=queryset)
    defused = tablib.Dataset(
        *([defuse_formula(cell) for cell in row] for row in exported),
        headers=[defuse_formula(header) for header in exported.headers or []],
    )
    return CSV_FORMAT.export_data(defused)


def csv_response(text: str, filename: str, *, bom: bool = True) -> HttpResponse:
    """A CSV download.  UTF-8 with a byte-order mark by default: without it Excel on Japanese
    Windows reads the file as Shift_JIS and shows the names as mojibake."""
    body = ("\ufeff" if bom else "") + text
    response = HttpResponse(body.encode("utf-8"), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _local(value):
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else ""


class CallRecordResource(resources.ModelResource):
    direction = resources.Field(column_name="種別")
    remote_number = resources.Field(attribute="remote_number", column_name="相手番号")
    remote_name = resources.Field(attribute="remote_name", column_name="名称")
    called_number = resources.Field(attribute="called_number", column_name="着信番号")
    answered_by = resources.Field(attribute="answered_by_name", column_name="応答者")
    started_at = resources.Field(column_name="発信時刻")
    answered_at = resources.Field(column_name="応答時刻")
    ended_at = resources.Field(column_name="終了時刻")
    duration = resources.Field(column_name="通話時間(秒)")

    class Meta:
        model = CallRecord
        fields = (
            "direction", "remote_number", "remote_name", "called_number", "answered_by",
            "started_at", "answered_at", "ended_at", "duration",
        )  # fmt: skip

    def dehydrate_direction(self, record):
        return str(record.get_direction_display())

    def dehydrate_started_at(self, record):
        return _local(record.started_at)

    def dehydrate_answered_at(self, record):
        return _local(record.answered_at)

    def dehydrate_ended_at(self, record):
        return _local(record.ended_at)

    def dehydrate_duration(self, record):
        seconds = record.duration_seconds
        return "キャンセル" if seconds is None else seconds
