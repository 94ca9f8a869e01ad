"""The step-pipeline engine.

A step runs in three moves: claim it in the database under a lease (a duplicate or
late message finds nothing to claim and does nothing), run its action outside any
transaction while a thread renews the lease, then record the outcome and decide what
comes next in one transaction, enqueueing the next message only after commit. Every
decision is taken with the job row locked, so two workers never advance the same job
at once.

The usual step (claimed from QUEUED in a running job, succeeding, followed by a pending
step) takes one hand-written statement to claim it and one to record it and queue the
next, each atomic on its own: that is what every step of every pipeline pays. The same
locks are taken in the same order. Every other case (a job's first or last step, a
lease to take back, a failure, a retry, a compensation, a stop asked) is refused by
those statements, which then write nothing, and is decided by the full path, in a
transaction with the job and step rows locked and read."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from hub import logcontext
from hub.pipeline.claim import STEP_RESULT_FIELD, Claim, claim_step, execute_per_step, per_step_sql, policy_for
from hub.pipeline.lease import lease_keeper
from hub.pipeline.models import (
    Job,
    Step,
    StepKind,
    StepStatus,
)
from hub.pipeline.spec import StepDeferred
from hub.pipeline.transitions import (
    ERROR_LIMIT,
    LOG_LIMIT,
    advance_job,
    enqueue_step,
    finish_step_failed,
    history_entry,
    hold_deadline,
    schedule_retry,
    step_changed,
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
    """Claim, run and record one step. Safe to call any number of times for the same
    step: only a delivery that wins the claim runs the action."""
    claim = claim_step(step_id)
    if claim is None:
        return
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
        record_outcome(claim, outcome)
        if outcome.kind == "succeeded":
            # A failure or a wait is published where it is decided (the retry, the failure).
            _publish(claim, StepStatus.SUCCEEDED)
        logger.info("%s step %s of %s: %s", claim.kind.lower(), claim.spec.name, claim.pipeline.name, outcome.kind)


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
# merged into the job's context and the next step QUEUED, all three or nothing. The
# last step, a job not in that state or a lost claim find nothing written here, and
# `record_outcome` decides in a transaction with the rows in hand.
_RECORD_SUCCESS_SQL = per_step_sql(
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
        "result": STEP_RESULT_FIELD.get_db_prep_save(outcome.result or {}, connection),
        "merge": bool(outcome.result),
        "history": STEP_RESULT_FIELD.get_db_prep_save([entry], connection),
        "duration": (now - claim.started_at).total_seconds() if claim.started_at else elapsed,
        "log": claim.context.take_log(),
        "log_limit": LOG_LIMIT,
    }
    row = execute_per_step(_RECORD_SUCCESS_SQL, params)
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
            previous = step.history[-1] if step.history else None
            step.history = [
                *step.history,
                history_entry(step, now, "deferred", reason=outcome.error, wait=outcome.delay, **held),
            ]
            step.save(update_fields=[*fields, "attempts"])
            if job.stop_requested_at:
                finish_step_failed(step, job, now, outcome.error, already_saved=True)
                return
            if outcome.hold_deadline and job.deadline_at is not None:
                hold_deadline(job, step, previous, outcome.delay)
            schedule_retry(step, job, now, outcome.delay)
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
