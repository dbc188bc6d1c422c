"""Least privilege in PostgreSQL: an owner role that runs migrations and an application role that only reads and
writes rows (docs/security.md, "Database roles").

* `database_roles_setup()` (run once, connected as a superuser; `manage.py setup_database_roles`): creates or
  corrects both roles, gives the owner the database, the schema and every table, sequence and function in it, then
  applies the grants below.
* `app_role_grant()` (run as the owner after every `migrate`; `manage.py grant_app_role`): the application role gets
  USAGE on the schema; SELECT, INSERT, UPDATE, DELETE on every table, except the append-only ones (models marked
  `append_only = True`, e.g. `apps.audit.models.AuditEvent`), which get SELECT and INSERT only; USAGE and SELECT on
  sequences. Nothing else: no ownership, no TRUNCATE, REFERENCES or TRIGGER, no CREATE on the schema or database.
  Default privileges make tables a later migration creates usable at once; re-running the step takes UPDATE and
  DELETE back from a new append-only table.
* `check_application_role()`: one message when the connected role is more than that (a superuser, a table owner,
  DDL or TRUNCATE rights), for `manage.py check --deploy` (`apps/core/checks.py`); `application_role_require()`
  raises it as ImproperlyConfigured, for a production process's start.

Every statement is built with psycopg2.sql (identifiers quoted by the driver). A password never reaches the server
in clear: it is sent as a SCRAM-SHA-256 verifier computed here, so it cannot appear in the server's statement log.
The functions take a DB-API cursor (a raw psycopg2 cursor), not Django's wrapper, which logs SQL when DEBUG is on.
"""

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.core.exceptions import ImproperlyConfigured
from psycopg2 import errors, sql

DEFAULT_SCHEMA = "public"
APP_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
APPEND_ONLY_TABLE_PRIVILEGES = ("SELECT", "INSERT")
APP_SEQUENCE_PRIVILEGES = ("USAGE", "SELECT")
# What the application role must not hold on an append-only table (each one alters or removes recorded rows).
APPEND_ONLY_FORBIDDEN = ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER")
SETUP_COMMAND = "manage.py setup_database_roles"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
# pg_class.relkind -> the ALTER statement that changes its owner (indexes and TOAST tables follow their table).
_ALTER_BY_KIND = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW",
                  "S": "SEQUENCE"}


class DatabaseRoleError(Exception):
    """The roles cannot be set up or granted as asked; the message says why and what to run instead."""


class Cursor(Protocol):
    def execute(self, query: Any, vars: Any = ..., /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


@dataclass
class RolesReport:
    created: list[str] = field(default_factory=list)
    passwords_set: list[str] = field(default_factory=list)
    owner_changed: list[str] = field(default_factory=list)
    append_only_tables: list[str] = field(default_factory=list)


def append_only_tables() -> list[str]:
    """Tables of the installed models marked `append_only = True`: the application may only read and add rows."""
    from django.apps import apps

    return sorted(model._meta.db_table for model in apps.get_models() if getattr(model, "append_only", False))


def scram_sha_256_verifier(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (as libpq's PQencryptPasswordConn computes it)."""
    if not password or not password.isascii() or not password.isprintable():
        raise DatabaseRoleError("database passwords must be non-empty printable ASCII (PostgreSQL normalises "
                                "other characters with SASLprep, which is not reproduced here)")
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _check_name(name: str, what: str = "role") -> str:
    if not _NAME.match(name):
        raise DatabaseRoleError(f"{what} name {name!r}: use lower-case letters, digits and _ (at most 63)")
    return name


def _one(cursor: Cursor, query: Any, params: Sequence[Any] = ()) -> Any:
    cursor.execute(query, params)
    row = cursor.fetchone()
    return None if row is None else row[0]


def _privileges(names: Iterable[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL(name) for name in names)


def _ensure_role(cursor: Cursor, name: str, *, inherit: bool, password: str | None, report: RolesReport) -> None:
    role = sql.Identifier(name)
    row = _one(cursor, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", [name])
    if row is True:
        raise DatabaseRoleError(f"role {name!r} is a superuser; choose a new name for the {SETUP_COMMAND} roles")
    if row is None:
        cursor.execute("SAVEPOINT clinpredict_create_role")
        try:
            cursor.execute(sql.SQL("CREATE ROLE {}").format(role))
            report.created.append(name)
        except errors.DuplicateObject:  # created meanwhile by a concurrent run: fine, corrected below
            cursor.execute("ROLLBACK TO SAVEPOINT clinpredict_create_role")
        cursor.execute("RELEASE SAVEPOINT clinpredict_create_role")
    attributes = f"{_ROLE_ATTRIBUTES} {'INHERIT' if inherit else 'NOINHERIT'}"
    cursor.execute(sql.SQL("ALTER ROLE {} WITH " + attributes).format(role))
    if password is not None:
        verifier = sql.Literal(scram_sha_256_verifier(password))
        cursor.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(role, verifier))
        report.passwords_set.append(name)


def _revoke_memberships(cursor: Cursor, app: str) -> None:
    """The application role belongs to no other role: it could otherwise SET ROLE to one (e.g. the owner)."""
    cursor.execute("SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                   "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s", [app])
    for (group,) in cursor.fetchall():
        cursor.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), sql.Identifier(app)))


def _give_ownership(cursor: Cursor, owner: str, schema: str, report: RolesReport) -> None:
    database = _one(cursor, "SELECT current_database()")
    owner_id = sql.Identifier(owner)
    cursor.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database), owner_id))
    cursor.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(schema), owner_id))
    # Tables first: their identity/serial sequences, indexes and row types follow them.
    for kinds in (("r", "p", "f", "v", "m"), ("S",)):
        cursor.execute(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = ANY(%s) AND c.relowner <> %s::regrole "
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
            "AND d.objid = c.oid AND d.deptype = 'e') ORDER BY c.relname",
            [schema, list(kinds), owner])
        for name, kind in cursor.fetchall():
            cursor.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(
                sql.SQL(_ALTER_BY_KIND[kind]), sql.Identifier(schema, name), owner_id))
            report.owner_changed.append(name)
    cursor.execute(
        "SELECT p.oid::regprocedure::text, p.prokind FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND p.proowner <> %s::regrole AND NOT EXISTS (SELECT 1 FROM pg_depend d "
        "WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') ORDER BY 1",
        [schema, owner])
    for signature, kind in cursor.fetchall():
        # The signature is PostgreSQL's own regprocedure text: already quoted and schema-qualified as needed.
        what = {"p": "PROCEDURE", "a": "AGGREGATE"}.get(kind, "FUNCTION")
        cursor.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(what), sql.SQL(signature), owner_id))
        report.owner_changed.append(signature)


