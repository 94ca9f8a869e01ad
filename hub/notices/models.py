from __future__ import annotations

from django.db import models

from hub.outbox import OutboxRow


class CustomerNotice(OutboxRow):
    """An email to a customer, sent once: the dedup key names the occasion."""

    kind = models.CharField(max_length=50, db_index=True)
    subject_type = models.CharField(max_length=50)  # "order", "tenant"
    subject_id = models.CharField(max_length=64)
    recipient = models.EmailField()
    subject = models.CharField(max_length=200)
    body = models.TextField()
    dedup_key = models.CharField(max_length=300, unique=True)

    class Meta(OutboxRow.Meta):
        indexes = [models.Index(fields=["subject_type", "subject_id"])]

    def __str__(self) -> str:
        return f"{self.kind} to {self.recipient} ({self.status})"
