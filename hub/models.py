from django.db import models

from hub.alerts.models import Alert, AlertSeverity, AlertStatus, Notification, NotificationChannel, NotificationStatus
from hub.notices.models import CustomerNotice
from hub.pipeline.models import Job, JobStatus, Step, StepKind, StepStatus
from hub.selfwatch.models import PeriodicJobSuccess

# Django finds the hub app's models here: the alerts' and the pipeline's live in their packages.
__all__ = [
    "Alert",
    "AlertSeverity",
    "AlertStatus",
    "AuditEvent",
    "CustomerNotice",
    "FleetFreeze",
    "Job",
    "JobStatus",
    "Notification",
    "NotificationChannel",
    "NotificationStatus",
    "PeriodicJobSuccess",
    "Step",
    "StepKind",
    "StepStatus",
]


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


class FleetFreeze(models.Model):
    """The emergency switch: while a row says frozen, no rollout dispatches and no
    automatic migration starts (hub.freeze). One row, written through hub.freeze."""

    frozen = models.BooleanField(default=False)
    reason = models.TextField(blank=True, default="")
    changed_by = models.CharField(max_length=150, blank=True, default="")
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "fleet freeze"

    def __str__(self) -> str:
        return f"fleet {'frozen' if self.frozen else 'not frozen'}"
