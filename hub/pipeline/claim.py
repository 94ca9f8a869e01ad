"""Claiming a step under a lease, so a duplicate or late message finds nothing to claim.

The usual claim (a QUEUED step, or a RETRY_WAIT one that is due, of a running job) is
one hand-written statement, prepared once per connection; every other case is decided
with the job and step rows locked and read."""

from __future__ import annotations

import json
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from hub.pipeline import registry
from hub.pipeline.context import StepContext
from hub.pipeline.models import (
    Job,
    JobStatus,
    Step,
    StepKind,
    StepStatus,
)
from hub.pipeline.spec import Pipeline, RetryPolicy, StepSpec
from hub.pipeline.transitions import set_job_status, take_back_lost_attempt


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
STEP_RESULT_FIELD = Step._meta.get_field("result")


def per_step_sql(template: str) -> str:
    """Hand-written SQL for the statements every step runs (the ORM would spend more
    compiling them than Postgres running them), with the tables' names taken from the
    models. The statuses in them are the models' values, which DESIGN.md fixes."""
    return template.format(job=Job._meta.db_table, step=Step._meta.db_table)


# The usual claim in one statement: the job row locked first (as everywhere in the
# engine), then the step moved to RUNNING if it is QUEUED, or RETRY_WAIT and due, and
# its job is running (or compensating, for a compensation step). Anything else (the
# job's first step, a lease to take back, a duplicate delivery) finds nothing here and
# goes through `_claim_step_locked`, which decides with both rows in hand.
_CLAIM_SQL = per_step_sql(
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


def execute_per_step(sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
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


def claim_from_row(
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
    row = execute_per_step(_CLAIM_SQL, params)
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
    return claim_from_row(
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
            if not take_back_lost_attempt(step, job, now):
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
        return claim_from_row(
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


def policy_for(claim: Claim) -> RetryPolicy:
    return claim.spec.compensation_retry if claim.kind == StepKind.COMPENSATION else claim.spec.retry
