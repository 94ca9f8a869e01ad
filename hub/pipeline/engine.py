"""The step-pipeline engine.

A step runs in three moves: claim it in the database under a lease (a duplicate or
late message finds nothing to claim and does nothing), run its action outside any
transaction while a thread renews the lease, then record the outcome and decide
what comes next in one transaction, enqueueing the next message only after commit.
Every decision is taken with the job row locked, so two workers never advance the
same job at once.

The usual step (claimed from QUEUED in a running job, succeeding, followed by a
pending step) takes one hand-written statement to claim it and one to record it and
queue the next, each atomic on its own: that is what every step of every pipeline
pays. The same locks are taken in the same order. Every other case (a job's first or
last step, a lease to take back, a failure, a retry, a compensation, a stop asked) is
refused by those statements, which then write nothing, and is decided by the full
path, in a transaction with the job and step rows locked and read.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import psycopg
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat, Right
from django.utils import timezone

from hub import logcontext
from hub.audit import audit_record
from hub.pipeline import registry
from hub.pipeline.context import StepContext
from hub.pipeline.models import (
    Job,
    JobStatus,
    Step,
    StepKind,
    StepStatus,
    StopReason,
)
from hub.pipeline.spec import Pipeline, RetryPolicy, StepDeferred, StepSpec
from hub.queue import enqueue_on_commit

logger = logging.getLogger(__name__)

LOG_LIMIT = 64 * 1024
ERROR_LIMIT = 4000
QUICK_ACTION_SECONDS = 1.0


# --- enqueueing ------------------------------------------------------------------


RUN_STEP = "hub.pipeline.run_step"


def enqueue_step(step: Step, *, queue: str, countdown: float | None = None) -> None:
    """Send the step's message once the surrounding transaction commits."""
    enqueue_on_commit(RUN_STEP, step.pk, queue=queue, countdown=countdown)


def _queue_step(step: Step, job: Job, now: datetime) -> None:
    step.status = StepStatus.QUEUED
    step.enqueued_at = now
    step.next_run_at = None
    step.save(update_fields=["status", "enqueued_at", "next_run_at", "updated_at"])
    enqueue_step(step, queue=job.queue)


def _schedule_retry(step: Step, job: Job, now: datetime, delay: float) -> None:
    step.status = StepStatus.RETRY_WAIT
    step.next_run_at = now + timedelta(seconds=delay)
    step.lease_token = None
    step.lease_expires_at = None
    # Short waits ride on a broker countdown; longer ones would outlive the
    # visibility timeout, so only the row remembers them and the reaper wakes them.
    short = delay <= settings.PIPELINE_MAX_BROKER_COUNTDOWN
    step.enqueued_at = now if short else None
    step.save(update_fields=["status", "next_run_at", "lease_token", "lease_expires_at", "enqueued_at", "updated_at"])
    if short:
        enqueue_step(step, queue=job.queue, countdown=delay)


# --- job status moves -------------------------------------------------------------


def set_job_status(job: Job, new_status: str, *, actor: str = "system", reason: str = "") -> None:
    old = job.status
    if old == new_status:
        return
    job.status = new_status
    fields = ["status", "updated_at"]
    now = timezone.now()
    if new_status == JobStatus.RUNNING and job.started_at is None:
        job.started_at = now
        fields.append("started_at")
    if new_status in (JobStatus.SUCCEEDED, JobStatus.ROLLED_BACK, JobStatus.CANCELLED, JobStatus.FAILED):
        job.finished_at = now
        fields.append("finished_at")
    job.save(update_fields=fields)
    audit_record(
        actor=actor, action="job.status", object_type="job", object_id=job.pk, old=old, new=new_status, reason=reason
    )
    if job.is_terminal:
        pipeline = registry.get(job.pipeline)
        if pipeline.on_finish is not None:
            pipeline.on_finish(job)


# --- claiming ---------------------------------------------------------------------


@dataclass
class Claim:
    step_id: int
    job_id: int
    token: uuid.UUID
    pipeline: Pipeline
    spec: StepSpec
    kind: str
    context: StepContext
    timeout: float
    # The step row as the claim left it: the outcome is recorded from these, without
    # reading the row again (the lease token guards that nobody else changed them).
    attempts: int
    started_at: datetime | None
    attempt_started_at: datetime


