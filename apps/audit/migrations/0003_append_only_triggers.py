"""Make audit_auditevent append-only in the database itself, not only in the ORM.

PostgreSQL: BEFORE UPDATE / BEFORE DELETE row triggers and a BEFORE TRUNCATE statement trigger that raise, set to
ENABLE ALWAYS so they also fire under `SET session_replication_role = replica` (measured: with plain ENABLE, replica
mode skips them). Only the table owner or a superuser can switch them off (`ALTER TABLE ... DISABLE TRIGGER`), which
is a deliberate, logged DDL act; the chain verifier then names whatever was changed.

SQLite (embedded default): equivalent BEFORE UPDATE / BEFORE DELETE triggers with RAISE(ABORT); SQLite has no
TRUNCATE (an unqualified DELETE runs the DELETE trigger). Note: SQLite rebuilds a table for most ALTERs, which drops
its triggers; a later migration that alters this table on SQLite must recreate them.
"""

from django.db import migrations

TABLE = "audit_auditevent"

POSTGRES_FORWARD = [
    f"""
    CREATE OR REPLACE FUNCTION {TABLE}_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{TABLE} is append-only: % rejected', TG_OP
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Audit events are written only by apps.audit.services.audit_event_record.';
    END
    $$
    """,
    f"CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE ON {TABLE} FOR EACH ROW EXECUTE FUNCTION {TABLE}_reject_change()",
    f"CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE} FOR EACH ROW EXECUTE FUNCTION {TABLE}_reject_change()",
    f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_reject_change()",
    f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER {TABLE}_no_update",
    f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER {TABLE}_no_delete",
    f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER {TABLE}_no_truncate",
]
POSTGRES_REVERSE = [
    f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}",
    f"DROP TRIGGER IF EXISTS {TABLE}_no_delete ON {TABLE}",
    f"DROP TRIGGER IF EXISTS {TABLE}_no_update ON {TABLE}",
    f"DROP FUNCTION IF EXISTS {TABLE}_reject_change()",
]
SQLITE_FORWARD = [
    f"CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE ON {TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only: UPDATE rejected'); END",
    f"CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only: DELETE rejected'); END",
]
SQLITE_REVERSE = [
    f"DROP TRIGGER IF EXISTS {TABLE}_no_delete",
    f"DROP TRIGGER IF EXISTS {TABLE}_no_update",
]


def _run(schema_editor, statements_by_vendor):
    statements = statements_by_vendor.get(schema_editor.connection.vendor)
    if statements is None:
        raise RuntimeError(
            f"no append-only triggers for database vendor {schema_editor.connection.vendor!r}; "
            "ClinPredict supports PostgreSQL and SQLite"
        )
    for statement in statements:
        schema_editor.execute(statement, params=None)


def forwards(apps, schema_editor):
    _run(schema_editor, {"postgresql": POSTGRES_FORWARD, "sqlite": SQLITE_FORWARD})


def backwards(apps, schema_editor):
    _run(schema_editor, {"postgresql": POSTGRES_REVERSE, "sqlite": SQLITE_REVERSE})


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_ledger_verifications_and_backups"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
