"""The sandbox's background process: runs both emulators and owns every sandbox host's
sshd, and stops them all on SIGTERM. Started by `sandbox.control.Sandbox.up()`; it
reports its endpoints in <state-dir>/state.json once everything answers."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sandbox.cloudflare import CloudflareEmulator
from sandbox.hetzner import HetznerEmulator
from sandbox.hosts import BACKUP_TARGET_ROLE, HostManager, ensure_key_pair

logger = logging.getLogger("sandbox.supervisor")

STATE_FILE = "state.json"
HUB_KEY_FILE = "hub_ed25519"


def write_state(state_dir: Path, state: dict[str, Any]) -> None:
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox.supervisor")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--ssh-port", type=int, default=2222)
    parser.add_argument("--hetzner-port", type=int, default=0)
    parser.add_argument("--cloudflare-port", type=int, default=0)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--action-seconds", type=float, default=1.0)
    parser.add_argument("--hetzner-rate-limit", type=int, default=3600)
    parser.add_argument("--hetzner-burst", type=int, default=None)
    parser.add_argument("--cloudflare-rate-limit", type=int, default=1200)
    parser.add_argument("--cloudflare-burst", type=int, default=None)
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="stop when the process that started us ends (tests)"
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    secrets = json.loads((state_dir / "secrets.json").read_text())
    hub_key = ensure_key_pair(state_dir / HUB_KEY_FILE, "hub@sandbox")
    stop = threading.Event()
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    manager = HostManager(
        state_dir=state_dir, ssh_port=args.ssh_port, hub_public_key=Path(f"{hub_key}.pub").read_text()
    )
    servers: list[Any] = []
    try:
        hetzner = HetznerEmulator(
            (args.bind, args.hetzner_port),
            token=secrets["hcloud_token"],
            rate_limit_per_hour=args.hetzner_rate_limit,
            burst=args.hetzner_burst,
            action_seconds=args.action_seconds,
            hosts=manager,
        )
        hetzner.serve_in_thread()
        servers.append(hetzner)
        cloudflare = CloudflareEmulator(
            (args.bind, args.cloudflare_port),
            token=secrets["cloudflare_token"],
            zone_id=secrets["cloudflare_zone_id"],
            zone_name=secrets["cloudflare_zone_name"],
            account_id=secrets["cloudflare_account_id"],
            rate_limit=args.cloudflare_rate_limit,
            burst=args.cloudflare_burst,
        )
        cloudflare.serve_in_thread()
        servers.append(cloudflare)
        manager.session_env["SANDBOX_DNS_RESOLVER"] = f"http://{args.bind}:{cloudflare.port}/__sandbox/resolve"
        addrs = [manager.launch(name=f"sandbox-{index + 1}") for index in range(args.hosts)]
        # The off-site backup target: an SFTP server the tenants' backups go to.
        backup_target = manager.launch(name="backup-target", role=BACKUP_TARGET_ROLE)
        with ThreadPoolExecutor(max_workers=max(1, len(addrs) + 1)) as pool:
            list(pool.map(manager.wait_ready, [*addrs, backup_target]))
        write_state(
            state_dir,
            {
                "ready": True,
                "pid": os.getpid(),
                "started": time.time(),
                "bind": args.bind,
                "hetzner_port": hetzner.port,
                "cloudflare_port": cloudflare.port,
                "ssh_port": args.ssh_port,
                "hosts": addrs,
                "backup_target": backup_target,
                "hub_key": str(hub_key),
            },
        )
        logger.info("sandbox up: hetzner :%s cloudflare :%s hosts %s", hetzner.port, cloudflare.port, addrs)
        while not stop.wait(0.5):
            if args.exit_with_parent and os.getppid() != parent:
                logger.info("parent %s ended; stopping", parent)
                break
    except Exception as exc:
        logger.exception("sandbox failed")
        write_state(state_dir, {"ready": False, "pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}"})
        return 1
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        manager.stop_all()
        state_path = state_dir / STATE_FILE
        if state_path.exists():
            state = json.loads(state_path.read_text())
            if state.get("pid") == os.getpid() and state.get("ready"):
                write_state(state_dir, {**state, "ready": False, "stopped": time.time()})
        logger.info("sandbox stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
