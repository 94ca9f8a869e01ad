"""python manage.py hub_restore <file> --database <name> [--keys <file> --identity <file>
--keys-dir <dir>]: a Hub backup into a new database, and its keys into a new directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitoring.services.backup import BackupError, hub_keys_restore, hub_restore


class Command(BaseCommand):
    help = (
        "Restore a Hub database backup (pg_dump custom format) into a new, named database; with --keys, "
        "also decrypt the keys bundle beside it with the identity kept apart and write the keys into a new directory."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="the .dump file (HUB_BACKUP_DIR/hub-<stamp>.dump)")
        parser.add_argument("--database", required=True, help="the database to create and restore into")
        parser.add_argument("--keys", type=Path, help="the keys bundle (HUB_BACKUP_DIR/hub-<stamp>.keys.age)")
        parser.add_argument("--identity", type=Path, help="the age identity file (AGE-SECRET-KEY-1...)")
        parser.add_argument("--keys-dir", type=Path, help="a new directory for the restored keys")

    def handle(self, *args: Any, **options: Any) -> None:
        keys, identity, keys_dir = options["keys"], options["identity"], options["keys_dir"]
        if keys and not (identity and keys_dir):
            raise CommandError("--keys needs --identity and --keys-dir")
        try:
            restored = hub_keys_restore(path=keys, identity_path=identity, directory=keys_dir) if keys else None
            hub_restore(path=options["file"], database=options["database"])
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"restored {options['file']} into database {options['database']}"))
        if restored is not None:
            self.stdout.write(
                self.style.SUCCESS(
                    f"restored the Hub's keys into {restored.directory}; its settings are in {restored.env_file} "
                    f"({', '.join(sorted(restored.settings))})"
                )
            )
