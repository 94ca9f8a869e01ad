"""A simulated fleet whose agents talk to the Hub through the real agent API (Bearer
keys, heartbeats, command results), plus helpers to drive rollouts and the gate."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from ops.simulation import fleet_simulate
from rollouts.models import Release, Rollout
from rollouts.services import StageSpec, release_create, rollout_create, rollouts_evaluate
from tenants import keycache, redis_store
from tenants.services import heartbeat_flush

COMPONENT = "openclaw"
OLD = "1.0.0"
NEW = "1.1.0"
OLD_IMAGE = "registry.example.test/openclaw:1.0.0@sha256:" + "a" * 64
NEW_IMAGE = "registry.example.test/openclaw:1.1.0@sha256:" + "b" * 64

HEARTBEAT_URL = "/api/v1/agent/heartbeat"


@dataclass
class SimAgent:
    """One tenant's agent: heartbeats its versions, runs `update` commands, answers."""

    tenant_id: int
    api_key: str
    versions: dict[str, str] = field(default_factory=lambda: {COMPONENT: OLD, "agent": "1.0.0"})
    fail_updates_to: set[str] = field(default_factory=set)
    silent: bool = False
    executed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, Any]:
        return {"HTTP_AUTHORIZATION": f"Bearer {self.api_key}"}

    def heartbeat(self, client: Client) -> int:
        """One heartbeat; runs the commands of the reply. Returns how many it ran."""
        body = {
            "disk_percent": 40.0,
            "memory_percent": 55.0,
            "load": 0.3,
            "uptime_seconds": 3600,
            "containers": [],
            "versions": self.versions,
            "tls_expires_at": None,
        }
        response = client.post(HEARTBEAT_URL, body, content_type="application/json", **self.auth)
        assert response.status_code == 200, response.content
        ran = 0
        for command in response.json()["commands"]:
            self.run(client, command)
            ran += 1
        return ran

    def run(self, client: Client, command: dict[str, Any]) -> None:
        assert command["type"] == "update", command
        payload = command["payload"]
        self.executed.append(payload)
        component, version = payload["component"], payload["version"]
        previous = self.versions.get(component, "")
        details = {"component": component, "image": payload.get("image", ""), "previous_version": previous}
        if version in self.fail_updates_to:
            result = {
                "status": "failed",
                "output": f"health check of {component} {version} failed; restored {previous}",
                "version": previous,
                "rolled_back": True,
                "details": details,
            }
        else:
            self.versions = {**self.versions, component: version}
            result = {"status": "succeeded", "output": f"{component} now {version}", "version": version,
                      "rolled_back": False, "details": details}  # fmt: skip
        url = f"/api/v1/agent/commands/{command['id']}/result"
        response = client.post(url, result, content_type="application/json", **self.auth)
        assert response.status_code == 200, response.content


@dataclass
class Fleet:
    agents: list[SimAgent]
    client: Client = field(default_factory=Client)

    def by_tenant(self) -> dict[int, SimAgent]:
        return {agent.tenant_id: agent for agent in self.agents}

    def round(self) -> int:
        """Every agent that is not silent heartbeats once (and runs what it gets);
        then the buffered heartbeats are flushed to Postgres, as the beat job does."""
        ran = sum(agent.heartbeat(self.client) for agent in self.agents if not agent.silent)
        heartbeat_flush()
        return ran


@pytest.fixture(autouse=True)
def clean_fast_path() -> Iterator[None]:
    def clear() -> None:
        client = redis_store.client()
        keys = list(client.scan_iter(match=redis_store.PREFIX + "*", count=1000))
        if keys:
            client.delete(*keys)
        keycache.reset()

    clear()
    yield
    clear()


@pytest.fixture
def make_fleet() -> Callable[..., Fleet]:
    """N ACTIVE tenants with registered agents (simulate_fleet's service); the first
    `internal` are internal. Every agent heartbeats once, so the Hub knows its versions."""

    def make(count: int, internal: int = 0) -> Fleet:
        simulated = fleet_simulate(count=count, internal=internal)
        fleet = Fleet(agents=[SimAgent(tenant_id=a.tenant_id, api_key=a.api_key) for a in simulated])
        fleet.round()
        return fleet

    return make


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """Run a service as in production: its after-commit hooks (the Redis flags that
    tell agents commands are due) run when it returns."""

    def run(function: Callable[..., Any], **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return function(**kwargs)

    return run


@pytest.fixture
def evaluate(on_commit: Callable[..., Any]) -> Callable[[], Any]:
    return lambda: on_commit(rollouts_evaluate)


@pytest.fixture
def releases() -> tuple[Release, Release]:
    old = release_create(component=COMPONENT, version=OLD, image=OLD_IMAGE, actor="test")
    new = release_create(component=COMPONENT, version=NEW, image=NEW_IMAGE, actor="test")
    return old, new


def stages(*soaks: int, percents: tuple[int, ...] = (5, 25, 100)) -> list[StageSpec]:
    """The default stages (internal, then the percentages) with the given soak times."""
    assert len(soaks) == len(percents) + 1
    return [StageSpec(internal=True, soak_seconds=soaks[0])] + [
        StageSpec(percent=p, soak_seconds=s) for p, s in zip(percents, soaks[1:], strict=True)
    ]


@pytest.fixture
def make_rollout(releases: tuple[Release, Release]) -> Callable[..., Rollout]:
    def make(**kwargs: Any) -> Rollout:
        kwargs.setdefault("stages", stages(0, 0, 0, 0))
        return rollout_create(release_id=releases[1].pk, actor="test", **kwargs)

    return make


@pytest.fixture
def staff_api() -> APIClient:
    user = get_user_model().objects.create_user("rollout-staff", password="x", is_staff=True)
    client = APIClient()
    client.force_authenticate(user)
    return client
