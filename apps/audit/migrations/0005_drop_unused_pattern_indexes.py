"""PostgreSQL: drop the `varchar_pattern_ops` (`*_like`) indexes Django adds beside every indexed CharField, except
on `action` (the only column searched by prefix: `action=prediction.*`). Every audited write updates every index of
the table while it holds the chain lock; these five served no query (all other filters are equality, which the
plain b-tree indexes answer). The unique constraint on `hash` and the plain indexes stay."""

from django.db import migrations

DROP = """
DO $$
DECLARE name text;
BEGIN
    FOR name IN SELECT indexname FROM pg_indexes
                WHERE tablename = 'audit_auditevent' AND indexname LIKE '%\\_like'
                  AND indexname NOT LIKE 'audit\\_auditevent\\_action\\_%'
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
        ("audit", "0004_append_function"),
    ]

    # Not recreated on the way back: they served no query.
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
