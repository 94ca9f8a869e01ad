"""Start, stop and drive a sandbox: the API behind `python manage.py sandbox` and the
one tests use.

    sandbox = Sandbox(state_dir, hosts=2, hetzner_port=0, cloudflare_port=0).up()
    sandbox.env["HCLOUD_API_ENDPOINT"]            # point a client at the emulator
    sandbox.hosts[0].calls()                      # what the stand-ins were asked
    sandbox.hosts[0].fail("apt-get install", 2)   # the next two installs fail
    sandbox.hetzner_fault(status=429, count=3)    # the next three API calls get 429
    sandbox.down()
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sandbox import faults, hosts
from sandbox.supervisor import HUB_KEY_FILE, STATE_FILE

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO_ROOT / "var" / "sandbox"
DEFAULT_HETZNER_PORT = 8701
DEFAULT_CLOUDFLARE_PORT = 8702
DEFAULT_SSH_PORT = 2222
DEFAULT_ZONE_NAME = "hub-sandbox.test"
BACKUP_TARGET_BASE_PATH = "/srv/hub-backups"
HTTP_TIMEOUT = 5.0


class SandboxError(RuntimeError):
    pass


def default_state_dir() -> Path:
    return Path(os.environ.get("SANDBOX_DIR") or DEFAULT_STATE_DIR)


def free_port(addr: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((addr, 0))
        return int(sock.getsockname()[1])


def _http_json(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})  # noqa: S310 - loopback only
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310 - loopback only
        raw = response.read()
    return json.loads(raw) if raw else None


@dataclass
class SandboxHost:
    """One sandbox host, addressed by its loopback address."""

    state_dir: Path
    addr: str
    port: int

    @property
    def endpoint(self) -> str:
        return f"{self.addr}:{self.port}"

    @property
    def root(self) -> Path:
        """HOST_ROOT: the host's own filesystem root (its /etc is root / "etc")."""
        return Path(hosts.host_info(self.state_dir, self.addr).root)

    def calls(self, cmd: str | None = None) -> list[dict[str, Any]]:
        records = hosts.host_calls(self.state_dir, self.addr)
        return [r for r in records if cmd is None or r["cmd"] == cmd]

    def fail(self, command: str, times: int) -> None:
        """The next `times` stand-in calls whose words start with `command` exit 1."""
        faults.host_fault_set(self.root, command=command, times=times, kind="fail")

    def slow(self, command: str, seconds: float) -> None:
        """Stand-in calls named by `command` (as lean.fault_key_matches reads it) first sleep `seconds`."""
        faults.host_fault_set(self.root, command=command, times=int(seconds), kind="sleep")

    def clear_faults(self) -> None:
        faults.host_faults_clear(self.root)

    def freeze(self) -> None:
        """The host stops answering (its sshd and sessions get SIGSTOP)."""
        hosts.host_freeze(self.state_dir, self.addr)

    def thaw(self) -> None:
        hosts.host_thaw(self.state_dir, self.addr)

    def alive(self) -> bool:
        return hosts.wait_for_banner(self.addr, self.port, timeout=1.0)


