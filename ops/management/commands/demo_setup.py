"""`python manage.py demo_setup`: what `make demo` does to its own database before the
Hub starts: the staff login it prints, periodic jobs fast enough to watch (the
rollout gate judges every few seconds instead of every 15), and a default release of
every component the tenants install (sandbox/releases.py, made-up digests). Never run it against a
database you keep: scripts/demo.sh runs it on the demo's own, made afresh each time."""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from hub.audit import audit_record
from sandbox.releases import seed_releases

# Periodic jobs whose interval the demo shortens (name as the data migrations made them).
FAST_SCHEDULES = ("rollouts evaluate",)


class Command(BaseCommand):
    help = (
        "Prepare the demo database: a staff login (ADMIN_USER / ADMIN_PASSWORD), fast periodic jobs and "
        "a default release of every component."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--gate-seconds", type=int, default=2, help="how often the rollout gate runs")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        username, password = os.environ.get("ADMIN_USER", ""), os.environ.get("ADMIN_PASSWORD", "")
        if not username or not password:
            raise CommandError("set ADMIN_USER and ADMIN_PASSWORD")
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com"}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save(update_fields=["is_staff", "is_superuser", "password"])
        if created:
            audit_record(actor="make demo", action="user.create", object_type="user", object_id=user.pk, new=username)

        every, _ = IntervalSchedule.objects.get_or_create(every=options["gate_seconds"], period="seconds")
        for task in PeriodicTask.objects.filter(name__in=FAST_SCHEDULES):
            old = task.interval.every if task.interval else None
            task.interval = every
            task.expire_seconds = options["gate_seconds"] * 2
            task.save(update_fields=["interval", "expire_seconds"])
            audit_record(
                actor="make demo",
                action="schedule.change",
                object_type="periodic_task",
                object_id=task.pk,
                old=old,
                new=every.every,
            )

        seeded = seed_releases(actor="make demo")
        self.stdout.write(f"{len(seeded)} sandbox releases made default")
