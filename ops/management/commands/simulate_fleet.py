"""python manage.py simulate_fleet --tenants N [--keys-file PATH]"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ops.simulation import fleet_simulate


class Command(BaseCommand):
    help = "Create N ACTIVE tenants on placeholder servers with registered agents; write 'tenant_id api_key' lines."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenants", type=int, required=True, help="how many tenants")
        parser.add_argument("--keys-file", type=Path, help="where to write 'tenant_id api_key' lines (mode 0600)")
        parser.add_argument("--region", default="eu", choices=["eu", "us"])
        parser.add_argument("--plan", default="build", choices=["lite", "build", "scale", "enterprise"])
        parser.add_argument("--internal", type=int, default=0, help="how many of them are internal tenants")

    def handle(self, *args: Any, **options: Any) -> None:
        count = options["tenants"]
        if not 1 <= count <= 1_000_000:
            raise CommandError("--tenants must be between 1 and 1,000,000")
        started = time.monotonic()
        agents = fleet_simulate(
            count=count, region=options["region"], plan=options["plan"], internal=options["internal"]
        )
        lines = "".join(f"{agent.tenant_id} {agent.api_key}\n" for agent in agents)
        keys_file = Path(options["keys_file"]) if options["keys_file"] else None
        if keys_file:
            keys_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(lines)
            self.stderr.write(
                f"{count} tenants (ids {agents[0].tenant_id}..{agents[-1].tenant_id}) in "
                f"{time.monotonic() - started:.1f}s; keys in {keys_file}"
            )
        else:
            self.stdout.write(lines, ending="")
