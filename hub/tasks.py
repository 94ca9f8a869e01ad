from celery import shared_task

from hub.alerts.tasks import requeue_notifications, send_notification, send_notifications
from hub.notices.tasks import send_customer_notice
from hub.pipeline.tasks import reap, run_step
from hub.workers import CANARY_TASK, canary_consumed


@shared_task(name=CANARY_TASK, ignore_result=True)
def canary(hostname: str) -> None:
    """Sent by the reaper through the worker's own queue: consuming it is the proof."""
    canary_consumed(hostname)


__all__ = [
    "canary",
    "reap",
    "requeue_notifications",
    "run_step",
    "send_customer_notice",
    "send_notification",
    "send_notifications",
]
