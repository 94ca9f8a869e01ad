"""Backup now: the tenant's nightly backup run at once over SSH, then the agent's report
of that very run waited for, so the run is in the tenant's backup history (the same
history the nightly runs fill) before the job ends."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from hub.pipeline.context import StepContext
from hub.pipeline.spec import PermanentStepError, StepDeferred
from provisioning.pipelines.moves import backup_failure, backup_status
from tenants.models import BackupReport, Tenant


def run_backup(ctx: StepContext) -> dict[str, Any]:
    if ctx.context.get("backup_last_run"):
        ctx.log(f"the backup of {ctx.context['backup_last_run']} already ran")
        return {}
    tenant = Tenant.objects.select_related("server").get(pk=int(ctx.subject_id))
    if tenant.server is None:
        raise PermanentStepError(f"tenant {tenant.pk} has no server")
    status = backup_status(tenant.server, log=ctx.log)
    if not status.get("last_run"):
        raise PermanentStepError("backup-status.json has no last_run")
    return {
        "backup_last_run": status["last_run"],
        "backup_failure": backup_failure(status),
        "report_wait_started": timezone.now().isoformat(),
    }


def wait_report(ctx: StepContext) -> dict[str, Any]:
    """The agent reports every new backup-status.json with its next heartbeat."""
    last_run = parse_datetime(str(ctx.context.get("backup_last_run") or ""))
    if last_run is None:
        raise PermanentStepError("the backup's time was never recorded")
    report = BackupReport.objects.filter(tenant_id=int(ctx.subject_id), last_run=last_run).first()
    if report is None:
        started = parse_datetime(str(ctx.context.get("report_wait_started") or "")) or timezone.now()
        waited = (timezone.now() - started).total_seconds()
        if waited > settings.BACKUP_NOW_REPORT_WAIT_SECONDS:
            raise PermanentStepError(
                f"the agent did not report the backup of {last_run:%H:%M:%S} "
                f"within {settings.BACKUP_NOW_REPORT_WAIT_SECONDS}s"
            )
        raise StepDeferred(f"waiting for the agent's report ({waited:.0f}s so far)", delay=0.25)
    ctx.log(f"backup {report.last_run:%Y-%m-%d %H:%M:%S} in the history: {report.outcome}")
    failure = ctx.context.get("backup_failure")
    if failure:
        raise PermanentStepError(f"the backup ran but is no good backup: {failure}")
    return {"backup_report_id": report.pk, "backup_outcome": report.outcome}
