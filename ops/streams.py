"""The event streams of the API (DESIGN.md "Live status"): `GET /api/v1/events` (the
whole operation) and `GET /api/v1/orders/{id}/events` (one order), as server-sent
events, for staff (a DRF token or an admin session).

A connection first gets a snapshot of the current state (a new client), or the events it
missed (a client reconnecting with `Last-Event-ID`, from the bounded history that
hub/events.py keeps in Redis Streams), then every event as it is published, and a
comment line when nothing happened for EVENTS_KEEPALIVE_SECONDS.

The views are async: under the web process's ASGI worker (scripts/web.sh) an open
stream is a coroutine waiting on a queue, not a thread. Each web process holds one
Redis pub/sub subscription (`Fanout`) that hands every event to the queues of the
streams open in that process. A client is subscribed before its history is read, and
an event is sent only when its id is above the last one sent: nothing is missed in the
hand-over from history to channel, and nothing is sent twice. When the subscription
breaks, every stream it fed ends; the browser reconnects with its Last-Event-ID and
replays what it missed.

Served synchronously (Django's test client, a WSGI server), a stream sends the
snapshot or the replay and ends: the client reconnects, which is polling at worst."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.handlers.asgi import ASGIRequest
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from hub.events import stream_key
from ops.dashboard import dashboard_context
from provisioning.admin import order_timeline
from provisioning.models import Order

logger = logging.getLogger(__name__)

# The browser's EventSource waits this long before reconnecting.
RECONNECT_MS = 1000
_EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    data: str


BROKEN = Event(id="", type="", data="")


def _id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(eq=False)
class Subscription:
    key: str
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(maxsize=settings.EVENTS_CLIENT_BUFFER))

    def offer(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Too slow to keep up: end its stream; it reconnects and replays from history.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(BROKEN)


class Fanout:
    """One pub/sub subscription per web process, shared by all its open streams."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._client: aioredis.Redis | None = None

    @property
    def client(self) -> aioredis.Redis:
        """A client for reading the histories, on this process's event loop."""
        assert self._client is not None
        return self._client

    async def subscribe(self, key: str) -> Subscription:
        await self._running()
        subscription = Subscription(key=key)
        self.subscriptions.setdefault(key, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        group = self.subscriptions.get(subscription.key)
        if group is not None:
            group.discard(subscription)
            if not group:
                del self.subscriptions[subscription.key]

    async def _running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop = loop
            self._ready = asyncio.Event()
            self._client = aioredis.Redis.from_url(
                settings.EVENTS_REDIS_URL, socket_connect_timeout=2, socket_timeout=5
            )
            self._task = loop.create_task(self._listen(self._ready))
        assert self._ready is not None
        await asyncio.wait_for(self._ready.wait(), timeout=5)

    async def _listen(self, ready: asyncio.Event) -> None:
        while True:
            client = aioredis.Redis.from_url(settings.EVENTS_REDIS_URL, socket_connect_timeout=2)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(settings.EVENTS_CHANNEL)
                    ready.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._dispatch(message["data"])
            except (redis.RedisError, OSError) as exc:
                logger.warning("event channel lost: %s", exc)
            finally:
                ready.clear()
                # Whatever was published meanwhile is in the histories: every stream ends,
                # and each client reconnects with its Last-Event-ID and replays.
                for group in self.subscriptions.values():
                    for subscription in group:
                        subscription.offer(BROKEN)
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(1)

    def _dispatch(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
            pairs = zip(message["keys"], message["ids"], strict=True)
            event_type, data = str(message["type"]), str(message["data"])
        except (ValueError, KeyError, TypeError):
            logger.warning("malformed event on the channel: %r", raw[:200])
            return
        for key, event_id in pairs:
            for subscription in list(self.subscriptions.get(key, ())):
                subscription.offer(Event(id=event_id, type=event_type, data=data))


fanout = Fanout()


def frame(event: Event) -> str:
    return f"id: {event.id}\nevent: {event.type}\ndata: {event.data}\n\n"


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Event:
    return Event(id=_decode(entry_id), type=_decode(fields[b"type"]), data=_decode(fields[b"data"]))


async def _missed_since(client: aioredis.Redis, key: str, last_id: str) -> list[Event] | None:
    """The events after `last_id` still in the history, or None when some of them are
    gone (trimmed, or the history expired or was lost): then only a snapshot is right."""
    try:
        info = await client.xinfo_stream(key)
    except redis.ResponseError:  # no such stream
        return None
    deleted = _decode(info.get("max-deleted-entry-id") or "0-0")
    if _id_key(deleted) > _id_key(last_id):
        return None
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(key, min=f"({last_id}", max="+")  # type: ignore[assignment]
    return [_entry(entry_id, fields) for entry_id, fields in entries]


async def _latest_id(client: aioredis.Redis, key: str) -> str:
    newest: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrevrange(key, count=1)  # type: ignore[assignment]
    return _decode(newest[0][0]) if newest else "0-0"


def _json_default(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return DjangoJSONEncoder().default(value)


async def event_stream(
    key: str, last_event_id: str | None, snapshot: Callable[[], dict[str, Any]], *, live: bool
) -> AsyncIterator[str]:
    subscription = await fanout.subscribe(key) if live else None
    try:
        client = fanout.client if live else aioredis.Redis.from_url(settings.EVENTS_REDIS_URL)
        yield f"retry: {RECONNECT_MS}\n\n"
        missed = await _missed_since(client, key, last_event_id) if last_event_id else None
        if missed is None:
            sent = await _latest_id(client, key)
            state = await sync_to_async(snapshot)()
            yield frame(Event(id=sent, type="snapshot", data=json.dumps(state, default=_json_default)))
        else:
            sent = last_event_id or "0-0"
            for event in missed:
                yield frame(event)
                sent = event.id
        if subscription is None:
            await client.aclose()
            return
        # Done with the database for this connection (the credential, the snapshot): its
        # Postgres connection, held by this request's thread, goes back now, not when
        # the stream ends, or every open stream would hold one.
        await sync_to_async(connections.close_all)()
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + settings.EVENTS_STREAM_MAX_SECONDS
        while loop.time() < ends_at:
            try:
                event = await asyncio.wait_for(subscription.queue.get(), timeout=settings.EVENTS_KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is BROKEN:
                return
            if _id_key(event.id) <= _id_key(sent):
                continue  # already sent from the history
            yield frame(event)
            sent = event.id
    finally:
        if subscription is not None:
            fanout.unsubscribe(subscription)


def _error(status: int, code: str, detail: str) -> JsonResponse:
    response = JsonResponse({"error": code, "detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Token realm="api"'
    return response


async def _staff_or_error(request: HttpRequest) -> HttpResponse | None:
    """None for a staff user (DRF token, else admin session); else the JSON refusal."""
    user: AbstractBaseUser | AnonymousUser | None = None
    try:
        # DRF's token check reads only the request's headers: a plain HttpRequest will do.
        pair = await sync_to_async(TokenAuthentication().authenticate)(request)  # type: ignore[arg-type]
    except AuthenticationFailed as exc:
        return _error(401, "authentication_failed", str(exc.detail))
    if pair is not None:
        user = pair[0]
    elif not request.headers.get("Authorization"):
        session_user = await request.auser()
        user = session_user if session_user.is_authenticated else None
    if user is None:
        return _error(401, "not_authenticated", "Authentication credentials were not provided.")
    if not (user.is_active and getattr(user, "is_staff", False)):
        return _error(403, "permission_denied", "You do not have permission to perform this action.")
    return None


def _stream_response(
    request: HttpRequest, key: str, snapshot: Callable[[], dict[str, Any]]
) -> HttpResponse | StreamingHttpResponse:
    last_event_id = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    if last_event_id and not _EVENT_ID.match(last_event_id):
        return _error(400, "invalid", "Last-Event-ID must be an event id this stream sent (like 1733300000000-0).")
    live = isinstance(request, ASGIRequest)
    response = StreamingHttpResponse(
        event_stream(key, last_event_id, snapshot, live=live), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    # nginx (compose) passes the stream through as it comes, not buffered.
    response["X-Accel-Buffering"] = "no"
    return response


def operation_snapshot() -> dict[str, Any]:
    return {"dashboard": dashboard_context()}


async def all_events(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    if request.method != "GET":
        return _error(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
    refused = await _staff_or_error(request)
    if refused is not None:
        return refused
    return _stream_response(request, stream_key(), operation_snapshot)


async def order_events(request: HttpRequest, pk: int) -> HttpResponse | StreamingHttpResponse:
    if request.method != "GET":
        return _error(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
    refused = await _staff_or_error(request)
    if refused is not None:
        return refused
    if not await Order.objects.filter(pk=pk).aexists():
        return _error(404, "not_found", "Not found.")

    def snapshot() -> dict[str, Any]:
        return order_timeline(Order.objects.select_related("job").get(pk=pk))

    return _stream_response(request, stream_key(f"order:{pk}"), snapshot)
