"""Secrets at rest (server root keys, provider tokens, agent bootstrap material) are
stored encrypted with Fernet under a rotatable key set (FIELD_ENCRYPTION_KEY)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

PREFIX = "fernet:"


@lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return PREFIX + _current().encrypt(plaintext.encode()).decode()


def decrypt(stored: str) -> str:
    if not stored.startswith(PREFIX):
        raise ValueError("not an encrypted value")
    try:
        return _current().decrypt(stored[len(PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        raise ValueError("cannot decrypt: no configured key matches") from exc


def rotate(stored: str) -> str:
    """Re-encrypt under the newest key (after a new key was put first)."""
    return PREFIX + _current().rotate(stored[len(PREFIX) :].encode()).decode()


class EncryptedTextField(models.TextField):
    """A text column whose database value is always ciphertext."""

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value in (None, ""):
            return value
        return encrypt(str(value))

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value in (None, ""):
            return value
        return decrypt(value)

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith(PREFIX):
            return decrypt(value)
        return value


def encrypted_fields() -> list[tuple[type[models.Model], EncryptedTextField]]:
    from django.apps import apps

    return [
        (model, field)
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if isinstance(field, EncryptedTextField)
    ]


def encrypted_values_rotate(*, batch_size: int = 500) -> dict[str, int]:
    """Re-encrypt every stored value of every EncryptedTextField under the newest key,
    in batches by primary key; a row changed meanwhile is left as it was written (it
    was written under the newest key anyway). Idempotent: run it again at will.
    Returns the number of values re-encrypted per model field."""
    from django.db import connection, transaction

    rotated: dict[str, int] = {}
    for model, field in encrypted_fields():
        quote = connection.ops.quote_name
        assert model._meta.pk is not None and field.column is not None and model._meta.pk.column is not None
        table, column, pk = quote(model._meta.db_table), quote(field.column), quote(model._meta.pk.column)
        label = f"{model._meta.label}.{field.name}"
        rotated[label] = 0
        last = None
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                where = "" if last is None else f"AND {pk} > %s"
                cursor.execute(
                    f"SELECT {pk}, {column} FROM {table} WHERE {column} LIKE %s {where} ORDER BY {pk} LIMIT %s",  # noqa: S608 - names from model metadata
                    [PREFIX + "%", *([] if last is None else [last]), batch_size],
                )
                rows = cursor.fetchall()
                for row_pk, stored in rows:
                    fresh = rotate(stored)
                    cursor.execute(
                        f"UPDATE {table} SET {column} = %s WHERE {pk} = %s AND {column} = %s",  # noqa: S608
                        [fresh, row_pk, stored],
                    )
                    rotated[label] += cursor.rowcount
            if len(rows) < batch_size:
                break
            last = rows[-1][0]
    return rotated
