"""The docker stand-in, run as a real process on a temporary host root."""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import CHATWOOT_41, REDIS_7, STANDIN, container_states, image_refs, write_faults


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_compose_up_starts_each_service_and_ps_answers_like_compose_v2(docker_cli: Any, tenant_stack: Path) -> None:
    rows = json_lines(docker_cli("compose", "-f", str(tenant_stack / "compose.yml"), "ps", "--format", "json").stdout)

    assert [(r["Name"], r["Service"], r["State"], r["Health"], r["Image"]) for r in rows] == [
        ("chat-chatwoot-1", "chatwoot", "running", "healthy", CHATWOOT_41),
        ("chat-redis-1", "redis", "running", "healthy", REDIS_7),
    ]
    assert rows[0]["Project"] == "chat"
    assert "com.docker.compose.service=chatwoot" in rows[0]["Labels"]


def test_compose_file_interpolates_variables_and_reads_json(docker_cli: Any, host_root: Path) -> None:
    stack = host_root / "opt/stacks/blog"
    stack.mkdir(parents=True)
    (stack / ".env").write_text("GHOST_DIGEST=sha256:" + "5" * 64 + "\n")
    service = {"image": "ghost@${GHOST_DIGEST}", "environment": {"A": "${UNSET:-fallback}", "B": "$$literal"}}
    (stack / "compose.json").write_text(json.dumps({"services": {"ghost": service}}))

    docker_cli("compose", "-f", str(stack / "compose.json"), "-p", "blog", "up", "-d")

    ghost = container_states(host_root)["blog-ghost-1"]
    assert ghost["image"] == "ghost@sha256:" + "5" * 64
    assert ghost["env"] == ["A=fallback", "B=$literal"]


def test_image_marked_unhealthy_reports_unhealthy_after_start(docker_cli: Any, host_root: Path) -> None:
    write_faults(host_root, {"unhealthy_images": ["registry.example/app:3.0"]})

    docker_cli("run", "-d", "--name", "a", "registry.example/app:2.0-unhealthy")
    docker_cli("run", "-d", "--name", "b", "registry.example/app:3.0")
    docker_cli("run", "-d", "--name", "c", "registry.example/app:2.0")

    health = {
        name: docker_cli("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip() for name in "abc"
    }
    assert health == {"a": "unhealthy", "b": "unhealthy", "c": "healthy"}


def test_pull_of_a_missing_image_fails_like_docker(docker_cli: Any, host_root: Path) -> None:
    write_faults(host_root, {"missing_images": ["registry.example/app:9.9"]})

    done = docker_cli("pull", "registry.example/app:9.9", check=False)

    assert done.returncode == 1
    assert "manifest unknown" in done.stderr
    assert "registry.example/app:9.9" not in image_refs(host_root)


def test_run_inspect_keeps_the_container_settings(docker_cli: Any, host_root: Path) -> None:
    options = ["--name", "web", "--restart", "always", "-e", "A=1", "--label", "hub.component=web"]
    options += ["-v", "/srv/web:/data", "-p", "127.0.0.1:8080:80"]
    docker_cli("run", "-d", *options, "registry.example/web:1.2", "serve", "--port", "80")

    [data] = json.loads(docker_cli("inspect", "web").stdout)

    assert data["Name"] == "/web"
    assert data["Config"]["Image"] == "registry.example/web:1.2"
    assert data["Config"]["Env"] == ["A=1"]
    assert data["Config"]["Labels"] == {"hub.component": "web"}
    assert data["Config"]["Cmd"] == ["serve", "--port", "80"]
    assert data["HostConfig"]["Binds"] == ["/srv/web:/data"]
    assert data["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}
    assert data["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert data["State"]["Running"] is True


def test_lifecycle_stop_rename_rm_and_rmi_guard(docker_cli: Any, host_root: Path) -> None:
    docker_cli("run", "-d", "--name", "web", "registry.example/web:1.2")

    refused = docker_cli("rm", "web", check=False)
    assert refused.returncode == 1 and "container is running" in refused.stderr
    in_use = docker_cli("rmi", "registry.example/web:1.2", check=False)
    assert in_use.returncode == 1 and "must force" in in_use.stderr

    docker_cli("stop", "web")
    docker_cli("rename", "web", "web-old")
    name_taken = docker_cli("run", "-d", "--name", "web-old", "registry.example/web:1.2", check=False)
    assert name_taken.returncode == 125 and "already in use" in name_taken.stderr
    docker_cli("rm", "web-old")
    docker_cli("rmi", "registry.example/web:1.2")

    assert container_states(host_root) == {}
    assert image_refs(host_root) == set()
    assert docker_cli("inspect", "web", check=False).returncode == 1


def test_every_call_is_recorded_as_a_json_line(docker_cli: Any, host_root: Path) -> None:
    docker_cli("version")
    docker_cli("ps", "-a", "--format", "json")

    calls = json_lines((host_root / "var/log/sandbox/calls.jsonl").read_text())

    assert [c["args"] for c in calls] == [["version"], ["ps", "-a", "--format", "json"]]
    assert all(c["cmd"] == "docker" and c["time"] and c["cwd"] for c in calls)


def test_concurrent_calls_keep_the_state_consistent(docker_cli: Any, host_root: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: docker_cli("run", "-d", "--name", f"c{i}", f"registry.example/t:{i}"), range(12)))

    assert set(container_states(host_root)) == {f"c{i}" for i in range(12)}
    assert len(json_lines((host_root / "var/log/sandbox/calls.jsonl").read_text())) == 12


def test_without_a_host_root_it_refuses_clearly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HOST_ROOT", "SANDBOX_DOCKER_STATE")}

    done = subprocess.run([str(STANDIN), "ps"], capture_output=True, text=True, env=env, timeout=20, check=False)

    assert done.returncode == 125
    assert "HOST_ROOT" in done.stderr


def test_shared_fault_fails_the_next_matching_calls_only(docker_cli: Any, host_root: Path) -> None:
    write_faults(host_root, {"fail": {"docker pull": 1}})

    first = docker_cli("pull", "registry.example/app:1.0", check=False)
    second = docker_cli("pull", "registry.example/app:1.0", check=False)

    assert (first.returncode, second.returncode) == (1, 0)
    assert "injected failure" in first.stderr
    calls = json_lines((host_root / "var/log/sandbox/calls.jsonl").read_text())
    assert [c.get("injected_fault") for c in calls] == [None, "docker pull", None]


# --- what `docker compose` refuses, the stand-in refuses --------------------------------

PINNED = "registry.example/app@sha256:" + "c" * 64


def stack_file(host_root: Path, text: str, name: str = "compose.yml") -> Path:
    stack = host_root / "opt/hub/tools/app"
    stack.mkdir(parents=True, exist_ok=True)
    (stack / name).write_text(text)
    return stack / name


def test_a_file_the_compose_schema_rejects_is_refused(docker_cli: Any, host_root: Path) -> None:
    path = stack_file(host_root, f"services:\n  app:\n    image: {PINNED}\n    colour: red\n")

    done = docker_cli("compose", "-f", str(path), "up", "-d", check=False)

    assert done.returncode == 15
    assert f"validating {path}: services.app Additional property colour is not allowed" in done.stderr
    assert container_states(host_root) == {}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("    depends_on: [db]\n", 'service "app" depends on undefined service "db": invalid compose project'),
        ("    volumes: ['data:/srv']\n", 'service "app" refers to undefined volume data: invalid compose project'),
        ("    environment:\n      A: ${SECRET:?set it in .env}\n", "required variable SECRET is missing a value"),
        ("    environment:\n      A: costs $ 5\n", "invalid interpolation format for services.app.environment.A"),
    ],
)
def test_what_the_schema_cannot_see_is_refused_as_compose_does(
    docker_cli: Any, host_root: Path, body: str, words: str
) -> None:
    path = stack_file(host_root, f"services:\n  app:\n    image: {PINNED}\n{body}")

    done = docker_cli("compose", "-f", str(path), "up", "-d", check=False)

    assert done.returncode == 15
    assert words in done.stderr
    assert container_states(host_root) == {}


