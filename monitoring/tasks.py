"""Celery tasks of the monitoring queue: each check (run by beat, single-flight inside)
and the sending of one notification. Thin: a name or an id in, one service call."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from django.conf import settings

from monitoring.notifications import (
    NotificationDeliveryError,
    notification_give_up,
    notification_send,
    notifications_requeue,
)
from monitoring.services.checks import check_execute


def _check(name: str) -> dict[str, Any]:
    result = check_execute(name=name)
    return {"ran": result.ran, **result.summary}


@shared_task(name="monitoring.check_heartbeats")
def check_heartbeats() -> dict[str, Any]:
    return _check("heartbeats")


@shared_task(name="monitoring.check_resources")
def check_resources() -> dict[str, Any]:
    return _check("resources")


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


class NotificationTask(Task):
    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Out of retries (or a bug): the row says FAILED instead of PENDING forever.
        notification_id = (args or [kwargs.get("notification_id")])[0]
        if notification_id is not None:
            notification_give_up(notification_id=int(notification_id), error=f"{type(exc).__name__}: {exc}")


@shared_task(
    name="monitoring.send_notification",
    base=NotificationTask,
    autoretry_for=(NotificationDeliveryError,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=settings.ALERT_NOTIFICATION_MAX_RETRIES,
)
def send_notification(notification_id: int) -> bool:
    return notification_send(notification_id=notification_id)


@shared_task(name="monitoring.requeue_notifications")
def requeue_notifications() -> int:
    return notifications_requeue()