@dataclass
class Sandbox:
    state_dir: Path = field(default_factory=default_state_dir)
    hosts_count: int = 2
    ssh_port: int = DEFAULT_SSH_PORT
    hetzner_port: int = DEFAULT_HETZNER_PORT
    cloudflare_port: int = DEFAULT_CLOUDFLARE_PORT
    zone_name: str = DEFAULT_ZONE_NAME
    action_seconds: float = 1.0
    hetzner_burst: int | None = None
    cloudflare_burst: int | None = None
    # Tie the sandbox's life to this process, so a crashed test run leaves nothing behind.
    exit_with_parent: bool = False
    state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()

    @classmethod
    def attach(cls, state_dir: Path | None = None) -> Sandbox:
        """The sandbox already running in `state_dir` (default: $SANDBOX_DIR or
        var/sandbox), e.g. the one `manage.py sandbox up` started for a demo."""
        sandbox = cls(state_dir=state_dir or default_state_dir())
        if not sandbox.running():
            raise SandboxError(f"no sandbox running in {sandbox.state_dir}")
        sandbox.state = sandbox._read_state()
        return sandbox

    # --- lifecycle ------------------------------------------------------------------

    def up(self, *, timeout: float = 60.0) -> Sandbox:
        """Start the supervisor in the background and return once everything answers.
        If this state directory's sandbox already runs, attach to it instead."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.running():
            self.state = self._read_state()
            self._check_answering(timeout=timeout)
            return self
        self._secrets()
        hosts.ensure_key_pair(self.state_dir / HUB_KEY_FILE, "hub@sandbox")
        hosts_root = hosts.hosts_dir(self.state_dir)
        if hosts_root.exists():
            for leftover in hosts_root.iterdir():
                if (leftover / "host.json").exists():
                    hosts.host_kill(self.state_dir, leftover.name)
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        ssh_port = self.ssh_port or free_port()
        cmd = [
            sys.executable,
            "-m",
            "sandbox.supervisor",
            "--state-dir",
            str(self.state_dir),
            "--hosts",
            str(self.hosts_count),
            "--ssh-port",
            str(ssh_port),
            "--hetzner-port",
            str(self.hetzner_port),
            "--cloudflare-port",
            str(self.cloudflare_port),
            "--action-seconds",
            str(self.action_seconds),
        ]
        if self.hetzner_burst:
            cmd += ["--hetzner-burst", str(self.hetzner_burst)]
        if self.cloudflare_burst:
            cmd += ["--cloudflare-burst", str(self.cloudflare_burst)]
        if self.exit_with_parent:
            cmd.append("--exit-with-parent")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        with open(self.state_dir / "supervisor.log", "ab") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            state = self._read_state()
            if state.get("pid") == proc.pid and (state.get("ready") or state.get("error")):
                break
            if proc.poll() is not None:
                raise SandboxError(f"sandbox supervisor exited ({proc.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                proc.terminate()
                raise SandboxError(f"sandbox did not come up within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)
        if state.get("error"):
            proc.wait(timeout=15)
            raise SandboxError(f"sandbox failed to start: {state['error']}\n{self.log_tail()}")
        self.state = state
        self._check_answering(timeout=max(1.0, deadline - time.monotonic()))
        return self

    def down(self, *, timeout: float = 20.0) -> bool:
        """Stop the supervisor and every sshd it started. True if something was running."""
        state = self._read_state()
        pid = state.get("pid")
        stopped = False
        if pid and self._is_supervisor(pid):
            os.kill(pid, signal.SIGTERM)
            stopped = True
            deadline = time.monotonic() + timeout
            while self._is_supervisor(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._is_supervisor(pid):
                os.kill(pid, signal.SIGKILL)
        hosts_root = hosts.hosts_dir(self.state_dir)
        if hosts_root.exists():
            # Hosts whose supervisor died without cleaning up.
            for host_dir in hosts_root.iterdir():
                if (host_dir / "host.json").exists():
                    hosts.host_kill(self.state_dir, host_dir.name)
                if host_dir.is_symlink():
                    # A host kept outside the state directory (the backup target).
                    shutil.rmtree(host_dir.resolve(), ignore_errors=True)
                    host_dir.unlink()
        return stopped

    def running(self) -> bool:
        state = self._read_state()
        return bool(state.get("ready") and state.get("pid") and self._is_supervisor(state["pid"]))

    def __enter__(self) -> Sandbox:
        return self.up()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.down()

    # --- what the Hub is told ---------------------------------------------------------

    @property
    def hetzner_url(self) -> str:
        return f"http://{self.state['bind']}:{self.state['hetzner_port']}"

    @property
    def cloudflare_url(self) -> str:
        return f"http://{self.state['bind']}:{self.state['cloudflare_port']}"

    @property
    def hosts(self) -> list[SandboxHost]:
        """The hosts started by `up` (SANDBOX_HOSTS), not those bought through Hetzner."""
        return [SandboxHost(self.state_dir, addr, self.state["ssh_port"]) for addr in self.state.get("hosts", [])]

    @property
    def backup_target(self) -> SandboxHost:
        """The off-site SFTP target of the tenants' backups (BACKUP_TARGET_*)."""
        return SandboxHost(self.state_dir, self.state["backup_target"], self.state["ssh_port"])

    def backup_target_host_key(self) -> str:
        """The target's host key, as a `known_hosts` line without the host name."""
        target = hosts.host_info(self.state_dir, self.state["backup_target"])
        key = (Path(target.dir) / "ssh_host_ed25519_key.pub").read_text().split()
        return f"{key[0]} {key[1]}"

    def all_hosts(self) -> list[SandboxHost]:
        """Every host still running: those from `up` and those bought through Hetzner."""
        found = []
        addrs = [path.parent.name for path in hosts.hosts_dir(self.state_dir).glob("*/host.json")]
        for addr in sorted(addrs, key=ipaddress.IPv4Address):
            info = hosts.host_info(self.state_dir, addr)
            if hosts.host_processes(info):
                found.append(SandboxHost(self.state_dir, info.addr, info.port))
        return found

    def host(self, addr: str) -> SandboxHost:
        """Any host of this sandbox, including those created through the Hetzner API."""
        info = hosts.host_info(self.state_dir, addr)
        return SandboxHost(self.state_dir, info.addr, info.port)

    @property
    def env(self) -> dict[str, str]:
        if not self.state:
            self.state = self._read_state()
        secret = self._secrets()
        return {
            "HCLOUD_API_ENDPOINT": f"{self.hetzner_url}/v1",
            "HCLOUD_TOKEN": secret["hcloud_token"],
            "HCLOUD_SSH_PORT": str(self.state["ssh_port"]),
            "CLOUDFLARE_API_BASE": f"{self.cloudflare_url}/client/v4",
            "CLOUDFLARE_API_TOKEN": secret["cloudflare_token"],
            "CLOUDFLARE_ZONE_ID": secret["cloudflare_zone_id"],
            "CLOUDFLARE_ZONE_NAME": secret["cloudflare_zone_name"],
            "CLOUDFLARE_ACCOUNT_ID": secret["cloudflare_account_id"],
            "HUB_SSH_PRIVATE_KEY_PATH": self.state["hub_key"],
            "SANDBOX_HOSTS": ",".join(h.endpoint for h in self.hosts),
            "SANDBOX_DIR": str(self.state_dir),
            "BACKUP_TARGET_HOST": self.state["backup_target"],
            "BACKUP_TARGET_PORT": str(self.state["ssh_port"]),
            "BACKUP_TARGET_USER": "root",
            "BACKUP_TARGET_BASE_PATH": BACKUP_TARGET_BASE_PATH,
            "BACKUP_TARGET_HOST_KEY": self.backup_target_host_key(),
        }

    def env_lines(self) -> str:
        # A value with a space (the target's host key) is quoted, so that a shell can
        # source the file; django-environ and bootstrap.sh read the quotes off.
        return "".join(f'{key}="{value}"\n' if " " in value else f"{key}={value}\n" for key, value in self.env.items())

    def write_env_file(self, path: Path) -> None:
        """Set our keys in a KEY=VALUE file, keeping every other line already there."""
        ours = self.env
        kept = []
        if path.exists():
            for line in path.read_text().splitlines():
                key = line.split("=", 1)[0].strip()
                if key not in ours:
                    kept.append(line)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{line}\n" for line in kept) + self.env_lines())

    # --- faults and observation -------------------------------------------------------

    def _fault(self, base: str, *, status: int, count: int, method: str | None, path: str | None, **extra: Any) -> None:
        _http_json(
            "POST",
            f"{base}/__sandbox/faults",
            {"status": status, "count": count, "method": method, "path": path, **extra},
        )

    def hetzner_fault(
        self, *, status: int, count: int = 1, method: str | None = None, path: str | None = None, **extra: Any
    ) -> None:
        """The next `count` matching Hetzner calls answer `status` (429 carries Retry-After).
        `path` is a prefix of the request path, e.g. "/v1/servers"."""
        self._fault(self.hetzner_url, status=status, count=count, method=method, path=path, **extra)

    def cloudflare_fault(
        self, *, status: int, count: int = 1, method: str | None = None, path: str | None = None, **extra: Any
    ) -> None:
        self._fault(self.cloudflare_url, status=status, count=count, method=method, path=path, **extra)

    def clear_faults(self) -> None:
        for base in (self.hetzner_url, self.cloudflare_url):
            _http_json("DELETE", f"{base}/__sandbox/faults")

    def requests(self, emulator: str) -> list[dict[str, Any]]:
        """The API requests an emulator ("hetzner" or "cloudflare") served, oldest first."""
        base = self.hetzner_url if emulator == "hetzner" else self.cloudflare_url
        return list(_http_json("GET", f"{base}/__sandbox/requests")["requests"])

    def clear_requests(self) -> None:
        for base in (self.hetzner_url, self.cloudflare_url):
            _http_json("DELETE", f"{base}/__sandbox/requests")

    def set_rate_limit(self, emulator: str, *, capacity: int, refill_per_second: float) -> None:
        base = self.hetzner_url if emulator == "hetzner" else self.cloudflare_url
        _http_json(
            "POST", f"{base}/__sandbox/rate_limit", {"capacity": capacity, "refill_per_second": refill_per_second}
        )

    def add_zone(self, name: str, *, status: str = "active") -> dict[str, Any]:
        """A zone in the Cloudflare account, put there by the operator (not through
        the Hub): `active` (its nameservers already delegated) or `pending`."""
        return dict(
            _http_json("POST", f"{self.cloudflare_url}/__sandbox/zones", {"name": name, "status": status})["zone"]
        )

    def delegate_zone(self, name: str) -> dict[str, Any]:
        """Play the customer who points their domain at the two nameservers Cloudflare
        assigned: the zone (by name or id) turns active."""
        return dict(_http_json("POST", f"{self.cloudflare_url}/__sandbox/zones/{name}/delegate")["zone"])

    def zones(self) -> list[dict[str, Any]]:
        """Every zone of the Cloudflare account, as the API shows it."""
        return list(_http_json("GET", f"{self.cloudflare_url}/__sandbox/zones")["zones"])

    def resolve(self, name: str, record_type: str = "A") -> list[str]:
        """What a public resolver answers for the name (TXT values without their quotes)."""
        query = urllib.parse.urlencode({"name": name, "type": record_type})
        answer = _http_json("GET", f"{self.cloudflare_url}/__sandbox/resolve?{query}")
        return [a["data"].strip('"') if record_type == "TXT" else a["data"] for a in answer.get("Answer", [])]

    def create_orphan_server(self, *, name: str, labels: dict[str, str] | None = None, host: bool = False) -> Any:
        """A server in the Hetzner account that the Hub did not buy through its API."""
        body = {"name": name, "labels": labels or {}, "host": host}
        return _http_json("POST", f"{self.hetzner_url}/__sandbox/servers", body)

    # --- internals ------------------------------------------------------------------

    def _secrets(self) -> dict[str, str]:
        """Tokens and ids made once per state directory, so a restarted sandbox keeps
        the settings a developer already has in .env."""
        path = self.state_dir / "secrets.json"
        made = {
            "hcloud_token": secrets.token_hex(32),
            "cloudflare_token": secrets.token_urlsafe(30),
            "cloudflare_zone_id": secrets.token_hex(16),
            "cloudflare_zone_name": self.zone_name,
            "cloudflare_account_id": secrets.token_hex(16),
        }
        kept = dict(json.loads(path.read_text())) if path.exists() else {}
        if set(made) <= set(kept):
            return kept
        # A state directory from before a key existed keeps what it has and gains the rest.
        data = {**made, **kept}
        path.write_text(json.dumps(data, indent=2))
        path.chmod(0o600)
        return data

    def _read_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.state_dir / STATE_FILE).read_text()))
        except (OSError, ValueError):
            return {}

    def _is_supervisor(self, pid: int) -> bool:
        """The pid is this state directory's supervisor (not a recycled pid)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        if stat[stat.rfind(")") + 2] == "Z":
            return False
        return b"sandbox.supervisor" in cmdline and str(self.state_dir).encode() in cmdline

    def _check_answering(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for base in (self.hetzner_url, self.cloudflare_url):
            while True:
                try:
                    _http_json("GET", f"{base}/__sandbox/health")
                    break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        raise SandboxError(f"{base} does not answer: {exc}") from exc
                    time.sleep(0.05)
        for host in self.hosts:
            if not hosts.wait_for_banner(host.addr, host.port, timeout=max(1.0, deadline - time.monotonic())):
                raise SandboxError(f"sandbox host {host.endpoint} does not answer")

    def log_tail(self, chars: int = 3000) -> str:
        path = self.state_dir / "supervisor.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""
