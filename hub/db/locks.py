"""Named Postgres advisory locks: one key scheme for every lock the Hub takes.

A name is hashed to the 64-bit key Postgres wants, so a lock is known by what it
guards ("pipeline.reap", "order.domain:acme.example") instead of a number someone
picked. Session locks (`single_flight`) keep a periodic job from running twice at
once; transaction locks (`xact_lock`, `try_xact_lock`) serialise decisions until the
surrounding transaction ends."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


def lock_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def _ask(sql: str, name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(sql, [lock_key(name)])
        row = cursor.fetchone()
    return bool(row and row[0])


@contextmanager
def single_flight(name: str) -> Iterator[bool]:
    """Yields True while this process holds `name` (released after), False when
    another run holds it: the caller then does nothing."""
    locked = _ask("SELECT pg_try_advisory_lock(%s)", name)
    try:
        yield locked
    finally:
        if locked:
            _ask("SELECT pg_advisory_unlock(%s)", name)


def xact_lock(name: str) -> None:
    """Wait for `name` and hold it until the current transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key(name)])


def try_xact_lock(name: str) -> bool:
    """Take `name` until the transaction ends, or False at once if someone holds it."""
    return _ask("SELECT pg_try_advisory_xact_lock(%s)", name)
