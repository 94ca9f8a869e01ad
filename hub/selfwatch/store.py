"""The Redis the self-watch counters live in (METRICS_REDIS_URL): one hash per family,
added to with HINCRBY(FLOAT), read whole at scrape time. Losing it (a Redis flush)
is a counter reset, which Prometheus's rate() already expects."""

from __future__ import annotations

import logging
import time
from functools import lru_cache

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

HTTP_KEY = "hub:metrics:http"
DB_ERRORS_KEY = "hub:metrics:db_errors"
# The separator of the fields packed into one hash key (a route never contains it).
SEP = "\x1f"

_last_complaint = 0.0


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    # Short timeouts: a metric is never worth holding a request or a task up for.
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


def client() -> redis.Redis:
    return _client(settings.METRICS_REDIS_URL)


def complain(what: str, exc: Exception) -> None:
    """A counter that could not be written is lost, said at most once a minute."""
    global _last_complaint
    now = time.monotonic()
    if now - _last_complaint >= 60:
        _last_complaint = now
        logger.warning("self-watch: %s lost: %s: %s", what, type(exc).__name__, exc)


def read_hash(key: str) -> dict[str, str]:
    raw: dict[bytes, bytes] = client().hgetall(key)  # type: ignore[assignment]
    return {field.decode(): value.decode() for field, value in raw.items()}
