"""CSV cells safe to open in a spreadsheet (OWASP CSV injection): formula starts get a leading single quote, plain
negative numbers stay numbers, and every cell reads back to its value."""

import csv
import io

import pytest
from django.db import connection

from apps.core.csv_safe import csv_cell_value, csv_safe, csv_safe_bytes, csv_safe_prefix_sql, csv_safe_row

FORMULAS = ["=1+1", '=HYPERLINK("http://evil.example","click")', "+1", "-1+1", "@SUM(A1)", "\t=1", "\r=1",
            "-", "-x", "--5", "-5e", "-5\n", "-1-1", "=cmd|' /C calc'!A0"]
NEGATIVE_NUMBERS = ["-5", "-0.25", "-.5", "-5.", "-1.5e-07", "-2E+10", "-12345678901234567890"]
PLAIN = ["", "p-1", "plain text", " =leading space", "5", "1e5", "é=", "a=b", "{\"x\":-1}", "null"]


@pytest.mark.parametrize("value", FORMULAS)
def test_a_formula_start_gets_a_leading_quote(value: str) -> None:
    assert csv_safe(value) == "'" + value
    assert csv_safe_bytes(value.encode()) == ("'" + value).encode()


@pytest.mark.parametrize("value", NEGATIVE_NUMBERS + PLAIN)
def test_negative_numbers_and_plain_text_are_left_alone(value: str) -> None:
    assert csv_safe(value) == value
    assert csv_safe_bytes(value.encode()) == value.encode()


def test_non_strings_are_left_alone() -> None:
    assert csv_safe_row([-3, 2.5, None, "=x"]) == [-3, 2.5, None, "'=x"]


@pytest.mark.parametrize("value", FORMULAS + NEGATIVE_NUMBERS + PLAIN + ["'", "'=x", "''", "'plain"])
def test_every_cell_reads_back_to_its_value_through_a_csv_file(value: str) -> None:
    out = io.StringIO()
    csv.writer(out).writerow(csv_safe_row(["a", value]))

    (row,) = csv.reader(io.StringIO(out.getvalue(), newline=""))

    assert csv_cell_value(row[1]) == value


@pytest.mark.django_db
def test_the_sql_form_decides_as_python_does() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the SQL form is PostgreSQL's")
    values = FORMULAS + NEGATIVE_NUMBERS + PLAIN + ["'", "'=x", "-٣", "-5 "]
    with connection.cursor() as cursor:
        sql = "SELECT v, " + csv_safe_prefix_sql("v") + " || v FROM unnest(%s::text[]) AS t(v)"  # noqa: S608 - built from constants only
        cursor.execute(sql, [values])
        results = dict(cursor.fetchall())

    assert results == {value: csv_safe(value) for value in values}
