import logging.config
import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")

app = Celery("hub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def configure_logging(**kwargs: Any) -> None:
    """Workers and beat log exactly as the web does (settings.LOGGING: JSON lines with
    the bound ids, secrets redacted), not in Celery's own format. With a receiver on
    this signal Celery leaves the logging setup alone, and `-l` has no effect:
    LOG_LEVEL sets the level."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
