"""Workers that cannot hang silently.

A worker can stay alive and stop consuming (its consumer died on a broker fault, a
thread is wedged): every process is "up" and nothing moves. So each worker proves it
consumes, and ends itself when it does not:

- **the canary**: the reaper (beat, every PIPELINE_REAPER_INTERVAL) sends every
  worker that has registered a canary task through the worker's own queue (Celery's
  `worker_direct` queue, `<hostname>.dq2`, which only that worker consumes), unless
  the previous one is still waiting there. Running it records the consumption in
  Redis (`hub:worker:<hostname>`, field `canary_consumed`);
- **the watchdog**: a thread in each worker's main process, started when the worker
  is ready, registers the worker (`hub:workers`, a sorted set by last sighting) and
  every few seconds looks at the queues the worker was started with and its own
  queue. When work has waited there (a message in a queue, the canary included) for
  `WORKER_STALL_SECONDS` while the worker had a free slot and received nothing, the
  worker is stalled: the watchdog opens a HARD `worker_stalled` alert naming it and
  ends the process with `WORKER_STALL_EXIT_CODE` (75), after a warm shutdown of at
  most `WORKER_STALL_EXIT_GRACE` seconds. Its supervisor starts it again (compose's
  restart policy; `make demo` loops on its workers). The alert is resolved when the
  worker of that name consumes again.

A worker busy on every slot is not stalled (its queue waits for it, rightly), and a
worker whose broker is unreachable is not judged (the connection retries, finite,
decide). The queues are the ones the worker started with: a consumer cancelled behind
its back (`celery control cancel_consumer`) counts as a stall, which is how the
tests prove the watchdog.

Also here: the per-pool `worker_cancel_long_running_tasks_on_connection_loss`.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from celery.signals import task_received, worker_init, worker_ready, worker_shutting_down

logger = logging.getLogger(__name__)

CANARY_TASK = "hub.workers.canary"
REGISTRY_KEY = "hub:workers"
ALERT_KIND = "worker_stalled"
ALERT_SUBJECT = "worker"


def worker_key(hostname: str) -> str:
    return f"hub:worker:{hostname}"


def direct_queue_name(hostname: str) -> str:
    from celery.utils import worker_direct

    return str(worker_direct(hostname).name)


def _redis() -> redis.Redis:
    from django.conf import settings

    return _client(settings.CELERY_BROKER_URL)


@functools.cache
def _client(url: str) -> redis.Redis:
    # redis-py's pool notices a fork and opens new connections in the child.
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)


# --- the pool decides whether a lost connection can cancel running tasks -----------------


def can_terminate_jobs(pool_cls: Any) -> bool:
    """Whether this pool can stop a running task: prefork kills the child; the threads
    and solo pools cannot stop a thread and raise NotImplementedError (BasePool)."""
    from celery import concurrency
    from celery.concurrency.base import BasePool
    from celery.concurrency.prefork import TaskPool as PreforkPool

    cls = concurrency.get_implementation(pool_cls) if isinstance(pool_cls, str) else pool_cls
    # prefork binds terminate_job when its pool starts; others override it or not.
    return issubclass(cls, PreforkPool) or getattr(cls, "terminate_job", None) is not BasePool.terminate_job


@worker_init.connect
def set_cancel_on_connection_loss(sender: Any = None, **kwargs: Any) -> None:
    """True only where the pool can cancel: on a lost broker connection the consumer
    cancels every running late-ack task, and a pool that cannot raised on that path
    (Celery up to 5.6; 5.7 logs it) while the task ran on anyway. Either way the
    step's lease, not the broker, decides whether the step runs again."""
    if sender is None:
        return
    cancel = can_terminate_jobs(sender.pool_cls)
    sender.app.conf.worker_cancel_long_running_tasks_on_connection_loss = cancel
    logger.info("worker: cancel running tasks on a lost broker connection: %s (pool %s)", cancel, sender.pool_cls)


# --- the canary --------------------------------------------------------------------------


def canary_consumed(hostname: str) -> None:
    """The worker's own queue delivered: record it (the canary task calls this)."""
    with _redis().pipeline() as pipe:
        pipe.hset(worker_key(hostname), "canary_consumed", f"{time.time():.3f}")
        pipe.execute()


@dataclass
class CanaryReport:
    sent: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    declared: int = 0


def live_workers(client: redis.Redis, now: float | None = None) -> list[str]:
    """The workers whose watchdog reported within the last few stall periods."""
    from django.conf import settings

    now = time.time() if now is None else now
    horizon = now - max(3 * settings.WORKER_STALL_SECONDS, 60.0)
    client.zremrangebyscore(REGISTRY_KEY, "-inf", horizon)
    members: list[bytes] = client.zrangebyscore(REGISTRY_KEY, horizon, "+inf")  # type: ignore[assignment]
    return [member.decode() for member in members]


def broker_watch() -> CanaryReport:
    """The reaper's broker round: declare every queue again (after Redis restarted
    empty its exchange bindings are gone, and a message routed through an exchange to
    a queue no consumer has declared since is dropped without an error), then send a
    canary to every live worker whose previous canary is not still waiting."""
    from celery import current_app
    from celery.utils import worker_direct

    report = CanaryReport()
    client = _redis()
    workers = live_workers(client)
    queues = [*current_app.amqp.queues.values(), *(worker_direct(hostname) for hostname in workers)]
    with current_app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in queues:
            # Not maybe_declare: its cache remembers declarations Redis forgot.
            queue.bind(channel).declare()
            report.declared += 1
    if not workers:
        return report
    with client.pipeline() as pipe:
        for hostname in workers:
            pipe.llen(direct_queue_name(hostname))
        waiting = pipe.execute()
    for hostname, length in zip(workers, waiting, strict=True):
        if length:
            report.pending.append(hostname)
            continue
        current_app.send_task(CANARY_TASK, args=[hostname], queue=worker_direct(hostname))
        client.hset(worker_key(hostname), "canary_sent", f"{time.time():.3f}")
        report.sent.append(hostname)
    return report


