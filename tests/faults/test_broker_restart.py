"""The broker restarted empty under the Hub (a private redis-server, killed and started
again): an ack on the lost connection's channel cannot take a consumer down, and the
reaper's broker round declares the queues again, so a message routed through their
exchange after the restart is delivered instead of dropped."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Exchange, Queue

from hub.celery import app
from hub.workers import broker_watch
from tests.faults.conftest import PrivateRedis
from tests.faults.test_redis_restart import point_celery_at

pytestmark = [pytest.mark.fault, pytest.mark.django_db]

TRANSPORT = "hub.broker:Transport"


@pytest.fixture
def celery_on_private_redis(private_redis: PrivateRedis, settings: object) -> Iterator[PrivateRedis]:
    previous = app.conf.broker_write_url
    point_celery_at(private_redis.url)
    settings.CELERY_BROKER_URL = private_redis.url  # type: ignore[attr-defined]
    try:
        yield private_redis
    finally:
        point_celery_at(previous)


def test_an_ack_on_the_channel_of_a_lost_connection_is_dropped_and_the_consumer_goes_on(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    queue = Queue("acked-late")
    with Connection(private_redis.url, transport=TRANSPORT) as producer:
        producer.SimpleQueue(queue.name).put({"n": 1})
        producer.SimpleQueue(queue.name).put({"n": 2})

    # given two messages a worker holds unacked (late ack: their tasks still run)
    lost = Connection(private_redis.url, transport=TRANSPORT)
    channel = lost.channel()
    first = queue(channel).get(no_ack=False)
    second = queue(channel).get(no_ack=False)
    assert first is not None and second is not None

    # when Redis dies, Celery closes the lost connection, and Redis comes back empty
    private_redis.kill()
    lost.collect()
    private_redis.start()

    # then the tasks ending now ack and reject on the dead channel without raising
    with caplog.at_level(logging.WARNING, logger="hub.broker"):
        first.ack()
        second.reject(requeue=True)
    dropped = [r.getMessage() for r in caplog.records if r.name == "hub.broker"]
    assert len(dropped) == 2 and "ack of delivery" in dropped[0] and "reject of delivery" in dropped[1], dropped

    # and a new connection (the consumer's reconnection) sends and receives
    with Connection(private_redis.url, transport=TRANSPORT) as fresh:
        fresh.SimpleQueue(queue.name).put({"n": 3})
        message = fresh.SimpleQueue(queue.name).get(timeout=5)
        assert message.payload == {"n": 3}
        message.ack()


def test_the_reaper_declares_the_queues_again_after_redis_restarted_empty(
    celery_on_private_redis: PrivateRedis,
) -> None:
    client = redis.Redis.from_url(celery_on_private_redis.url)
    queue = app.amqp.queues["provisioning"]
    exchange = Exchange(queue.exchange.name, type=queue.exchange.type)

    def publish_through_the_exchange(body: dict[str, int]) -> None:
        with Connection(celery_on_private_redis.url, transport=TRANSPORT) as conn:
            conn.Producer().publish(body, exchange=exchange, routing_key=queue.routing_key, serializer="json")

    broker_watch()
    publish_through_the_exchange({"before": 1})
    assert client.llen("provisioning") == 1

    # when Redis restarts empty, its bindings are gone with it
    celery_on_private_redis.restart()
    publish_through_the_exchange({"lost": 1})
    assert client.llen("provisioning") == 0, "kombu delivered without a binding: the reaper's round is moot"

    # then after the reaper's broker round the same publish is delivered and consumed
    report = broker_watch()
    assert report.declared >= len(app.amqp.queues)
    publish_through_the_exchange({"after": 1})
    with Connection(celery_on_private_redis.url, transport=TRANSPORT) as conn:
        message = conn.SimpleQueue("provisioning").get(timeout=5)
        assert message.payload == {"after": 1}
        message.ack()
