"""Postgres crashed and restarted in the middle of a rollout stage. The rollout's gate
(the `rollouts.evaluate` beat job) runs on a real worker, the agents heartbeat and
answer through the real agent API; all of them against a private PostgreSQL cluster
that the test SIGKILLs (postmaster and backends) while a stage is under way. The test
process itself stays on the pytest database and reads the private one with psycopg."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hub.celery import app
from tests.conftest import ROOT, WorkerProcess, wait_for
from tests.faults.conftest import PrivatePostgres
from tests.faults.rollout_fleet import FLEET

pytestmark = [pytest.mark.integration, pytest.mark.fault]

DATABASE = "hub_faults"


@pytest.fixture(scope="module")
def hub_database(private_postgres: PrivatePostgres) -> str:
    """The Hub's schema, migrated, in the private cluster."""
    private_postgres.createdb(DATABASE)
    url = private_postgres.url(DATABASE)
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "hub.settings_test", "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return url


@pytest.fixture
def rollout_worker(hub_database: str, worker_logs: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(
        queues="rollouts", concurrency=2, pool="threads", name="pg-restart", env={"DATABASE_URL": hub_database},
        log_dir=worker_logs,
    ).start()  # fmt: skip
    try:
        yield worker
    finally:
        worker.stop()


def fleet_command(phase: str, state: Path, database_url: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.faults.rollout_fleet", phase, str(state)],
            cwd=ROOT,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "hub.settings_test",
                "DATABASE_URL": database_url,
                # the simulated agents heartbeat far more often than real ones
                "AGENT_THROTTLE_RATE": "100000/minute",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def stage_rows(url: str, rollout_id: int) -> list[tuple[Any, ...]]:
    return query(
        url,
        "SELECT position, status, dispatched FROM rollouts_rolloutstage WHERE rollout_id = %s ORDER BY position",
        rollout_id,
    )


def test_postgres_crashed_mid_stage_the_rollout_completes_with_one_update_per_tenant(
    private_postgres: PrivatePostgres, hub_database: str, rollout_worker: WorkerProcess, tmp_path: Path
) -> None:
    url = hub_database
    state = tmp_path / "fleet.json"
    log = tmp_path / "fleet.log"
    # given a fleet on the old version and a started four-stage rollout
    setup = fleet_command("setup", state, url, log)
    assert setup.wait(timeout=120) == 0, log.read_text()[-3000:]
    rollout_id = json.loads(state.read_text())["rollout_id"]
    agents = fleet_command("run", state, url, log)
    crashed_at: list[tuple[Any, ...]] = []
    try:
        # when the gate runs (beat's job, rung here every half second) and, while the
        # 25% stage is under way, Postgres is SIGKILLed and started again
        def rollout_status() -> str | None:
            app.send_task("rollouts.evaluate", queue="rollouts")
            try:
                stages = stage_rows(url, rollout_id)
                (status,) = query(url, "SELECT status FROM rollouts_rollout WHERE id = %s", rollout_id)[0]
            except psycopg.OperationalError:
                return None
            if not crashed_at and any(position == 2 and s == "UPDATING" for position, s, _ in stages):
                crashed_at.extend(stages)
                private_postgres.crash()
                time.sleep(2)
                private_postgres.start()
                return None
            return status if status in ("COMPLETED", "HALTED", "ROLLED_BACK") else None

        try:
            status = wait_for(rollout_status, timeout=90, interval=0.5, message="the rollout to end")
        except AssertionError:
            rollout = query(url, "SELECT status, status_reason FROM rollouts_rollout WHERE id = %s", rollout_id)
            raise AssertionError(
                f"crashed at {crashed_at}; rollout {rollout}; stages {stage_rows(url, rollout_id)}\n"
                f"fleet: {log.read_text()[-2000:]}\nworker: {rollout_worker.log()[-3000:]}"
            ) from None
    finally:
        # the agents stop by themselves once the rollout has ended; otherwise killed
        try:
            agents.wait(timeout=20 if status_is_final(url, rollout_id) else 0.1)
        except subprocess.TimeoutExpired:
            os.killpg(agents.pid, signal.SIGKILL)
            agents.wait(timeout=10)

    # then the crash did hit the stage, and the rollout ended as it should: completed
    assert crashed_at, "the crash never happened"
    assert status == "COMPLETED", (status, stage_rows(url, rollout_id), rollout_worker.log()[-3000:])
    assert [(p, s) for p, s, _ in stage_rows(url, rollout_id)] == [(i, "PASSED") for i in range(4)]
    assert sum(d for _, _, d in stage_rows(url, rollout_id)) == FLEET

    # one update per tenant, in one stage, each carried by its own command
    updates = query(
        url,
        "SELECT tenant_id, stage_id, status, command_id FROM rollouts_tenantupdate WHERE rollout_id = %s",
        rollout_id,
    )
    assert len(updates) == FLEET
    assert len({tenant for tenant, *_ in updates}) == FLEET
    assert {status for _, _, status, _ in updates} == {"SUCCEEDED"}
    assert len({command for *_, command in updates}) == FLEET
    per_tenant = query(url, "SELECT tenant_id, count(*) FROM tenants_command WHERE type = 'update' GROUP BY tenant_id")
    assert len(per_tenant) == FLEET and {n for _, n in per_tenant} == {1}, per_tenant

    # and every agent ran exactly one update, once
    fleet = json.loads(state.read_text())
    for tenant_id, agent in fleet["agents"].items():
        assert len(agent["done"]) == 1, (tenant_id, agent["done"])
        (done,) = agent["done"].values()
        assert done["runs"] == 1 and done["accepted"], (tenant_id, done)
    versions = query(url, "SELECT versions->>'openclaw' FROM tenants_tenant")
    assert {v for (v,) in versions} == {"1.1.0"}


def status_is_final(url: str, rollout_id: int) -> bool:
    try:
        rows = query(url, "SELECT status FROM rollouts_rollout WHERE id = %s", rollout_id)
    except psycopg.OperationalError:
        return False
    return bool(rows) and rows[0][0] in ("COMPLETED", "HALTED", "ROLLED_BACK")