# Values the hand-written statements write to JSON columns are adapted as the ORM does.
_STEP_RESULT_FIELD = Step._meta.get_field("result")


def _sql(template: str) -> str:
    """Hand-written SQL for the statements every step runs (the ORM would spend more
    compiling them than Postgres running them), with the tables' names taken from the
    models. The statuses in them are the models' values, which DESIGN.md fixes."""
    return template.format(job=Job._meta.db_table, step=Step._meta.db_table)


# The usual claim in one statement: the job row locked first (as everywhere in the
# engine), then the step moved to RUNNING if it is QUEUED, or RETRY_WAIT and due, and
# its job is running (or compensating, for a compensation step). Anything else (the
# job's first step, a lease to take back, a duplicate delivery) finds nothing here and
# goes through `_claim_step_locked`, which decides with both rows in hand.
_CLAIM_SQL = _sql(
    """
    WITH locked_job AS MATERIALIZED (
        SELECT id, status, pipeline, subject_type, subject_id, context
        FROM {job}
        WHERE id = (SELECT job_id FROM {step} WHERE id = %(step_id)s)
        FOR UPDATE
    )
    UPDATE {step} AS s
    SET status = 'RUNNING', attempts = s.attempts + 1, lease_token = %(token)s,
        lease_expires_at = %(lease_expires_at)s, attempt_started_at = %(now)s,
        started_at = COALESCE(s.started_at, %(now)s), updated_at = %(now)s
    FROM locked_job AS j
    WHERE s.id = %(step_id)s AND s.job_id = j.id
      AND (j.status = 'RUNNING' OR (j.status = 'COMPENSATING' AND s.kind = 'COMPENSATION'))
      AND (s.status = 'QUEUED'
           OR (s.status = 'RETRY_WAIT' AND (s.next_run_at IS NULL OR s.next_run_at <= %(due_by)s)))
    RETURNING s.job_id, s.name, s.kind, s.attempts, s.started_at,
        (SELECT c.name FROM {step} AS c WHERE c.id = s.compensates_id),
        j.pipeline, j.subject_type, j.subject_id, j.context
    """
)


_PREPARE_ONLY_ON_REQUEST = 2**62


