"""hub.db.bulksql.insert_skipping_conflicts: a bulk INSERT tried without its ON CONFLICT
clause, run again with it when a row conflicts."""

from __future__ import annotations

import uuid
from typing import NamedTuple

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from hub.db.bulksql import (
    JSON_ROWS,
    BigIntegerSQL,
    EpochSeconds,
    array_text,
    insert_skipping_conflicts,
    json_rows,
)
from hub.models import Alert

pytestmark = pytest.mark.django_db

INSERT = """
    INSERT INTO hub_alert (subject_type, subject_id, kind, severity, status, message, count,
                           first_seen_at, last_seen_at, acknowledged_by)
    SELECT 'tenant', s, 'disk_high', 'warning', 'OPEN', 'disk', %s, now(), now(), ''
      FROM unnest(%s::text[]) AS s
    {on_conflict}
    RETURNING subject_id
"""
ON_CONFLICT = "ON CONFLICT DO NOTHING"


def open_alert(subject: str, message: str) -> Alert:
    now = timezone.now()
    return Alert.objects.create(
        subject_type="tenant",
        subject_id=subject,
        kind="disk_high",
        severity="critical",
        status="OPEN",
        message=message,
        first_seen_at=now,
        last_seen_at=now,
    )


def test_rows_without_a_conflict_are_inserted_and_returned() -> None:
    rows, count = insert_skipping_conflicts(INSERT, [1, ["1", "2"]], on_conflict=ON_CONFLICT)
    assert sorted(rows) == [("1",), ("2",)] and count == 2
    assert Alert.objects.count() == 2


def test_a_conflicting_row_is_skipped_and_the_others_still_inserted() -> None:
    # given an open alert for subject 2
    existing = open_alert("2", "already open")

    # when three are inserted, subject 2 among them
    rows, count = insert_skipping_conflicts(INSERT, [1, ["1", "2", "3"]], on_conflict=ON_CONFLICT)

    # then the other two are inserted and counted, and the open one is left as it was
    assert sorted(rows) == [("1",), ("3",)] and count == 2
    assert Alert.objects.count() == 3
    existing.refresh_from_db()
    assert (existing.message, existing.severity) == ("already open", "critical")


def test_an_error_other_than_a_conflict_is_raised_and_inserts_nothing() -> None:
    # a negative count breaks the table's check constraint: no second try hides it
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_skipping_conflicts(INSERT, [-1, ["1"]], on_conflict=ON_CONFLICT)
    assert not Alert.objects.exists()


class Row(NamedTuple):
    subject: str
    score: float | None


def test_json_rows_reach_postgres_column_by_column_whatever_the_rows_are_made_of() -> None:
    # given rows as a generator of named tuples, with quotes, newlines, non-ASCII text,
    # a missing value and a number that is not finite (JSON has no NaN: Postgres would
    # refuse the whole text)
    rows = [Row('say "hi"\nthere', 1.5), Row("Zürich ✓", None), Row("nan", float("nan"))]

    # when Postgres takes them apart as JSON_ROWS does
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT * FROM {JSON_ROWS.format(columns='r->>0 AS subject, (r->>1)::float8 AS score')} AS s",
            [json_rows(row for row in rows)],
        )
        read = cursor.fetchall()

    # then every value arrives in its column, and the one JSON cannot hold as null
    assert read == [('say "hi"\nthere', 1.5), ("Zürich ✓", None), ("nan", None)]
    # and what JSON has no form for is refused before any query
    with pytest.raises(TypeError):
        json_rows([[object()]])


def test_epoch_seconds_and_bigint_sql_read_as_float_and_int_from_postgres_itself() -> None:
    # given an alert with a first-seen time, and one timestamp missing
    alert = open_alert("typed", "message")
    now = timezone.now()

    # when they are read through the expressions that skip Django's per-row converters
    row = (
        Alert.objects.filter(pk=alert.pk)
        .annotate(
            seen=EpochSeconds("first_seen_at"),
            never=EpochSeconds("resolved_at"),
            ago=BigIntegerSQL("FLOOR(EXTRACT(EPOCH FROM (%s - first_seen_at)))::bigint", [now]),
        )
        .values_list("seen", "never", "ago")
        .get()
    )

    # then Postgres's casts alone make them a float and an int (EXTRACT alone would
    # give a Decimal), and a missing time stays None
    seen, never, ago = row
    assert type(seen) is float and seen == pytest.approx(alert.first_seen_at.timestamp(), abs=1e-6)
    assert never is None
    assert type(ago) is int and ago == int((now - alert.first_seen_at).total_seconds())


@pytest.mark.parametrize(
    ("values", "cast"),
    [
        ([3, 1, 2**62, 0, -7], "bigint[]"),
        ([uuid.UUID(int=0), uuid.uuid4(), uuid.uuid4()], "uuid[]"),
        ([], "bigint[]"),
        ([], "uuid[]"),
    ],
)
def test_array_text_is_the_same_array_as_the_list_bound_element_by_element(
    values: list[int] | list[uuid.UUID], cast: str
) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT %s::{cast} = %s::{cast}, %s::{cast}", [array_text(values), values, array_text(values)])
        same, read_back = cursor.fetchone()
    assert same is True
    assert read_back == values


def test_array_text_takes_the_ids_of_a_generator_and_selects_by_them() -> None:
    ids = [open_alert(f"s{i}", "m").pk for i in range(3)]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT subject_id FROM hub_alert WHERE id = ANY(%s::bigint[]) ORDER BY id",
            [array_text(i for i in ids[1:])],
        )
        assert [row[0] for row in cursor.fetchall()] == ["s1", "s2"]
