"""`python manage.py sandbox up|down|status|env|...`: the provisioning sandbox
(sandbox/README.md). A thin shell over sandbox.control."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from sandbox.control import (
    DEFAULT_CLOUDFLARE_PORT,
    DEFAULT_HETZNER_PORT,
    DEFAULT_SSH_PORT,
    Sandbox,
    SandboxError,
    default_state_dir,
)

USAGE = """
  up [--hosts N] [--env-file PATH]   start everything in the background, write or print the settings
  down                               stop the emulators and every sandbox host
  status | env                       show what runs | print the settings again
  freeze ADDR | thaw ADDR            make a host stop answering | answer again
  fail ADDR COMMAND TIMES            the next TIMES stand-in calls starting with COMMAND fail
  calls ADDR                         the stand-in calls a host recorded, as JSON lines
  fault hetzner|cloudflare STATUS [COUNT [PATH]]   the next COUNT API calls answer STATUS
  zones                              the Cloudflare account's zones: status and nameservers
  add-zone NAME [pending]            a zone put in the account by the operator (active unless pending)
  delegate NAME                      play the customer delegating NAME's nameservers: it turns active
  releases                           a default release (made-up digest) of every component
                                     that has none, in the database of DATABASE_URL
"""


class Command(BaseCommand):
    # The sandbox must start even while another app's code is mid-change.
    requires_system_checks: list[str] = []
    help = "The provisioning sandbox: Hetzner and Cloudflare emulators and SSH sandbox hosts." + USAGE

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        kwargs["formatter_class"] = argparse.RawDescriptionHelpFormatter
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "action",
            choices=[
                "up",
                "down",
                "status",
                "env",
                "freeze",
                "thaw",
                "fail",
                "calls",
                "fault",
                "zones",
                "add-zone",
                "delegate",
                "releases",
            ],
        )
        parser.add_argument("operands", nargs="*", help="arguments of the action (see above)")
        parser.add_argument("--hosts", type=int, default=2, help="sandbox hosts to start (up)")
        parser.add_argument("--env-file", type=Path, help="write the KEY=VALUE settings here instead of printing")
        parser.add_argument("--state-dir", type=Path, default=None, help="default: $SANDBOX_DIR or var/sandbox")
        parser.add_argument("--ssh-port", type=int, default=DEFAULT_SSH_PORT, help="0 picks a free port")
        parser.add_argument("--hetzner-port", type=int, default=DEFAULT_HETZNER_PORT, help="0 picks a free port")
        parser.add_argument("--cloudflare-port", type=int, default=DEFAULT_CLOUDFLARE_PORT, help="0 picks a free port")
        parser.add_argument("--action-seconds", type=float, default=1.0, help="how long a Hetzner action runs")
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for everything to answer")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["hosts"] < 0:
            raise CommandError("--hosts must be 0 or more")
        sandbox = Sandbox(
            state_dir=options["state_dir"] or default_state_dir(),
            hosts_count=options["hosts"],
            ssh_port=options["ssh_port"],
            hetzner_port=options["hetzner_port"],
            cloudflare_port=options["cloudflare_port"],
            action_seconds=options["action_seconds"],
        )
        action, rest = options["action"], options["operands"]
        try:
            if action == "up":
                if sandbox.running():
                    self.stderr.write(f"sandbox already running in {sandbox.state_dir}; using it as it is")
                sandbox.up(timeout=options["timeout"])
                self._emit(sandbox, options["env_file"])
            elif action == "down":
                stopped = sandbox.down()
                self.stderr.write("sandbox stopped" if stopped else f"no sandbox was running in {sandbox.state_dir}")
            elif action == "status":
                self._status(sandbox)
            elif action == "releases":
                self._releases()
            else:
                self._operate(Sandbox.attach(sandbox.state_dir), action, rest, options["env_file"])
        except (SandboxError, LookupError, OSError) as exc:
            raise CommandError(str(exc)) from exc

    def _operate(self, sandbox: Sandbox, action: str, rest: list[str], env_file: Path | None) -> None:
        expected = {"env": 0, "freeze": 1, "thaw": 1, "calls": 1, "fail": 3, "zones": 0, "delegate": 1}
        if action in expected and len(rest) != expected[action]:
            raise CommandError(f"{action} takes {expected[action]} argument(s); see --help")
        if action == "env":
            self._emit(sandbox, env_file)
        elif action == "freeze":
            sandbox.host(rest[0]).freeze()
        elif action == "thaw":
            sandbox.host(rest[0]).thaw()
        elif action == "calls":
            for call in sandbox.host(rest[0]).calls():
                self.stdout.write(json.dumps(call))
        elif action == "fail":
            if not rest[2].isdigit():
                raise CommandError("TIMES must be a number")
            sandbox.host(rest[0]).fail(rest[1], int(rest[2]))
        elif action == "fault":
            if len(rest) not in (2, 3, 4) or rest[0] not in ("hetzner", "cloudflare") or not rest[1].isdigit():
                raise CommandError("usage: fault hetzner|cloudflare STATUS [COUNT [PATH]]")
            count = int(rest[2]) if len(rest) > 2 else 1
            path = rest[3] if len(rest) > 3 else None
            inject = sandbox.hetzner_fault if rest[0] == "hetzner" else sandbox.cloudflare_fault
            inject(status=int(rest[1]), count=count, path=path)
        elif action == "zones":
            for zone in sandbox.zones():
                self.stdout.write(f"{zone['name']}\t{zone['status']}\t{' '.join(zone['name_servers'])}\t{zone['id']}")
        elif action == "add-zone":
            if len(rest) not in (1, 2) or rest[1:] not in ([], ["pending"]):
                raise CommandError("usage: add-zone NAME [pending]")
            zone = sandbox.add_zone(rest[0], status="pending" if rest[1:] else "active")
            self.stdout.write(f"{zone['name']}\t{zone['status']}\t{' '.join(zone['name_servers'])}\t{zone['id']}")
        elif action == "delegate":
            zone = sandbox.delegate_zone(rest[0])
            self.stdout.write(f"{zone['name']}\t{zone['status']}")

    def _releases(self) -> None:
        from sandbox.releases import seed_releases

        for release in seed_releases(actor="sandbox"):
            self.stdout.write(f"{release.component} {release.version}: {release.image} (default)")

    def _emit(self, sandbox: Sandbox, env_file: Path | None) -> None:
        if env_file is None:
            self.stdout.write(sandbox.env_lines(), ending="")
        else:
            sandbox.write_env_file(env_file)
            self.stderr.write(f"sandbox up; settings written to {env_file}")

    def _status(self, sandbox: Sandbox) -> None:
        if not sandbox.running():
            self.stdout.write(f"sandbox: not running ({sandbox.state_dir})")
            return
        sandbox = Sandbox.attach(sandbox.state_dir)
        self.stdout.write(f"sandbox: running ({sandbox.state_dir})")
        self.stdout.write(f"  hetzner    {sandbox.hetzner_url}/v1")
        self.stdout.write(f"  cloudflare {sandbox.cloudflare_url}/client/v4")
        for host in sandbox.all_hosts():
            self.stdout.write(f"  host       {host.endpoint} {'up' if host.alive() else 'NOT ANSWERING'}")