def _execute_per_step(sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    """Run one of the statements every step runs, and return its row. Postgres spends
    more time planning them than running them (0.5-0.7 ms against 0.1-0.2 ms here),
    so they are prepared, once per connection, with server-side binding. Everything
    else in the Hub keeps Django's client-side binding without prepared statements;
    PIPELINE_PREPARED_STATEMENTS=false turns them off here too (behind a pooler in
    transaction mode, which cannot keep them)."""
    with connection.cursor() as wrapper:  # Django's connection checks and error mapping
        if not settings.PIPELINE_PREPARED_STATEMENTS:
            wrapper.execute(sql, params)
            return cast(tuple[Any, ...] | None, wrapper.fetchone())
        raw = connection.connection
        if raw.prepare_threshold is None:
            # Django turns psycopg's preparing off (None), which refuses even a query that
            # asks; a threshold no query reaches prepares only the ones that ask.
            raw.prepare_threshold = _PREPARE_ONLY_ON_REQUEST
        cursor = psycopg.Cursor(raw)
        # What CaptureQueriesContext and DEBUG see of a Django cursor's queries.
        logged = wrapper.debug_sql(sql, params) if connection.queries_logged else nullcontext()
        with connection.wrap_database_errors, logged:
            cursor.execute(sql, params, prepare=True)
            return cursor.fetchone()


def _claim(
    *,
    pipeline: Pipeline,
    step_id: int,
    job_id: int,
    name: str,
    kind: str,
    compensates: str | None,
    attempts: int,
    started_at: datetime | None,
    now: datetime,
    token: uuid.UUID,
    job: Job,
) -> Claim:
    spec = pipeline.step(compensates) if compensates is not None else pipeline.step(name)
    ctx = StepContext(
        job_id=job_id,
        step_id=step_id,
        step_name=name,
        pipeline=job.pipeline,
        attempt=attempts,
        subject_type=job.subject_type,
        subject_id=job.subject_id,
        context=dict(job.context),
        compensating=compensates,
    )
    return Claim(
        step_id=step_id,
        job_id=job_id,
        token=token,
        pipeline=pipeline,
        spec=spec,
        kind=kind,
        context=ctx,
        timeout=min(spec.timeout, settings.PIPELINE_MAX_STEP_TIMEOUT),
        attempts=attempts,
        started_at=started_at,
        attempt_started_at=now,
    )


def claim_step(step_id: int) -> Claim | None:
    """Take the step under a lease, or None when this delivery must not run it."""
    now = timezone.now()
    token = uuid.uuid4()
    params: dict[str, Any] = {
        "step_id": step_id,
        "token": token,
        "now": now,
        "lease_expires_at": now + timedelta(seconds=settings.PIPELINE_LEASE_SECONDS),
        "due_by": now + timedelta(seconds=1),
    }
    row = _execute_per_step(_CLAIM_SQL, params)
    if row is None:
        return _claim_step_locked(step_id, now)
    job_id, name, kind, attempts, started_at, compensates, pipeline_name, subject_type, subject_id, context = row
    job = Job(
        pk=job_id,
        pipeline=pipeline_name,
        subject_type=subject_type,
        subject_id=subject_id,
        # Django has psycopg return jsonb as text, for JSONField to decode.
        context=json.loads(context),
    )
    return _claim(
        pipeline=registry.get(pipeline_name),
        step_id=step_id,
        job_id=job_id,
        name=name,
        kind=kind,
        compensates=compensates,
        attempts=attempts,
        started_at=started_at,
        now=now,
        token=token,
        job=job,
    )


def _claim_step_locked(step_id: int, now: datetime) -> Claim | None:
    job_id = Step.objects.filter(pk=step_id).values_list("job_id", flat=True).first()
    if job_id is None:
        return None
    with transaction.atomic():
        # Locks are always taken job first, then step, everywhere in the engine.
        job = Job.objects.select_for_update().get(pk=job_id)
        step = Step.objects.select_for_update(of=("self",)).select_related("compensates").get(pk=step_id)
        if job.status not in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.COMPENSATING):
            return None
        if step.kind == StepKind.ACTION and job.status == JobStatus.COMPENSATING:
            return None
        if step.status == StepStatus.RUNNING:
            if step.lease_expires_at and step.lease_expires_at > now:
                return None  # another worker holds it: a duplicate delivery
            # The previous attempt's worker died; this delivery is its replacement.
            if not _take_back_lost_attempt(step, job, now):
                return None
        elif step.status == StepStatus.RETRY_WAIT:
            if step.next_run_at and step.next_run_at > now + timedelta(seconds=1):
                return None
        elif step.status != StepStatus.QUEUED:
            return None

        pipeline = registry.get(job.pipeline)
        token = uuid.uuid4()
        step.status = StepStatus.RUNNING
        step.attempts += 1
        step.lease_token = token
        step.lease_expires_at = now + timedelta(seconds=settings.PIPELINE_LEASE_SECONDS)
        step.attempt_started_at = now
        if step.started_at is None:
            step.started_at = now
        step.save(
            update_fields=[
                "status",
                "attempts",
                "lease_token",
                "lease_expires_at",
                "attempt_started_at",
                "started_at",
                "updated_at",
            ]
        )
        if job.status == JobStatus.PENDING:
            set_job_status(job, JobStatus.RUNNING)
        return _claim(
            pipeline=pipeline,
            step_id=step.pk,
            job_id=job.pk,
            name=step.name,
            kind=step.kind,
            compensates=step.compensates.name if step.compensates else None,
            attempts=step.attempts,
            started_at=step.started_at,
            now=now,
            token=token,
            job=job,
        )


# --- running ----------------------------------------------------------------------


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
    return bool(
        Step.objects.filter(pk=claim.step_id, lease_token=claim.token, status=StepStatus.RUNNING).update(**updates)
    )