def _not_owned_by(cursor: Cursor, owner: str, schema: str) -> list[str]:
    cursor.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') AND c.relowner <> %s::regrole "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
        "AND d.deptype = 'e') ORDER BY 1", [schema, owner])
    return [name for (name,) in cursor.fetchall()]


def app_role_grant(cursor: Cursor, *, app: str, owner: str | None = None, schema: str = DEFAULT_SCHEMA) -> list[str]:
    """Give `app` exactly the rights the application needs on `schema` (see the module docstring); idempotent.
    Connected as the owner (after every migrate) or a superuser. Returns the append-only tables it restricted."""
    _check_name(app)
    _check_name(schema, "schema")
    owner = _check_name(owner) if owner else _one(cursor, "SELECT current_user")
    if owner == app:
        raise DatabaseRoleError("the owner and the application role must be two different roles")
    if _one(cursor, "SELECT 1 FROM pg_roles WHERE rolname = %s", [app]) is None:
        raise DatabaseRoleError(f"role {app!r} does not exist; create it with {SETUP_COMMAND} (as a superuser)")
    stray = _not_owned_by(cursor, owner, schema)
    if stray:
        raise DatabaseRoleError(
            f"{len(stray)} table(s) in schema {schema!r} are not owned by {owner!r} (e.g. {', '.join(stray[:5])}): "
            f"were migrations run as another role? Run {SETUP_COMMAND} again as a superuser, then migrate as "
            f"{owner!r} only")
    app_id, schema_id, owner_id = sql.Identifier(app), sql.Identifier(schema), sql.Identifier(owner)
    everyone = sql.SQL("PUBLIC")
    statements = [
        sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(schema_id, everyone),
        sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(schema_id, app_id),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema_id, app_id),
        sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(schema_id, app_id),
        sql.SQL("GRANT {} ON ALL TABLES IN SCHEMA {} TO {}").format(_privileges(APP_TABLE_PRIVILEGES), schema_id,
                                                                    app_id),
        sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(schema_id, app_id),
        sql.SQL("GRANT {} ON ALL SEQUENCES IN SCHEMA {} TO {}").format(_privileges(APP_SEQUENCE_PRIVILEGES),
                                                                       schema_id, app_id),
        # Tables and sequences that later migrations create (as the owner) are usable at once.
        sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} REVOKE ALL ON TABLES FROM {}").format(
            owner_id, schema_id, app_id),
        sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT {} ON TABLES TO {}").format(
            owner_id, schema_id, _privileges(APP_TABLE_PRIVILEGES), app_id),
        sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} REVOKE ALL ON SEQUENCES FROM {}").format(
            owner_id, schema_id, app_id),
        sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT {} ON SEQUENCES TO {}").format(
            owner_id, schema_id, _privileges(APP_SEQUENCE_PRIVILEGES), app_id),
    ]
    for statement in statements:
        cursor.execute(statement)
    restricted = []
    for table in append_only_tables():
        if _one(cursor, "SELECT to_regclass(%s)", [f'"{schema}"."{table}"']) is None:
            continue  # not migrated yet: the next grant step after migrate restricts it
        table_id = sql.Identifier(schema, table)
        cursor.execute(sql.SQL("REVOKE ALL ON {} FROM {}, {}").format(table_id, app_id, everyone))
        cursor.execute(sql.SQL("GRANT {} ON {} TO {}").format(_privileges(APPEND_ONLY_TABLE_PRIVILEGES), table_id,
                                                             app_id))
        restricted.append(table)
    return restricted


