"""Keeping the claims of a worker process's running steps alive, and their log lines
flowing into the rows, from one thread per process."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import F, Value
from django.db.models.functions import Concat, Right
from django.utils import timezone

from hub import events
from hub.pipeline.claim import Claim
from hub.pipeline.models import (
    Step,
    StepStatus,
)
from hub.pipeline.transitions import LOG_LIMIT

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Watch:
    claim: Claim
    started: float
    due: float
    # Held while the claim is renewed: `unwatch` waits on it, so no renewal of a
    # claim is still under way (holding log lines) once its outcome is recorded.
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False


class LeaseKeeper:
    """Keeps the claims of the steps running in this process alive and flushes their
    log lines, so a dead worker is noticed within a lease, and the admin sees the log
    as it grows. It stops renewing a claim once its step's timeout has passed: the
    reaper takes over.

    One thread per worker process does this for every running step, started the first
    time a step runs: a step that ends before its first renewal is due (most do) costs
    no thread and no statement. Between steps the thread holds no database connection."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._cond = threading.Condition()
        self._watched: set[_Watch] = set()
        # When the thread will look again; None while it waits for a first claim.
        self._wake_at: float | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def interval() -> float:
        return max(0.2, settings.PIPELINE_LEASE_SECONDS / 3)

    def watch(self, claim: Claim) -> _Watch:
        now = time.monotonic()
        watch = _Watch(claim=claim, started=now, due=now + self.interval())
        with self._cond:
            self._watched.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True, name="pipeline-lease-keeper")
                self._thread.start()
            elif self._wake_at is None or watch.due < self._wake_at:
                self._cond.notify()
        return watch

    def unwatch(self, watch: _Watch) -> None:
        with self._cond:
            self._watched.discard(watch)
        with watch.lock:
            watch.done = True

    def _run(self) -> None:
        connected = False
        while True:
            with self._cond:
                now = time.monotonic()
                due = [watch for watch in self._watched if watch.due <= now]
                if not due:
                    self._wake_at = min((watch.due for watch in self._watched), default=None)
                    if self._wake_at is not None or not connected:
                        self._cond.wait(None if self._wake_at is None else self._wake_at - now)
                        continue
                for watch in due:
                    watch.due = now + self.interval()
            if not due:
                # Nothing to renew for now: the connection is not kept idle.
                try:
                    connection.close()
                except Exception:
                    logger.exception("the lease keeper could not close its connection")
                connected = False
                continue
            connected = True
            for watch in due:
                self._renew(watch)

    def _renew(self, watch: _Watch) -> None:
        claim = watch.claim
        with watch.lock:
            if watch.done:
                return
            try:
                if time.monotonic() - watch.started > claim.timeout:
                    claim.context.log(f"step timed out after {claim.timeout:.0f}s; lease left to expire")
                    flush_log(claim, renew=False)
                    self._forget(watch)
                    return
                if not flush_log(claim, renew=True):
                    claim.context.lease_lost.set()
                    self._forget(watch)
            except Exception:
                logger.exception("lease renewal failed for step %s", claim.step_id)
                # A broken connection is opened afresh for the next renewal.
                connection.close()

    def _forget(self, watch: _Watch) -> None:
        with self._cond:
            self._watched.discard(watch)


_lease_keeper: LeaseKeeper | None = None


_lease_keeper_lock = threading.Lock()


def lease_keeper() -> LeaseKeeper:
    """This process's keeper (a forked worker child makes its own: threads do not
    survive a fork)."""
    global _lease_keeper
    keeper = _lease_keeper
    if keeper is not None and keeper.pid == os.getpid():
        return keeper
    with _lease_keeper_lock:
        if _lease_keeper is None or _lease_keeper.pid != os.getpid():
            _lease_keeper = LeaseKeeper()
        return _lease_keeper


def flush_log(claim: Claim, *, renew: bool) -> bool:
    """Append pending log lines and, optionally, extend the lease. False when the
    claim is no longer ours (the reaper took the step back)."""
    updates: dict[str, Any] = {"updated_at": timezone.now()}
    chunk = claim.context.take_log()
    if chunk:
        updates["log"] = Right(Concat(F("log"), Value(chunk)), LOG_LIMIT)
    if renew:
        updates["lease_expires_at"] = timezone.now() + timedelta(seconds=settings.PIPELINE_LEASE_SECONDS)
    ours = bool(
        Step.objects.filter(pk=claim.step_id, lease_token=claim.token, status=StepStatus.RUNNING).update(**updates)
    )
    if ours and chunk:
        # The step's log grows while it runs: the admin's timeline shows the new lines live.
        events.publish(
            "step.log",
            {"job": claim.job_id, "step": claim.step_id, "name": claim.context.step_name, "lines": chunk[-4000:]},
            scopes=events.subject_scopes(claim.context.subject_type, claim.context.subject_id),
        )
    return ours