@dataclass
class Outcome:
    kind: str  # "succeeded", "failed", "deferred"
    result: dict[str, Any] | None = None
    error: str = ""
    retryable: bool = False
    delay: float = 0.0
    hold_deadline: bool = False


def run_action(claim: Claim) -> Outcome:
    spec = claim.spec
    fn = spec.compensate if claim.kind == StepKind.COMPENSATION else spec.action
    policy = _policy_for(claim)
    assert fn is not None
    try:
        result = fn(claim.context)
    except StepDeferred as deferred:
        claim.context.log(f"deferred: {deferred}")
        return Outcome(kind="deferred", error=str(deferred), delay=deferred.delay, hold_deadline=deferred.hold_deadline)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the step
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        claim.context.log(f"attempt {claim.context.attempt} failed: {detail}")
        return Outcome(kind="failed", error=detail, retryable=policy.is_retryable(exc))
    if result is not None and not isinstance(result, dict):
        return Outcome(kind="failed", error=f"step returned {type(result).__name__}, expected a dict or None")
    return Outcome(kind="succeeded", result=result or {})


def _policy_for(claim: Claim) -> RetryPolicy:
    return claim.spec.compensation_retry if claim.kind == StepKind.COMPENSATION else claim.spec.retry


def execute_step(step_id: int) -> None:
    """Claim, run and record one step. Safe to call any number of times for the same
    step: only a delivery that wins the claim runs the action."""
    claim = claim_step(step_id)
    if claim is None:
        return
    subject = logcontext.subject_ids(claim.context.subject_type, claim.context.subject_id)
    with logcontext.bind(job_id=claim.job_id, step_id=claim.step_id, **subject):
        keeper = lease_keeper()
        watch = keeper.watch(claim)
        started = time.monotonic()
        try:
            outcome = run_action(claim)
        finally:
            keeper.unwatch(watch)
        # After a long action the connection may have been dropped or grown old; after
        # a quick one that did not fail on it, it was used a moment ago (by the claim)
        # and checking it would cost a round trip for nothing.
        if time.monotonic() - started > QUICK_ACTION_SECONDS or connection.errors_occurred:
            close_old_connections()
        record_outcome(claim, outcome)
        logger.info("%s step %s of %s: %s", claim.kind.lower(), claim.spec.name, claim.pipeline.name, outcome.kind)


# --- recording and advancing ------------------------------------------------------


def _history_entry(step: Step, now: datetime, outcome: str, **extra: Any) -> dict[str, Any]:
    started = step.attempt_started_at
    entry: dict[str, Any] = {
        "attempt": step.attempts,
        "started_at": started.isoformat() if started else None,
        "finished_at": now.isoformat(),
        "outcome": outcome,
    }
    entry.update(extra)
    return entry


# The usual success in one statement, atomic on its own: the job locked first (running,
# no stop asked), then its next pending action step (checked PENDING once locked), then
# the step, if the claim is still ours: the step is recorded SUCCEEDED, its result
# merged into the job's context and the next step QUEUED, all three or nothing. The
# last step, a job not in that state or a lost claim find nothing written here, and
# `record_outcome` decides in a transaction with the rows in hand.
_RECORD_SUCCESS_SQL = _sql(
    """
    WITH locked_job AS MATERIALIZED (
        SELECT id, queue FROM {job}
        WHERE id = %(job_id)s AND status = 'RUNNING' AND stop_requested_at IS NULL
        FOR UPDATE
    ), next_step AS MATERIALIZED (
        SELECT p.id FROM {step} AS p, locked_job AS j
        WHERE p.job_id = j.id AND p.kind = 'ACTION' AND p.status = 'PENDING'
        ORDER BY p.position LIMIT 1
        FOR UPDATE OF p
    ), done AS (
        UPDATE {step} AS s
        SET status = 'SUCCEEDED', error = '', result = %(result)s, finished_at = %(now)s,
            duration_seconds = %(duration)s, history = s.history || %(history)s,
            log = RIGHT(s.log || %(log)s, %(log_limit)s), lease_token = NULL, lease_expires_at = NULL,
            updated_at = %(now)s
        FROM locked_job AS j
        WHERE s.id = %(step_id)s AND s.job_id = j.id AND s.status = 'RUNNING' AND s.lease_token = %(token)s
          AND EXISTS (SELECT 1 FROM next_step)
        RETURNING s.id
    ), merged AS (
        UPDATE {job} AS j SET context = j.context || %(result)s, updated_at = %(now)s
        WHERE j.id = %(job_id)s AND %(merge)s AND EXISTS (SELECT 1 FROM done)
        RETURNING j.id
    ), queued AS (
        UPDATE {step} AS n SET status = 'QUEUED', enqueued_at = %(now)s, next_run_at = NULL, updated_at = %(now)s
        FROM next_step
        WHERE n.id = next_step.id AND EXISTS (SELECT 1 FROM done)
        RETURNING n.id
    )
    SELECT (SELECT id FROM done), (SELECT id FROM queued), (SELECT queue FROM locked_job),
        (SELECT count(*) FROM merged)
    """
)


