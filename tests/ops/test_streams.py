"""The event streams (DESIGN.md "Live status") against the real web process
(scripts/web.sh), the real Redis and the test database: a new client gets the snapshot
first, then the events published after each commit; a client that reconnects with
Last-Event-ID gets exactly the events it missed, in order, then the live ones, none
twice; one whose missed events are gone gets a snapshot; an idle stream gets comments;
a Hub on another database of the same Redis server is not heard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.authtoken.models import Token

from hub.alerts.services import alert_raise
from hub.audit import status_move
from hub.events import send, stream_key
from provisioning.models import ORDER_TRANSITIONS, Order, OrderStatus
from tests.conftest import ROOT, WebServer

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@dataclass
class Event:
    id: str
    type: str
    data: Any


class EventReader:
    """A server-sent-events client: the stream read line by line, as a browser does."""

    def __init__(self, url: str, token: str, last_event_id: str | None = None) -> None:
        headers = {"Authorization": f"Token {token}", "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.response = requests.get(url, headers=headers, stream=True, timeout=(5, 10))
        assert self.response.status_code == 200, self.response.text[:300]
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.lines: Iterator[str] = (
            line.decode() if isinstance(line, bytes) else line for line in self.response.iter_lines()
        )
        self.comments: list[str] = []
        self.received: list[Event] = []

    def next(self, of: str = "", within: float = 20.0) -> Event:
        """The next event whose type starts with `of` (comments and the reconnection delay
        are set aside), read `within` seconds (the keep-alive comments make each line come
        within one). The fleet-wide stream also carries what the suite's worker finishes
        for earlier tests: those are skipped, but every event is kept in `received`."""
        fields: dict[str, str] = {}
        deadline = time.monotonic() + within
        for line in self.lines:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {of or 'event'} within {within} s; received {self.received}")
            if line == "":
                if "event" in fields:
                    event = Event(fields.get("id", ""), fields["event"], json.loads(fields.get("data", "null")))
                    self.received.append(event)
                    if event.type == "snapshot" or event.type.startswith(of):
                        return event
                fields = {}
            elif line.startswith(":"):
                self.comments.append(line)
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        raise AssertionError("the stream ended")

    def close(self) -> None:
        self.response.close()


@pytest.fixture
def staff_token(db: None) -> str:
    user = get_user_model().objects.create_user("streams-staff", password="x", is_staff=True)
    return str(Token.objects.create(user=user).key)


def raise_alert(kind: str) -> None:
    alert_raise(subject_type="tenant", subject_id="7", kind=kind, severity="SOFT", message=kind)


def move(order: Order, new: str) -> None:
    with transaction.atomic():
        status_move(order, new, actor="test", transitions=ORDER_TRANSITIONS)


def test_a_new_client_gets_the_order_snapshot_first_then_its_moves_after_commit(
    web_server: WebServer, staff_token: str
) -> None:
    order = Order.objects.create(domain="live.example.test", status=OrderStatus.PAYMENT_CONFIRMED, region="eu")
    other = Order.objects.create(domain="other.example.test", status=OrderStatus.PAYMENT_CONFIRMED, region="eu")
    reader = EventReader(f"{web_server.url}/api/v1/orders/{order.pk}/events", staff_token)
    try:
        snapshot = reader.next()
        assert snapshot.type == "snapshot"
        assert snapshot.data["order"] == {
            "id": order.pk,
            "status": OrderStatus.PAYMENT_CONFIRMED,
            "terminal": False,
            "waiting_reason": "",
        }

        # A move rolled back is never told; another order's moves are not this stream's.
        with pytest.raises(RuntimeError), transaction.atomic():
            status_move(order, OrderStatus.AWAITING_SERVER, actor="test", transitions=ORDER_TRANSITIONS)
            raise RuntimeError("rolled back")
        move(other, OrderStatus.AWAITING_SERVER)
        order.refresh_from_db()
        move(order, OrderStatus.AWAITING_SERVER)

        event = reader.next()
        assert (event.type, event.data["id"], event.data["old"], event.data["new"]) == (
            "order.status",
            order.pk,
            OrderStatus.PAYMENT_CONFIRMED,
            OrderStatus.AWAITING_SERVER,
        )
    finally:
        reader.close()


def test_a_client_reconnecting_with_last_event_id_gets_exactly_what_it_missed_in_order(
    web_server: WebServer, staff_token: str
) -> None:
    url = f"{web_server.url}/api/v1/events"
    first = EventReader(url, staff_token)
    try:
        assert first.next().type == "snapshot"
        raise_alert("seen")
        seen = first.next(of="alert.")
        assert (seen.type, seen.data["kind"]) == ("alert.opened", "seen")
    finally:
        first.close()

    # while it is away
    for kind in ("missed-1", "missed-2", "missed-3"):
        raise_alert(kind)

    again = EventReader(url, staff_token, last_event_id=seen.id)
    try:
        replayed = [again.next(of="alert.") for _ in range(3)]
        assert [(e.type, e.data["kind"]) for e in replayed] == [
            ("alert.opened", "missed-1"),
            ("alert.opened", "missed-2"),
            ("alert.opened", "missed-3"),
        ]
        ids = [seen.id, *(e.id for e in again.received)]
        assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-"))) and len(set(ids)) == len(ids)

        # then the live ones, the hand-over losing and repeating nothing
        raise_alert("live")
        live = again.next(of="alert.")
        assert (live.type, live.data["kind"]) == ("alert.opened", "live")
    finally:
        again.close()


def test_a_client_whose_missed_events_are_gone_gets_a_snapshot(web_server: WebServer, staff_token: str) -> None:
    url = f"{web_server.url}/api/v1/events"
    reader = EventReader(url, staff_token)
    try:
        reader.next()
        raise_alert("before-the-loss")
        seen = reader.next(of="alert.")
    finally:
        reader.close()
    # Redis lost the history (restarted empty, or the events were trimmed away).
    redis.Redis.from_url(settings.EVENTS_REDIS_URL).delete(stream_key())

    again = EventReader(url, staff_token, last_event_id=seen.id)
    try:
        snapshot = again.next()
        assert snapshot.type == "snapshot"
        assert snapshot.data["dashboard"]["alerts"]["total"] == 1
    finally:
        again.close()


def test_an_idle_stream_gets_keep_alive_comments(web_server: WebServer, staff_token: str) -> None:
    reader = EventReader(f"{web_server.url}/api/v1/events", staff_token)
    try:
        reader.next()
        comment = next(line for line in reader.lines if line.startswith(":"))
        assert comment == ": keep-alive"
        # and the stream still carries what happens next
        raise_alert("after-a-pause")
        assert reader.next(of="alert.").data["kind"] == "after-a-pause"
    finally:
        reader.close()


def test_the_streams_refuse_bad_callers_and_bad_input_with_json(web_server: WebServer, staff_token: str) -> None:
    nobody = requests.get(f"{web_server.url}/api/v1/events", timeout=5)
    assert nobody.status_code == 401 and nobody.json()["error"] == "not_authenticated"
    assert nobody.headers["WWW-Authenticate"].startswith("Token")

    user = get_user_model().objects.create_user("not-staff", password="x")
    token = Token.objects.create(user=user).key
    refused = requests.get(f"{web_server.url}/api/v1/events", headers={"Authorization": f"Token {token}"}, timeout=5)
    assert refused.status_code == 403 and refused.json()["error"] == "permission_denied"

    staff = {"Authorization": f"Token {staff_token}"}
    missing = requests.get(f"{web_server.url}/api/v1/orders/999999/events", headers=staff, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"

    bad_id = requests.get(
        f"{web_server.url}/api/v1/events", headers={**staff, "Last-Event-ID": "'; DROP TABLE"}, timeout=5
    )
    assert bad_id.status_code == 400 and bad_id.json()["error"] == "invalid"


# A database of the test Redis server no shard, bench or demo uses.
NEIGHBOUR_REDIS_URL = "redis://127.0.0.1:6379/9"


def test_a_hub_on_another_database_of_the_same_redis_server_is_not_heard(
    web_server: WebServer, staff_token: str
) -> None:
    """Pub/sub ignores the database a client selected. A second Hub, on database 9 with
    its settings left at their defaults, publishes events whose ids run far ahead of
    ours: none reaches our stream, and our own next event is not taken for one already
    sent."""
    neighbour = redis.Redis.from_url(NEIGHBOUR_REDIS_URL)
    neighbour.delete(stream_key())
    neighbour.xadd(stream_key(), {"type": "neighbour.start", "data": "{}"}, id="9999999999999-0")
    reader = EventReader(f"{web_server.url}/api/v1/events", staff_token)
    try:
        reader.next()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("EVENTS_", "REDIS_", "CELERY_", "TEST_", "DJANGO_SETTINGS"))
        }
        env.update(DJANGO_SETTINGS_MODULE="hub.settings", REDIS_URL=NEIGHBOUR_REDIS_URL)
        script = "import django; django.setup(); from hub.events import send; print(send('neighbour.ping', {}))"
        told = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert told.stdout.strip() == "['9999999999999-1']", told.stdout + told.stderr

        assert send("own.ping", {"after": "neighbour"})
        assert reader.next(of="own.ping").data == {"after": "neighbour"}
        assert not [event for event in reader.received if event.type.startswith("neighbour.")]
    finally:
        reader.close()
        neighbour.delete(stream_key())
