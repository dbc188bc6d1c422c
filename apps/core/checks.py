"""Deployment checks (`manage.py check --deploy`), registered in CoreConfig.ready()."""

from typing import Any

from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DatabaseError, connection

from .db_roles import check_application_role


@register(Tags.security, deploy=True)
def database_role_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """clinpredict.E001 when DATABASE_URL connects as more than the application role (superuser, table owner,
    DDL or TRUNCATE rights); a warning, not a crash, when the database cannot be reached. SQLite: nothing to check."""
    if connection.vendor != "postgresql":
        return []
    try:
        message = check_application_role(connection)
    except DatabaseError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [Warning(f"could not check the database role DATABASE_URL connects as: {reason}",
                        id="clinpredict.W001")]
    if message is None:
        return []
    return [Error(message, hint="Create the roles with `manage.py setup_database_roles` (as a superuser) and set "
                                "DATABASE_URL to the application role; see docs/security.md.",
                  id="clinpredict.E001")]
