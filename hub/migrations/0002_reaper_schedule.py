"""The periodic jobs live in django-celery-beat's tables, so staff can edit them in
the admin; this migration puts the reaper there."""

from django.db import migrations


def create_schedule(apps, schema_editor):  # type: ignore[no-untyped-def]
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=15, period="seconds")
    PeriodicTask.objects.update_or_create(
        name="pipeline reaper",
        defaults={
            "task": "hub.pipeline.reap",
            "interval": every,
            "queue": "default",
            "description": "Re-enqueue steps whose worker died or whose message was lost.",
            "enabled": True,
        },
    )


def remove_schedule(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name="pipeline reaper").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("hub", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
