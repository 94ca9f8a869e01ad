"""Every scheduled check by name: what the beat schedule and the tasks run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hub.selfwatch.checks import selfwatch_check
from monitoring.services.backup import check_hub_backup
from monitoring.services.customer_notices import health_notices_send
from monitoring.services.health import (
    check_backups,
    check_containers,
    check_disk,
    check_heartbeats,
    check_memory,
    check_tls,
)
from monitoring.services.history import heartbeat_history_prune
from monitoring.services.restore_drill import restore_drills_run
from monitoring.services.runs import CheckResult, check_run
from monitoring.services.stuck import check_stuck_work
from provisioning.services.pool_replenish import pool_replenish
from provisioning.services.reconcile import reconcile_servers
from provisioning.services.snapshots import snapshots_run

CHECKS: dict[str, Callable[[], dict[str, Any]]] = {
    "heartbeats": check_heartbeats,
    "disk": check_disk,
    "memory": check_memory,
    "containers": check_containers,
    "tls": check_tls,
    "backups": check_backups,
    "pool_replenish": pool_replenish,
    "reconcile_servers": reconcile_servers,
    "stuck_work": check_stuck_work,
    "hub_backup": check_hub_backup,
    "prune_history": heartbeat_history_prune,
    "hub_selfwatch": selfwatch_check,
    "health_notices": health_notices_send,
    "snapshots": snapshots_run,
    "restore_drill": restore_drills_run,
}


def check_execute(*, name: str) -> CheckResult:
    return check_run(name, CHECKS[name])
