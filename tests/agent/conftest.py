"""Fixtures for the agent's tests: the docker stand-in on a temporary host root, and a
small stdlib HTTP server standing in for the Hub at the edge of the agent's world
(it records what the agent sent and can be switched off and on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.config import Config

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "sandbox" / "standins" / "docker"
# Run through this interpreter rather than the shebang: pyenv's shim costs 70 ms a call.
DOCKER_COMMAND = f"{sys.executable} {STANDIN}"
API_KEY = "hub-test-key-7d1f0c2a9b"
# The stack's images, pinned by digest as provisioning pins them; their versions are
# on the hub.version label.
CHATWOOT_41 = "registry.example/chatwoot@sha256:" + "41" * 32
REDIS_7 = "redis@sha256:" + "7" * 64
REGISTRATION_TOKEN = "reg-token-55aa01"


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeHub:
    """Answers the agent protocol of DESIGN.md. A command stays pending (re-delivered
    in every heartbeat reply) until its result arrives, as the Hub does."""

    heartbeat_interval: float = 1.0
    api_key: str = API_KEY
    registration_tokens: set[str] = field(default_factory=lambda: {REGISTRATION_TOKEN})
    requests: list[Recorded] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, list[Any]] = field(default_factory=dict)
    status_override: int | None = None
    fail_paths: dict[str, int] = field(default_factory=dict)
    accepted: list[Recorded] = field(default_factory=list)
    raw_reply: bytes | None = None
    server: ThreadingHTTPServer | None = None
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bodies(self, path: str) -> list[Any]:
        with self.lock:
            return [r.body for r in self.requests if r.path == path]

    def accepted_bodies(self, path: str) -> list[Any]:
        with self.lock:
            return [r.body for r in self.accepted if r.path == path]

    def answer(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append(Recorded(path, headers, body))
        status, reply = self._answer(path, headers, body)
        if 200 <= status < 300:
            with self.lock:
                self.accepted.append(Recorded(path, headers, body))
        return status, reply

    def _answer(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        if self.status_override is not None:
            return self.status_override, {"detail": "forced"}
        if path in self.fail_paths:
            return self.fail_paths[path], {"detail": "forced"}
        if path == "/api/v1/agent/register":
            if body.get("registration_token") not in self.registration_tokens:
                return 403, {"detail": "invalid token"}
            self.registration_tokens.discard(body["registration_token"])
            return 201, {"tenant_id": 1, "api_key": self.api_key, "heartbeat_interval": self.heartbeat_interval}
        if headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, {"detail": "bad credentials"}
        if path == "/api/v1/agent/rotate-key":
            self.api_key = f"hub-rotated-key-{len(self.requests)}"
            return 201, {"api_key": self.api_key, "old_keys_expire_at": "2030-01-01T00:00:00Z"}
        if path == "/api/v1/agent/heartbeat":
            with self.lock:
                pending = [c for c in self.commands if str(c["id"]) not in self.results]
            return 200, {"heartbeat_interval": self.heartbeat_interval, "commands": pending}
        if path.startswith("/api/v1/agent/commands/") and path.endswith("/result"):
            command_id = path.split("/")[-2]
            with self.lock:
                self.results.setdefault(command_id, []).append(body)
            return 200, {"ok": True}
        if path in ("/api/v1/agent/backups", "/api/v1/agent/usage"):
            return 201, {"ok": True}
        return 404, {"detail": "not found"}

    def up(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = None
                status, reply = hub.answer(self.path, dict(self.headers), body)
                data = hub.raw_reply if hub.raw_reply is not None else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub().up()
    yield fake
    fake.down()


@pytest.fixture
def host_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "host"
    root.mkdir()
    monkeypatch.setenv("HOST_ROOT", str(root))
    return root


@pytest.fixture
def docker_cli(host_root: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the stand-in as a real process on the test's host root."""

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, str(STANDIN), *args],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "HOST_ROOT": str(host_root)},
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {args} exited {done.returncode}: {done.stderr}")
        return done

    return run


def engine_state(host_root: Path) -> dict[str, Any]:
    path = host_root / "var/lib/sandbox-docker/state.json"
    return json.loads(path.read_text()) if path.exists() else {"containers": {}, "images": {}}


def container_states(host_root: Path) -> dict[str, dict[str, Any]]:
    return engine_state(host_root)["containers"]


def image_refs(host_root: Path) -> set[str]:
    return set(engine_state(host_root)["images"])


def make_certificate(cert: Path, *, days: int) -> None:
    """A self-signed certificate for acme.example, valid for `days` from now."""
    cert.parent.mkdir(parents=True, exist_ok=True)
    subject = ["-subj", "/CN=acme.example", "-days", str(days)]
    files = ["-keyout", str(cert.with_name("privkey.pem")), "-out", str(cert)]
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", *subject, *files]
    subprocess.run(command, check=True, capture_output=True, timeout=30)


def write_faults(host_root: Path, faults: dict[str, Any]) -> None:
    path = host_root / "etc/sandbox/faults.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(faults))


@pytest.fixture
def tenant_stack(host_root: Path, docker_cli: Callable[..., Any]) -> Path:
    """A tool stack started the way provisioning does: `docker compose up -d`."""
    stack = host_root / "opt/stacks/chat"
    stack.mkdir(parents=True)
    (stack / "compose.yml").write_text(
        "services:\n"
        "  chatwoot:\n"
        f"    image: {CHATWOOT_41}\n"
        "    restart: unless-stopped\n"
        "    labels:\n"
        '      hub.version: "4.1"\n'
        "    environment:\n"
        "      - RAILS_ENV=production\n"
        "    ports:\n"
        '      - "127.0.0.1:3000:3000"\n'
        "    volumes:\n"
        "      - /srv/chatwoot:/app/storage\n"
        "  redis:\n"
        f"    image: {REDIS_7}\n"
        "    labels:\n"
        '      hub.version: "7"\n'
    )
    docker_cli("compose", "-f", str(stack / "compose.yml"), "up", "-d")
    return stack


@pytest.fixture
def make_config(tmp_path: Path, host_root: Path) -> Callable[..., Config]:
    def make(hub_url: str = "http://127.0.0.1:9", **overrides: Any) -> Config:
        base = Config(
            hub_url=hub_url,
            state_dir=tmp_path / "state",
            registration_token=REGISTRATION_TOKEN,
            heartbeat_interval=0.2,
            host_root=str(host_root),
            domain="acme.example",
            docker_command=DOCKER_COMMAND,
            health_timeout=3.0,
            health_poll_interval=0.05,
            health_grace=0.2,
            connect_timeout=1.0,
            read_timeout=2.0,
            backoff_base=0.05,
            backoff_max=0.5,
        )
        return replace(base, **overrides)

    return make
