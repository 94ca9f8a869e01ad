from hub.alerts.tasks import requeue_notifications, send_notification, send_notifications
from hub.notices.tasks import send_customer_notice
from hub.pipeline.tasks import reap, run_step

__all__ = [
    "reap",
    "requeue_notifications",
    "run_step",
    "send_customer_notice",
    "send_notification",
    "send_notifications",
]
