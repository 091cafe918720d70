"""CRM kana as Customer.save() and CustomerContact.save() now store it (full-width katakana,
trimmed), for rows written before they did (the admin skipped the CRM form's folding)."""

from django.db import migrations

BATCH = 1000


def normalise_kana(apps, schema_editor):
    from phone.text import kana_for_search

    for name, max_length in (("Customer", 200), ("CustomerContact", 100)):
        model = apps.get_model("cti", name)
        changed = []
        for row in model.objects.exclude(kana="").only("id", "kana").iterator(BATCH):
            folded = kana_for_search(row.kana)[:max_length]
            if folded != row.kana:
                row.kana = folded
                changed.append(row)
            if len(changed) >= BATCH:
                model.objects.bulk_update(changed, ["kana"])
                changed = []
        model.objects.bulk_update(changed, ["kana"])


class Migration(migrations.Migration):
    dependencies = [("cti", "0003_safe_urls")]

    operations = [migrations.RunPython(normalise_kana, migrations.RunPython.noop, elidable=True)]
