"""The production database roles on pytest-django's test database (docs/security.md, "Database roles").

`database_roles` (session) runs `apps.core.db_roles.database_roles_setup` on the test database as the suite's
superuser, exactly as `manage.py setup_database_roles` does: an owner role that then owns every table, and an
application role with row rights only. `app_role_database_url` is the DATABASE_URL of the application role on the
test database, for tests that start the application (a subprocess, gunicorn) the way production runs it.

Roles are cluster-wide while grants are per database, so the role names carry the test database's name: two
suites on one server (other database names, or pytest-xdist workers) never share or alter each other's roles.
The session's end hands everything back to the superuser and drops the two roles (best effort: a leftover role
owns nothing and is reused by the next run). The suite's own connection stays the superuser, which may do anything,
so the rest of the suite (flushes, trigger switches in apps/audit/testing.py) is unaffected.

Loaded by path from tests/conftest.py (the site-packages `tests` package hides this directory from imports).
"""

import re
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class DatabaseRoles:
    owner: str
    app: str
    passwords: dict[str, str]
    host: str
    port: int
    database: str

    def url(self, role: str) -> str:
        return f"postgres://{role}:{self.passwords[role]}@{self.host}:{self.port}/{self.database}"

    @property
    def app_url(self) -> str:
        return self.url(self.app)

    @property
    def owner_url(self) -> str:
        return self.url(self.owner)

    def connect(self, role: str, **options: Any) -> Any:
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, dbname=self.database, user=role,
                                password=self.passwords.get(role) or None, **options)


def role_names(database: str) -> tuple[str, str]:
    suffix = re.sub(r"[^a-z0-9_]", "_", database.lower())
    return f"clinpredict_owner_{suffix}"[:63], f"clinpredict_app_{suffix}"[:63]


def _superuser_connect(settings_dict: dict[str, Any]) -> Any:
    import psycopg2

    return psycopg2.connect(host=settings_dict["HOST"] or "127.0.0.1", port=int(settings_dict["PORT"] or 5432),
                            dbname=settings_dict["NAME"], user=settings_dict["USER"],
                            password=settings_dict["PASSWORD"] or None)


def _drop_roles(settings_dict: dict[str, Any], roles: DatabaseRoles) -> None:
    from psycopg2 import sql

    connection = _superuser_connect(settings_dict)
    try:
        with connection, connection.cursor() as cursor:
            owner, app = sql.Identifier(roles.owner), sql.Identifier(roles.app)
            cursor.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(owner))
            # One role per statement: PostgreSQL 15 trips over the default ACL linking both ("could not find tuple").
            for role in (app, owner):
                cursor.execute(sql.SQL("DROP OWNED BY {}").format(role))
            cursor.execute(sql.SQL("DROP ROLE {}, {}").format(app, owner))
    finally:
        connection.close()


@pytest.fixture(scope="session")
def database_roles(django_db_setup: None) -> Iterator[DatabaseRoles]:
    """The owner and application roles on the test database (set up once per session)."""
    import psycopg2
    from django.db import connection

    from apps.core.db_roles import database_roles_setup

    if connection.vendor != "postgresql":
        pytest.skip("database roles need PostgreSQL (set DATABASE_URL)")
    settings_dict = dict(connection.settings_dict)  # after django_db_setup: NAME is the test database
    owner, app = role_names(settings_dict["NAME"])
    roles = DatabaseRoles(owner=owner, app=app, passwords={owner: secrets.token_urlsafe(24),
                                                           app: secrets.token_urlsafe(24)},
                          host=settings_dict["HOST"] or "127.0.0.1", port=int(settings_dict["PORT"] or 5432),
                          database=settings_dict["NAME"])
    superuser = _superuser_connect(settings_dict)
    try:
        with superuser, superuser.cursor() as cursor:  # one transaction, committed on success
            cursor.execute("SET LOCAL lock_timeout = '60s'")  # never hang behind a test's open transaction
            database_roles_setup(cursor, owner=owner, app=app, owner_password=roles.passwords[owner],
                                 app_password=roles.passwords[app])
    finally:
        superuser.close()
    yield roles
    try:
        _drop_roles(settings_dict, roles)
    except psycopg2.Error as exc:
        warnings.warn(f"could not drop the test roles {owner}, {app}: {exc}", stacklevel=1)


@pytest.fixture(scope="session")
def app_role_database_url(database_roles: DatabaseRoles) -> str:
    """DATABASE_URL of the application role on the test database: run the application the way production does."""
    return database_roles.app_url
