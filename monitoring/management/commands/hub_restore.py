"""python manage.py hub_restore <file> --database <name>: a Hub backup into a new database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitoring.services.backup import BackupError, hub_restore


class Command(BaseCommand):
    help = "Restore a Hub database backup (pg_dump custom format) into a new, named database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="the .dump file (HUB_BACKUP_DIR/hub-<stamp>.dump)")
        parser.add_argument("--database", required=True, help="the database to create and restore into")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            hub_restore(path=options["file"], database=options["database"])
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"restored {options['file']} into database {options['database']}"))
