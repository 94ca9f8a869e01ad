"""python manage.py hub_verify_restore [--tenants N]: after a restore, prove the Hub can
work: it reaches tenants' servers over SSH with its key and reads their stored secrets
with its field keys. Prints one JSON line per tenant; exits non-zero if any failed."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitoring.services.backup import hub_restore_verify


class Command(BaseCommand):
    help = "Check that a restored Hub reaches tenants over SSH and decrypts their stored secrets."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenants", type=int, default=3, help="how many tenants with a server to try")

    def handle(self, *args: Any, **options: Any) -> None:
        results = hub_restore_verify(sample=options["tenants"])
        for result in results:
            self.stdout.write(json.dumps(result))
        if not results:
            raise CommandError("no tenant with a server to verify against")
        if any(not r["ok"] for r in results):
            raise CommandError("the restored Hub cannot do its work: see the lines above")
