"""Japanese name and kana search that an index serves on PostgreSQL, whatever its locale.

pg_trgm (migration 0002) builds trigrams from "alphanumeric" characters only, and what counts as
one depends on the database's LC_CTYPE: under C.UTF-8 no kanji or kana is, so the trigram
indexes on name and kana hold nothing for Japanese text and a search scans the table.  Instead,
phone_grams(text) lists every character and every pair of adjacent characters (unigrams and
bigrams: what Japanese full-text search usually indexes, with no word boundaries to find), and a
GIN index over phone_grams(UPPER(col)) answers "contains every bigram of the search text"
(phone_query_grams) exactly, with no locale involved; the LIKE that follows in the same query
removes rows whose bigrams are all there but not in a row.  UPPER as in Django's icontains, so
Latin letters match in either case.

The trigram indexes on name and kana are dropped: the gram indexes serve what they served (Latin
text included), and every contact written maintains one index fewer.  The number keeps its
trigram index (digits are alphanumeric in every locale).

On SQLite (the embedded default) this migration does nothing and the search scans.
"""

from django.db import migrations

FUNCTIONS = """
CREATE OR REPLACE FUNCTION phone_grams(value text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    grams text[] := string_to_array(value, NULL);  -- every character
BEGIN
    FOR i IN 1 .. char_length(value) - 1 LOOP
        grams := grams || substr(value, i, 2);
    END LOOP;
    RETURN grams;  -- duplicates are fine: GIN keeps each key once per row
END
$$;

CREATE OR REPLACE FUNCTION phone_query_grams(value text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN char_length(value) < 2 THEN ARRAY[value]
        ELSE ARRAY(
            SELECT DISTINCT substr(value, i, 2) FROM generate_series(1, char_length(value) - 1) AS i
        )
    END
$$;
"""

GRAM_INDEXES = [
    ("contact_name_grams", "UPPER(name::text)"),
    ("contact_kana_grams", "UPPER(kana::text)"),
]
TRIGRAM_INDEXES = [
    ("contact_name_trgm", "UPPER(name::text)"),
    ("contact_kana_trgm", "UPPER(kana::text)"),
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTIONS)
    for name, expression in GRAM_INDEXES:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON phone_contact USING gin (phone_grams({expression}))"
        )
    for name, _expression in TRIGRAM_INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, expression in TRIGRAM_INDEXES:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON phone_contact USING gin ({expression} gin_trgm_ops)"
        )
    for name, _expression in GRAM_INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")
    schema_editor.execute("DROP FUNCTION IF EXISTS phone_grams(text)")
    schema_editor.execute("DROP FUNCTION IF EXISTS phone_query_grams(text)")


class Migration(migrations.Migration):
    dependencies = [("phone", "0005_contact_book_number")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
