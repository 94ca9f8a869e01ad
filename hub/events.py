"""Live events: what changed, told to whoever watches (the admin's pages, the event
streams of the API), after the commit that made the change.

`publish(type, data, scopes=...)` is the one way to tell. After the surrounding
transaction commits, one Redis script appends the event to the bounded history of the
whole operation (a Redis Stream, `EVENTS_STREAM`) and of each scope it names
(`<EVENTS_STREAM>:order:42`, kept `EVENTS_SCOPE_TTL_SECONDS` after its last event), then
publishes it on the pub/sub channel the web processes listen to, with the id it got in
each history. Being one script, the order on the channel is the order in the histories,
so a client that replays a history and then follows the channel never sees an event
twice or out of order (ops/streams.py).

Postgres stays the truth: an event is a hint that the truth moved. When Redis is down
the event is lost (logged), the change is not, and the pages notice on their own
(they fall back to polling when the stream breaks)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

logger = logging.getLogger(__name__)

# KEYS: the whole operation's stream, then one per scope. ARGV: the channel, the event's
# type, its JSON data, the histories' lengths (whole, per scope) and the scopes' TTL.
_PUBLISH_LUA = """
local ids = {}
for i, key in ipairs(KEYS) do
  local maxlen = ARGV[4]
  if i > 1 then maxlen = ARGV[5] end
  ids[i] = redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'type', ARGV[2], 'data', ARGV[3])
  if i > 1 then redis.call('EXPIRE', key, ARGV[6]) end
end
redis.call('PUBLISH', ARGV[1], cjson.encode({keys = KEYS, ids = ids, type = ARGV[2], data = ARGV[3]}))
return ids
"""

_client_lock = threading.Lock()
_client: redis.Redis | None = None
_script: Any = None


def stream_key(scope: str | None = None) -> str:
    """The Redis key of the history of the whole operation, or of one scope ("order:42")."""
    return settings.EVENTS_STREAM if scope is None else f"{settings.EVENTS_STREAM}:{scope}"


def _redis() -> tuple[redis.Redis, Any]:
    global _client, _script
    with _client_lock:
        if _client is None:
            _client = redis.Redis.from_url(
                settings.EVENTS_REDIS_URL, socket_timeout=1, socket_connect_timeout=0.5, health_check_interval=30
            )
            _script = _client.register_script(_PUBLISH_LUA)
        return _client, _script


def encode(data: Mapping[str, Any]) -> str:
    return json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":"))


def send(event_type: str, data: Mapping[str, Any], *, scopes: Iterable[str] = ()) -> list[str] | None:
    """Append and publish now (the caller has committed). The ids it got in each
    history, or None when Redis could not be told."""
    client, script = _redis()
    keys = [stream_key(), *(stream_key(scope) for scope in dict.fromkeys(scopes))]
    args = [
        settings.EVENTS_CHANNEL,
        event_type,
        encode(data),
        settings.EVENTS_HISTORY_LENGTH,
        settings.EVENTS_SCOPE_HISTORY_LENGTH,
        settings.EVENTS_SCOPE_TTL_SECONDS,
    ]
    try:
        ids = script(keys=keys, args=args, client=client)
    except redis.RedisError as exc:
        logger.warning("event %s not published: %s", event_type, exc)
        return None
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


def publish(event_type: str, data: Mapping[str, Any], *, scopes: Iterable[str] = ()) -> None:
    """Tell the watchers once the surrounding transaction commits (at once outside one).
    `scopes` name the objects whose own stream also gets the event ("order:42")."""
    payload = dict(data)
    scope_list = list(scopes)
    transaction.on_commit(lambda: send(event_type, payload, scopes=scope_list))


def subject_scopes(subject_type: str | None, subject_id: object) -> list[str]:
    """The scope of a pipeline job's subject (its order, server, tenant), if it has one."""
    if not subject_type or subject_id in (None, ""):
        return []
    return [f"{subject_type}:{subject_id}"]
