"""Agent secrets: how API keys and registration tokens look, are made and are hashed.

A key is `hak_<prefix>_<secret>`: the prefix (12 hex characters) finds the credential
row, the secret is 32 random bytes. Only SHA-256 of the whole key is stored."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from hub.tokens import API_KEY_SCHEME, REGISTRATION_TOKEN_SCHEME

KEY_PREFIX_LENGTH = 12
SECRET_BYTES = 32
_API_KEY_RE = re.compile(r"^hak_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewApiKey:
    plaintext: str
    prefix: str
    digest: str


def secret_digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def api_key_generate() -> NewApiKey:
    prefix = secrets.token_hex(KEY_PREFIX_LENGTH // 2)
    plaintext = f"{API_KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return NewApiKey(plaintext=plaintext, prefix=prefix, digest=secret_digest(plaintext))


def api_key_prefix(value: str) -> str | None:
    """The lookup prefix of a well-formed key, None for anything else."""
    match = _API_KEY_RE.match(value)
    return match.group(1) if match else None


def registration_token_generate() -> str:
    return f"{REGISTRATION_TOKEN_SCHEME}_{secrets.token_urlsafe(SECRET_BYTES)}"


def digests_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
