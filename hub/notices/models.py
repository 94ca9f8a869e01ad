from __future__ import annotations

from django.db import models


class CustomerNoticeStatus(models.TextChoices):
    PENDING = "PENDING", "pending"
    SENT = "SENT", "sent"
    FAILED = "FAILED", "failed"


class CustomerNotice(models.Model):
    """An email to a customer, sent once: the dedup key names the occasion."""

    kind = models.CharField(max_length=50, db_index=True)
    subject_type = models.CharField(max_length=50)  # "order", "tenant"
    subject_id = models.CharField(max_length=64)
    recipient = models.EmailField()
    subject = models.CharField(max_length=200)
    body = models.TextField()
    dedup_key = models.CharField(max_length=300, unique=True)
    status = models.CharField(max_length=10, choices=CustomerNoticeStatus.choices, default=CustomerNoticeStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["subject_type", "subject_id"])]

    def __str__(self) -> str:
        return f"{self.kind} to {self.recipient} ({self.status})"

    def can_send(self) -> bool:
        return self.status != CustomerNoticeStatus.SENT
