"""Outbox rows: something to send once, written in the transaction that decides it
(an email to a customer or to staff, a Stripe meter event) and sent after it commits,
by a task that locks the row, sends, and records the outcome on it. A row that failed
is sent again by the requeue until it is SENT; a SENT row is never sent again."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

ERROR_MAX_CHARS = 2000


class OutboxStatus(models.TextChoices):
    PENDING = "PENDING", "pending"
    SENT = "SENT", "sent"
    FAILED = "FAILED", "failed"


class OutboxRow(models.Model):
    status = models.CharField(max_length=10, choices=OutboxStatus.choices, default=OutboxStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-id"]

    def can_send(self) -> bool:
        return self.status != OutboxStatus.SENT

    def record_sent(self) -> None:
        """Sent: counted as an attempt, and never sent again."""
        self.attempts += 1
        self.status = OutboxStatus.SENT
        self.sent_at = timezone.now()
        self.error = ""
        self.save(update_fields=["status", "sent_at", "error", "attempts"])

    def record_failed(self, error: str) -> None:
        """Not sent: counted as an attempt, the error kept for staff, left to the requeue."""
        self.attempts += 1
        self.status = OutboxStatus.FAILED
        self.error = error[:ERROR_MAX_CHARS]
        self.save(update_fields=["status", "error", "attempts"])
