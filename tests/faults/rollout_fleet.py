"""A simulated fleet's agents, run as their own process against whatever database
DATABASE_URL names (the fault suite's private Postgres): they heartbeat through the
real agent API and answer `update` commands as a real agent does, executing each
command id once and re-posting its result until the Hub accepts it. A Hub error (the
database restarting under it) is a failed round, not a crash.

    python -m tests.faults.rollout_fleet setup STATE   # the fleet, releases, a started rollout
    python -m tests.faults.rollout_fleet run STATE     # heartbeat rounds until the rollout ends
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import django

FLEET = 40
INTERNAL = 2
ROUND_SECONDS = 0.3
RUN_SECONDS = 120


def setup(state_path: Path) -> None:
    from ops.simulation import fleet_simulate
    from rollouts.services import StageSpec, release_create, rollout_create, rollout_start
    from tests.rollouts.conftest import COMPONENT, NEW, NEW_IMAGE, OLD, OLD_IMAGE

    simulated = fleet_simulate(count=FLEET, internal=INTERNAL)
    state: dict[str, Any] = {
        "agents": {
            str(a.tenant_id): {"api_key": a.api_key, "versions": {COMPONENT: OLD, "agent": "1.0.0"}, "done": {}}
            for a in simulated
        }
    }
    # every agent heartbeats once, so the Hub knows its versions before the rollout
    _round(state)
    release_create(component=COMPONENT, version=OLD, image=OLD_IMAGE, actor="fault-suite")
    new = release_create(component=COMPONENT, version=NEW, image=NEW_IMAGE, actor="fault-suite")
    stages = [StageSpec(internal=True, soak_seconds=0)] + [StageSpec(percent=p, soak_seconds=1) for p in (5, 25, 100)]
    rollout = rollout_create(release_id=new.pk, actor="fault-suite", stages=stages)
    rollout_start(rollout_id=rollout.pk, actor="fault-suite")
    state["rollout_id"] = rollout.pk
    _save(state_path, state)


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def _agent_round(client: Any, agent: dict[str, Any]) -> None:
    auth = {"HTTP_AUTHORIZATION": f"Bearer {agent['api_key']}"}
    body = {
        "disk_percent": 40.0,
        "memory_percent": 55.0,
        "load": 0.3,
        "uptime_seconds": 3600,
        "containers": [],
        "versions": agent["versions"],
        "tls_expires_at": None,
    }
    response = client.post("/api/v1/agent/heartbeat", body, content_type="application/json", **auth)
    if response.status_code != 200:
        return
    for command in response.json()["commands"]:
        done = agent["done"].get(command["id"])
        if done is None:
            # executed once, by id: a second delivery only re-sends the stored result
            payload = command["payload"]
            previous = agent["versions"].get(payload["component"], "")
            agent["versions"] = {**agent["versions"], payload["component"]: payload["version"]}
            done = agent["done"][command["id"]] = {
                "runs": 1,
                "deliveries": 0,
                "accepted": False,
                "result": {
                    "status": "succeeded",
                    "output": f"{payload['component']} now {payload['version']}",
                    "version": payload["version"],
                    "rolled_back": False,
                    "details": {"component": payload["component"], "previous_version": previous},
                },
            }
        done["deliveries"] += 1
    for command_id, done in agent["done"].items():
        if not done["accepted"]:
            url = f"/api/v1/agent/commands/{command_id}/result"
            response = client.post(url, done["result"], content_type="application/json", **auth)
            done["accepted"] = response.status_code == 200


def _round(state: dict[str, Any]) -> int:
    from django.db import close_old_connections, connection
    from django.test import Client

    from tenants.services import heartbeat_flush

    client = Client(raise_request_exception=False)
    errors = 0
    for agent in state["agents"].values():
        try:
            _agent_round(client, agent)
        except Exception:  # the Hub's database went away mid-request
            errors += 1
            connection.close()
    try:
        heartbeat_flush()
    except Exception:
        errors += 1
        connection.close()
    close_old_connections()
    return errors


def run(state_path: Path) -> None:
    from django.db import connection

    from rollouts.models import Rollout, RolloutStatus

    state = json.loads(state_path.read_text())
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        state["errors"] = state.get("errors", 0) + _round(state)
        _save(state_path, state)
        try:
            status = Rollout.objects.filter(pk=state["rollout_id"]).values_list("status", flat=True).first()
        except Exception:
            connection.close()
            status = None
        if status in (RolloutStatus.COMPLETED, RolloutStatus.HALTED, RolloutStatus.ROLLED_BACK):
            return
        time.sleep(ROUND_SECONDS)


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings_test")
    django.setup()
    {"setup": setup, "run": run}[sys.argv[1]](Path(sys.argv[2]))
