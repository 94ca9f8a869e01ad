"""Rows sent to Postgres in bulk as one JSON text.

Django's psycopg connection binds parameters on the client, so a Python list passed as
an array parameter is quoted element by element in Python: three lists of 10,000
strings cost about 70 ms of CPU here. The same rows as one JSON text (`json_rows`) cost
under 1 ms, and Postgres takes them apart:

    cursor.execute(
        f"UPDATE t SET v = s.v FROM {JSON_ROWS.format(columns='(r->>0)::bigint AS id, r->>1 AS v')} AS s "
        "WHERE t.id = s.id",
        [json_rows((pk, value) for pk, value in pairs)],
    )
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple
from uuid import UUID

import orjson
from django.db import IntegrityError, connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import BigIntegerField, FloatField, Func, Model, TextField
from django.db.models.expressions import RawSQL
from psycopg import errors as pg_errors


class EpochSeconds(Func):
    """A timestamp as seconds since the epoch (a float). Read in bulk, a float costs
    next to nothing to load, where each timestamp is parsed in Python by Django's
    time-zone loader (about 4 us: 0.4 s for 100,000 rows)."""

    template = "EXTRACT(EPOCH FROM %(expressions)s)::float8"
    output_field = FloatField()

    def get_db_converters(self, connection: BaseDatabaseWrapper) -> list[Callable[..., Any]]:
        # The SQL casts to float8, which psycopg reads as a float: Django's float() of
        # every row would cost 60 ms a storm of 100,000.
        return self.output_field.get_db_converters(connection)


class BigIntegerSQL(RawSQL):
    """RawSQL whose SQL casts to bigint, read as an int without Django's int() of every
    row (60 ms a storm of 100,000)."""

    def __init__(self, sql: str, params: Sequence[object]) -> None:
        super().__init__(sql, params, output_field=BigIntegerField())

    def get_db_converters(self, connection: BaseDatabaseWrapper) -> list[Callable[..., Any]]:
        return self.output_field.get_db_converters(connection)


class UtcMinute(Func):
    """A timestamp as its UTC minute, "2026-12-05 13:04", formatted by Postgres: the
    same text as Python's f"{at:%Y-%m-%d %H:%M}" of the UTC datetime, at a tenth of
    the cost when an alert storm writes one in each of 100,000 messages."""

    template = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')"
    output_field = TextField()


# A derived table, one row per element of the JSON array bound at its %s; each element
# is a JSON array `r` whose items `columns` reads by position (r->>0 is the first, as text).
JSON_ROWS = "(SELECT {columns} FROM json_array_elements(%s::json) AS r)"


def json_rows(rows: Iterable[Sequence[object]]) -> str:
    """The rows as the JSON text JSON_ROWS reads, encoded by orjson: 100,000 rows of
    three strings in 2.6 ms, where the standard library took 55 ms (timeit). A float
    that is not finite becomes null, where `json.dumps` wrote a NaN Postgres refused."""
    return orjson.dumps(rows, default=_as_list).decode()


def array_text(values: Iterable[int | UUID]) -> str:
    """Ids (integers or UUIDs) as the text of a Postgres array, "{1,2,3}", to bind where
    a statement says `= ANY(%s::bigint[])` or `%s::uuid[]`: the cast makes it the same
    array constant as a bound list, so the plan is the same. A list is quoted element by
    element by the client: 100,000 integers took 130-150 ms more, 100,000 UUIDs 250-320
    ms more (bench/RESULTS.md, 2026-12-07 14:00). orjson writes the ids, and the JSON
    array's brackets become the array's braces (a UUID in double quotes is a valid array
    element). Only for ids: a string's JSON escapes are not an array's."""
    return "{" + orjson.dumps(values if isinstance(values, list) else list(values)).decode()[1:-1] + "}"


def _as_list(value: object) -> list[object]:
    """What orjson does not encode by itself and JSON has as an array: a generator of
    rows, a named tuple."""
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | dict):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def copy_model_rows(
    model: type[Model], *, columns: Sequence[str], rows: Iterable[Sequence[object]], ids: Sequence[int] | None = None
) -> None:
    """Write `rows` into `model`'s table with COPY (many times faster than bulk_create
    for a fleet of fixtures: no model instances, no per-value preparation). `columns`
    are attnames, each row holds their values ready for the database (a JSON value as
    psycopg's Jsonb); every other field gets its default, prepared once, and auto_now
    fields the current time; Postgres computes the generated ones. `ids`, when given,
    are the rows' primary keys (reserved with `ids_reserve`); otherwise the table's
    sequence numbers them."""
    from django.db import connection
    from django.utils import timezone

    now = timezone.now()
    pk = model._meta.pk
    fixed: dict[str, object] = {}
    for model_field in model._meta.concrete_fields:
        name = model_field.attname
        # Postgres computes a generated column itself (and refuses a value for it).
        if name in columns or model_field is pk or model_field.generated:
            continue
        if getattr(model_field, "auto_now", False) or getattr(model_field, "auto_now_add", False):
            value: object = now
        elif model_field.has_default():
            value = model_field.get_default()
        elif model_field.null:
            value = None
        else:
            raise ValueError(f"{model.__name__}.{name} has no default: give it a column")
        fixed[name] = model_field.get_db_prep_save(value, connection)
    column_of = {f.attname: f.column for f in model._meta.concrete_fields}
    names = ([pk.column] if ids is not None else []) + [column_of[c] for c in (*columns, *fixed)]
    tail = tuple(fixed.values())
    quoted = ", ".join(f'"{n}"' for n in names)
    statement = f'COPY "{model._meta.db_table}" ({quoted}) FROM STDIN'
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        if ids is None:
            for row in rows:
                copy.write_row((*row, *tail))
        else:
            for pk_value, row in zip(ids, rows, strict=True):
                copy.write_row((pk_value, *row, *tail))


def ids_reserve(model: type[Model], count: int) -> list[int]:
    """`count` fresh primary keys from `model`'s sequence, for rows written by COPY
    that other rows must point at."""
    from django.db import connection

    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [table, model._meta.pk.column, count],
        )
        return [row[0] for row in cursor.fetchall()]


class Inserted(NamedTuple):
    rows: list[tuple[Any, ...]]  # what the statement returns, if it has a RETURNING
    written: int  # how many rows it inserted (a RETURNING only to count them costs a tuplestore)


def insert_skipping_conflicts(sql: str, params: Sequence[Any], *, on_conflict: str) -> Inserted:
    """Run `sql`, a bulk INSERT with `{on_conflict}` where its ON CONFLICT clause goes,
    and return what it returns and how many rows it inserted. It is tried first without
    the clause, in a savepoint: a plain insert of 100,000 rows takes about two thirds of
    the time of one with ON CONFLICT, which has each row inserted speculatively and
    confirmed. Callers pick only rows that do not conflict yet, so the clause is a
    safety net; a row another transaction wrote meanwhile fails the whole statement,
    which is then run again with the clause (and skips it)."""
    try:
        with transaction.atomic():
            return _insert(sql.format(on_conflict=""), params)
    except IntegrityError as exc:
        if not isinstance(exc.__cause__, pg_errors.UniqueViolation):
            raise
    return _insert(sql.format(on_conflict=on_conflict), params)


def _insert(sql: str, params: Sequence[Any]) -> Inserted:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return Inserted(rows=cursor.fetchall() if cursor.description else [], written=cursor.rowcount)
