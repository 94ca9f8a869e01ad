"""Monitoring migration 0009: the one disk-and-memory schedule becomes two, keeping what
an operator set on it, and back."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

pytestmark = pytest.mark.django_db

split_migration = importlib.import_module("monitoring.migrations.0009_disk_and_memory_checks")


def test_the_resources_schedule_becomes_disk_and_memory_keeping_the_operators_settings() -> None:
    # given the schedule as it was before, slowed down and paused by an operator
    PeriodicTask.objects.filter(name__in=["monitoring disk", "monitoring memory"]).delete()
    every_two_minutes, _ = IntervalSchedule.objects.get_or_create(every=120, period="seconds")
    PeriodicTask.objects.create(
        name="monitoring resources",
        task="monitoring.check_resources",
        interval=every_two_minutes,
        queue="monitoring",
        enabled=False,
    )
    long_ago = timezone.now() - timedelta(days=1)
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": long_ago})

    # when the migration runs, with the models as it sees them: historical ones send
    # none of the signals the real PeriodicTask sends on save, so the beat's reload
    # must come from the migration itself
    historical = MigrationExecutor(connection).loader.project_state(("monitoring", "0009_disk_and_memory_checks")).apps
    split_migration.split(historical, None)

    # then two rows replace it, each with the operator's interval and pause
    tasks = {t.name: t for t in PeriodicTask.objects.filter(name__startswith="monitoring ")}
    assert "monitoring resources" not in tasks
    for name, task in (("monitoring disk", "monitoring.check_disk"), ("monitoring memory", "monitoring.check_memory")):
        assert (tasks[name].task, tasks[name].interval.every, tasks[name].enabled) == (task, 120, False)
        assert (tasks[name].queue, tasks[name].expire_seconds) == ("monitoring", 120)
    # and a running beat sees the change
    assert PeriodicTasks.last_change() > long_ago

    # and reversed, the one row comes back as it was
    split_migration.join(historical, None)
    names = set(PeriodicTask.objects.filter(name__startswith="monitoring ").values_list("name", flat=True))
    assert "monitoring resources" in names and not {"monitoring disk", "monitoring memory"} & names
    resources = PeriodicTask.objects.get(name="monitoring resources")
    assert (resources.task, resources.interval.every, resources.enabled) == ("monitoring.check_resources", 120, False)
