"""Log records as one JSON object per line, and the filter that keeps secrets out of
every log line whatever its format.

A JSON line carries `time` (UTC, ISO 8601), `level`, `logger`, `message`, the bound
context ids (hub.logcontext: order_id, job_id, step_id, tenant_id, server_id,
rollout_id) when present, any `extra` fields, and `exception` with the traceback.

The redaction filter runs before either formatter (settings.LOGGING wires it to the
console handler): it replaces the values of secret-looking keys in `extra`, and in
the message and traceback any agent API key, registration token, Stripe key, bearer
or basic credential, password in a URL, and `password=...`-style pair."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from hub.logcontext import CONTEXT_KEYS
from hub.tokens import API_KEY_SCHEME, REGISTRATION_TOKEN_SCHEME

REDACTED = "[REDACTED]"

# The attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRS = frozenset(logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

# Key names whose values are secrets, matched on the key's words ("stripe_secret_key",
# "X-Api-Key", "registration_token"), so "tokens_used" or "token_count" stay readable.
_SECRET_KEY_WORDS = frozenset({"password", "passwd", "pwd", "secret", "token", "authorization", "cookie", "apikey"})
_SECRET_KEY_PAIRS = ("api_key", "private_key", "access_key", "secret_key", "encryption_key", "session_key")

_SENSITIVE_NAME = (
    r"[A-Za-z0-9_-]*?(?:password|passwd|pwd|secret|token|authorization|cookie|api[_-]?key|apikey"
    r"|private[_-]?key|access[_-]?key|secret[_-]?key|encryption[_-]?key)"
)
# Each pattern with the substrings one of which any match must contain (looked for in
# the lower-cased text when the pattern ignores case): most log lines contain none, and
# an `in` test is far cheaper than running the pattern.
_TEXT_PATTERNS: tuple[tuple[re.Pattern[str], str, tuple[str, ...]], ...] = (
    # Agent API keys keep their lookup prefix (it is no secret and finds the credential).
    (
        re.compile(rf"\b({API_KEY_SCHEME}_[0-9a-f]{{12}}_)[A-Za-z0-9_-]+"),
        rf"\g<1>{REDACTED}",
        (f"{API_KEY_SCHEME}_",),
    ),
    (
        re.compile(rf"\b{REGISTRATION_TOKEN_SCHEME}_[A-Za-z0-9_-]{{8,}}"),
        f"{REGISTRATION_TOKEN_SCHEME}_{REDACTED}",
        (f"{REGISTRATION_TOKEN_SCHEME}_",),
    ),
    (
        re.compile(r"\b((?:sk|rk)_(?:live|test)_|whsec_)[A-Za-z0-9_]+"),
        rf"\g<1>{REDACTED}",
        ("_live_", "_test_", "whsec_"),
    ),
    # HTTP credentials: long enough not to eat the next word of a sentence.
    (re.compile(r"\b([Bb]earer|Token)\s+[A-Za-z0-9._~+/=:-]{16,}"), rf"\g<1> {REDACTED}", ("earer", "Token")),
    (re.compile(r"\b(Basic)\s+[A-Za-z0-9+/=]{8,}"), rf"\g<1> {REDACTED}", ("Basic",)),
    # scheme://user:password@host
    (re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/\s@]*:)[^@\s/]+@"), rf"\g<1>{REDACTED}@", ("://",)),
    # password=..., "api_key": "...", token: ...  (the key must end in the secret word)
    (
        re.compile(rf"(?i)\b({_SENSITIVE_NAME})([\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED\])([^\s\"',;&}}\]]+)"),
        rf"\g<1>\g<2>{REDACTED}",
        # Every name _SENSITIVE_NAME matches contains one of these (the keys all end in "key").
        ("password", "passwd", "pwd", "secret", "token", "authorization", "cookie", "key"),
    ),
)


def is_secret_key(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    if any(pair in lowered for pair in _SECRET_KEY_PAIRS):
        return True
    return any(word in _SECRET_KEY_WORDS for word in re.split(r"[^a-z0-9]+", lowered))


def _folded(text: str) -> str:
    """The text as a case-insensitive pattern sees it, for the needle test: casefold
    maps every character `re.IGNORECASE` equates with an ASCII letter onto it (the
    long s, the Kelvin sign), except the dotless i."""
    return text.casefold().replace("\u0131", "i")


def redact_text(text: str) -> str:
    folded: str | None = None
    for pattern, replacement, needles in _TEXT_PATTERNS:
        if pattern.flags & re.IGNORECASE:
            folded = _folded(text) if folded is None else folded
            haystack = folded
        else:
            haystack = text
        if any(needle in haystack for needle in needles):
            text = pattern.sub(replacement, text)
            folded = None
    return text


def redact_value(value: Any, *, key: str = "", depth: int = 0) -> Any:
    """The value with secrets replaced: whole values under secret keys, and secrets
    found inside strings, through nested dicts and lists."""
    if key and is_secret_key(key) and value not in (None, "") and not isinstance(value, bool | int | float):
        return REDACTED
    if depth > 8:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return {k: redact_value(v, key=str(k), depth=depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item, depth=depth + 1) for item in value]
    return value


class RedactSecretsFilter(logging.Filter):
    """Rewrites the record in place: the message is rendered and redacted (its args are
    consumed), the traceback is rendered and redacted, every `extra` value is redacted."""

    _exception_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is logging's own error to report
            return True
        record.msg = redact_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exception_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        for name, value in list(record.__dict__.items()):
            if name not in _RECORD_ATTRS and name not in CONTEXT_KEYS:
                setattr(record, name, redact_value(value, key=name))
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        name: value
        for name, value in record.__dict__.items()
        if name not in _RECORD_ATTRS and name not in CONTEXT_KEYS and not name.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values JSON cannot encode are written as strings."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value not in (None, ""):
                line[key] = value
        for name, value in _extras(record).items():
            line.setdefault(name, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """The classic one-line format for a person at a terminal, with the bound context
    ids appended as `key=value`."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(f"{key}={getattr(record, key)}" for key in CONTEXT_KEYS if getattr(record, key, None))
        if not ids:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [{ids}]{newline}{rest}"
