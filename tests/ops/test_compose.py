"""The production compose file, its nginx, image and healthchecks, and `.env.example`:
every service is watched and restarted, beat runs exactly once, every queue has a
worker, and every setting and compose variable is documented."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest
import yaml
from django.conf import settings

from tests import conftest

ROOT = conftest.ROOT
COMPOSE = ROOT / "compose"
COMPOSE_FILE = COMPOSE / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SETTINGS = ROOT / "hub" / "settings.py"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def documented() -> set[str]:
    """Names in .env.example, set (NAME=...) or shown at their default (# NAME=...)."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))


def settings_from_environment() -> set[str]:
    return set(re.findall(r"\benv(?:\.\w+)?\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']", SETTINGS.read_text()))


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def test_every_service_has_a_healthcheck_and_a_restart_policy() -> None:
    for name, service in services().items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        restart = service.get("restart") or service.get("deploy", {}).get("restart_policy", {}).get("condition")
        assert restart in ("always", "unless-stopped", "on-failure", "any"), f"{name} has no restart policy"


def test_beat_runs_exactly_once_with_the_database_scheduler() -> None:
    beat = services()["beat"]
    assert beat["deploy"]["replicas"] == 1
    assert "scale" not in beat
    assert "django_celery_beat.schedulers:DatabaseScheduler" in command_text(beat)
    others = [name for name, service in services().items() if name != "beat" and " beat" in command_text(service)]
    assert not others, f"beat also runs in {others}"


def test_every_queue_has_exactly_one_worker_group_and_provisioning_runs_threads() -> None:
    consumed: list[str] = []
    for service in services().values():
        match = re.search(r"worker .*-Q (\S+)", command_text(service))
        if match:
            consumed += match.group(1).split(",")
    assert sorted(consumed) == sorted(settings.HUB_QUEUES)
    provisioning = command_text(services()["worker-provisioning"])
    assert "-Q provisioning " in provisioning and "--pool threads" in provisioning
    assert "-Q rollouts,monitoring " in command_text(services()["worker-rollouts"])
    assert "-Q billing,default " in command_text(services()["worker-billing"])


def test_only_nginx_is_published_and_it_terminates_tls_with_rate_limits() -> None:
    published = [name for name, service in services().items() if service.get("ports")]
    assert published == ["nginx"]
    conf = (COMPOSE / "nginx" / "hub.conf").read_text()
    assert "listen 443 ssl" in conf and "ssl_certificate " in conf
    zones = set(re.findall(r"limit_req_zone \S+ zone=(\w+):", conf))
    assert {"api", "agent", "agent_register"} <= zones
    used = set(re.findall(r"limit_req zone=(\w+)", conf))
    assert used == zones
    assert re.search(r"location /api/v1/agent/ \{\s+limit_req zone=agent ", conf)
    assert re.search(r"location /api/ \{\s+limit_req zone=api ", conf)
    assert "location /flower/" in conf and "deny all;" in conf


def test_flower_wants_basic_auth_and_services_use_named_volumes() -> None:
    data = compose()
    flower = data["services"]["flower"]
    assert "FLOWER_BASIC_AUTH" in flower["environment"]
    declared = set(data["volumes"])
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/", "$")):
                assert source in declared, f"{name} uses undeclared volume {source}"
    assert {"pgdata", "redisdata"} <= declared


def test_every_compose_variable_is_documented_in_env_example() -> None:
    text = re.sub(r"(^|\s)#.*$", "", COMPOSE_FILE.read_text(), flags=re.MULTILINE)
    # $${VAR} is escaped for the container's shell, not interpolated by compose.
    variables = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text))
    assert variables, "no variables found: the pattern is wrong"
    missing = variables - documented()
    assert not missing, f"not in .env.example: {sorted(missing)}"


def test_every_setting_read_from_the_environment_is_documented_in_env_example() -> None:
    names = settings_from_environment()
    assert len(names) > 50, "the pattern no longer finds the settings"
    missing = names - documented()
    assert not missing, f"not in .env.example: {sorted(missing)}"


def test_the_image_runs_as_a_non_root_user_from_the_pinned_requirements() -> None:
    dockerfile = (COMPOSE / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, flags=re.MULTILINE)
    assert "pip install -r requirements/base.txt" in dockerfile
    assert "collectstatic --noinput" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


def test_gunicorn_config_loads() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--check-config", "-c", "compose/gunicorn.conf.py", "hub.asgi:application"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_healthcheck", COMPOSE / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.django_db
def test_the_healthcheck_script_passes_against_a_live_web_and_beat_dependencies(
    live_server: Any, broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    healthcheck = _healthcheck_module()
    port = live_server.url.rsplit(":", 1)[1]
    healthcheck.main([f"http://127.0.0.1:{port}/healthz"])

    monkeypatch.setenv("CELERY_BROKER_URL", settings.CELERY_BROKER_URL)
    monkeypatch.setenv("DATABASE_URL", conftest.test_database_url())
    healthcheck.main(["--beat"])

    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(Exception, match=r"(?i)connect"):
        healthcheck.main(["--beat"])


def _compose_client() -> list[str] | None:
    """`docker compose` (v2 plugin) when present; the check needs no engine."""
    if shutil.which("docker") is None:
        return None
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    return ["docker", "compose"] if probe.returncode == 0 else None


def test_docker_compose_accepts_the_file() -> None:
    client = _compose_client()
    if client is None:
        reason = "no docker client" if shutil.which("docker") is None else "docker client without the compose plugin"
        pytest.skip(f"{reason}: `docker compose config` not run")
    result = subprocess.run(
        [*client, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# --- The tenant-side compose file for the agent --------------------------------------

AGENT_COMPOSE_FILE = COMPOSE / "agent.yml"
AGENT_README = ROOT / "agent" / "README.md"


def test_the_agent_service_has_a_healthcheck_and_a_restart_policy() -> None:
    agent = yaml.safe_load(AGENT_COMPOSE_FILE.read_text())["services"]["hub-agent"]
    check = agent.get("healthcheck")
    assert check and not check.get("disable"), "the agent has no healthcheck"
    assert check["test"][-2:] == ["agent", "healthcheck"], check["test"]
    assert agent.get("restart") in ("always", "unless-stopped"), agent.get("restart")


def test_every_agent_compose_variable_is_documented_in_the_agent_readme() -> None:
    text = re.sub(r"(^|\s)#.*$", "", AGENT_COMPOSE_FILE.read_text(), flags=re.MULTILINE)
    variables = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text))
    assert variables, "no variables found: the pattern is wrong"
    readme = AGENT_README.read_text()
    missing = {name for name in variables if f"`{name}`" not in readme}
    assert not missing, f"not in agent/README.md: {sorted(missing)}"
