"""Least privilege in the database (docs/security.md, "Database roles"): connected as the application role that
`manage.py setup_database_roles` creates, the audit table cannot be updated, deleted from, truncated or have its
triggers disabled, no DDL runs, and predictions still work; `grant_app_role` (run by the owner after every migrate)
corrects drift; the deployment check names DATABASE_URL when the application connects as more than that role.

Every refusal is asserted by SQLSTATE 42501 *and* PostgreSQL's privilege message: the append-only triggers raise
the same SQLSTATE with their own message ("... is append-only"), so the message shows the role was refused before
any trigger could run (the table holds a row, so the row triggers would fire)."""

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg2 import errors, sql

REPO = Path(__file__).resolve().parents[3]
AUDIT_TABLE = "audit_auditevent"
PRODUCTION_SECRET = "db-roles-test-secret-key-that-is-long-enough-0123456789-abcdef"

pytestmark = pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgres"),
                                reason="database roles need PostgreSQL (DATABASE_URL)")


def _manage(*args: str, database_url: str, settings: str = "clinpredict.settings.test",
            **env: str) -> subprocess.CompletedProcess[str]:
    dropped = {"DJANGO_ALLOW_ASYNC_UNSAFE"}  # set by the browser tests' conftest in this process only
    base = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("PYTEST")}
    return subprocess.run([sys.executable, str(REPO / "manage.py"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=180, env={**base, "DJANGO_SETTINGS_MODULE": settings, "DATABASE_URL": database_url,
                                            **env})


def _production_env(**extra: str) -> dict[str, str]:
    return {"SECRET_KEY": PRODUCTION_SECRET, "ALLOWED_HOSTS": "testserver,clinpredict.example.org",
            "CACHE_URL": "redis://127.0.0.1:6379/14", **extra}


def _superuser(database_roles: Any) -> Any:
    import psycopg2
    from django.db import connection

    db = connection.settings_dict
    return psycopg2.connect(host=database_roles.host, port=database_roles.port, dbname=database_roles.database,
                            user=db["USER"], password=db["PASSWORD"] or None)


@pytest.fixture
def as_role(database_roles: Any) -> Iterator[Callable[[str], Any]]:
    """`as_role(name)`: a psycopg2 connection to the test database as that role (rolled back and closed after)."""
    opened: list[Any] = []

    def connect(role: str) -> Any:
        connection = database_roles.connect(role)
        opened.append(connection)
        return connection

    yield connect
    for connection in opened:
        connection.rollback()
        connection.close()


def _refused(connection: Any, statement: str, message: str) -> None:
    with pytest.raises(errors.InsufficientPrivilege) as refused, connection.cursor() as cursor:
        cursor.execute(statement)
    connection.rollback()
    assert refused.value.pgcode == "42501"
    assert str(refused.value).startswith(message), str(refused.value)


@pytest.fixture
def recorded_event(transactional_db: None) -> Any:
    """One committed audit event, written by the service as the suite's (superuser) connection."""
    from apps.audit.actors import Actor
    from apps.audit.services import audit_event_record_standalone

    return audit_event_record_standalone(actor=Actor(type="system", id="tests"), action="test.db_roles")


def test_the_application_role_cannot_alter_remove_or_unprotect_audit_events(
    database_roles: Any, as_role: Callable[[str], Any], recorded_event: Any
) -> None:
    app = as_role(database_roles.app)
    with app.cursor() as cursor:  # it can read and append...
        cursor.execute(f"SELECT count(*) FROM {AUDIT_TABLE}")  # noqa: S608 - constant
        assert cursor.fetchone()[0] == 1
    app.rollback()

    denied = f"permission denied for table {AUDIT_TABLE}"
    _refused(app, f"UPDATE {AUDIT_TABLE} SET action = 'tampered'", denied)  # noqa: S608 - constant
    _refused(app, f"DELETE FROM {AUDIT_TABLE}", denied)  # noqa: S608 - constant
    _refused(app, f"TRUNCATE {AUDIT_TABLE}", denied)
    not_owner = f"must be owner of table {AUDIT_TABLE}"
    _refused(app, f"ALTER TABLE {AUDIT_TABLE} DISABLE TRIGGER ALL", not_owner)
    _refused(app, f"ALTER TABLE {AUDIT_TABLE} DISABLE TRIGGER {AUDIT_TABLE}_no_update", not_owner)
    _refused(app, f"DROP TRIGGER {AUDIT_TABLE}_no_delete ON {AUDIT_TABLE}", f"must be owner of relation {AUDIT_TABLE}")
    _refused(app, "SET session_replication_role = replica", 'permission denied to set parameter')
    _refused(app, sql.SQL("SET ROLE {}").format(sql.Identifier(database_roles.owner)).as_string(app),
             f'permission denied to set role "{database_roles.owner}"')
    _refused(app, "CREATE TABLE clinpredict_db_roles_probe (id int)", "permission denied for schema public")

    from apps.audit.models import AuditEvent
    from apps.audit.selectors import audit_chain_verify

    assert AuditEvent.objects.get().action == "test.db_roles"
    assert audit_chain_verify().ok


def test_the_application_role_reads_and_writes_ordinary_tables(as_role: Callable[[str], Any],
                                                               database_roles: Any, db: None) -> None:
    app = as_role(database_roles.app)
    key = uuid.uuid4().hex
    with app.cursor() as cursor:
        cursor.execute("INSERT INTO django_session (session_key, session_data, expire_date) "
                       "VALUES (%s, 'probe', now() + interval '1 hour')", [key])
        assert cursor.rowcount == 1
        cursor.execute("UPDATE django_session SET session_data = 'changed' WHERE session_key = %s", [key])
        assert cursor.rowcount == 1
        cursor.execute("DELETE FROM django_session WHERE session_key = %s", [key])
        assert cursor.rowcount == 1
    app.rollback()
    _refused(app, "TRUNCATE django_session", "permission denied for table django_session")


def test_the_application_role_holds_exactly_its_grants(database_roles: Any, as_role: Callable[[str], Any]) -> None:
    from apps.core.db_roles import append_only_tables

    app = as_role(database_roles.app)
    with app.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, p FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, "
            "unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND has_table_privilege(c.oid, p)")
        rights: dict[str, set[str]] = {}
        for table, privilege in cursor.fetchall():
            rights.setdefault(table, set()).add(privilege)
        cursor.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')")
        tables = cursor.fetchone()[0]
        cursor.execute("SELECT rolsuper, rolinherit, rolcreaterole, rolcreatedb FROM pg_roles "
                       "WHERE rolname = current_user")
        attributes = cursor.fetchone()

    append_only = set(append_only_tables())
    assert {"audit_auditevent", "audit_auditchainverification", "audit_auditbackup",
            "registry_modelversionstatuschange"} <= append_only
    assert len(rights) == tables  # every table, each with exactly its set
    for table, granted in rights.items():
        expected = {"SELECT", "INSERT"} if table in append_only else {"SELECT", "INSERT", "UPDATE", "DELETE"}
        assert granted == expected, table
    assert attributes == (False, False, False, False)


def test_the_owner_grant_step_corrects_drift_and_covers_new_tables(database_roles: Any,
                                                                   as_role: Callable[[str], Any]) -> None:
    """After a migrate (as the owner): a new table is usable at once (default privileges); rights the append-only
    tables must not have are taken back by `grant_app_role`, run as the owner, not a superuser."""
    probe = f"clinpredict_probe_{uuid.uuid4().hex[:8]}"
    owner = as_role(database_roles.owner)
    owner.autocommit = True
    app = as_role(database_roles.app)
    with owner.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE TABLE {} (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text)")
                       .format(sql.Identifier(probe)))
        cursor.execute(sql.SQL("GRANT UPDATE, DELETE, TRUNCATE ON {} TO {}").format(
            sql.Identifier(AUDIT_TABLE), sql.Identifier(database_roles.app)))
    try:
        with app.cursor() as cursor:
            cursor.execute(sql.SQL("INSERT INTO {} (v) VALUES ('x') RETURNING id").format(sql.Identifier(probe)))
            assert cursor.fetchone()[0] == 1
            cursor.execute("SELECT has_table_privilege(%s, 'TRUNCATE')", [AUDIT_TABLE])
            assert cursor.fetchone()[0] is True  # the drift is real
        app.rollback()

        result = _manage("grant_app_role", "--app", database_roles.app, database_url=database_roles.owner_url)

        assert result.returncode == 0, result.stderr
        assert AUDIT_TABLE in result.stdout
        with app.cursor() as cursor:
            cursor.execute("SELECT has_table_privilege(%s, 'UPDATE') OR has_table_privilege(%s, 'DELETE') "
                           "OR has_table_privilege(%s, 'TRUNCATE')", [AUDIT_TABLE] * 3)
            assert cursor.fetchone()[0] is False
            cursor.execute("SELECT has_table_privilege(%s, 'UPDATE')", [probe])
            assert cursor.fetchone()[0] is True
        app.rollback()
    finally:
        with owner.cursor() as cursor:
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(probe)))


