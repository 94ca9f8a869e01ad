"""When each periodic job last succeeded (hub.selfwatch.periodic)."""

from __future__ import annotations

from django.db import models


class PeriodicJobSuccess(models.Model):
    """One row per periodic job (django-celery-beat's PeriodicTask name), written by
    the worker that ran it (task_success); `watched_since` starts the silence clock of
    a job that never succeeded."""

    name = models.CharField(max_length=200, unique=True)
    task = models.CharField(max_length=200, blank=True, default="")
    last_success_at = models.DateTimeField(null=True, blank=True)
    watched_since = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name}: last success {self.last_success_at or 'never'}"
