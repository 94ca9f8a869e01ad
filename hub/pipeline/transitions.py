"""The pipeline's state machine, the lowest module of the engine: queueing a step (its
message sent after commit, by task name), retries, a job's status moves, a step that
failed for good, compensation in reverse order, and the moves the reaper and staff
make (a lost attempt taken back, a waiting step woken). Every function here runs with
the job row locked."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hub import events
from hub.audit import audit_record
from hub.pipeline import registry
from hub.pipeline.models import (
    Job,
    JobStatus,
    Step,
    StepKind,
    StepStatus,
    StopReason,
)
from hub.queue import enqueue_on_commit

LOG_LIMIT = 64 * 1024


ERROR_LIMIT = 4000


RUN_STEP = "hub.pipeline.run_step"


def step_changed(
    *, job_id: int, step_id: int, name: str, status: str, subject_type: str, subject_id: object, kind: str = "ACTION"
) -> None:
    """Publish a step's move (after commit) to the live event streams: the whole
    operation's and its job's subject's (an order's page follows its own)."""
    events.publish(
        "step.status",
        {
            "job": job_id,
            "step": step_id,
            "name": name,
            "kind": kind,
            "status": status,
            "subject_type": subject_type,
            "subject_id": subject_id,
        },
        scopes=events.subject_scopes(subject_type, subject_id),
    )


def publish_step(step: Step, job: Job) -> None:
    step_changed(
        job_id=job.pk,
        step_id=step.pk,
        name=step.name,
        status=step.status,
        subject_type=job.subject_type,
        subject_id=job.subject_id,
        kind=step.kind,
    )


def publish_job(job: Job, old: str) -> None:
    events.publish(
        "job.status",
        {
            "id": job.pk,
            "pipeline": job.pipeline,
            "old": old,
            "new": job.status,
            "subject_type": job.subject_type,
            "subject_id": job.subject_id,
        },
        scopes=events.subject_scopes(job.subject_type, job.subject_id),
    )


# A history entry that is no attempt: something the step waited on happened.
WOKEN = "woken"


def enqueue_step(step: Step, *, queue: str, countdown: float | None = None) -> None:
    """Send the step's message once the surrounding transaction commits."""
    enqueue_on_commit(RUN_STEP, step.pk, queue=queue, countdown=countdown)


def queue_step(step: Step, job: Job, now: datetime) -> None:
    step.status = StepStatus.QUEUED
    step.enqueued_at = now
    step.next_run_at = None
    step.save(update_fields=["status", "enqueued_at", "next_run_at", "updated_at"])
    enqueue_step(step, queue=job.queue)
    publish_step(step, job)


def schedule_retry(step: Step, job: Job, now: datetime, delay: float) -> None:
    step.status = StepStatus.RETRY_WAIT
    step.next_run_at = now + timedelta(seconds=delay)
    step.lease_token = None
    step.lease_expires_at = None
    # Short waits ride on a broker countdown; longer ones would outlive the
    # visibility timeout, so only the row remembers them and the reaper wakes them.
    short = delay <= settings.PIPELINE_MAX_BROKER_COUNTDOWN
    step.enqueued_at = now if short else None
    step.save(update_fields=["status", "next_run_at", "lease_token", "lease_expires_at", "enqueued_at", "updated_at"])
    publish_step(step, job)
    if short:
        enqueue_step(step, queue=job.queue, countdown=delay)


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
    publish_job(job, old)
    if job.is_terminal:
        pipeline = registry.get(job.pipeline)
        if pipeline.on_finish is not None:
            pipeline.on_finish(job)


def history_entry(step: Step, now: datetime, outcome: str, **extra: Any) -> dict[str, Any]:
    started = step.attempt_started_at
    entry: dict[str, Any] = {
        "attempt": step.attempts,
        "started_at": started.isoformat() if started else None,
        "finished_at": now.isoformat(),
        "outcome": outcome,
    }
    entry.update(extra)
    return entry


def hold_deadline(job: Job, step: Step, previous: dict[str, Any] | None, delay: float) -> None:
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


def finish_step_failed(step: Step, job: Job, now: datetime, error: str, *, already_saved: bool = False) -> None:
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
    publish_step(step, job)
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
            queue_step(next_comp, job, now)
            return
        _finish_compensation(job)
        return
    if job.stop_requested_at:
        begin_compensation(job, now)
        return
    next_step = job.steps.filter(kind=StepKind.ACTION, status=StepStatus.PENDING).order_by("position").first()
    if next_step is not None:
        queue_step(next_step, job, now)
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


def take_back_lost_attempt(step: Step, job: Job, now: datetime) -> bool:
    """The step's lease ran out: its worker died or hung. Count the attempt as lost.
    True when the step may run again; past its delivery limit it fails for good, so
    a message that kills its worker every time is not redelivered forever."""
    step.history = [*step.history, history_entry(step, now, "lost", error="worker lost: lease expired")]
    step.error = f"attempt {step.attempts}: worker lost (lease expired)"
    step.save(update_fields=["history", "error", "updated_at"])
    if step.attempts >= step.max_attempts or job.stop_requested_at:
        finish_step_failed(step, job, now, f"gave up after {step.attempts} deliveries: the worker was lost each time")
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
        if take_back_lost_attempt(step, job, now):
            step.lease_token = None
            step.lease_expires_at = None
            step.save(update_fields=["lease_token", "lease_expires_at", "updated_at"])
            queue_step(step, job, now)
        return True


def step_wake(*, job_id: int, step_name: str, reason: str = "staff") -> bool:
    """Run a waiting step now (what it was waiting for happened). A step waiting to
    retry is queued at once; one whose attempt is running when the wake comes is
    queued at once when that attempt defers (it may have looked just before the event).
    Either way the wake is kept in the step's history. True when a step was woken."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.status not in (JobStatus.PENDING, JobStatus.RUNNING) or job.stop_requested_at:
            return False
        step = (
            job.steps.select_for_update()
            .filter(name=step_name, kind=StepKind.ACTION, status__in=(StepStatus.RETRY_WAIT, StepStatus.RUNNING))
            .first()
        )
        if step is None:
            return False
        now = timezone.now()
        step.history = [*step.history, {"outcome": WOKEN, "at": now.isoformat(), "reason": reason}]
        step.save(update_fields=["history", "updated_at"])
        if step.status == StepStatus.RETRY_WAIT:
            queue_step(step, job, now)
        return True


def woken_during_attempt(step: Step) -> bool:
    """A wake came while the step's current attempt ran (see `step_wake`)."""
    started = step.attempt_started_at
    return started is not None and any(
        entry.get("outcome") == WOKEN and datetime.fromisoformat(entry["at"]) >= started
        for entry in reversed(step.history[-3:])
    )


def last_attempt(step: Step) -> dict[str, Any] | None:
    """The history entry of the step's last finished attempt (wakes are not attempts)."""
    return next((entry for entry in reversed(step.history) if entry.get("outcome") != WOKEN), None)
