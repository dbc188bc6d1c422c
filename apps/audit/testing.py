"""Test support for the append-only ledger (imported by tests only, like django.test).

Two things a test suite needs that the application must never do:

* `audit_triggers_disabled()`: act as a database superuser/owner who deliberately switches the append-only triggers
  off (`ALTER TABLE ... DISABLE TRIGGER`; `SET session_replication_role = replica` does not work, the triggers are
  ENABLE ALWAYS), to prove that tampering is then caught by the chain verifier.
* `allow_test_flush()`: Django resets the database after each transactional test with one TRUNCATE of every table
  (SQLite: DELETE FROM each), which the triggers reject. The wrapper lets exactly that reset through, with the
  trigger switched off and back on around it, inside the flush's own transaction.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection as default_connection
from django.db.backends.base.base import BaseDatabaseWrapper

TABLE = "audit_auditevent"
TRIGGERS = (f"{TABLE}_no_update", f"{TABLE}_no_delete", f"{TABLE}_no_truncate")


def _sqlite_trigger_sql(raw_cursor: Any, names: tuple[str, ...]) -> list[tuple[str, str]]:
    placeholders = ", ".join("?" for _ in names)
    raw_cursor.execute(f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? "  # noqa: S608
                       f"AND name IN ({placeholders})", [TABLE, *names])
    return [(name, sql) for name, sql in raw_cursor.fetchall()]


def _disable(raw_cursor: Any, vendor: str, names: tuple[str, ...]) -> list[tuple[str, str]]:
    if vendor == "postgresql":
        for name in names:
            raw_cursor.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER {name}")
        return []
    saved = _sqlite_trigger_sql(raw_cursor, names)
    for name, _sql in saved:
        raw_cursor.execute(f"DROP TRIGGER {name}")
    return saved


def _enable(raw_cursor: Any, vendor: str, names: tuple[str, ...], saved: list[tuple[str, str]]) -> None:
    if vendor == "postgresql":
        for name in names:
            raw_cursor.execute(f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER {name}")
        return
    for _name, sql in saved:
        raw_cursor.execute(sql)


@contextmanager
def audit_triggers_disabled(connection: BaseDatabaseWrapper = default_connection) -> Iterator[None]:
    """Switch the append-only triggers off for the block, as a superuser could, and back on afterwards."""
    with connection.cursor() as cursor:
        saved = _disable(cursor.cursor, connection.vendor, TRIGGERS)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            _enable(cursor.cursor, connection.vendor, TRIGGERS, saved)


def _is_flush_of_audit_table(sql: str, vendor: str) -> bool:
    statement = sql.lstrip().upper()
    quoted = f'"{TABLE.upper()}"'
    if vendor == "postgresql":
        return statement.startswith("TRUNCATE") and quoted in statement
    return statement.startswith("DELETE FROM") and statement.rstrip("; ").endswith(quoted)


def _flush_wrapper(execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: dict[str, Any]) -> Any:
    connection = context["connection"]
    if not isinstance(sql, str) or not _is_flush_of_audit_table(sql, connection.vendor):
        return execute(sql, params, many, context)
    raw = context["cursor"].cursor
    names = (f"{TABLE}_no_truncate",) if connection.vendor == "postgresql" else (f"{TABLE}_no_delete",)
    saved = _disable(raw, connection.vendor, names)
    result = execute(sql, params, many, context)
    _enable(raw, connection.vendor, names, saved)
    return result


def allow_test_flush(connection: BaseDatabaseWrapper = default_connection) -> None:
    """Install the flush wrapper on this thread's connection (idempotent)."""
    if _flush_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(_flush_wrapper)
