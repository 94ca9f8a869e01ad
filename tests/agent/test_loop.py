"""The agent's loop against a small HTTP stand-in for the Hub: registration,
heartbeats, commands at most once, and reports that survive the Hub being away."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import Config
from agent.journal import Journal
from agent.loop import Agent
from tests.agent.conftest import API_KEY, REGISTRATION_TOKEN, FakeHub, make_certificate

BACKUP_STATUS = {
    "last_run": "2026-02-27T02:15:00Z",
    "duration_seconds": 342,
    "databases": {
        "chatwoot": {"status": "success", "size_mb": 45},
        "nextcloud": {"status": "failed", "error": "connection refused"},
    },
    "remote_sync": {"status": "success", "uploaded_mb": 230},
}


class FakeClock:
    """Simulated time: sleeping only moves the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_agent(make_config: Callable[..., Config], hub: FakeHub, clock: FakeClock) -> Callable[..., Agent]:
    def make(**overrides: Any) -> Agent:
        config = make_config(hub.url, **overrides)
        return Agent(config, clock=clock, sleep=clock.sleep, rand=lambda: 0.5, inline_commands=True)

    return make


def pulls(host_root: Path) -> list[list[str]]:
    lines = (host_root / "var/log/sandbox/calls.jsonl").read_text().splitlines()
    return [json.loads(line)["args"] for line in lines if json.loads(line)["args"][0] == "pull"]


def update_command(version: str = "4.2") -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": "update", "payload": {"component": "chatwoot", "version": version}}