def test_the_grant_step_refuses_tables_migrated_as_another_role(database_roles: Any,
                                                                as_role: Callable[[str], Any]) -> None:
    """A table created by the superuser (migrate run with the wrong DATABASE_URL) is named, not silently skipped."""
    probe = f"clinpredict_stray_{uuid.uuid4().hex[:8]}"
    stray = _superuser(database_roles)
    stray.autocommit = True
    try:
        with stray.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(probe)))
        result = _manage("grant_app_role", "--app", database_roles.app, database_url=database_roles.owner_url)
    finally:
        with stray.cursor() as cursor:
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(probe)))
        stray.close()

    assert result.returncode != 0
    assert probe in result.stderr and "setup_database_roles" in result.stderr


def test_check_names_database_url_for_a_superuser_and_passes_the_application_role(
    database_roles: Any, as_role: Callable[[str], Any], db: None
) -> None:
    from django.db import connection

    from apps.core.db_roles import check_application_role

    superuser_message = check_application_role(connection)
    owner_message = check_application_role(as_role(database_roles.owner))

    assert superuser_message is not None
    assert superuser_message.startswith(f"DATABASE_URL connects as role '{connection.settings_dict['USER']}', "
                                        "which is a superuser")
    assert "setup_database_roles" in superuser_message
    assert owner_message is not None and owner_message.startswith(
        f"DATABASE_URL connects as role '{database_roles.owner}', which owns")
    assert check_application_role(as_role(database_roles.app)) is None


