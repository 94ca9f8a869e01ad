"""The monitoring checks in django-celery-beat's tables (editable in the admin). A check
message older than its interval is dropped (`expire_seconds`): the next run does the
same work, and a backlog after an outage must not run every check many times over."""

from django.db import migrations

# name, task, every (seconds) or crontab (minute, hour), description
INTERVALS = [
    ("monitoring heartbeats", "monitoring.check_heartbeats", 30,
     "Tenants that missed more than 3 heartbeat intervals; records the Hub's presence for the outage grace."),
    ("monitoring resources", "monitoring.check_resources", 60, "Disk above 85%, memory above 90%."),
    ("monitoring containers", "monitoring.check_containers", 60, "Containers crashed or unhealthy."),
    ("monitoring tls", "monitoring.check_tls", 3600, "TLS certificates expiring in under 14 days."),
    ("monitoring backups", "monitoring.check_backups", 900, "Tenant backup reports: failed databases, stale reports."),
    ("monitoring pool replenishment", "monitoring.replenish_pool", 300,
     "Buy the warm-pool shortfall on Hetzner; alert about Netcup shortfalls."),
    ("monitoring server reconciliation", "monitoring.reconcile_servers", 900,
     "Orphan servers at Hetzner (deleted after a grace period), Hub servers Hetzner no longer has."),
    ("monitoring stuck work", "monitoring.check_stuck_work", 60, "The pipeline reaper; orders past their status deadline."),
    ("monitoring notification requeue", "monitoring.requeue_notifications", 300,
     "Send again the notifications whose message was lost."),
]
CRONTABS = [
    ("monitoring hub database backup", "monitoring.backup_hub_database", "0", "3",
     "pg_dump of the Hub database, upload, rotation (14 daily, 8 weekly, 3 monthly)."),
    ("monitoring heartbeat history prune", "monitoring.prune_history", "30", "4",
     "Delete heartbeat history past its retention, in batches."),
]


def create_schedules(apps, schema_editor):  # type: ignore[no-untyped-def]
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, seconds, description in INTERVALS:
        every = IntervalSchedule.objects.filter(every=seconds, period="seconds").first()
        if every is None:
            every = IntervalSchedule.objects.create(every=seconds, period="seconds")
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": task,
                "interval": every,
                "crontab": None,
                "queue": "monitoring",
                "expire_seconds": seconds,
                "description": description,
                "enabled": True,
            },
        )
    for name, task, minute, hour, description in CRONTABS:
        crontab = CrontabSchedule.objects.filter(
            minute=minute, hour=hour, day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
        ).first()
        if crontab is None:
            crontab = CrontabSchedule.objects.create(
                minute=minute, hour=hour, day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
            )
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": task,
                "crontab": crontab,
                "interval": None,
                "queue": "monitoring",
                "description": description,
                "enabled": True,
            },
        )


def remove_schedules(apps, schema_editor):  # type: ignore[no-untyped-def]
    names = [row[0] for row in INTERVALS] + [row[0] for row in CRONTABS]
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=names).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
