"""The rollout evaluation in django-celery-beat's tables (editable in the admin): every
15 seconds on the `rollouts` queue. A message older than 30 seconds is dropped: the
next run does the same work."""

from django.db import migrations

NAME = "rollouts evaluate"


def create_schedule(apps, schema_editor):  # type: ignore[no-untyped-def]
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=15, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=NAME,
        defaults={
            "task": "rollouts.evaluate",
            "interval": every,
            "queue": "rollouts",
            "expire_seconds": 30,
            "description": "Judge every running rollout's current stage; halt, advance or wait.",
            "enabled": True,
        },
    )


def remove_schedule(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rollouts", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
