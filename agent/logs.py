"""Logging for the agent: to stderr (journald or `docker logs` keep it), with a filter
that blanks the API key and registration token should either ever reach a message."""

from __future__ import annotations

import logging
import sys

_secrets: set[str] = set()


def redact(secret: str) -> None:
    """Never let `secret` appear in a log line."""
    if secret and len(secret) >= 4:
        _secrets.add(secret)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in _secrets):
            for secret in _secrets:
                message = message.replace(secret, "[redacted]")
            record.msg, record.args = message, ()
        return True


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("urllib3").setLevel(logging.WARNING)
