"""Filter values from a query string that Postgres cannot take.

Postgres stores no NUL character, and psycopg refuses to send one in a parameter, so a
list filtered by `?domain=%00` used to fail with a server error. No stored row can
match such a value: the list is empty."""

from __future__ import annotations


def matches_no_row(*values: object) -> bool:
    """Whether any of these filter values holds a NUL character."""
    return any(isinstance(value, str) and "\x00" in value for value in values)
