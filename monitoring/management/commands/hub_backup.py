"""python manage.py hub_backup: back up the Hub database now (as the 03:00 schedule does)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from monitoring.models import HubBackupStatus
from monitoring.services.backup import hub_backup_run


class Command(BaseCommand):
    help = "Back up the Hub database now: pg_dump, upload (if configured), rotation."

    def handle(self, *args: Any, **options: Any) -> None:
        backup = hub_backup_run()
        if backup.status != HubBackupStatus.SUCCEEDED:
            raise CommandError(f"backup failed: {backup.error}")
        self.stdout.write(self.style.SUCCESS(f"{backup.path} ({backup.size_bytes} bytes, sha256 {backup.sha256})"))
