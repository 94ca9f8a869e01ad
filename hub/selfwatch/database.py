"""Database errors by class, counted in every process (web, workers, beat): an
execute wrapper on each connection sees every query that fails, including those the
code catches and handles (a retried step, a race settled by a unique constraint), so
`IntegrityError` also counts conflicts the code expects; `OperationalError` and
`InterfaceError` are the ones that say the database is in trouble."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper

from hub.selfwatch import store


def database_error_record(error: str) -> None:
    try:
        store.client().hincrby(store.DB_ERRORS_KEY, error, 1)
    except Exception as exc:  # noqa: BLE001 - counting must never replace the real error
        store.complain(f"a database error count ({error})", exc)


def count_database_errors(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
    try:
        return execute(sql, params, many, context)
    except DatabaseError as exc:
        database_error_record(type(exc).__name__)
        raise


def install_on(connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """The connection_created receiver. The wrappers list outlives reconnections of
    the same wrapper object, hence the membership test."""
    if count_database_errors not in connection.execute_wrappers:
        connection.execute_wrappers.append(count_database_errors)