def test_first_start_registers_and_keeps_the_key_private(
    make_agent: Callable[..., Agent], hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    agent = make_agent()

    agent.run_once()

    [register] = hub.bodies("/api/v1/agent/register")
    assert register["registration_token"] == REGISTRATION_TOKEN
    assert set(register) == {"registration_token", "hostname", "agent_version"}
    key_file = agent.config.state_dir / "api_key"
    assert key_file.read_text().strip() == API_KEY
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert agent.config.state_dir.stat().st_mode & 0o777 == 0o700
    heartbeat = next(r for r in hub.requests if r.path == "/api/v1/agent/heartbeat")
    assert heartbeat.headers["Authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in caplog.text and REGISTRATION_TOKEN not in caplog.text


def test_a_restarted_agent_uses_its_stored_key(make_agent: Callable[..., Agent], hub: FakeHub) -> None:
    make_agent().run_once()

    make_agent(registration_token="").run_once()

    assert len(hub.bodies("/api/v1/agent/register")) == 1
    assert len(hub.bodies("/api/v1/agent/heartbeat")) == 2


def test_the_token_file_is_removed_once_the_agent_has_registered(
    make_agent: Callable[..., Agent], hub: FakeHub, tmp_path: Path
) -> None:
    token_file = tmp_path / "etc/hub-agent/registration-token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(REGISTRATION_TOKEN + "\n")
    agent = make_agent(registration_token="", registration_token_file=str(token_file))

    agent.run_once()

    assert (agent.config.state_dir / "api_key").read_text().strip() == API_KEY
    assert not token_file.exists(), "a spent one-time token stays on the disk"
    assert len(hub.bodies("/api/v1/agent/heartbeat")) == 1


def test_a_new_token_put_there_to_re_key_the_agent_stays_until_it_is_used(
    make_agent: Callable[..., Agent], hub: FakeHub, tmp_path: Path
) -> None:
    token_file = tmp_path / "registration-token"
    token_file.write_text(REGISTRATION_TOKEN)
    make_agent(registration_token="", registration_token_file=str(token_file)).run_once()
    # given: staff revoked the key and put a new token in the file
    token_file.write_text("reg-token-second")
    hub.registration_tokens.add("reg-token-second")
    hub.api_key = "hub-second-key-91c2"

    # when: the agent restarts, still with its old key
    agent = make_agent(registration_token="", registration_token_file=str(token_file))
    agent.start()

    assert token_file.read_text() == "reg-token-second", "an unused token is not the agent's to remove"
    agent.run_once()  # the old key is refused: it takes the new token
    agent.run_once()
    assert hub.bodies("/api/v1/agent/register")[-1]["registration_token"] == "reg-token-second"
    assert not token_file.exists()


def test_an_agent_that_stopped_before_removing_its_spent_token_removes_it_at_start(
    make_agent: Callable[..., Agent], hub: FakeHub, tmp_path: Path
) -> None:
    token_file = tmp_path / "registration-token"
    make_agent(registration_token=REGISTRATION_TOKEN).run_once()
    token_file.write_text(REGISTRATION_TOKEN)

    make_agent(registration_token="", registration_token_file=str(token_file)).start()

    assert not token_file.exists()


def test_heartbeat_reports_the_machine_and_its_containers(
    make_agent: Callable[..., Agent], hub: FakeHub, tenant_stack: Path, host_root: Path
) -> None:
    make_certificate(host_root / "etc/letsencrypt/live/acme.example/cert.pem", days=30)

    make_agent().run_once()

    [body] = hub.bodies("/api/v1/agent/heartbeat")
    assert set(body) == {
        "disk_percent",
        "memory_percent",
        "load",
        "uptime_seconds",
        "containers",
        "versions",
        "tls_expires_at",
    }
    assert {"name": "chat-chatwoot-1", "state": "running", "health": "healthy"} in body["containers"]
    assert body["versions"]["chatwoot"] == "4.1" and body["versions"]["redis"] == "7"
    assert body["tls_expires_at"].endswith("Z")
    assert isinstance(body["uptime_seconds"], int) and 0 <= body["disk_percent"] <= 100


def test_the_interval_comes_from_the_hub_with_jitter(make_agent: Callable[..., Agent], hub: FakeHub) -> None:
    hub.heartbeat_interval = 30
    agent = make_agent()
    agent.rand = lambda: 1.0

    delay = agent.run_once()

    assert delay == pytest.approx(33.0)


def test_a_command_runs_once_and_its_result_reaches_the_hub(
    make_agent: Callable[..., Agent], hub: FakeHub, tenant_stack: Path, host_root: Path
) -> None:
    command = update_command()
    hub.commands.append(command)
    agent = make_agent()

    agent.run_once()
    agent.run_once()

    [result] = hub.results[command["id"]]
    assert (result["status"], result["version"], result["rolled_back"]) == ("succeeded", "4.2", False)
    assert len(pulls(host_root)) == 1


def test_a_redelivered_command_is_not_run_again_after_a_restart(
    make_agent: Callable[..., Agent], hub: FakeHub, tenant_stack: Path, host_root: Path
) -> None:
    # given: the command ran, but its result never arrived, then the agent restarted
    command = update_command()
    hub.commands.append(command)
    result_path = f"/api/v1/agent/commands/{command['id']}/result"
    hub.fail_paths[result_path] = 503
    make_agent().run_once()
    del hub.fail_paths[result_path]

    # when: the Hub hands the same command to the new agent process
    make_agent().run_once()

    # then: the stored result is sent, the update is not repeated
    assert [r["status"] for r in hub.accepted_bodies(result_path)] == ["succeeded"]
    assert len(pulls(host_root)) == 1


def test_a_command_cut_off_while_running_is_reported_failed_not_rerun(
    make_agent: Callable[..., Agent], make_config: Callable[..., Config], hub: FakeHub, host_root: Path
) -> None:
    command = update_command()
    journal = Journal(make_config().state_dir / "journal")
    journal.accept(command["id"], "update", command["payload"])
    journal.mark_running(command["id"])
    hub.commands.append(command)

    make_agent().run_once()

    [result] = hub.results[command["id"]]
    assert result["status"] == "failed" and result["details"] == {"interrupted": True}
    assert not (host_root / "var/log/sandbox/calls.jsonl").exists() or not pulls(host_root)


def test_hub_down_for_ten_minutes_then_everything_arrives_once(
    make_agent: Callable[..., Agent], hub: FakeHub, clock: FakeClock, tenant_stack: Path, host_root: Path
) -> None:
    agent = make_agent(backoff_base=1.0, backoff_max=60.0)
    command = update_command()
    hub.commands.append(command)
    result_path = f"/api/v1/agent/commands/{command['id']}/result"
    hub.fail_paths[result_path] = 503
    agent.run_once()
    del hub.fail_paths[result_path]

    # the Hub goes away; meanwhile the backup job and the AI stack write their files
    hub.down()
    status_file = agent.config.backup_status_path
    status_file.parent.mkdir(parents=True)
    status_file.write_text(json.dumps(BACKUP_STATUS))
    usage_file = agent.config.usage_path
    usage_file.parent.mkdir(parents=True)
    usage_file.write_text(json.dumps({"period": "2026-11", "tokens": 12345}))
    started = clock.now
    delays = []
    while clock.now - started < 600:
        delays.append(agent.run_once())
        agent.wait(delays[-1])
    assert len(agent.outbox) == 3
    # the failed result delivery before the outage already counted as one failure
    assert delays[:3] == [pytest.approx(1.5), pytest.approx(3.0), pytest.approx(6.0)]
    assert max(delays) == pytest.approx(45.0)

    hub.up()
    agent.run_once()
    agent.run_once()

    assert len(agent.outbox) == 0
    assert [b["status"] for b in hub.accepted_bodies(result_path)] == ["succeeded"]
    [backup] = hub.accepted_bodies("/api/v1/agent/backups")
    assert {k: v for k, v in backup.items() if k != "report_id"} == BACKUP_STATUS
    uuid.UUID(backup["report_id"])
    [usage] = hub.accepted_bodies("/api/v1/agent/usage")
    assert set(usage) == {"report_id", "period", "tokens"}
    assert (usage["period"], usage["tokens"]) == ("2026-11", 12345)
    assert len(pulls(host_root)) == 1


def test_reports_are_sent_when_they_change_only(make_agent: Callable[..., Agent], hub: FakeHub) -> None:
    agent = make_agent(usage_interval=0.0)
    agent.config.backup_status_path.parent.mkdir(parents=True)
    agent.config.backup_status_path.write_text(json.dumps(BACKUP_STATUS))
    agent.config.usage_path.parent.mkdir(parents=True)
    agent.config.usage_path.write_text(json.dumps({"periods": {"2026-10": 900, "2026-11": 5}}))

    agent.run_once()
    agent.run_once()
    agent.config.usage_path.write_text(json.dumps({"periods": {"2026-10": 900, "2026-11": 8}}))
    agent.run_once()

    assert len(hub.accepted_bodies("/api/v1/agent/backups")) == 1
    usage = [(b["period"], b["tokens"]) for b in hub.accepted_bodies("/api/v1/agent/usage")]
    assert usage == [("2026-10", 900), ("2026-11", 5), ("2026-11", 8)]


def test_a_refused_report_is_set_aside_not_retried_forever(make_agent: Callable[..., Agent], hub: FakeHub) -> None:
    agent = make_agent()
    agent.config.backup_status_path.parent.mkdir(parents=True)
    agent.config.backup_status_path.write_text(json.dumps(BACKUP_STATUS))
    hub.fail_paths["/api/v1/agent/backups"] = 400

    agent.run_once()
    agent.run_once()

    assert len(hub.bodies("/api/v1/agent/backups")) == 1
    assert agent.outbox.dead_count() == 1 and len(agent.outbox) == 0


@pytest.mark.parametrize(
    "raw",
    [b"<html>502 Bad Gateway</html>", b"[1, 2]", b'{"heartbeat_interval": "soon", "commands": [{"id": null}, 7]}'],
)
def test_bad_replies_never_crash_the_agent(make_agent: Callable[..., Agent], hub: FakeHub, raw: bytes) -> None:
    agent = make_agent()
    agent.run_once()
    hub.raw_reply = raw

    delay = agent.run_once()

    assert delay > 0
    assert agent.interval == pytest.approx(1.0)


def test_server_errors_and_a_revoked_key_back_off(make_agent: Callable[..., Agent], hub: FakeHub) -> None:
    agent = make_agent(backoff_base=1.0, backoff_max=8.0)
    agent.run_once()

    hub.status_override = 500
    server_errors = [agent.run_once() for _ in range(3)]
    hub.status_override = 401
    unauthorized = agent.run_once()
    hub.status_override = None
    recovered = agent.run_once()

    assert server_errors == [pytest.approx(0.75), pytest.approx(1.5), pytest.approx(3.0)]
    assert unauthorized == pytest.approx(6.0)
    assert recovered == pytest.approx(1.0)


def test_a_refused_registration_token_is_retried_with_backoff(make_agent: Callable[..., Agent], hub: FakeHub) -> None:
    agent = make_agent(registration_token="wrong-token", backoff_base=1.0, backoff_max=4.0)

    delays = [agent.run_once() for _ in range(4)]

    assert delays == [pytest.approx(0.75), pytest.approx(1.5), pytest.approx(3.0), pytest.approx(3.0)]
    assert not (agent.config.state_dir / "api_key").exists()
    assert hub.bodies("/api/v1/agent/heartbeat") == []


def test_a_revoked_key_is_replaced_by_registering_with_a_new_token(
    make_agent: Callable[..., Agent], hub: FakeHub
) -> None:
    make_agent().run_once()
    # given: staff revoked the key and issued a new token, which provisioning configured
    hub.api_key = "hub-second-key-91c2"
    hub.registration_tokens.add("reg-token-second")
    same_token = make_agent()
    same_token.run_once()
    assert len(hub.bodies("/api/v1/agent/register")) == 1

    agent = make_agent(registration_token="reg-token-second")
    agent.run_once()
    agent.run_once()

    assert [b["registration_token"] for b in hub.bodies("/api/v1/agent/register")] == [
        REGISTRATION_TOKEN,
        "reg-token-second",
    ]
    assert (agent.config.state_dir / "api_key").read_text().strip() == "hub-second-key-91c2"
    assert hub.accepted_bodies("/api/v1/agent/heartbeat")


def test_an_update_cut_short_is_repaired_when_the_agent_starts(
    make_agent: Callable[..., Agent], hub: FakeHub, tenant_stack: Path, docker_cli: Any, host_root: Path
) -> None:
    docker_cli("stop", "chat-chatwoot-1")
    docker_cli("rename", "chat-chatwoot-1", "chat-chatwoot-1-hub-previous")

    make_agent().run_once()

    [body] = hub.bodies("/api/v1/agent/heartbeat")
    assert {"name": "chat-chatwoot-1", "state": "running", "health": "healthy"} in body["containers"]


def test_the_api_key_is_rotated_when_it_is_old(make_agent: Callable[..., Agent], hub: FakeHub) -> None:
    agent = make_agent(key_rotation_days=30.0)
    agent.run_once()
    assert hub.bodies("/api/v1/agent/rotate-key") == []
    identity = json.loads((agent.config.state_dir / "agent.json").read_text())
    identity["key_issued_at"] -= 31 * 86400
    (agent.config.state_dir / "agent.json").write_text(json.dumps(identity))

    agent.run_once()
    agent.run_once()

    assert len(hub.bodies("/api/v1/agent/rotate-key")) == 1
    key_file = agent.config.state_dir / "api_key"
    assert key_file.read_text().strip() == hub.api_key != API_KEY
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert hub.requests[-1].headers["Authorization"] == f"Bearer {hub.api_key}"
    assert hub.requests[-1].path == "/api/v1/agent/heartbeat"


def test_containers_can_come_from_the_compose_files(
    make_agent: Callable[..., Agent], hub: FakeHub, tenant_stack: Path, docker_cli: Any
) -> None:
    docker_cli("run", "-d", "--name", "stray", "registry.example/stray:1.0")

    make_agent(compose_files=(str(tenant_stack / "compose.yml"),)).run_once()

    [body] = hub.bodies("/api/v1/agent/heartbeat")
    assert sorted(c["name"] for c in body["containers"]) == ["chat-chatwoot-1", "chat-redis-1"]
