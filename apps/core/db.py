"""Fast multi-row INSERT for the hot write path (predictions and their audit events).

`QuerySet.bulk_create` compiles the INSERT through the ORM on every call; for the one or two rows of a prediction
request that compilation cost more than the database round trip itself (benchmarks/results/profile_request.json).
`insert_rows` sends the same statement Django would (`INSERT ... VALUES (...), (...) RETURNING pk`), with every
value prepared by the field's own `get_db_prep_save`, through Django's cursor, so execute wrappers, query counting
and the surrounding transaction all apply. It sends no signals, exactly like `bulk_create`.
"""

import datetime
import uuid
from collections.abc import Sequence
from functools import cache
from typing import Any

from django.db import connection, models

# On PostgreSQL, a value of these exact types is what `get_db_prep_save` would return unchanged (psycopg2 adapts
# it), so it is passed as is; any other value (and every value on other databases) goes through the field.
_PASSED_AS_IS: tuple[tuple[type[models.Field], tuple[type, ...]], ...] = (
    (models.BooleanField, (bool,)),
    (models.CharField, (str,)),
    (models.TextField, (str,)),
    (models.IntegerField, (int,)),  # includes BigIntegerField and the auto fields
    (models.FloatField, (float,)),
    (models.UUIDField, (uuid.UUID,)),
)


def _plan(field: models.Field) -> tuple[models.Field, tuple[type, ...], Any]:
    """(field, types passed as is, JSON encoder or False)."""
    if connection.vendor != "postgresql":
        return field, (), False
    if isinstance(field, models.JSONField):
        return field, (), field.encoder
    if isinstance(field, models.DateTimeField):
        return field, (), False  # aware datetimes only: checked in _prepare
    target = field.target_field if isinstance(field, models.ForeignKey) else field
    for kind, types in _PASSED_AS_IS:
        if isinstance(target, kind):
            return field, types, False
    return field, (), False


def _prepare(plan: tuple[models.Field, tuple[type, ...], Any], value: Any) -> Any:
    field, types, encoder = plan
    if value is None and encoder is not False:
        return None  # JSONField: None is SQL NULL, as in JSONField.get_db_prep_save
    if types and type(value) in types:
        return value
    if encoder is not False:
        return connection.ops.adapt_json_value(value, encoder)
    if connection.vendor == "postgresql" and type(value) is datetime.datetime and value.tzinfo is not None:
        return value
    return field.get_db_prep_save(value, connection)


@cache
def _statement(model: type[models.Model], with_pk: bool) -> tuple[tuple[Any, ...], str, str]:
    meta = model._meta
    fields = tuple(f for f in meta.concrete_fields if with_pk or f is not meta.pk)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    prefix = f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({columns}) VALUES "  # noqa: S608 - model names
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    return tuple(_plan(f) for f in fields), prefix, row


def insert_rows(objs: Sequence[models.Model]) -> list[models.Model]:
    """Insert unsaved instances of one model in one statement; auto primary keys are set from RETURNING."""
    if not objs:
        return list(objs)
    model = type(objs[0])
    pk = model._meta.pk
    auto_pk = isinstance(pk, models.AutoField | models.BigAutoField | models.SmallAutoField)
    plans, prefix, row = _statement(model, not auto_pk)
    # PostgreSQL takes any number of rows in one statement; SQLite caps the variables of one statement.
    size = max(1, connection.ops.bulk_batch_size([plan[0] for plan in plans], objs))
    with connection.cursor() as cursor:
        for start in range(0, len(objs), size):
            batch = objs[start:start + size]
            params: list[object] = []
            for obj in batch:
                params.extend(_prepare(plan, getattr(obj, plan[0].attname)) for plan in plans)
            sql = prefix + ", ".join([row] * len(batch))
            if auto_pk:
                cursor.execute(f"{sql} RETURNING {connection.ops.quote_name(pk.column)}", params)
                for obj, (value,) in zip(batch, cursor.fetchall(), strict=True):
                    setattr(obj, pk.attname, value)
            else:
                cursor.execute(sql, params)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = connection.alias
    return list(objs)
