"""CSV cells that are safe to open in a spreadsheet (CSV or formula injection, OWASP "CSV Injection").

A spreadsheet reads a cell that starts with `=`, `+`, `-` or `@` as a formula (and tab or carriage return can
hide such a start), so a value a client or patient record supplied, e.g. a patient id `=HYPERLINK(...)`, would run
when an auditor opens the export. OWASP's remedy: start such a cell with a single quote, which makes the
spreadsheet show the text as text.

Two choices, both deliberate:

- A cell that is exactly a negative decimal number (`-5`, `-0.25`, `-1.5e-07`) is left as it is: a spreadsheet
  reads it as that number and nothing else, and numeric columns (values, JSON numbers) keep their meaning.
- A cell that already starts with a single quote gets one more. Then every exported cell reads back exactly by
  dropping one leading quote when there is one (`csv_cell_value`), so the audit chain can still be re-checked from a
  CSV export, whatever the values held.

JSONL and FHIR exports, the stored events and their hashes are never changed: this applies to CSV cells only.
apps/audit/exports.py writes the same rule in SQL for its PostgreSQL path (`csv_safe_prefix_sql`).
"""

import re
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Cells starting with one of these get a leading quote: the formula starts, and the quote itself (reversibility).
_PREFIXED = frozenset((*FORMULA_STARTS, "'"))
_NEGATIVE_NUMBER = re.compile(r"-(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
# The same pattern for PostgreSQL (advanced regular expressions; anchored, `$` only at the very end).
_NEGATIVE_NUMBER_SQL = r"^-([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"


def csv_safe(value: Any) -> Any:
    """`value` as a CSV cell a spreadsheet will not run; anything but a string is returned unchanged."""
    if isinstance(value, str) and value[:1] in _PREFIXED and not _NEGATIVE_NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_safe_bytes(value: bytes) -> bytes:
    """`csv_safe` for an UTF-8 encoded cell."""
    if value[:1].decode("latin-1") in _PREFIXED and not _NEGATIVE_NUMBER.fullmatch(value.decode("utf-8")):
        return b"'" + value
    return value


def csv_safe_row(row: list[Any]) -> list[Any]:
    return [csv_safe(value) for value in row]


def csv_cell_value(cell: str) -> str:
    """The value a `csv_safe` cell was written from."""
    return cell[1:] if cell.startswith("'") else cell


_SQL_CHARS = {"\t": "E'\\t'", "\r": "E'\\r'", "'": "''''"}


def csv_safe_prefix_sql(column: str) -> str:
    """SQL for the quote `csv_safe` puts before a text expression ('' when none; PostgreSQL, standard_conforming_strings
    on). The quote never changes whether the CSV cell needs double quotes, so callers add it inside them."""
    starts = ", ".join(_SQL_CHARS.get(c, f"'{c}'") for c in sorted(_PREFIXED))
    return (f"(CASE WHEN left({column}, 1) IN ({starts}) AND {column} !~ '{_NEGATIVE_NUMBER_SQL}' "
            "THEN '''' ELSE '' END)")
