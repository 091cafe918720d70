"""Contacts' kana as Contact.save() now stores it (full-width katakana, trimmed), for rows written
before it did: by the admin or code, which skipped the panel form's folding."""

from django.db import migrations

BATCH = 1000


def normalise_kana(apps, schema_editor):
    from phone.text import kana_for_search

    Contact = apps.get_model("phone", "Contact")
    changed = []
    for contact in Contact.objects.exclude(kana="").only("id", "kana").iterator(BATCH):
        folded = kana_for_search(contact.kana)[:100]  # the column's max_length
        if folded != contact.kana:
            contact.kana = folded
            changed.append(contact)
        if len(changed) >= BATCH:
            Contact.objects.bulk_update(changed, ["kana"])
            changed = []
    Contact.objects.bulk_update(changed, ["kana"])


class Migration(migrations.Migration):
    dependencies = [("phone", "0002_postgres_indexes")]

    operations = [migrations.RunPython(normalise_kana, migrations.RunPython.noop, elidable=True)]