# --- the watchdog ------------------------------------------------------------------------


class Watchdog:
    """One per worker process (its main process, where the consumer runs)."""

    current: Watchdog | None = None

    def __init__(self, *, hostname: str, queues: list[str], concurrency: int) -> None:
        from django.conf import settings

        self.hostname = hostname
        self.queues = queues
        self.concurrency = max(1, concurrency)
        self.stall_seconds = float(settings.WORKER_STALL_SECONDS)
        self.exit_grace = float(settings.WORKER_STALL_EXIT_GRACE)
        self.exit_code = int(settings.WORKER_STALL_EXIT_CODE)
        self.tick = max(0.5, min(5.0, self.stall_seconds / 6))
        self.started_at = time.time()
        self.last_consumed = 0.0
        self.waiting_since: float | None = None
        self._resolved = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-worker-watchdog", daemon=True)

    def start(self) -> None:
        Watchdog.current = self
        self._thread.start()
        logger.info(
            "watchdog: %s watches %s, stalled after %.0fs without consuming while work waits",
            self.hostname,
            ",".join(self.queues),
            self.stall_seconds,
        )

    def stop(self) -> None:
        self._stop.set()

    def consumed(self) -> None:
        self.last_consumed = time.time()

    def _busy(self) -> bool:
        from celery.worker import state

        return len(state.reserved_requests) >= self.concurrency

    def _run(self) -> None:
        client = _redis()
        while not self._stop.wait(self.tick):
            try:
                stalled_for = self.look(client)
            except redis.RedisError as exc:
                # The broker is away: the consumer's reconnection (finite) decides.
                logger.warning("watchdog: cannot read the broker (%s); not judging", exc)
                self.waiting_since = None
                continue
            except Exception:
                logger.exception("watchdog: look failed")
                continue
            if stalled_for is not None:
                self.stalled(stalled_for)
                return

    def look(self, client: redis.Redis) -> float | None:
        """One look: returns how long work has waited unconsumed, once that reaches
        the stall bound."""
        now = time.time()
        with client.pipeline() as pipe:
            for queue in self.queues:
                pipe.llen(queue)
            pipe.zadd(REGISTRY_KEY, {self.hostname: now})
            pipe.hset(
                worker_key(self.hostname),
                mapping={
                    "seen": f"{now:.3f}",
                    "consumed": f"{self.last_consumed:.3f}",
                    "queues": ",".join(self.queues),
                    "pid": os.getpid(),
                },
            )
            pipe.expire(worker_key(self.hostname), int(max(3 * self.stall_seconds, 60)))
            lengths = pipe.execute()[: len(self.queues)]
        if self.last_consumed and not self._resolved:
            self._resolved = True
            self._resolve_alert()
        waiting = any(lengths)
        if not waiting or self._busy():
            self.waiting_since = None
            return None
        if self.waiting_since is None or self.last_consumed >= self.waiting_since:
            self.waiting_since = now
            return None
        waited = now - self.waiting_since
        return waited if waited >= self.stall_seconds else None

    def _resolve_alert(self) -> None:
        from django.db import connection

        from hub.alerts.services import alert_resolve

        try:
            alert_resolve(subject_type=ALERT_SUBJECT, subject_id=self.hostname, kind=ALERT_KIND)
        except Exception:
            logger.exception("watchdog: could not resolve the worker_stalled alert")
        finally:
            connection.close()

    def stalled(self, waited: float) -> None:
        from celery.worker import state
        from django.db import connection

        from hub.alerts.services import alert_raise
        from hub.models import AlertSeverity

        message = (
            f"worker {self.hostname} (pid {os.getpid()} on {socket.gethostname()}) consumed nothing for "
            f"{waited:.0f}s while work waited in {', '.join(self.queues)}; it exits with code {self.exit_code} "
            "for its supervisor to start it again"
        )
        logger.critical("watchdog: %s", message)
        try:
            alert_raise(
                subject_type=ALERT_SUBJECT,
                subject_id=self.hostname,
                kind=ALERT_KIND,
                severity=AlertSeverity.HARD,
                message=message,
            )
        except Exception:
            logger.exception("watchdog: could not open the worker_stalled alert")
        finally:
            connection.close()
        # A warm shutdown first: the event loop raises WorkerShutdown(exit code) at its
        # next turn. A loop that never turns again is ended after the grace.
        state.should_stop = self.exit_code
        time.sleep(self.exit_grace)
        logger.critical("watchdog: %s did not shut down within %.0fs; exiting", self.hostname, self.exit_grace)
        logging.shutdown()
        os._exit(self.exit_code)


@worker_ready.connect
def start_watchdog(sender: Any = None, **kwargs: Any) -> None:
    consumer = sender
    if consumer is None or Watchdog.current is not None:
        return
    queues = sorted({queue.name for queue in consumer.task_consumer.queues} | {direct_queue_name(consumer.hostname)})
    concurrency = int(getattr(consumer.controller, "concurrency", 1) or 1)
    Watchdog(hostname=consumer.hostname, queues=queues, concurrency=concurrency).start()


@task_received.connect
def note_consumption(**kwargs: Any) -> None:
    watchdog = Watchdog.current
    if watchdog is not None:
        watchdog.consumed()


@worker_shutting_down.connect
def stop_watchdog(**kwargs: Any) -> None:
    """A worker shutting down stops consuming on purpose."""
    watchdog = Watchdog.current
    if watchdog is not None:
        watchdog.stop()
