"""PostgreSQL: drop the `varchar_pattern_ops` (`*_like`) indexes on `use_case` and `patient_ref`: predictions are
filtered by equality only, and each index is one more insert in the audited write that holds the chain lock."""

from django.db import migrations

DROP = """
DO $$
DECLARE name text;
BEGIN
    FOR name IN SELECT indexname FROM pg_indexes
                WHERE tablename = 'predictions_prediction' AND indexname LIKE '%\\_like'
    LOOP
        EXECUTE format('DROP INDEX IF EXISTS %I', name);
    END LOOP;
END
$$
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0002_idempotency_cds_basis"),
    ]

    # Not recreated on the way back: they served no query.
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
