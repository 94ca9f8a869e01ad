"""python manage.py monitoring_check <name>...: run checks now, as beat would."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitoring.services.checks import CHECKS, check_execute


class Command(BaseCommand):
    help = "Run monitoring checks now (single-flight: skipped while another run holds the lock)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "names", nargs="*", help=f"checks to run: {', '.join(CHECKS)} (default: all but hub_backup)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        names = options["names"] or [name for name in CHECKS if name != "hub_backup"]
        unknown = [name for name in names if name not in CHECKS]
        if unknown:
            raise CommandError(f"unknown check(s): {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
        for name in names:
            result = check_execute(name=name)
            summary = json.dumps(result.summary, default=str) if result.ran else "skipped: another run holds the lock"
            self.stdout.write(f"{name}: {summary}")
