"""Disk and memory, checked by two scheduled tasks instead of one: each alert kind is
its own unit of work (monitoring/services/health.py). The two rows keep what an
operator set on the old one (interval, enabled), and a running beat is told to reload."""

from django.db import migrations
from django.utils import timezone

OLD = ("monitoring resources", "monitoring.check_resources", "Disk above 85%, memory above 90%.")
NEW = [
    ("monitoring disk", "monitoring.check_disk", "Disk above DISK_ALERT_PERCENT (85%)."),
    ("monitoring memory", "monitoring.check_memory", "Memory above MEMORY_ALERT_PERCENT (90%)."),
]


def _replace(apps, old: list[tuple[str, str, str]], new: list[tuple[str, str, str]]) -> None:  # type: ignore[no-untyped-def]
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    previous = PeriodicTask.objects.filter(name__in=[name for name, _, _ in old]).order_by("id").first()
    interval = previous.interval if previous is not None else None
    if interval is None:
        interval = IntervalSchedule.objects.filter(every=60, period="seconds").first()
        interval = interval or IntervalSchedule.objects.create(every=60, period="seconds")
    for name, task, description in new:
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": task,
                "interval": interval,
                "crontab": None,
                "queue": "monitoring",
                "expire_seconds": interval.every if interval.period == "seconds" else None,
                "description": description,
                "enabled": previous.enabled if previous is not None else True,
            },
        )
    PeriodicTask.objects.filter(name__in=[name for name, _, _ in old]).delete()
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def split(apps, schema_editor):  # type: ignore[no-untyped-def]
    _replace(apps, [OLD], NEW)


def join(apps, schema_editor):  # type: ignore[no-untyped-def]
    _replace(apps, NEW, [OLD])


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0008_prune_history_hourly"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(split, join)]
