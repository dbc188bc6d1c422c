from typing import Any

import psycopg2
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

from apps.core.db_roles import DEFAULT_SCHEMA, DatabaseRoleError, app_role_grant


class Command(BaseCommand):
    help = (
        "Give the application role exactly its rights on every table (append-only audit tables: SELECT and INSERT "
        "only). Run after every `migrate`, connected as the owner role (DATABASE_URL); idempotent. "
        "See docs/security.md, \"Database roles\"."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--app", required=True, help="the application role, e.g. clinpredict_app")
        parser.add_argument("--owner", help="the owner role (default: the role DATABASE_URL connects as)")
        parser.add_argument("--schema", default=DEFAULT_SCHEMA)

    def handle(self, *args: Any, app: str, owner: str | None, schema: str, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError(f"database roles exist only on PostgreSQL; DATABASE_URL is {connection.vendor}")
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                restricted = app_role_grant(cursor.cursor, app=app, owner=owner, schema=schema)
        except (DatabaseRoleError, psycopg2.Error) as exc:
            raise CommandError(str(exc).strip()) from exc
        self.stdout.write(self.style.SUCCESS(
            f"{app}: SELECT/INSERT/UPDATE/DELETE on the tables of schema {schema}; SELECT/INSERT only on "
            f"{', '.join(restricted) or 'no append-only table (none migrated yet)'}"))
