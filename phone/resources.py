"""CSV columns of what users export (django-import-export resources)."""

from django.utils import timezone
from import_export import resources
from import_export.formats.base_formats import CSV

from phone.models import CallRecord

CSV_FORMAT = CSV()


def export_csv(resource: resources.Resource, queryset) -> str:
    """Through the format class, so IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT applies."""
    return CSV_FORMAT.export_data(resource.export(queryset=queryset))


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
