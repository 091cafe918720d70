"""PostgreSQL-only indexes for the history and phonebook panels at scale (benchmarks/).

- history sorted by talk time: (user, talk_seconds DESC NULLS LAST, id DESC), which SQLite
  cannot express;
- substring search (name, kana, number fragment) with pg_trgm GIN indexes on the very
  expressions Django's icontains/contains produce (UPPER(col::text), col::text).

On SQLite (the embedded default) this migration does nothing.
"""

from django.db import migrations

TRIGRAM_INDEXES = [
    ("callrecord_name_trgm", "phone_callrecord", "UPPER(remote_name::text)"),
    ("callrecord_number_trgm", "phone_callrecord", "(remote_number_normalized::text)"),
    ("contact_name_trgm", "phone_contact", "UPPER(name::text)"),
    ("contact_kana_trgm", "phone_contact", "UPPER(kana::text)"),
    ("contact_number_trgm", "phone_contact", "(number_normalized::text)"),
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # pg_trgm is a trusted extension (PostgreSQL 13+): the database owner may create it.
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema_editor.execute(
        "CREATE INDEX IF NOT EXISTS callrecord_user_talk ON phone_callrecord "
        "(user_id, talk_seconds DESC NULLS LAST, id DESC)"
    )
    for name, table, expression in TRIGRAM_INDEXES:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin ({expression} gin_trgm_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in ["callrecord_user_talk", *(name for name, _t, _e in TRIGRAM_INDEXES)]:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("phone", "0001_initial")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
