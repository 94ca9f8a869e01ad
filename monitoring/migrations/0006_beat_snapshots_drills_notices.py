"""Beat rows (editable in the admin) for the health notices to customers, the daily
provider snapshots (run every 15 minutes: each run takes the tenants whose slot of the
day has come) and the weekly restore drill."""

from django.db import migrations

# name, task, every (seconds) or None, crontab (minute, hour, day_of_week), description
ROWS = [
    ("monitoring health notices", "monitoring.send_health_notices", 60, None,
     "Tell customers of their tenant's health: HARD at once, MEDIUM after 3 failures, once per episode."),
    ("monitoring server snapshots", "monitoring.take_snapshots", 900, None,
     "Daily provider snapshot of each tenant's server, staggered by tenant over the day; 3 kept."),
    ("monitoring restore drill", "monitoring.restore_drill", None, ("30", "5", "0"),
     "Restore a random sample of tenants' latest backups into a scratch area and check them."),
]


def create_schedules(apps, schema_editor):  # type: ignore[no-untyped-def]
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, seconds, cron, description in ROWS:
        defaults = {"task": task, "queue": "monitoring", "description": description, "enabled": True}
        if seconds:
            every = IntervalSchedule.objects.filter(every=seconds, period="seconds").first()
            if every is None:
                every = IntervalSchedule.objects.create(every=seconds, period="seconds")
            defaults.update({"interval": every, "crontab": None, "expire_seconds": seconds})
        else:
            minute, hour, day_of_week = cron
            crontab, _ = CrontabSchedule.objects.get_or_create(
                minute=minute, hour=hour, day_of_week=day_of_week, day_of_month="*", month_of_year="*", timezone="UTC"
            )
            defaults.update({"crontab": crontab, "interval": None})
        PeriodicTask.objects.update_or_create(name=name, defaults=defaults)


def remove_schedules(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=[row[0] for row in ROWS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0005_selfwatch_schedule"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
