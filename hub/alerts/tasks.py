"""Sending alert notifications (a batch of ids, or one id when retried) on the
monitoring queue; the task names are the ones they had when they lived in monitoring,
so queued messages, routes and beat rows keep working."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings

from hub.alerts.notify import (
    NotificationDeliveryError,
    notification_give_up,
    notification_send,
    notifications_requeue,
    notifications_send_batch,
)


class NotificationTask(Task):
    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Out of retries (or a bug): the row says FAILED instead of PENDING forever.
        notification_id = (args or [kwargs.get("notification_id")])[0]
        if notification_id is not None:
            notification_give_up(notification_id=int(notification_id), error=f"{type(exc).__name__}: {exc}")


RETRY_BACKOFF = 5
RETRY_BACKOFF_MAX = 600


@shared_task(
    name="monitoring.send_notification",
    base=NotificationTask,
    autoretry_for=(NotificationDeliveryError,),
    retry_backoff=RETRY_BACKOFF,
    retry_backoff_max=RETRY_BACKOFF_MAX,
    retry_jitter=True,
    max_retries=settings.ALERT_NOTIFICATION_MAX_RETRIES,
)
def send_notification(notification_id: int) -> bool:
    return notification_send(notification_id=notification_id)


@shared_task(name="monitoring.send_notifications")
def send_notifications(notification_ids: list[int]) -> int:
    """A batch: each id sent once; each failed one goes on alone as the first retry of
    `send_notification` (same backoff, same ALERT_NOTIFICATION_MAX_RETRIES in all), so
    a retry never resends the rest of the batch. Returns how many failed."""
    failed = notifications_send_batch(notification_ids=notification_ids)
    for notification_id in failed:
        send_notification.apply_async(
            args=[notification_id],
            retries=1,
            countdown=get_exponential_backoff_interval(
                factor=RETRY_BACKOFF, retries=0, maximum=RETRY_BACKOFF_MAX, full_jitter=True
            ),
        )
    return len(failed)


@shared_task(name="monitoring.requeue_notifications")
def requeue_notifications() -> int:
    return notifications_requeue()
