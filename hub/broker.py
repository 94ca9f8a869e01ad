"""The broker's transport: kombu's Redis transport, with acknowledgements that a dead
channel cannot turn into a crash of the worker's consumer.

When the connection to Redis is lost, Celery closes it (the transport's `client` is
set to None) and reconnects on a new one. A task that was running meanwhile (a thread
of the threads pool, a prefork child) still holds its message from the old channel,
and its late ack went to kombu's Redis QoS, which rebuilt a connection pool from the
closed connection and raised `AttributeError: 'NoneType' object has no attribute
'hostname'` inside the worker's event loop, not a connection error Celery recovers
from: the consumer stopped while the process stayed up.

Here an ack or reject on a closed channel is dropped with a warning. Nothing is lost
by it: closing the channel already put its unacked messages back in their queues
(kombu restores them at close), or Redis lost them with its restart, and either way
Postgres decides whether a step runs again (the step's lease and the reaper)."""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

logger = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def _channel_is_gone(self) -> bool:
        channel = self.channel
        connection = getattr(channel, "connection", None)
        return bool(channel.closed) or connection is None or getattr(connection, "client", None) is None

    def _forget(self, delivery_tag: Any, verb: str) -> None:
        logger.warning(
            "broker: %s of delivery %s dropped, its channel is closed (the broker connection was lost); "
            "the message was put back in its queue when the channel closed, or lost with Redis",
            verb,
            delivery_tag,
        )
        # Only the in-memory bookkeeping: there is no channel left to tell Redis.
        virtual.QoS.ack(self, delivery_tag)

    def ack(self, delivery_tag: Any) -> None:
        if self._channel_is_gone():
            self._forget(delivery_tag, "ack")
            return
        super().ack(delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if self._channel_is_gone():
            self._forget(delivery_tag, "reject")
            return
        super().reject(delivery_tag, requeue=requeue)


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
