"""The agents' reports: backup status and AI token usage."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from tenants.models import (
    BackupOutcome,
    BackupReport,
    UsageReport,
)


def _backup_outcome(databases: dict[str, dict[str, Any]]) -> str:
    statuses = [entry.get("status") for entry in databases.values()]
    failed = sum(1 for s in statuses if s == "failed")
    if statuses and failed == len(statuses):
        return BackupOutcome.FAILED
    return BackupOutcome.PARTIAL if failed else BackupOutcome.SUCCESS


def backup_report_ingest(
    *,
    tenant_id: int,
    report_id: uuid.UUID,
    last_run: datetime,
    duration_seconds: int,
    databases: dict[str, dict[str, Any]],
    remote_sync: dict[str, Any] | None,
) -> tuple[BackupReport, bool]:
    """Store the report once per report_id; a re-sent report returns the stored one."""
    return BackupReport.objects.get_or_create(
        tenant_id=tenant_id,
        report_id=report_id,
        defaults={
            "last_run": last_run,
            "duration_seconds": duration_seconds,
            "databases": databases,
            "remote_sync": remote_sync,
            "outcome": _backup_outcome(databases),
        },
    )


def usage_report_ingest(*, tenant_id: int, report_id: uuid.UUID, period: str, tokens: int) -> tuple[UsageReport, bool]:
    """Store the report once per report_id; a re-sent report returns the stored one."""
    return UsageReport.objects.get_or_create(
        tenant_id=tenant_id, report_id=report_id, defaults={"period": period, "tokens": tokens}
    )