def _record_success(claim: Claim, outcome: Outcome, now: datetime) -> bool:
    """The usual success of an action step, in one statement that commits by itself.
    False when it did not apply (and wrote nothing)."""
    elapsed = (now - claim.attempt_started_at).total_seconds()
    entry = {
        "attempt": claim.attempts,
        "started_at": claim.attempt_started_at.isoformat(),
        "finished_at": now.isoformat(),
        "outcome": "succeeded",
        "seconds": elapsed,
    }
    params: dict[str, Any] = {
        "job_id": claim.job_id,
        "step_id": claim.step_id,
        "token": claim.token,
        "now": now,
        "result": _STEP_RESULT_FIELD.get_db_prep_save(outcome.result or {}, connection),
        "merge": bool(outcome.result),
        "history": _STEP_RESULT_FIELD.get_db_prep_save([entry], connection),
        "duration": (now - claim.started_at).total_seconds() if claim.started_at else elapsed,
        "log": claim.context.take_log(),
        "log_limit": LOG_LIMIT,
    }
    row = _execute_per_step(_RECORD_SUCCESS_SQL, params)
    assert row is not None, "the statement always answers one row"
    done, queued, queue, _merged = row
    if done is None:
        # Nothing written: the log lines go back for the full path to record.
        if params["log"]:
            claim.context.put_back_log(params["log"])
        return False
    assert queued is not None, "the statement queues the next step whenever it records the step"
    enqueue_step(Step(pk=queued), queue=queue)
    return True


def record_outcome(claim: Claim, outcome: Outcome) -> None:
    now = timezone.now()
    if outcome.kind == "succeeded" and claim.kind == StepKind.ACTION and _record_success(claim, outcome, now):
        return
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=claim.job_id)
        step = Step.objects.select_for_update().get(pk=claim.step_id)
        if step.status != StepStatus.RUNNING or step.lease_token != claim.token:
            logger.warning("step %s: outcome of a lost claim discarded (%s)", step.pk, outcome.kind)
            return
        step.log = (step.log + claim.context.take_log())[-LOG_LIMIT:]
        elapsed = (now - step.attempt_started_at).total_seconds() if step.attempt_started_at else None
        step.lease_token = None
        step.lease_expires_at = None
        fields = ["log", "lease_token", "lease_expires_at", "history", "status", "error", "updated_at"]
        policy = _policy_for(claim)

        if outcome.kind == "succeeded":
            step.status = StepStatus.SUCCEEDED
            step.error = ""
            step.result = outcome.result or {}
            step.finished_at = now
            step.duration_seconds = (now - step.started_at).total_seconds() if step.started_at else elapsed
            step.history = [*step.history, _history_entry(step, now, "succeeded", seconds=elapsed)]
            step.save(update_fields=[*fields, "result", "finished_at", "duration_seconds"])
            if outcome.result:
                job.context = {**job.context, **outcome.result}
                job.save(update_fields=["context", "updated_at"])
            if step.kind == StepKind.COMPENSATION and step.compensates_id:
                # A failed step stays FAILED: its compensation only cleaned up after it.
                Step.objects.filter(pk=step.compensates_id, status=StepStatus.SUCCEEDED).update(
                    status=StepStatus.COMPENSATED, updated_at=now
                )
            advance_job(job, now)
            return

        if outcome.kind == "deferred":
            # Waiting is not trying: the attempt is given back.
            step.attempts -= 1
            step.error = outcome.error[:ERROR_LIMIT]
            held = {"held_deadline": True} if outcome.hold_deadline else {}
            previous = step.history[-1] if step.history else None
            step.history = [
                *step.history,
                _history_entry(step, now, "deferred", reason=outcome.error, wait=outcome.delay, **held),
            ]
            step.save(update_fields=[*fields, "attempts"])
            if job.stop_requested_at:
                _finish_step_failed(step, job, now, outcome.error, already_saved=True)
                return
            if outcome.hold_deadline and job.deadline_at is not None:
                _hold_deadline(job, step, previous, outcome.delay)
            _schedule_retry(step, job, now, outcome.delay)
            return

        step.error = outcome.error[:ERROR_LIMIT]
        if outcome.retryable and step.attempts < step.max_attempts and not job.stop_requested_at:
            delay = policy.delay_after(step.attempts)
            step.history = [*step.history, _history_entry(step, now, "failed", error=step.error, retry_in=delay)]
            step.save(update_fields=fields)
            _schedule_retry(step, job, now, delay)
            return
        step.history = [*step.history, _history_entry(step, now, "failed", error=step.error, final=True)]
        step.save(update_fields=fields)
        _finish_step_failed(step, job, now, step.error, already_saved=True)


