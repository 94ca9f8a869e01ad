"""Jobs and steps: every multi-step operation lives here, not in the broker."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class JobStatus(models.TextChoices):
    PENDING = "PENDING", "pending"
    RUNNING = "RUNNING", "running"
    COMPENSATING = "COMPENSATING", "compensating"
    SUCCEEDED = "SUCCEEDED", "succeeded"
    ROLLED_BACK = "ROLLED_BACK", "rolled back"
    CANCELLED = "CANCELLED", "cancelled"
    FAILED = "FAILED", "failed"


JOB_ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.COMPENSATING)
JOB_TERMINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.ROLLED_BACK, JobStatus.CANCELLED, JobStatus.FAILED)
JOB_RETRYABLE_STATUSES = (JobStatus.ROLLED_BACK, JobStatus.CANCELLED, JobStatus.FAILED)


class StopReason(models.TextChoices):
    FAILURE = "failure", "a step failed for good"
    CANCEL = "cancel", "cancelled by staff"
    DEADLINE = "deadline", "deadline exceeded"


class StepKind(models.TextChoices):
    ACTION = "ACTION", "action"
    COMPENSATION = "COMPENSATION", "compensation"


class StepStatus(models.TextChoices):
    PENDING = "PENDING", "pending"
    QUEUED = "QUEUED", "queued"
    RUNNING = "RUNNING", "running"
    RETRY_WAIT = "RETRY_WAIT", "waiting to retry"
    SUCCEEDED = "SUCCEEDED", "succeeded"
    FAILED = "FAILED", "failed"
    SKIPPED = "SKIPPED", "skipped"
    COMPENSATED = "COMPENSATED", "compensated"


# A step in one of these may be claimed by a worker (RUNNING only with its lease run out).
STEP_CLAIMABLE_STATUSES = (StepStatus.QUEUED, StepStatus.RETRY_WAIT, StepStatus.RUNNING)
STEP_DONE_STATUSES = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.COMPENSATED)


class Job(models.Model):
    pipeline = models.CharField(max_length=100, db_index=True)
    status = models.CharField(max_length=20, choices=JobStatus.choices, default=JobStatus.PENDING, db_index=True)
    queue = models.CharField(max_length=50, default="default")
    # What the job works on, e.g. ("order", "42"): apps find their jobs by it.
    subject_type = models.CharField(max_length=50, blank=True, default="")
    subject_id = models.CharField(max_length=64, blank=True, default="")
    # Starting the same work twice (a redelivered webhook) returns the first job.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    context = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    stop_reason = models.CharField(max_length=20, choices=StopReason.choices, blank=True, default="")
    stop_requested_at = models.DateTimeField(null=True, blank=True)
    compensation_failed = models.BooleanField(default=False)
    deadline_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["subject_type", "subject_id"]),
            models.Index(fields=["deadline_at"], name="job_deadline_active", condition=Q(status="RUNNING")),
        ]

    def __str__(self) -> str:
        return f"{self.pipeline} #{self.pk} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in JOB_TERMINAL_STATUSES

    def can_retry(self) -> bool:
        return self.status in JOB_RETRYABLE_STATUSES

    def can_cancel(self) -> bool:
        return self.status in (JobStatus.PENDING, JobStatus.RUNNING) and self.stop_requested_at is None


class Step(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=StepKind.choices, default=StepKind.ACTION)
    compensates = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="compensations"
    )
    status = models.CharField(max_length=20, choices=StepStatus.choices, default=StepStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    # Set when a message for this step went to the broker; a QUEUED step whose message
    # is older than PIPELINE_MESSAGE_LOST_AFTER is sent again by the reaper.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    log = models.TextField(blank=True, default="")
    result = models.JSONField(default=dict, blank=True)
    # One entry per attempt: when it started and ended, how, and how long it waited.
    history = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["job_id", "position"]
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="step_unique_position")]
        indexes = [
            models.Index(fields=["lease_expires_at"], name="step_running_lease", condition=Q(status="RUNNING")),
            models.Index(fields=["enqueued_at"], name="step_queued", condition=Q(status="QUEUED")),
            models.Index(fields=["next_run_at"], name="step_retry_wait", condition=Q(status="RETRY_WAIT")),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"
