"""Alerts (a deduplicated condition per subject and kind) and the notifications that
announce their openings."""

from __future__ import annotations

from django.db import models


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


class NotificationChannel(models.TextChoices):
    EMAIL = "EMAIL", "staff email"
    WEBHOOK = "WEBHOOK", "chat webhook"


class NotificationStatus(models.TextChoices):
    PENDING = "PENDING", "pending"
    SENT = "SENT", "sent"
    FAILED = "FAILED", "failed"


class Notification(models.Model):
    """One message about one opening of an alert on one channel, or, in a storm, about
    many openings of one kind at once (a digest; `alert` is the first of them). The
    dedup key (alert or storm, opening, channel) is unique, and the row is written in
    the transaction that opens the alerts, so an opening is announced once per channel
    whatever the broker does."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=10, choices=NotificationChannel.choices)
    dedup_key = models.CharField(max_length=200, unique=True)
    status = models.CharField(
        max_length=10, choices=NotificationStatus.choices, default=NotificationStatus.PENDING, db_index=True
    )
    subject = models.CharField(max_length=300)
    body = models.TextField()
    covers = models.PositiveIntegerField(default=1, help_text="alert openings announced: more than 1 is a storm digest")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # The table it had when it lived in monitoring.
        db_table = "monitoring_notification"
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.channel} for alert {self.alert_id} ({self.status})"

    def can_send(self) -> bool:
        return self.status == NotificationStatus.PENDING