def _hold_deadline(job: Job, step: Step, previous: dict[str, Any] | None, delay: float) -> None:
    """A step waiting on the outside world keeps the job's deadline off its wait: the
    deadline moves on by the wait ahead, and by however much the wait before this
    attempt overran the one announced then (a retry the reaper woke late)."""
    extra = delay
    if previous and previous.get("held_deadline") and step.attempt_started_at is not None:
        waited = (step.attempt_started_at - datetime.fromisoformat(previous["finished_at"])).total_seconds()
        extra += max(0.0, waited - float(previous.get("wait") or 0.0))
    assert job.deadline_at is not None
    job.deadline_at += timedelta(seconds=extra)
    job.save(update_fields=["deadline_at", "updated_at"])


def _finish_step_failed(step: Step, job: Job, now: datetime, error: str, *, already_saved: bool = False) -> None:
    """The step has failed for good: for an action, the job turns to compensation;
    for a compensation, the job will end FAILED and the next compensation runs."""
    step.status = StepStatus.FAILED
    step.error = error[:ERROR_LIMIT]
    step.finished_at = now
    step.duration_seconds = (now - step.started_at).total_seconds() if step.started_at else None
    step.lease_token = None
    step.lease_expires_at = None
    step.save(
        update_fields=[
            "status",
            "error",
            "finished_at",
            "duration_seconds",
            "lease_token",
            "lease_expires_at",
            "updated_at",
        ]
    )
    if step.kind == StepKind.COMPENSATION:
        if not job.compensation_failed:
            job.compensation_failed = True
            job.save(update_fields=["compensation_failed", "updated_at"])
        advance_job(job, now)
        return
    job.error = f"step {step.name} failed: {error}"[:ERROR_LIMIT]
    fields = ["error", "updated_at"]
    if not job.stop_reason:
        job.stop_reason = StopReason.FAILURE
        fields.append("stop_reason")
    job.save(update_fields=fields)
    begin_compensation(job, now)


def advance_job(job: Job, now: datetime) -> None:
    """With the job locked: queue the next step, or end the job."""
    if job.status == JobStatus.COMPENSATING:
        next_comp = job.steps.filter(kind=StepKind.COMPENSATION, status=StepStatus.PENDING).order_by("position").first()
        if next_comp is not None:
            _queue_step(next_comp, job, now)
            return
        _finish_compensation(job)
        return
    if job.stop_requested_at:
        begin_compensation(job, now)
        return
    next_step = job.steps.filter(kind=StepKind.ACTION, status=StepStatus.PENDING).order_by("position").first()
    if next_step is not None:
        _queue_step(next_step, job, now)
        return
    set_job_status(job, JobStatus.SUCCEEDED)