def test_start_refuses_the_superuser_with_one_message(database_roles: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from apps.core.db_roles import application_role_require

    superuser, app = _superuser(database_roles), database_roles.connect(database_roles.app)

    with pytest.raises(ImproperlyConfigured, match=r"^DATABASE_URL connects as role '[^']+', which is a superuser"):
        application_role_require(superuser)
    application_role_require(app)  # no error
    assert superuser.closed and app.closed


def test_check_deploy_fails_as_superuser_and_passes_as_the_application_role(database_roles: Any) -> None:
    from django.db import connection

    db = connection.settings_dict
    superuser_url = f"postgres://{db['USER']}@{database_roles.host}:{database_roles.port}/{database_roles.database}"

    as_superuser = _manage("check", "--deploy", "--fail-level", "WARNING", database_url=superuser_url,
                           settings="clinpredict.settings.production", **_production_env())
    as_app = _manage("check", "--deploy", "--fail-level", "WARNING", database_url=database_roles.app_url,
                     settings="clinpredict.settings.production", **_production_env())

    assert as_superuser.returncode != 0
    assert "clinpredict.E002" in as_superuser.stderr
    assert f"DATABASE_URL connects as role '{db['USER']}', which is a superuser" in as_superuser.stderr
    assert as_app.returncode == 0, as_app.stdout + as_app.stderr
    assert "no issues" in as_app.stdout


PREDICT_SCRIPT = """
import json
from django.db import connection
from django.test import Client
from apps.core.db_roles import check_application_role
response = Client(HTTP_AUTHORIZATION="Bearer {token}").post(
    "/api/v1/predictions", data={body!r}, content_type="application/json")
print(json.dumps({{"role_check": check_application_role(connection), "status": response.status_code,
                   "body": response.json()}}))
"""


@pytest.mark.slow
def test_predictions_work_as_the_application_role(app_role_database_url: str, champion: Any, oauth_app: Any,
                                                  valid_features: dict[str, Any], settings: Any,
                                                  tmp_path: Path, transactional_db: None) -> None:
    """The real stack (production settings, middleware, bearer authentication, prediction service, audit append in
    one SQL call) in a process connected as the application role."""
    from django.utils import timezone
    from oauth2_provider.models import AccessToken, set_token_value

    from apps.audit.models import AuditEvent
    from apps.audit.selectors import audit_chain_verify
    from apps.predictions.models import Prediction

    token = AccessToken(application=oauth_app, scope="predictions:write",
                        expires=timezone.now() + timedelta(hours=1))
    raw = f"db-roles-{uuid.uuid4().hex}"
    set_token_value(token, raw)
    token.save()
    events_before = AuditEvent.objects.count()
    body = json.dumps({"use_case": "diabetes", "features": valid_features})

    result = _manage("shell", "-c", PREDICT_SCRIPT.format(token=raw, body=body), database_url=app_role_database_url,
                     settings="clinpredict.settings.production",
                     **_production_env(SECURE_SSL_REDIRECT="false", MODEL_STORAGE_DIR=str(settings.MODEL_STORAGE_DIR),
                                       CLINPREDICT_VAR_DIR=str(tmp_path / "var")))

    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["role_check"] is None
    assert answer["status"] == 201, answer
    prediction = Prediction.objects.get()
    assert str(prediction.pk) == answer["body"]["id"]
    new_events = list(AuditEvent.objects.filter(seq__gt=events_before).values_list("action", "object_id"))
    assert new_events == [("prediction.create", str(prediction.pk))], new_events
    assert audit_chain_verify().ok


def test_scram_verifier_is_the_one_postgresql_stores(db: None) -> None:
    """Passwords reach the server only as this verifier (never in clear, so never in its statement log)."""
    from django.db import connection

    from apps.core.db_roles import scram_sha_256_verifier

    role = f"clinpredict_scram_probe_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:  # inside the test's transaction: rolled back with it
        cursor.execute("SET LOCAL password_encryption = 'scram-sha-256'")
        cursor.execute(sql.SQL("CREATE ROLE {} PASSWORD 'correct horse battery staple'").format(
            sql.Identifier(role)).as_string(cursor.cursor))
        cursor.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role])
        stored = cursor.fetchone()[0]
    salt = base64.b64decode(stored.split("$")[1].split(":")[1])

    assert scram_sha_256_verifier("correct horse battery staple", salt=salt) == stored
    assert scram_sha_256_verifier("correct horse battery stapl", salt=salt) != stored
