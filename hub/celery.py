import logging.config
import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun, task_success, worker_shutting_down

from hub.pipeline.stopping import mark_stopping

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")

app = Celery("hub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

import hub.workers  # noqa: E402, F401 - the watchdog's and the per-pool settings' signal receivers


@setup_logging.connect
def configure_logging(**kwargs: Any) -> None:
    """Workers and beat log exactly as the web does (settings.LOGGING: JSON lines with
    the bound ids, secrets redacted), not in Celery's own format. With a receiver on
    this signal Celery leaves the logging setup alone, and `-l` has no effect:
    LOG_LEVEL sets the level."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@task_prerun.connect
@task_postrun.connect
def close_old_database_connections(task: Any = None, **kwargs: Any) -> None:
    """A task starts and ends like a Django request: a connection past CONN_MAX_AGE,
    or one an error left unusable, is closed, and a kept one is checked before its
    next use (CONN_HEALTH_CHECKS), so a Postgres restart costs a reconnection, not a
    failed task. Celery's own closing is off (settings.CELERY_DB_REUSE_MAX)."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@task_success.connect
def record_periodic_job_success(sender: Any = None, **kwargs: Any) -> None:
    """A job beat sent succeeded: its last success is recorded (hub.selfwatch.periodic)."""
    from hub.selfwatch.periodic import task_success_receiver

    task_success_receiver(sender=sender, **kwargs)


@worker_shutting_down.connect
def stop_running_on(**kwargs: Any) -> None:
    """A worker shutting down runs no step past the one it is running (see hub.pipeline.stopping)."""
    mark_stopping()