def database_roles_setup(cursor: Cursor, *, owner: str, app: str, owner_password: str | None = None,
                         app_password: str | None = None, schema: str = DEFAULT_SCHEMA) -> RolesReport:
    """Create or correct the owner and application roles and hand the current database to the owner, then grant
    the application role its rights. Idempotent; connected as a superuser; run it inside one transaction."""
    _check_name(owner)
    _check_name(app)
    _check_name(schema, "schema")
    if owner == app:
        raise DatabaseRoleError("the owner and the application role must be two different roles")
    current = _one(cursor, "SELECT current_user")
    if not _one(cursor, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        raise DatabaseRoleError(f"{SETUP_COMMAND} must run as a superuser; DATABASE_URL connects as {current!r}")
    if current in (owner, app):
        raise DatabaseRoleError(f"{current!r} is the role this command is connected as; choose new role names")
    report = RolesReport()
    _ensure_role(cursor, owner, inherit=True, password=owner_password, report=report)
    _ensure_role(cursor, app, inherit=False, password=app_password, report=report)
    _revoke_memberships(cursor, app)
    _give_ownership(cursor, owner, schema, report)
    database = sql.Identifier(_one(cursor, "SELECT current_database()"))
    cursor.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM {}, PUBLIC").format(database, sql.Identifier(app)))
    cursor.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, sql.Identifier(app)))
    report.append_only_tables = app_role_grant(cursor, app=app, owner=owner, schema=schema)
    return report


def _fetch_all(connection: Any, query: str, params: Sequence[Any] = ()) -> list[Any]:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return list(cursor.fetchall())


def check_application_role(connection: Any) -> str | None:
    """None when the connected role is a plain application role; otherwise one message naming DATABASE_URL and
    everything the role may do that the application must not (superuser, owning or able to become the owner of a
    table, CREATE on the schema or database, UPDATE/DELETE/TRUNCATE/TRIGGER on an append-only table).
    `connection`: Django's (non-PostgreSQL vendors return None) or a psycopg2 connection."""
    if getattr(connection, "vendor", "postgresql") != "postgresql":
        return None
    [(role, superuser, createrole)] = _fetch_all(
        connection, "SELECT rolname, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
    if superuser:
        problems = ["is a superuser"]
    else:
        problems = []
        if createrole:
            problems.append("has CREATEROLE (it could grant itself the owner's role)")
        owned = [name for (name,) in _fetch_all(
            connection,
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = "
            "(SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema()) "
            "AND c.relkind IN ('r', 'p', 'f', 'v', 'm') AND pg_has_role(current_user, c.relowner, 'MEMBER') "
            "ORDER BY 1")]
        if owned:
            problems.append(f"owns (or may act as the owner of) {len(owned)} table(s), e.g. {', '.join(owned[:3])}")
        [(schema_create, database_create)] = _fetch_all(
            connection, "SELECT has_schema_privilege(current_schema(), 'CREATE'), "
                        "has_database_privilege(current_database(), 'CREATE')")
        if schema_create or database_create:
            problems.append("may create objects (CREATE on the " + (
                "schema and the database" if schema_create and database_create
                else "schema" if schema_create else "database") + ")")
        tables_by_rights: dict[str, list[str]] = {}
        for table in append_only_tables():
            rows = _fetch_all(
                connection,
                "SELECT p FROM unnest(%s::text[]) AS p WHERE to_regclass(quote_ident(current_schema()) || '.' || "
                "quote_ident(%s)) IS NOT NULL AND has_table_privilege(quote_ident(current_schema()) || '.' || "
                "quote_ident(%s), p)", [list(APPEND_ONLY_FORBIDDEN), table, table])
            if rows:
                tables_by_rights.setdefault("/".join(p for (p,) in rows), []).append(table)
        if not owned:  # an owner may do all of it anyway
            problems.extend(f"has {rights} on the append-only table(s) {', '.join(tables)}"
                            for rights, tables in tables_by_rights.items())
    if not problems:
        return None
    return (f"DATABASE_URL connects as role '{role}', which {'; '.join(problems)}. The application must connect as "
            f"the application role created by `{SETUP_COMMAND}` (see docs/security.md, \"Database roles\"); "
            "only migrations run as the owner role.")


def application_role_require(connection: Any) -> None:
    """For a production process's start: raise ImproperlyConfigured with `check_application_role`'s message. The
    connection is closed afterwards, so nothing opened here is inherited by forked workers (gunicorn --preload,
    Celery's prefork pool). A database that cannot be reached raises its own error (OperationalError)."""
    try:
        message = check_application_role(connection)
    finally:
        connection.close()
    if message is not None:
        raise ImproperlyConfigured(message)
