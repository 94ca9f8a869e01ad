"""The heartbeat history's maintenance runs every hour (at :30): raw samples are kept
hours, not days, and the partitions of the hours ahead are made by it."""

from django.db import migrations

NAME = "monitoring heartbeat history prune"


def _schedule(apps, *, hour: str, description: str) -> None:  # type: ignore[no-untyped-def]
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    crontab = CrontabSchedule.objects.filter(
        minute="30", hour=hour, day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    ).first()
    if crontab is None:
        crontab = CrontabSchedule.objects.create(
            minute="30", hour=hour, day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
        )
    PeriodicTask.objects.filter(name=NAME).update(crontab=crontab, description=description, expire_seconds=3600)


def hourly(apps, schema_editor):  # type: ignore[no-untyped-def]
    _schedule(
        apps,
        hour="*",
        description="Heartbeat history: make the partitions ahead, drop whole partitions past retention.",
    )


def daily(apps, schema_editor):  # type: ignore[no-untyped-def]
    _schedule(apps, hour="4", description="Delete heartbeat history past its retention, in batches.")


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0007_restore_drill_and_hub_keys"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(hourly, daily)]
