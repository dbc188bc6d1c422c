from pathlib import Path
from typing import Any

import psycopg2
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

from apps.core.db_roles import DEFAULT_SCHEMA, DatabaseRoleError, database_roles_setup


def read_password(path: str | None) -> str | None:
    """The first line of a password file (a trailing newline is not part of the password); never echoed."""
    if path is None:
        return None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CommandError(f"cannot read the password file {path}: {exc.strerror}") from exc
    return lines[0] if lines else ""


class Command(BaseCommand):
    help = (
        "Create (or correct) the two PostgreSQL roles ClinPredict runs with: the owner, which owns the database and "
        "every table and runs migrations, and the application role, which may only read and write rows "
        "(append-only audit tables: read and insert). Run once, connected as a superuser (DATABASE_URL), before "
        "`migrate`; idempotent. See docs/security.md, \"Database roles\"."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--owner", required=True, help="owner role (runs migrations), e.g. clinpredict_owner")
        parser.add_argument("--app", required=True, help="application role (web, workers), e.g. clinpredict_app")
        parser.add_argument("--owner-password-file", help="file whose first line is the owner's password")
        parser.add_argument("--app-password-file", help="file whose first line is the application role's password")
        parser.add_argument("--schema", default=DEFAULT_SCHEMA)

    def handle(self, *args: Any, owner: str, app: str, owner_password_file: str | None,
               app_password_file: str | None, schema: str, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError(f"database roles exist only on PostgreSQL; DATABASE_URL is {connection.vendor}")
        owner_password, app_password = read_password(owner_password_file), read_password(app_password_file)
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                # The driver's own cursor: Django's wrapper would log the statements when DEBUG is on.
                report = database_roles_setup(cursor.cursor, owner=owner, app=app, owner_password=owner_password,
                                              app_password=app_password, schema=schema)
        except (DatabaseRoleError, psycopg2.Error) as exc:
            raise CommandError(str(exc).strip()) from exc
        database = connection.settings_dict["NAME"]
        self.stdout.write(f"roles created: {', '.join(report.created) or 'none (both existed)'}; "
                          f"passwords set: {', '.join(report.passwords_set) or 'none'}")
        self.stdout.write(f"{owner} now owns database {database} and {len(report.owner_changed)} more object(s)")
        self.stdout.write(self.style.SUCCESS(
            f"{app}: SELECT/INSERT/UPDATE/DELETE on the tables of schema {schema}, SELECT/INSERT only on "
            f"{', '.join(report.append_only_tables) or 'the append-only tables (none migrated yet)'}. Next: migrate "
            f"as {owner}, then `manage.py grant_app_role --app {app}` as {owner}."))
