"""Single-flight for the checks: a session-level Postgres advisory lock per check, so
two beats (or a slow run overlapping the next) never run the same check at once."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

# The first half of every monitoring lock key ("MON"); the second is the check's name.
LOCK_NAMESPACE = 0x4D4F4E


def lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFF_FFFF


@contextmanager
def single_flight(name: str) -> Iterator[bool]:
    """Yields True when this process holds the check's lock (and releases it after),
    False when another run holds it: the caller then does nothing."""
    key = lock_key(name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, key])
        (locked,) = cursor.fetchone()
    try:
        yield bool(locked)
    finally:
        if locked:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, key])


def transaction_lock(name: str) -> None:
    """Wait for the named lock until the current transaction ends (decisions that must
    be serialised even when single-flight is bypassed, e.g. by staff)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, lock_key(name)])
