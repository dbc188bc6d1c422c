"""PostgreSQL: append events to the chain in one round trip (`audit_auditevent_append`).

The chain lock is held from the head read until COMMIT, so every statement inside that section is a round trip
every other writer queues behind. The Python writer needed three there (lock, head, insert); this function does
the lock, the head read, the hashing and the insert in one call. It is the same chain: Python serialises every
hashed field except the two assigned under the lock (`apps.audit.hashing.hash_template`), and the function fills
in `created_at` (the database clock, formatted as `canonical_json` formats datetimes) and `seq`, then hashes
`head || created_at || middle || seq || tail || '|' || prev_hash` with SHA-256, exactly as `event_hash` does.
The verifier recomputes every hash in Python, so any difference would show as a broken chain at once.

An event may carry the row of the change it records (`companion_table`, e.g. the prediction): it is inserted in
the same call with the event's `audit_seq` and `created_at`, so a prediction request's whole locked section is this
one statement and the COMMIT.

PL/pgSQL takes a new snapshot for each statement of a volatile function, so the head is read after the lock is
held and sees the last committed append. SQLite keeps the Python writer (it serialises writers on the file).
"""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION audit_auditevent_append(lock_key bigint, events jsonb, companion_table text)
RETURNS TABLE (event_id bigint, event_seq bigint, event_created_at timestamptz, event_prev_hash varchar,
               event_hash varchar)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    head_seq bigint;
    head_hash varchar;
    ev jsonb;
    stamp timestamptz;
    digest varchar;
    seqs bigint[] := '{}';
    stamps timestamptz[] := '{}';
    prevs varchar[] := '{}';
    hashes varchar[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT a.seq, a.hash INTO head_seq, head_hash FROM audit_auditevent a ORDER BY a.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        head_seq := 0;
        head_hash := repeat('0', 64);
    END IF;
    FOR ev IN SELECT e.value FROM jsonb_array_elements(events) WITH ORDINALITY AS e(value, n) ORDER BY e.n LOOP
        stamp := clock_timestamp();
        head_seq := head_seq + 1;
        digest := encode(sha256(convert_to(
            (ev ->> 'head') || '"' || to_char(stamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00"'
            || (ev ->> 'middle') || head_seq::text || (ev ->> 'tail') || '|' || head_hash, 'UTF8')), 'hex');
        seqs := seqs || head_seq;
        stamps := stamps || stamp;
        prevs := prevs || head_hash;
        hashes := hashes || digest;
        head_hash := digest;
    END LOOP;
    -- Each event's companion row (the change it records, e.g. the prediction) gets the event's seq and time.
    IF companion_table IS NOT NULL THEN
        EXECUTE format(
            'INSERT INTO %I SELECT r.* FROM unnest($1, $2) WITH ORDINALITY AS s(seq, stamp, n) '
            'JOIN jsonb_array_elements($3) WITH ORDINALITY AS e(value, n) USING (n) '
            'CROSS JOIN LATERAL jsonb_populate_record(NULL::%I, (e.value -> ''row'') '
            '|| jsonb_build_object(''audit_seq'', s.seq, ''created_at'', s.stamp)) AS r '
            'WHERE e.value ? ''row'' ORDER BY s.n', companion_table, companion_table)
        USING seqs, stamps, events;
    END IF;
    RETURN QUERY
    INSERT INTO audit_auditevent AS a (seq, created_at, actor_type, actor_id, action, object_type, object_id,
                                       patient_ref, model_version, model_sha256, inputs, output, request_id,
                                       source_ip, prev_hash, hash)
    SELECT s.seq, s.stamp, e.value ->> 'actor_type', e.value ->> 'actor_id', e.value ->> 'action',
           e.value ->> 'object_type', e.value ->> 'object_id', e.value ->> 'patient_ref',
           e.value ->> 'model_version', e.value ->> 'model_sha256', NULLIF(e.value -> 'inputs', 'null'::jsonb),
           NULLIF(e.value -> 'output', 'null'::jsonb), e.value ->> 'request_id',
           NULLIF(e.value ->> 'source_ip', '')::inet, s.prev, s.hash
    FROM unnest(seqs, stamps, prevs, hashes) WITH ORDINALITY AS s(seq, stamp, prev, hash, n)
    JOIN jsonb_array_elements(events) WITH ORDINALITY AS e(value, n) USING (n)
    ORDER BY s.n
    RETURNING a.id, a.seq, a.created_at, a.prev_hash, a.hash;
END
$$
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS audit_auditevent_append(bigint, jsonb, text)", params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0003_append_only_triggers"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
