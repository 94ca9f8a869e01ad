"""Starting and operating jobs: the only writes apps and staff make to the engine."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Min
from django.utils import timezone

from hub.audit import audit_record
from hub.errors import DomainError, NotFound
from hub.pipeline import registry
from hub.pipeline.models import Job, JobStatus, Step, StepKind, StepStatus, StopReason
from hub.pipeline.transitions import advance_job, begin_compensation, publish_job


@transaction.atomic
def job_start(
    *,
    pipeline: str,
    context: dict[str, Any] | None = None,
    subject_type: str = "",
    subject_id: object = "",
    idempotency_key: str | None = None,
    actor: str = "system",
) -> Job:
    """Create the job and its step rows; the first step's message goes out on commit.
    With an idempotency key, starting the same work again returns the first job."""
    spec = registry.get(pipeline)
    if idempotency_key:
        existing = Job.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing
    now = timezone.now()
    try:
        with transaction.atomic():
            job = Job.objects.create(
                pipeline=spec.name,
                queue=spec.queue,
                context=context or {},
                subject_type=subject_type,
                subject_id=str(subject_id),
                idempotency_key=idempotency_key,
                deadline_at=now + spec.deadline if spec.deadline else None,
            )
    except IntegrityError:
        # A concurrent start with the same key won the race.
        return Job.objects.get(idempotency_key=idempotency_key)
    Step.objects.bulk_create(
        [
            Step(job=job, position=index, name=step.name, max_attempts=step.retry.max_attempts)
            for index, step in enumerate(spec.steps)
        ]
    )
    audit_record(actor=actor, action="job.start", object_type="job", object_id=job.pk, new=JobStatus.PENDING)
    advance_job(job, now)
    return job


def _locked_job(job_id: int) -> Job:
    job = Job.objects.select_for_update().filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


@transaction.atomic
def job_retry(*, job_id: int, actor: str) -> Job:
    """Run a failed job again from its failed step. Steps whose effects a compensation
    undid must be redone, so the job restarts from the earliest of the failed step and
    the first compensated one; earlier steps keep their results."""
    job = _locked_job(job_id)
    if not job.can_retry():
        raise DomainError(f"job {job.pk} is {job.status}; only a failed, rolled-back or cancelled job can be retried")
    actions = job.steps.filter(kind=StepKind.ACTION)
    restart_from = actions.exclude(status=StepStatus.SUCCEEDED).aggregate(first=Min("position"))["first"]
    if restart_from is None:
        raise DomainError(f"job {job.pk} has no step to retry")
    now = timezone.now()
    actions.filter(position__gte=restart_from).update(
        status=StepStatus.PENDING,
        attempts=0,
        error="",
        lease_token=None,
        lease_expires_at=None,
        next_run_at=None,
        enqueued_at=None,
        started_at=None,
        attempt_started_at=None,
        finished_at=None,
        duration_seconds=None,
        updated_at=now,
    )
    old = job.status
    job.error = ""
    job.stop_reason = ""
    job.stop_requested_at = None
    job.compensation_failed = False
    job.finished_at = None
    spec = registry.get(job.pipeline)
    job.deadline_at = now + spec.deadline if spec.deadline else None
    job.status = JobStatus.RUNNING
    job.save(
        update_fields=[
            "error",
            "stop_reason",
            "stop_requested_at",
            "compensation_failed",
            "finished_at",
            "deadline_at",
            "status",
            "updated_at",
        ]
    )
    first = job.steps.get(kind=StepKind.ACTION, position=restart_from)
    audit_record(
        actor=actor,
        action="job.retry",
        object_type="job",
        object_id=job.pk,
        old=old,
        new=JobStatus.RUNNING,
        reason=f"retry from step {first.name}",
    )
    publish_job(job, old)
    advance_job(job, now)
    return job


@transaction.atomic
def job_cancel(*, job_id: int, actor: str, reason: str = "cancelled by staff") -> Job:
    """Stop a job and undo what it did. A step that is running finishes first (it
    cannot be interrupted safely); then the compensations run."""
    job = _locked_job(job_id)
    if not job.can_cancel():
        raise DomainError(f"job {job.pk} is {job.status}; it cannot be cancelled")
    audit_record(actor=actor, action="job.cancel", object_type="job", object_id=job.pk, old=job.status, reason=reason)
    return request_stop(job, reason=StopReason.CANCEL, message=reason)


def request_stop(job: Job, *, reason: str, message: str) -> Job:
    """With the job locked: compensate now, or as soon as the running step ends."""
    now = timezone.now()
    job.stop_requested_at = now
    job.stop_reason = reason
    job.error = message
    job.save(update_fields=["stop_requested_at", "stop_reason", "error", "updated_at"])
    if not job.steps.filter(status=StepStatus.RUNNING).exists():
        begin_compensation(job, now)
    return job


@transaction.atomic
def job_fail_past_deadline(*, job_id: int) -> bool:
    job = Job.objects.select_for_update(skip_locked=True).filter(pk=job_id).first()
    if job is None or job.status != JobStatus.RUNNING or job.stop_requested_at or not job.deadline_at:
        return False
    if job.deadline_at > timezone.now():
        return False
    spec = registry.get(job.pipeline).deadline
    allowed = int(spec.total_seconds()) if spec else int((job.deadline_at - job.created_at).total_seconds())
    request_stop(job, reason=StopReason.DEADLINE, message=f"job did not finish within its deadline of {allowed}s")
    return True
