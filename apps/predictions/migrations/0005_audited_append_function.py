"""PostgreSQL: `predictions_prediction_append`, the audit append with the predictions inserted by a static statement.

`audit_auditevent_append` (apps/audit/migrations/0004) inserts an event's companion row with `EXECUTE format(...)`,
because it serves any table: PostgreSQL parses and plans that INSERT on every call, while the chain lock is held
(~0.3 ms of a ~0.85 ms call on the benchmark machine). This function calls it unchanged for the events (the lock,
the head read, the hashes and the event inserts all stay there) and then inserts the predictions with a plain
INSERT, whose plan PL/pgSQL prepares once per connection. The rows are the ones the generic function would insert:
each event's `row`, with that event's seq as `audit_seq` and its time as `created_at`, in event order.
`Prediction.AUDITED_APPEND_FUNCTION` names it for apps/audit/services.py. SQLite keeps the Python writer.
"""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION predictions_prediction_append(lock_key bigint, events jsonb)
RETURNS TABLE (event_id bigint, event_seq bigint, event_created_at timestamptz, event_prev_hash varchar,
               event_hash varchar)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    appended record;
    seqs bigint[] := '{}';
    stamps timestamptz[] := '{}';
BEGIN
    FOR appended IN SELECT a.event_id AS id, a.event_seq AS seq, a.event_created_at AS stamp,
                           a.event_prev_hash AS prev, a.event_hash AS digest
                    FROM audit_auditevent_append(lock_key, events, NULL) a ORDER BY a.event_seq LOOP
        seqs := seqs || appended.seq;
        stamps := stamps || appended.stamp;
        event_id := appended.id;
        event_seq := appended.seq;
        event_created_at := appended.stamp;
        event_prev_hash := appended.prev;
        event_hash := appended.digest;
        RETURN NEXT;
    END LOOP;
    INSERT INTO predictions_prediction
    SELECT r.* FROM unnest(seqs, stamps) WITH ORDINALITY AS s(seq, stamp, n)
    JOIN jsonb_array_elements(events) WITH ORDINALITY AS e(value, n) USING (n)
    CROSS JOIN LATERAL jsonb_populate_record(NULL::predictions_prediction, (e.value -> 'row')
        || jsonb_build_object('audit_seq', s.seq, 'created_at', s.stamp)) AS r
    WHERE e.value ? 'row'
    ORDER BY s.n;
    RETURN;
END
$$
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS predictions_prediction_append(bigint, jsonb)", params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0005_drop_unused_pattern_indexes"),
        ("predictions", "0004_cdsclient_fhir_base_urls"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
