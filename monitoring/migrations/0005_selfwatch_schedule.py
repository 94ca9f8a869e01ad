"""The self-watch check in beat's schedule: periodic jobs gone silent, providers'
buckets above their alert ratio (hub.selfwatch.checks), every minute."""

from django.db import migrations

NAME = "monitoring hub self-watch"


def create_schedule(apps, schema_editor):  # type: ignore[no-untyped-def]
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every = IntervalSchedule.objects.filter(every=60, period="seconds").first()
    if every is None:
        every = IntervalSchedule.objects.create(every=60, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=NAME,
        defaults={
            "task": "monitoring.check_hub_selfwatch",
            "interval": every,
            "crontab": None,
            "queue": "monitoring",
            "expire_seconds": 60,
            "description": "Periodic jobs silent for twice their period; provider rate-limit buckets above 80%.",
            "enabled": True,
        },
    )


def remove_schedule(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0004_notification_and_poolpurchase_move_out"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