def test_an_image_not_pinned_by_digest_is_refused(docker_cli: Any, host_root: Path) -> None:
    path = stack_file(host_root, "services:\n  app:\n    image: registry.example/app:1.0\n")

    for command in (["up", "-d"], ["pull"], ["run", "--rm", "app", "true"]):
        done = docker_cli("compose", "-f", str(path), *command, check=False)
        assert done.returncode == 15, command
        assert 'service "app" refers to image "registry.example/app:1.0", which is not pinned' in done.stderr
    assert container_states(host_root) == {}
    assert image_refs(host_root) == set()
    # Reading and removing such a project stays possible.
    assert docker_cli("compose", "-f", str(path), "ps").returncode == 0
    assert docker_cli("compose", "-f", str(path), "down", "-v").returncode == 0


def test_exec_and_run_into_a_service_the_project_does_not_define_are_refused(
    docker_cli: Any, tenant_stack: Path
) -> None:
    compose = str(tenant_stack / "compose.yml")

    for command in (["exec", "-T", "db", "pg_dumpall"], ["run", "--rm", "db", "true"]):
        done = docker_cli("compose", "-f", compose, *command, check=False)
        assert (done.returncode, done.stderr.strip()) == (1, "no such service: db"), command

    docker_cli("compose", "-f", compose, "stop", "redis")
    stopped = docker_cli("compose", "-f", compose, "exec", "-T", "redis", "redis-cli", "ping", check=False)
    assert (stopped.returncode, stopped.stderr.strip()) == (1, 'service "redis" is not running')


def test_up_starts_dependencies_first_and_stops_at_an_unhealthy_one(docker_cli: Any, host_root: Path) -> None:
    unhealthy_db = "registry.example/db-unhealthy@sha256:" + "d" * 64
    path = stack_file(
        host_root,
        f"name: app\nservices:\n  app:\n    image: {PINNED}\n"
        "    depends_on:\n      db:\n        condition: service_healthy\n"
        f"  db:\n    image: {unhealthy_db}\n",
    )

    done = docker_cli("compose", "-f", str(path), "up", "-d", check=False)

    assert (done.returncode, done.stderr.strip()) == (1, "dependency failed to start: container app-db-1 is unhealthy")
    assert {name: c["state"] for name, c in container_states(host_root).items()} == {
        "app-db-1": "running",
        "app-app-1": "created",
    }
