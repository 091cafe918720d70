"""CRM lookup numbers in the form phone.numbers.normalize_number now gives (issue 13, item 9),
as phone 0008 does for contacts and history: +81312345678 and 03-1234-5678 are both
0312345678, so a caller id in either form finds the customer."""

from django.db import migrations

BATCH = 2000


def forwards(apps, schema_editor):
    from phone.numbers import normalize_number

    for name in ("CustomerPhone", "CustomerContact"):
        model = apps.get_model("cti", name)
        changed = []
        for row in (
            model.objects.only("id", "number", "number_normalized").order_by().iterator(BATCH)
        ):
            value = normalize_number(row.number)[:32]
            if value != row.number_normalized:
                row.number_normalized = value
                changed.append(row)
            if len(changed) >= BATCH:
                model.objects.bulk_update(changed, ["number_normalized"])
                changed = []
        model.objects.bulk_update(changed, ["number_normalized"])


class Migration(migrations.Migration):
    dependencies = [("cti", "0004_normalise_kana")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop, elidable=True)]
