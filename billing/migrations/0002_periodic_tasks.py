"""Billing's periodic jobs live in django-celery-beat's tables (editable in the admin):
the dunning check, the usage sweep and the sweep that re-enqueues lost work."""

from django.conf import settings
from django.db import migrations

SCHEDULES = [
    (
        "billing dunning",
        "billing.enforce_dunning",
        settings.BILLING_DUNNING_INTERVAL,
        "Suspend tenants unpaid past the grace period; deprovision cancelled tenants after retention.",
    ),
    (
        "billing requeue",
        "billing.requeue",
        settings.BILLING_REQUEUE_INTERVAL,
        "Re-enqueue Stripe events, notices and meter reports whose message was lost or whose retry is due.",
    ),
    (
        "billing usage sweep",
        "billing.sweep_usage",
        300,
        "Sum the agents' usage reports; notify at 80/90/100% of the pool; meter the overage.",
    ),
]


def create_schedules(apps, schema_editor):  # type: ignore[no-untyped-def]
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, seconds, description in SCHEDULES:
        every, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": task,
                "interval": every,
                "queue": "billing",
                "description": description,
                "enabled": True,
            },
        )


def remove_schedules(apps, schema_editor):  # type: ignore[no-untyped-def]
    names = [name for name, *_ in SCHEDULES]
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=names).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
