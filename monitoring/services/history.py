"""Pruning heartbeat history past its retention, in batches, so no statement holds
locks on millions of rows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from tenants.models import HeartbeatSample

MAX_BATCHES_PER_RUN = 1000


def heartbeat_history_prune(*, batch_size: int | None = None) -> dict[str, Any]:
    cutoff = timezone.now() - timedelta(days=settings.HEARTBEAT_HISTORY_RETENTION_DAYS)
    size = batch_size or settings.HEARTBEAT_HISTORY_PRUNE_BATCH
    table = HeartbeatSample._meta.db_table
    total = batches = 0
    while batches < MAX_BATCHES_PER_RUN:
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE received_at < %s LIMIT %s)",  # noqa: S608
                [cutoff, size],
            )
            deleted = cursor.rowcount
        total += deleted
        batches += 1
        if deleted < size:
            break
    return {"deleted": total, "batches": batches, "cutoff": cutoff.isoformat()}
