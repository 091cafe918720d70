"""Stored lookup numbers in the form phone.numbers.normalize_number now gives (issue 13, item 9):
a valid Japanese number in its national form whichever way it was written (+81312345678 and
03-1234-5678 are both 0312345678), a foreign one in E.164, anything else as its digits.  Rows
written before kept the digits as typed, so a caller id in E.164 did not find them.

Only the *_normalized columns change; the numbers as dialled stay as they are.  CallRecord
belongs to the call path: only its lookup column is rewritten here, nothing else."""

from django.db import migrations

BATCH = 2000


def renormalise(model, source, target, max_length):
    from phone.numbers import normalize_number

    changed = []
    rows = model.objects.only("id", source, target).order_by().iterator(BATCH)
    for row in rows:
        value = normalize_number(getattr(row, source))[:max_length]
        if value != getattr(row, target):
            setattr(row, target, value)
            changed.append(row)
        if len(changed) >= BATCH:
            model.objects.bulk_update(changed, [target])
            changed = []
    model.objects.bulk_update(changed, [target])


def forwards(apps, schema_editor):
    renormalise(apps.get_model("phone", "Contact"), "number", "number_normalized", 32)
    renormalise(
        apps.get_model("phone", "CallRecord"), "remote_number", "remote_number_normalized", 64
    )


class Migration(migrations.Migration):
    dependencies = [("phone", "0007_park_state")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop, elidable=True)]
