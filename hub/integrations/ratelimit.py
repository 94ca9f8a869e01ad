"""One token bucket per provider, kept in Redis and shared by every worker on every
machine, so all of them together stay under the provider's limit. A 429's
Retry-After closes the bucket for everyone until that time.

The bucket also keeps its own statistics, for /metrics and the quota alert: tokens
taken per quota period (the current and the previous one, whence the share of the
quota used over the last period), waits and their seconds, timeouts, and the 429s the
provider answered. Taking a token and counting it is one script, one round trip."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import redis
from django.conf import settings

# KEYS[1] bucket hash, KEYS[2] "closed until" key, KEYS[3] statistics hash (and the
# prefix of the per-period counters). ARGV: rate/s, capacity, quota period (s).
# Returns the seconds to wait (0 = a token was taken). Redis's clock is the clock,
# so workers with drifting clocks still share one bucket fairly.
_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local closed_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if closed_until > now then
  return tostring(closed_until - now)
end
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  local period = tonumber(ARGV[3])
  local used = KEYS[3] .. ':used:' .. math.floor(now / period)
  redis.call('INCR', used)
  redis.call('EXPIRE', used, math.ceil(2 * period) + 60)
  redis.call('HINCRBY', KEYS[3], 'taken', 1)
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return tostring(wait)
"""

# KEYS[1] "closed until" key, KEYS[2] statistics hash. ARGV: seconds.
_CLOSE = """
redis.call('HINCRBY', KEYS[2], 'rate_limited', 1)
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local until_ts = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ts > current then
  redis.call('SET', KEYS[1], tostring(until_ts), 'EX', math.ceil(tonumber(ARGV[1])) + 1)
end
return 1
"""


# KEYS[1] statistics hash. ARGV: quota period (s), quota. The share of the quota used
# over the last period: this period's count plus the part of the previous period's
# that still lies within one period from now (a sliding window, linearly weighted).
_USED = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local period = tonumber(ARGV[1])
local index = math.floor(now / period)
local current = tonumber(redis.call('GET', KEYS[1] .. ':used:' .. index) or '0')
local previous = tonumber(redis.call('GET', KEYS[1] .. ':used:' .. (index - 1)) or '0')
local elapsed = (now - index * period) / period
return tostring((current + previous * (1 - elapsed)) / tonumber(ARGV[2]))
"""

STAT_FIELDS = ("taken", "waits", "wait_seconds", "timeouts", "rate_limited")


class RateLimitTimeout(Exception):
    """No token could be had within the caller's patience; try again later."""


class RateLimiterUnavailable(ConnectionError):
    """The bucket's Redis did not answer (restarting, say). A builtin ConnectionError,
    so the steps' retry policies treat it as the passing fault it is: redis-py's own
    errors are no OSError, and a Redis blip would otherwise fail a step for good."""


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def provider_redis() -> redis.Redis:
    """The Redis the buckets live in, shared by every Hub process: also where the
    provider seams keep what saves them a call (Cloudflare's zones by name)."""
    return _client(settings.RATE_LIMIT_REDIS_URL)


@dataclass(frozen=True)
class TokenBucket:
    name: str
    # Requests per period, and how many may go at once after a quiet spell.
    limit: int
    period_seconds: float
    burst: int

    @property
    def rate(self) -> float:
        return self.limit / self.period_seconds

    def _redis(self) -> redis.Redis:
        return provider_redis()

    def _eval(self, script: str, keys: list[str], *args: float) -> object:
        try:
            return self._redis().eval(script, len(keys), *keys, *args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise RateLimiterUnavailable(f"rate limiter {self.name}: redis unavailable: {exc}") from exc

    def _keys(self) -> tuple[str, str]:
        return f"ratelimit:{self.name}:bucket", f"ratelimit:{self.name}:closed"

    @property
    def stats_key(self) -> str:
        return f"ratelimit:{self.name}:stats"

    def try_take(self) -> float:
        """Take a token if one is there; otherwise return how long to wait."""
        bucket, closed = self._keys()
        keys = [bucket, closed, self.stats_key]
        return float(self._eval(_TAKE, keys, self.rate, self.burst, self.period_seconds))  # type: ignore[arg-type]

    def take(self, *, max_wait: float = 120.0, sleep=time.sleep) -> None:
        started = time.monotonic()
        deadline = started + max_wait
        waited = False
        try:
            while True:
                wait = self.try_take()
                if wait <= 0:
                    return
                if time.monotonic() + wait > deadline:
                    self._count(timeouts=1)
                    raise RateLimitTimeout(f"{self.name}: no request slot within {max_wait:.0f}s")
                waited = True
                sleep(min(wait, 5.0))
        finally:
            if waited:
                self.waited(time.monotonic() - started)

    def waited(self, seconds: float) -> None:
        """Count a wait spent outside `take` (a 429's Retry-After sat out by the caller)."""
        self._count(waits=1, wait_seconds=seconds)

    def _count(self, **amounts: float) -> None:
        try:
            pipe = self._redis().pipeline(transaction=False)
            for field, amount in amounts.items():
                pipe.hincrbyfloat(self.stats_key, field, amount)
            pipe.execute()
        except redis.exceptions.RedisError:
            pass  # a statistic is not worth failing the request it counts

    def close_for(self, seconds: float) -> None:
        """The provider said 429 with Retry-After: nobody sends until then."""
        self._eval(_CLOSE, [self._keys()[1], self.stats_key], max(0.0, seconds))

    def quota_used(self) -> float:
        """The share of the quota (`limit` per `period_seconds`) taken over the last period."""
        return float(self._eval(_USED, [self.stats_key], self.period_seconds, self.limit))  # type: ignore[arg-type]

    def stats(self) -> dict[str, float]:
        """The bucket's counters since its Redis started: STAT_FIELDS, 0 when never counted."""
        try:
            raw: dict[bytes, bytes] = self._redis().hgetall(self.stats_key)  # type: ignore[assignment]
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise RateLimiterUnavailable(f"rate limiter {self.name}: redis unavailable: {exc}") from exc
        values = {key.decode(): float(value) for key, value in raw.items()}
        return {field: values.get(field, 0.0) for field in STAT_FIELDS}


def provider_bucket(provider: str) -> TokenBucket:
    limit, period, burst = settings.PROVIDER_RATE_LIMITS[provider]
    return TokenBucket(name=provider, limit=limit, period_seconds=period, burst=burst)