def begin_compensation(job: Job, now: datetime) -> None:
    """Undo the succeeded steps (and a failed one that asks for it) in reverse order,
    each once: one compensation step row per step to undo, appended to the job and run
    by the same engine."""
    if job.status == JobStatus.COMPENSATING:
        return
    # Steps not yet run will not run.
    job.steps.filter(
        kind=StepKind.ACTION, status__in=[StepStatus.PENDING, StepStatus.QUEUED, StepStatus.RETRY_WAIT]
    ).update(status=StepStatus.SKIPPED, lease_token=None, updated_at=now)
    pipeline = registry.get(job.pipeline)
    done = job.steps.filter(kind=StepKind.ACTION, status__in=[StepStatus.SUCCEEDED, StepStatus.FAILED])
    to_undo = [
        step
        for step in done.order_by("-position")
        if pipeline.step(step.name).compensate is not None
        and (step.status == StepStatus.SUCCEEDED or pipeline.step(step.name).compensate_if_failed)
    ]
    last = job.steps.order_by("-position").values_list("position", flat=True).first() or 0
    Step.objects.bulk_create(
        [
            Step(
                job=job,
                position=last + offset,
                name=f"undo {step.name}",
                kind=StepKind.COMPENSATION,
                compensates=step,
                max_attempts=pipeline.step(step.name).compensation_retry.max_attempts,
            )
            for offset, step in enumerate(to_undo, start=1)
        ]
    )
    set_job_status(job, JobStatus.COMPENSATING, reason=job.error or job.stop_reason)
    advance_job(job, now)


def _finish_compensation(job: Job) -> None:
    if job.compensation_failed:
        set_job_status(job, JobStatus.FAILED, reason="a compensation failed; resources may be left behind")
    elif job.stop_reason == StopReason.CANCEL:
        set_job_status(job, JobStatus.CANCELLED)
    else:
        set_job_status(job, JobStatus.ROLLED_BACK, reason=job.error)


def _take_back_lost_attempt(step: Step, job: Job, now: datetime) -> bool:
    """The step's lease ran out: its worker died or hung. Count the attempt as lost.
    True when the step may run again; past its delivery limit it fails for good, so
    a message that kills its worker every time is not redelivered forever."""
    step.history = [*step.history, _history_entry(step, now, "lost", error="worker lost: lease expired")]
    step.error = f"attempt {step.attempts}: worker lost (lease expired)"
    step.save(update_fields=["history", "error", "updated_at"])
    if step.attempts >= step.max_attempts or job.stop_requested_at:
        _finish_step_failed(step, job, now, f"gave up after {step.attempts} deliveries: the worker was lost each time")
        return False
    return True


def requeue_lost_step(step_id: int, now: datetime) -> bool:
    """Reaper: take back one step whose lease expired."""
    job_id = Step.objects.filter(pk=step_id).values_list("job_id", flat=True).first()
    if job_id is None:
        return False
    with transaction.atomic():
        job = Job.objects.select_for_update(skip_locked=True).filter(pk=job_id).first()
        if job is None or job.is_terminal:
            return False
        step = Step.objects.select_for_update().get(pk=step_id)
        if step.status != StepStatus.RUNNING or not step.lease_expires_at or step.lease_expires_at >= now:
            return False
        if _take_back_lost_attempt(step, job, now):
            step.lease_token = None
            step.lease_expires_at = None
            step.save(update_fields=["lease_token", "lease_expires_at", "updated_at"])
            _queue_step(step, job, now)
        return True


def step_wake(*, job_id: int, step_name: str) -> bool:
    """Run a waiting step now (staff did what it was waiting for)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.status not in (JobStatus.PENDING, JobStatus.RUNNING) or job.stop_requested_at:
            return False
        step = job.steps.filter(name=step_name, kind=StepKind.ACTION, status=StepStatus.RETRY_WAIT).first()
        if step is None:
            return False
        _queue_step(step, job, timezone.now())
        return True
