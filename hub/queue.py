"""One way to enqueue: by task name, after the surrounding transaction commits.

By name, so a service never imports a tasks module (tasks import services, never the
other way round); on commit, so a worker never looks for a row that is not there yet
(STYLE.md, rule 4). Outside a transaction the message goes at once."""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.db import transaction


def enqueue_on_commit(
    task: str, *args: object, queue: str | None = None, countdown: float | None = None, **options: Any
) -> None:
    if queue:
        options["queue"] = queue
    if countdown:
        options["countdown"] = countdown
    transaction.on_commit(lambda: current_app.send_task(task, args=list(args), **options))
