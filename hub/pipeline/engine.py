"""The step-pipeline engine.

A step runs in three moves: claim it in the database under a lease (a duplicate or
late message finds nothing to claim and does nothing), run its action outside any
transaction while a thread renews the lease, then record the outcome and decide what
comes next in one transaction, enqueueing the next message only after commit. Every
decision is taken with the job row locked, so two workers never advance the same job
at once.

The usual step (in a running job, succeeding, followed by a pending step) is recorded
by one hand-written statement, atomic on its own, that also claims the next step under
a fresh lease (DESIGN.md: claim-next-in-record): the worker runs that step at once,
with no message and no claim of its own, for up to PIPELINE_RUN_ON_SECONDS per task
and never once its worker is shutting down; past that the statement queues the next
step instead and its message goes to the broker, whose delivery claims it with one
more statement. A worker that dies with a step so claimed leaves it RUNNING with a
lease that runs out, as any step it was running, and the reaper takes it back. The
same locks are taken in the same order. Every other case (a job's first or last
step, a lease to take back, a failure, a retry, a compensation, a stop asked) is
refused by those statements, which then write nothing, and is decided by the full
path, in a transaction with the job and step rows locked and read."""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from hub import logcontext
from hub.pipeline.claim import (
    STEP_RESULT_FIELD,
    Claim,
    claim_from_row,
    claim_step,
    execute_per_step,
    per_step_sql,
    policy_for,
)
from hub.pipeline.lease import lease_keeper
from hub.pipeline.models import (
    Job,
    Step,
    StepKind,
    StepStatus,
)
from hub.pipeline.spec import StepDeferred
from hub.pipeline.stopping import worker_stopping
from hub.pipeline.transitions import (
    ERROR_LIMIT,
    LOG_LIMIT,
    advance_job,
    enqueue_step,
    finish_step_failed,
    history_entry,
    hold_deadline,
    last_attempt,
    schedule_retry,
    step_changed,
    woken_during_attempt,
)

logger = logging.getLogger(__name__)


QUICK_ACTION_SECONDS = 1.0


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
    policy = policy_for(claim)
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


def execute_step(step_id: int) -> None:
    """Claim, run and record one step, then run the steps its record claimed after it,
    for up to PIPELINE_RUN_ON_SECONDS. Safe to call any number of times for the same
    step: only a delivery that wins the claim runs the action."""
    claim = claim_step(step_id)
    began = time.monotonic()
    while claim is not None:
        claim = _run_claimed(claim, began=began)


def _run_claimed(claim: Claim, *, began: float) -> Claim | None:
    """Run one claimed step and record it; the next step's claim when the record took one."""
    _publish(claim, StepStatus.RUNNING)
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
        # Decided once the action ended: a shutdown asked meanwhile hands the next step on.
        run_on = time.monotonic() - began < settings.PIPELINE_RUN_ON_SECONDS and not worker_stopping()
        next_claim = record_outcome(claim, outcome, claim_next=run_on)
        if outcome.kind == "succeeded":
            # A failure or a wait is published where it is decided (the retry, the failure).
            _publish(claim, StepStatus.SUCCEEDED)
        logger.info("%s step %s of %s: %s", claim.kind.lower(), claim.spec.name, claim.pipeline.name, outcome.kind)
    return next_claim


def _publish(claim: Claim, status: str) -> None:
    step_changed(
        job_id=claim.job_id,
        step_id=claim.step_id,
        name=claim.context.step_name,
        status=status,
        subject_type=claim.context.subject_type,
        subject_id=claim.context.subject_id,
        kind=claim.kind,
    )


# The usual success in one statement, atomic on its own: the job locked first (running,
# no stop asked), then its next pending action step (checked PENDING once locked), then
# the step, if the claim is still ours: the step is recorded SUCCEEDED, its result
# merged into the job's context and the next step either claimed for this worker
# (RUNNING under a fresh lease, as `claim_step` would have left it: the worker runs it
# at once, with no message and no claim of its own) or QUEUED for the broker; all of
# it or nothing. The last step, a job not in that state or a lost claim find nothing
# written here, and `record_outcome` decides in a transaction with the rows in hand.
_RECORD_SUCCESS_SQL = per_step_sql(
    """
    WITH locked_job AS MATERIALIZED (
        SELECT id, queue, context, pipeline, subject_type, subject_id FROM {job}
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
        UPDATE {step} AS n
        SET status = CASE WHEN %(claim_next)s THEN 'RUNNING' ELSE 'QUEUED' END,
            attempts = n.attempts + CASE WHEN %(claim_next)s THEN 1 ELSE 0 END,
            lease_token = CASE WHEN %(claim_next)s THEN %(next_token)s::uuid END,
            lease_expires_at = CASE WHEN %(claim_next)s THEN %(next_lease_expires_at)s::timestamptz END,
            attempt_started_at = CASE WHEN %(claim_next)s THEN %(now)s ELSE n.attempt_started_at END,
            started_at = CASE WHEN %(claim_next)s THEN COALESCE(n.started_at, %(now)s) ELSE n.started_at END,
            enqueued_at = %(now)s, next_run_at = NULL, updated_at = %(now)s
        FROM next_step
        WHERE n.id = next_step.id AND EXISTS (SELECT 1 FROM done)
        RETURNING n.id, n.name, n.attempts, n.started_at
    )
    SELECT (SELECT id FROM done), q.id, j.queue, (SELECT count(*) FROM merged),
        q.name, q.attempts, q.started_at, j.context || %(result)s, j.pipeline, j.subject_type, j.subject_id
    FROM (SELECT 1) AS one
    LEFT JOIN locked_job AS j ON TRUE
    LEFT JOIN queued AS q ON TRUE
    """
)


