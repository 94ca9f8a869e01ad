"""Celery tasks of the monitoring queue: each check, run by beat, single-flight inside.
Thin: a name in, one service call. (Alert notifications are sent by hub.alerts.tasks,
on this queue too.)"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from monitoring.services.checks import check_execute


def _check(name: str) -> dict[str, Any]:
    result = check_execute(name=name)
    return {"ran": result.ran, **result.summary}


@shared_task(name="monitoring.check_heartbeats")
def check_heartbeats() -> dict[str, Any]:
    return _check("heartbeats")


@shared_task(name="monitoring.check_disk")
def check_disk() -> dict[str, Any]:
    return _check("disk")


@shared_task(name="monitoring.check_memory")
def check_memory() -> dict[str, Any]:
    return _check("memory")


@shared_task(name="monitoring.check_containers")
def check_containers() -> dict[str, Any]:
    return _check("containers")


@shared_task(name="monitoring.check_tls")
def check_tls() -> dict[str, Any]:
    return _check("tls")


@shared_task(name="monitoring.check_backups")
def check_backups() -> dict[str, Any]:
    return _check("backups")


@shared_task(name="monitoring.replenish_pool")
def replenish_pool() -> dict[str, Any]:
    return _check("pool_replenish")


@shared_task(name="monitoring.reconcile_servers")
def reconcile_servers() -> dict[str, Any]:
    return _check("reconcile_servers")


@shared_task(name="monitoring.check_stuck_work")
def check_stuck_work() -> dict[str, Any]:
    return _check("stuck_work")


@shared_task(name="monitoring.backup_hub_database")
def backup_hub_database() -> dict[str, Any]:
    return _check("hub_backup")


@shared_task(name="monitoring.prune_history")
def prune_history() -> dict[str, Any]:
    return _check("prune_history")


@shared_task(name="monitoring.check_hub_selfwatch")
def check_hub_selfwatch() -> dict[str, Any]:
    return _check("hub_selfwatch")


@shared_task(name="monitoring.send_health_notices")
def send_health_notices() -> dict[str, Any]:
    return _check("health_notices")


@shared_task(name="monitoring.take_snapshots")
def take_snapshots() -> dict[str, Any]:
    return _check("snapshots")


@shared_task(name="monitoring.restore_drill")
def restore_drill() -> dict[str, Any]:
    return _check("restore_drill")
