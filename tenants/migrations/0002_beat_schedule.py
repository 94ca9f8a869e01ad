"""The agent fast path's periodic jobs, in django-celery-beat's tables (editable in the
admin): the heartbeat flush and the agent sweep, every 5 seconds. A message older than
10 seconds is dropped: the next run does the same work."""

from django.db import migrations

SCHEDULES = [
    ("tenants heartbeat flush", "tenants.flush_heartbeats", "Write buffered heartbeats to Postgres in bulk."),
    (
        "tenants agent sweep",
        "tenants.sweep_agents",
        "Expire commands past their TTL, flag redeliveries, repair lost key-cache invalidations.",
    ),
]


def create_schedules(apps, schema_editor):  # type: ignore[no-untyped-def]
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=5, period="seconds")
    for name, task, description in SCHEDULES:
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": task,
                "interval": every,
                "queue": "monitoring",
                "expire_seconds": 10,
                "description": description,
                "enabled": True,
            },
        )


def remove_schedules(apps, schema_editor):  # type: ignore[no-untyped-def]
    names = [name for name, _, _ in SCHEDULES]
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=names).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
