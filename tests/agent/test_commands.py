"""Commands run against the docker stand-in: updates committed or rolled back,
restart, suspend and resume, diagnostics."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.commands import Executor
from agent.config import Config
from agent.docker import Docker
from tests.agent.conftest import CHATWOOT_41, container_states, image_refs, write_faults

CHATWOOT = "chat-chatwoot-1"


@pytest.fixture
def executor(make_config: Callable[..., Config], tenant_stack: Path) -> Executor:
    config = make_config()
    config.state_dir.mkdir(parents=True, exist_ok=True)
    return Executor(config, Docker(config.docker_command), diagnostics=lambda: {"agent_version": "test"})


def calls(host_root: Path) -> list[list[str]]:
    lines = (host_root / "var/log/sandbox/calls.jsonl").read_text().splitlines()
    return [json.loads(line)["args"] for line in lines]


def test_update_replaces_the_container_and_keeps_its_settings(executor: Executor, host_root: Path) -> None:
    result = executor.execute("update", {"component": "chatwoot", "version": "4.2"})

    assert result["status"] == "succeeded", result["output"]
    assert (result["version"], result["rolled_back"]) == ("4.2", False)
    assert result["details"]["previous_version"] == "4.1"
    container = container_states(host_root)[CHATWOOT]
    assert (container["image"], container["state"], container["health"]) == (
        "registry.example/chatwoot:4.2",
        "running",
        "healthy",
    )
    assert container["labels"]["hub.version"] == "4.2"
    assert container["labels"]["com.docker.compose.service"] == "chatwoot"
    assert container["env"] == ["RAILS_ENV=production"]
    assert container["binds"] == ["/srv/chatwoot:/app/storage"]
    assert container["restart"] == "unless-stopped"
    assert CHATWOOT + "-hub-previous" not in container_states(host_root)
    assert {CHATWOOT_41, "registry.example/chatwoot:4.2"} <= image_refs(host_root)


def test_update_pulls_then_stops_the_old_before_starting_the_new(executor: Executor, host_root: Path) -> None:
    executor.execute("update", {"component": "chatwoot", "image": "registry.example/chatwoot:4.2"})

    verbs = [args[0] for args in calls(host_root) if args[0] in ("pull", "stop", "run", "rm")]
    assert verbs == ["pull", "stop", "run", "rm"]


def test_failed_health_check_rolls_back_to_the_kept_previous_image(executor: Executor, host_root: Path) -> None:
    result = executor.execute("update", {"component": "chatwoot", "version": "4.2-unhealthy"})

    assert result["status"] == "failed"
    assert (result["version"], result["rolled_back"]) == ("4.1", True)
    assert result["details"]["rollback_healthy"] is True
    assert "unhealthy" in result["output"]
    containers = container_states(host_root)
    assert (containers[CHATWOOT]["image"], containers[CHATWOOT]["health"]) == (CHATWOOT_41, "healthy")
    assert CHATWOOT + "-hub-previous" not in containers
    # The old image was never removed while the new one was on trial.
    assert not any(args[0] == "rmi" for args in calls(host_root))


def test_unhealthy_by_fault_injection_rolls_back_too(executor: Executor, host_root: Path) -> None:
    write_faults(host_root, {"unhealthy_images": ["registry.example/chatwoot:4.3"]})

    result = executor.execute("update", {"component": "chatwoot", "version": "4.3"})

    assert (result["status"], result["rolled_back"], result["version"]) == ("failed", True, "4.1")


def test_a_missing_image_fails_the_update_without_touching_the_container(executor: Executor, host_root: Path) -> None:
    write_faults(host_root, {"missing_images": ["registry.example/chatwoot:9.9"]})
    before = container_states(host_root)[CHATWOOT]

    result = executor.execute("update", {"component": "chatwoot", "version": "9.9"})

    assert (result["status"], result["rolled_back"], result["version"]) == ("failed", False, "4.1")
    assert "manifest unknown" in result["output"]
    assert container_states(host_root)[CHATWOOT] == before


def test_only_the_last_two_images_of_a_component_are_kept(executor: Executor, host_root: Path) -> None:
    for version in ("4.2", "4.3"):
        assert executor.execute("update", {"component": "chatwoot", "version": version})["status"] == "succeeded"

    chatwoot_images = {ref for ref in image_refs(host_root) if "chatwoot" in ref}
    assert chatwoot_images == {"registry.example/chatwoot:4.2", "registry.example/chatwoot:4.3"}


def test_an_update_interrupted_midway_is_repaired_first(executor: Executor, docker_cli: Any, host_root: Path) -> None:
    # given: the agent died after stopping and renaming the old container
    docker_cli("stop", CHATWOOT)
    docker_cli("rename", CHATWOOT, CHATWOOT + "-hub-previous")

    result = executor.execute("update", {"component": "chatwoot", "version": "4.2"})

    assert result["status"] == "succeeded", result["output"]
    assert "restored" in result["output"]
    assert container_states(host_root)[CHATWOOT]["image"] == "registry.example/chatwoot:4.2"


def test_bad_update_payloads_fail_cleanly(executor: Executor) -> None:
    assert executor.execute("update", {})["status"] == "failed"
    assert executor.execute("update", {"component": "chatwoot"})["status"] == "failed"
    missing = executor.execute("update", {"component": "nope", "version": "1"})
    assert missing["status"] == "failed" and "nope" in missing["output"]
    assert executor.execute("reboot-the-world", {})["status"] == "failed"


def test_suspend_stops_everything_and_resume_starts_it_again(executor: Executor, host_root: Path) -> None:
    suspended = executor.execute("suspend", {})
    states_suspended = {n: c["state"] for n, c in container_states(host_root).items()}
    resumed = executor.execute("resume", {})

    assert suspended["status"] == resumed["status"] == "succeeded"
    assert set(states_suspended.values()) == {"exited"}
    assert {c["state"] for c in container_states(host_root).values()} == {"running"}


def test_maintenance_stops_the_writers_keeps_the_databases_and_leaving_starts_them(
    executor: Executor, host_root: Path
) -> None:
    entered = executor.execute("maintenance", {"enter": True, "tag": "move-1"})
    again = executor.execute("maintenance", {"enter": True, "tag": "move-1"})
    states_in = {n: c["state"] for n, c in container_states(host_root).items()}
    left = executor.execute("maintenance", {"enter": False, "tag": "move-1"})

    assert entered["status"] == again["status"] == left["status"] == "succeeded"
    # the tool stops writing; its database stays up for the final backup's dump
    assert states_in == {CHATWOOT: "exited", "chat-redis-1": "running"}
    assert again["details"]["containers"] == [CHATWOOT], "a second enter remembers what the first stopped"
    assert {c["state"] for c in container_states(host_root).values()} == {"running"}
    assert left["details"]["containers"] == [CHATWOOT]
    assert executor.execute("maintenance", {})["status"] == "failed"


def test_suspend_spares_the_agent_itself(executor: Executor, docker_cli: Any, host_root: Path) -> None:
    docker_cli("run", "-d", "--name", "hub-agent", "registry.example/hub-agent:0.1")

    executor.execute("suspend", {})

    assert container_states(host_root)["hub-agent"]["state"] == "running"


def test_restart_one_component(executor: Executor, host_root: Path) -> None:
    result = executor.execute("restart", {"component": "redis"})

    assert result["status"] == "succeeded"
    assert result["details"]["containers"] == ["chat-redis-1"]
    assert ["restart", "chat-redis-1"] in calls(host_root)


def test_diagnostics_reports_containers_and_docker(executor: Executor) -> None:
    result = executor.execute("diagnostics", {})

    assert result["status"] == "succeeded"
    details = result["details"]
    assert details["agent_version"] == "test"
    assert details["docker_version"].endswith("sandbox")
    assert {c["name"] for c in details["containers"]} == {CHATWOOT, "chat-redis-1"}
