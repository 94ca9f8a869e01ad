"""The only module that talks to Redis for tenants: the heartbeat buffer, the flags of
tenants with commands due, the API-key cache generation and the per-tenant rate
counters. Redis holds nothing that Postgres cannot rebuild; losing it costs at most
the last few seconds of heartbeats."""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from typing import Any

import redis
from django.conf import settings

PREFIX = "hub:tenants:"
HISTORY_KEY = PREFIX + "heartbeats"
FLUSHING_KEY = PREFIX + "heartbeats:flushing"
COMMANDS_DUE_KEY = PREFIX + "commands:due"
KEY_GENERATION_KEY = PREFIX + "keys:generation"
KEY_FINGERPRINT_KEY = PREFIX + "keys:fingerprint"
RATE_KEY = PREFIX + "rate:"

# One round trip per heartbeat: check the key cache is still current, count the request
# against the tenant's rate, buffer the sample, and say whether commands are due.
_HEARTBEAT_PUSH = """
local generation = redis.call('GET', KEYS[1]) or ''
if generation ~= ARGV[1] then return {0, generation} end
local count = redis.call('INCR', KEYS[2])
if count == 1 then redis.call('EXPIRE', KEYS[2], ARGV[5]) end
if count > tonumber(ARGV[4]) then return {2, redis.call('TTL', KEYS[2])} end
redis.call('RPUSH', KEYS[3], ARGV[3])
return {1, redis.call('SISMEMBER', KEYS[4], ARGV[2])}
"""

# Move the buffer aside for a flush, or hand back the one a crashed flush left there.
_HEARTBEATS_TAKE = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
  redis.call('RENAME', KEYS[1], KEYS[2])
end
return redis.call('LRANGE', KEYS[2], 0, -1)
"""


class PushOutcome(IntEnum):
    STALE_KEY_CACHE = 0
    BUFFERED = 1
    THROTTLED = 2


@dataclass(frozen=True)
class PushResult:
    outcome: PushOutcome
    commands_due: bool = False
    generation: str = ""
    retry_after: int = 0


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30)


def client() -> redis.Redis:
    return _client(settings.REDIS_URL)


@cache
def _script(url: str, source: str) -> Any:
    return _client(url).register_script(source)


def _run(source: str, keys: list[str], args: list[Any]) -> Any:
    return _script(settings.REDIS_URL, source)(keys=keys, args=args)


class _HeartbeatChannel:
    """The heartbeat's script on a Redis connection of one web thread's own, called with
    a bare EVALSHA. The shared pool costs a lock, a health check and a checkout per
    command (half the client's CPU on the hottest call there is), and redis-py's script
    and command layers another 13 us of the 50 a call took; a web thread sends one
    heartbeat at a time, so it needs neither. What those layers did is done here: a
    connection found broken is opened again and the call sent once more, and a Redis
    that lost the script (a restart) is given it again. A timeout is not retried: the
    script may have run."""

    def __init__(self, url: str) -> None:
        self.url, self.pid = url, os.getpid()
        self.client = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, single_connection_client=True
        )
        self.sha = self.client.script_load(_HEARTBEAT_PUSH)

    def call(self, keys: list[str], args: list[Any]) -> Any:
        connection = self.client.connection
        assert connection is not None
        reconnected = script_loaded = False
        while True:
            try:
                connection.send_command("EVALSHA", self.sha, len(keys), *keys, *args)
                return connection.read_response()
            except redis.exceptions.NoScriptError:
                if script_loaded:
                    raise
                self.client.script_load(_HEARTBEAT_PUSH)
                script_loaded = True
            except redis.ConnectionError:
                connection.disconnect()
                if reconnected:
                    raise
                reconnected = True
            except redis.TimeoutError:
                connection.disconnect()
                raise


class _ThreadChannel(threading.local):
    channel: _HeartbeatChannel | None = None


_thread = _ThreadChannel()


def _heartbeat_channel() -> _HeartbeatChannel:
    """This thread's channel; a forked child opens its own (the socket is the parent's)."""
    channel = _thread.channel
    if channel is None or channel.pid != os.getpid() or channel.url != settings.REDIS_URL:
        channel = _thread.channel = _HeartbeatChannel(settings.REDIS_URL)
    return channel


def parse_rate(rate: str) -> tuple[int, int]:
    """'120/minute' -> (120, 60)."""
    count, _, period = rate.partition("/")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[period.strip()[:1].lower()]
    return int(count), seconds


def _rate_key(*, subject: str, window: int) -> str:
    return f"{RATE_KEY}{subject}:{int(time.time() // window)}"


def heartbeat_push(*, tenant_id: int, sample: str | bytes, generation: str, rate: str) -> PushResult:
    limit, window = parse_rate(rate)
    keys = [KEY_GENERATION_KEY, _rate_key(subject=f"tenant:{tenant_id}", window=window), HISTORY_KEY, COMMANDS_DUE_KEY]
    outcome, value = _heartbeat_channel().call(keys, [generation, tenant_id, sample, limit, window])
    if outcome == PushOutcome.STALE_KEY_CACHE:
        return PushResult(outcome=PushOutcome.STALE_KEY_CACHE, generation=_text(value))
    if outcome == PushOutcome.THROTTLED:
        return PushResult(outcome=PushOutcome.THROTTLED, retry_after=max(int(value), 1))
    return PushResult(outcome=PushOutcome.BUFFERED, commands_due=bool(value))


def rate_hit(*, subject: str, rate: str) -> int:
    """Count one request of `subject`; 0 when allowed, else seconds to wait."""
    limit, window = parse_rate(rate)
    key = _rate_key(subject=subject, window=window)
    pipe = client().pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, window, nx=True)
    count, _ = pipe.execute()
    if count <= limit:
        return 0
    return max(1, math.ceil(window - time.time() % window))


def heartbeats_take() -> list[bytes]:
    return list(_run(_HEARTBEATS_TAKE, [HISTORY_KEY, FLUSHING_KEY], []))


def heartbeats_taken_done() -> None:
    client().delete(FLUSHING_KEY)


def heartbeats_buffered() -> int:
    return int(client().llen(HISTORY_KEY)) + int(client().llen(FLUSHING_KEY))


def commands_due_flag(*, tenant_ids: list[int]) -> None:
    if tenant_ids:
        client().sadd(COMMANDS_DUE_KEY, *tenant_ids)


def commands_due_clear(*, tenant_id: int) -> None:
    client().srem(COMMANDS_DUE_KEY, tenant_id)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def key_generation() -> str:
    return _text(client().get(KEY_GENERATION_KEY))


def key_generation_bump(*, generation: str) -> None:
    client().set(KEY_GENERATION_KEY, generation)


def key_fingerprint_swap(*, fingerprint: str) -> bool:
    """Store the credentials' fingerprint; True when it differs from the stored one."""
    previous = client().getset(KEY_FINGERPRINT_KEY, fingerprint)
    return previous is None or _text(previous) != fingerprint
