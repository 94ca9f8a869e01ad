from django.db import models

from hub.pipeline.models import Job, JobStatus, Step, StepKind, StepStatus

__all__ = ["AuditEvent", "Job", "JobStatus", "Step", "StepKind", "StepStatus"]


class AuditEvent(models.Model):
    """Who changed what, when, from which value to which, and why."""

    actor = models.CharField(max_length=150, default="system")
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=64)
    old = models.JSONField(null=True, blank=True)
    new = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.object_type}:{self.object_id}"


class AlertSeverity(models.TextChoices):
    SOFT = "SOFT", "soft (dashboard)"
    MEDIUM = "MEDIUM", "medium (staff email)"
    HARD = "HARD", "hard (staff email + chat)"


class AlertStatus(models.TextChoices):
    OPEN = "OPEN", "open"
    RESOLVED = "RESOLVED", "resolved"


class Alert(models.Model):
    """A deduplicated condition: one open alert per subject and kind, counted while
    the condition holds, resolved when it clears."""

    subject_type = models.CharField(max_length=50)  # "tenant", "server", "order", "hub"
    subject_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=64)
    severity = models.CharField(max_length=10, choices=AlertSeverity.choices)
    # Not indexed on its own: the open alerts are found through the partial unique index
    # below, and two more indexes on every row cost an alert storm a quarter of its inserts.
    status = models.CharField(max_length=10, choices=AlertStatus.choices, default=AlertStatus.OPEN)
    message = models.TextField()
    count = models.PositiveIntegerField(default=1)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True, default="")
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["subject_type", "subject_id", "kind"],
                condition=models.Q(status="OPEN"),
                name="alert_one_open_per_subject_kind",
            )
        ]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.kind} {self.subject_type}:{self.subject_id}"