def _record_success(claim: Claim, outcome: Outcome, now: datetime, *, claim_next: bool) -> Claim | bool:
    """The usual success of an action step, in one statement that commits by itself.
    False when it did not apply (and wrote nothing); when it did, the next step's claim
    if `claim_next` asked for one, else True (the next step was queued)."""
    elapsed = (now - claim.attempt_started_at).total_seconds()
    entry = {
        "attempt": claim.attempts,
        "started_at": claim.attempt_started_at.isoformat(),
        "finished_at": now.isoformat(),
        "outcome": "succeeded",
        "seconds": elapsed,
    }
    next_token = uuid.uuid4()
    params: dict[str, Any] = {
        "job_id": claim.job_id,
        "step_id": claim.step_id,
        "token": claim.token,
        "now": now,
        "result": STEP_RESULT_FIELD.get_db_prep_save(outcome.result or {}, connection),
        "merge": bool(outcome.result),
        "history": STEP_RESULT_FIELD.get_db_prep_save([entry], connection),
        "duration": (now - claim.started_at).total_seconds() if claim.started_at else elapsed,
        "log": claim.context.take_log(),
        "log_limit": LOG_LIMIT,
        "claim_next": claim_next,
        "next_token": next_token,
        "next_lease_expires_at": now + timedelta(seconds=settings.PIPELINE_LEASE_SECONDS),
    }
    row = execute_per_step(_RECORD_SUCCESS_SQL, params)
    assert row is not None, "the statement always answers one row"
    done, queued, queue, _merged, name, attempts, started_at, context, pipeline_name, subject_type, subject_id = row
    if done is None:
        # Nothing written: the log lines go back for the full path to record.
        if params["log"]:
            claim.context.put_back_log(params["log"])
        return False
    assert queued is not None, "the statement queues the next step whenever it records the step"
    if not claim_next:
        enqueue_step(Step(pk=queued), queue=queue)
        return True
    job = Job(
        pk=claim.job_id,
        pipeline=pipeline_name,
        subject_type=subject_type,
        subject_id=subject_id,
        # Django has psycopg return jsonb as text, for JSONField to decode.
        context=json.loads(context),
    )
    return claim_from_row(
        pipeline=claim.pipeline,
        step_id=queued,
        job_id=claim.job_id,
        name=name,
        kind=StepKind.ACTION,
        compensates=None,
        attempts=attempts,
        started_at=started_at,
        now=now,
        token=next_token,
        job=job,
    )


def record_outcome(claim: Claim, outcome: Outcome, *, claim_next: bool = False) -> Claim | None:
    """Record the step's outcome and decide what comes next. With `claim_next`, the
    usual success also claims the job's next step and returns its claim, for this
    worker to run at once; otherwise (and in every other case) the next step, if any,
    is queued for the broker and None is returned."""
    now = timezone.now()
    if outcome.kind == "succeeded" and claim.kind == StepKind.ACTION:
        recorded = _record_success(claim, outcome, now, claim_next=claim_next)
        if isinstance(recorded, Claim):
            return recorded
        if recorded:
            return None
    _record_outcome_locked(claim, outcome, now)
    return None


def _record_outcome_locked(claim: Claim, outcome: Outcome, now: datetime) -> None:
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
        policy = policy_for(claim)

        if outcome.kind == "succeeded":
            step.status = StepStatus.SUCCEEDED
            step.error = ""
            step.result = outcome.result or {}
            step.finished_at = now
            step.duration_seconds = (now - step.started_at).total_seconds() if step.started_at else elapsed
            step.history = [*step.history, history_entry(step, now, "succeeded", seconds=elapsed)]
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
            previous = last_attempt(step)
            # What it waits on happened while it looked: it looks again at once.
            delay = 0.0 if woken_during_attempt(step) else outcome.delay
            step.history = [
                *step.history,
                history_entry(step, now, "deferred", reason=outcome.error, wait=delay, **held),
            ]
            step.save(update_fields=[*fields, "attempts"])
            if job.stop_requested_at:
                finish_step_failed(step, job, now, outcome.error, already_saved=True)
                return
            if outcome.hold_deadline and job.deadline_at is not None:
                hold_deadline(job, step, previous, delay)
            schedule_retry(step, job, now, delay)
            return

        step.error = outcome.error[:ERROR_LIMIT]
        if outcome.retryable and step.attempts < step.max_attempts and not job.stop_requested_at:
            delay = policy.delay_after(step.attempts)
            step.history = [*step.history, history_entry(step, now, "failed", error=step.error, retry_in=delay)]
            step.save(update_fields=fields)
            schedule_retry(step, job, now, delay)
            return
        step.history = [*step.history, history_entry(step, now, "failed", error=step.error, final=True)]
        step.save(update_fields=fields)
        finish_step_failed(step, job, now, step.error, already_saved=True)
