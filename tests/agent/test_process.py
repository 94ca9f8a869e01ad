"""`python -m agent` as a real process: configured from a file and the environment,
against the HTTP stand-in for the Hub and the docker stand-in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from tests.agent.conftest import API_KEY, DOCKER_COMMAND, REGISTRATION_TOKEN, ROOT, FakeHub, container_states
from tests.conftest import wait_for


def test_the_agent_process_registers_heartbeats_updates_and_stops_cleanly(
    hub: FakeHub, tmp_path: Path, host_root: Path, tenant_stack: Path
) -> None:
    conf = tmp_path / "agent.conf"
    conf.write_text(
        "[agent]\n"
        "hub_url = http://127.0.0.1:9\n"
        f"docker_command = {DOCKER_COMMAND}\n"
        "health_poll_interval = 0.05\n"
        "backoff_base = 0.1\n"
        "backoff_max = 0.5\n"
    )
    state_dir = tmp_path / "state"
    env = {
        **os.environ,
        "HUB_AGENT_CONFIG": str(conf),
        "HUB_AGENT_HUB_URL": hub.url,
        "HUB_AGENT_REGISTRATION_TOKEN": REGISTRATION_TOKEN,
        "HUB_AGENT_STATE_DIR": str(state_dir),
        "HUB_AGENT_HOST_ROOT": str(host_root),
        "HUB_AGENT_LOG_LEVEL": "DEBUG",
        "HOST_ROOT": str(host_root),
    }
    command_id = str(uuid.uuid4())
    command = {"id": command_id, "type": "update", "payload": {"component": "chatwoot", "version": "4.2"}}
    hub.commands.append(command)
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agent"], cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            wait_for(lambda: command_id in hub.results, timeout=20, message="the update's result")
            heartbeats = len(hub.bodies("/api/v1/agent/heartbeat"))
            wait_for(lambda: len(hub.bodies("/api/v1/agent/heartbeat")) > heartbeats, timeout=5, message="heartbeat")
            health = subprocess.run(
                [sys.executable, "-m", "agent", "healthcheck"], cwd=ROOT, env=env, timeout=20, check=False
            )
            assert health.returncode == 0
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)

    [result] = hub.results[command_id]
    assert (result["status"], result["version"], result["rolled_back"]) == ("succeeded", "4.2", False)
    assert container_states(host_root)["chat-chatwoot-1"]["image"] == "registry.example/chatwoot:4.2"
    last = hub.bodies("/api/v1/agent/heartbeat")[-1]
    assert last["versions"]["chatwoot"] == "4.2"
    assert (state_dir / "api_key").stat().st_mode & 0o777 == 0o600
    text = log.read_text()
    assert "registered with the Hub" in text
    assert API_KEY not in text and REGISTRATION_TOKEN not in text


def test_a_bad_configuration_exits_with_a_clear_message(tmp_path: Path) -> None:
    conf = tmp_path / "agent.conf"
    conf.write_text(json.dumps({"hub_url": "http://127.0.0.1:9", "heartbeat_intreval": 5}))

    done = subprocess.run(
        [sys.executable, "-m", "agent"],
        cwd=ROOT,
        env={**os.environ, "HUB_AGENT_CONFIG": str(conf)},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )

    assert done.returncode == 2
    assert "unknown config keys: heartbeat_intreval" in done.stderr
