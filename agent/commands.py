"""What the agent does for each command type. Every handler returns the result body
sent to `agent/commands/{id}/result`: {"status": "succeeded"|"failed", "output", ...}.

update payload: {"component": str, "version": str, "image": str (optional)}; without an
image the component's current image repository is used with the version as its tag
(registry.example/chatwoot:4.1 + "4.2" -> registry.example/chatwoot:4.2). Its result
adds "version" (the version running now), "rolled_back", and under "details":
component, image, previous_image, previous_version (and rollback_healthy).
restart payload: {"component": str} or {} for every container.
suspend / resume payload: {} (every container but the agent's own).
diagnostics payload: {}; its result carries the report under "details".
maintenance payload: {"enter": bool, "tag": str}: entering stops every container but
the agent's and the databases' (they stay up for the final backup's dumps), so nothing
writes while the tenant moves; leaving starts what entering stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.docker import (
    COMPONENT_LABEL,
    PREVIOUS_SUFFIX,
    ROLE_LABEL,
    VERSION_LABEL,
    Container,
    Docker,
    DockerError,
    image_repository,
    image_tag,
)
from agent.storage import read_json, write_json

log = logging.getLogger(__name__)

# Compose services that hold a tool's data: they keep running in maintenance, for the dumps.
DATABASE_SERVICES = frozenset({"postgres", "mysql", "mariadb", "redis"})

# The Hub keeps at most 32768 characters of output; the end of a log says the most.
MAX_OUTPUT = 32_000


def make_result(
    status: str, output: str, *, version: str | None = None, rolled_back: bool | None = None, **details: Any
) -> dict[str, Any]:
    """A result body: status and output, the update fields the Hub reads (version,
    rolled_back), and everything else under "details"."""
    result: dict[str, Any] = {"status": status, "output": output[-MAX_OUTPUT:]}
    if version is not None:
        result["version"] = version
    if rolled_back is not None:
        result["rolled_back"] = rolled_back
    if details:
        result["details"] = details
    return result


def succeeded(output: str, **extra: Any) -> dict[str, Any]:
    return make_result("succeeded", output, **extra)


def failed(output: str, **extra: Any) -> dict[str, Any]:
    return make_result("failed", output, **extra)


class Executor:
    def __init__(
        self,
        config: Config,
        docker: Docker,
        *,
        diagnostics: Callable[[], dict[str, Any]] = dict,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.docker = docker
        self.diagnostics_source = diagnostics
        self.clock = clock
        self.sleep = sleep
        self.images_file = config.state_dir / "images.json"
        self.suspended_file = config.state_dir / "suspended.json"
        self.maintenance_file = config.state_dir / "maintenance.json"

    def execute(self, command_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        handler = {
            "update": self.update,
            "restart": self.restart,
            "suspend": self.suspend,
            "resume": self.resume,
            "diagnostics": self.diagnostics,
            "maintenance": self.maintenance,
        }.get(command_type)
        if handler is None:
            return failed(f"unknown command type {command_type!r}")
        try:
            return handler(payload)
        except DockerError as exc:
            return failed(str(exc))
        # A command must end in a result the Hub can see, whatever broke.
        except Exception as exc:
            log.exception("command %s failed unexpectedly", command_type)
            return failed(f"agent error: {type(exc).__name__}: {exc}")

    # --- helpers -------------------------------------------------------------------

    def _containers(self) -> list[Container]:
        return self.docker.containers(self.config.compose_files)

    def _find(self, component: str) -> Container | None:
        containers = self._containers()
        # By label first, then Compose service, then name: the most explicit mapping wins.
        for key in (COMPONENT_LABEL, "com.docker.compose.service"):
            found = [c for c in containers if c.labels.get(key) == component]
            if found:
                return found[0]
        found = [c for c in containers if c.name == component]
        if found:
            return found[0]
        return None

    def _protected(self, container: Container) -> bool:
        return container.name in self.config.protected_containers or container.labels.get(ROLE_LABEL) == "agent"

    def wait_healthy(self, name: str) -> tuple[bool, str]:
        """Healthy by the container's health check, or, without one, still running after
        the grace period."""
        started = self.clock()
        deadline = started + self.config.health_timeout
        while True:
            data = self.docker.inspect(name)
            if data is None:
                return False, f"container {name} is gone"
            state = data.get("State") or {}
            health = (state.get("Health") or {}).get("Status")
            if not state.get("Running"):
                return False, f"container {name} is {state.get('Status')} (exit code {state.get('ExitCode')})"
            if health == "healthy":
                return True, "healthy"
            if health == "unhealthy":
                return False, f"container {name} health check reports unhealthy"
            if health is None and self.clock() - started >= self.config.health_grace:
                return True, "running (no health check)"
            if self.clock() >= deadline:
                return False, f"container {name} not healthy after {self.config.health_timeout:.0f}s ({health})"
            self.sleep(self.config.health_poll_interval)

    def repair_interrupted_updates(self) -> list[str]:
        """An update cut short leaves `<name>-hub-previous`: keep the current container
        if there is one, else put the previous one back."""
        containers = self.docker.containers(self.config.compose_files, with_previous=True)
        names = {c.name for c in containers}
        notes = []
        for container in containers:
            if not container.name.endswith(PREVIOUS_SUFFIX):
                continue
            name = container.name.removesuffix(PREVIOUS_SUFFIX)
            if name in names:
                self.docker.remove(container.name, force=True)
                notes.append(f"removed {container.name} left by an interrupted update")
            else:
                self.docker.rename(container.name, name)
                self.docker.start(name)
                notes.append(f"restored {name} from an interrupted update")
        return notes

    def _remember_image(self, component: str, previous: str, current: str) -> list[str]:
        """Keep the last two images of a component deployable; remove older ones."""
        history = read_json(self.images_file) or {}
        images = [i for i in history.get(component, []) if i not in (previous, current)]
        images += [previous, current] if previous != current else [current]
        removed = []
        while len(images) > 2:
            old = images.pop(0)
            if self.docker.remove_image(old):
                removed.append(old)
        history[component] = images
        write_json(self.images_file, history)
        return removed

    # --- handlers ------------------------------------------------------------------

    def update(self, payload: dict[str, Any]) -> dict[str, Any]:
        component, image, version = payload.get("component"), payload.get("image"), payload.get("version")
        if not isinstance(component, str) or not component:
            return failed("update needs a payload with a component", rolled_back=False)
        if not (isinstance(image, str) and image) and not (isinstance(version, str) and version):
            return failed("update needs a version or an image", rolled_back=False)
        notes = self.repair_interrupted_updates()
        found = self._find(component)
        if found is None:
            return failed(f"no container runs component {component!r}", component=component, rolled_back=False)
        name = found.name
        current = self.docker.inspect(name)
        if current is None:
            return failed(f"container {name} disappeared", component=component, rolled_back=False)
        old_image = str((current.get("Config") or {}).get("Image") or found.image)
        old_version = found.version
        if not isinstance(image, str) or not image:
            image = f"{image_repository(old_image)}:{version}"
        new_version = str(version) if isinstance(version, str) and version else image_tag(image)
        facts = {"component": component, "image": image, "previous_image": old_image, "previous_version": old_version}
        if old_image == image and found.state == "running" and found.health in ("healthy", ""):
            return succeeded(
                "\n".join([*notes, f"{component} already runs {image}"]),
                version=old_version,
                rolled_back=False,
                **facts,
            )
        try:
            self.docker.pull(image)
        except DockerError as exc:
            return failed("\n".join([*notes, f"pull failed: {exc}"]), version=old_version, rolled_back=False, **facts)
        notes.append(f"pulled {image}")
        previous = name + PREVIOUS_SUFFIX
        try:
            self.docker.stop(name)
            self.docker.rename(name, previous)
        except DockerError as exc:
            notes.append(f"could not set the old container aside: {exc}")
            with contextlib.suppress(DockerError):
                self.docker.start(name)
            return failed("\n".join(notes), version=old_version, rolled_back=False, **facts)
        notes.append(f"stopped {name} ({old_image}), kept as {previous}")
        labels = {COMPONENT_LABEL: component, VERSION_LABEL: new_version}
        try:
            self.docker.run_like(current, name=name, image=image, labels=labels)
            healthy, why = self.wait_healthy(name)
        except DockerError as exc:
            healthy, why = False, f"start failed: {exc}"
        notes.append(f"new container: {why}")
        if healthy:
            try:
                self.docker.remove(previous, force=True)
            except DockerError as exc:
                # The new version runs; the leftover goes at the next start or update.
                notes.append(f"could not remove {previous}: {exc}")
            removed = self._remember_image(component, old_image, image)
            notes.append(f"committed {image}; previous image {old_image} kept")
            notes += [f"removed old image {ref}" for ref in removed]
            return succeeded("\n".join(notes), version=new_version, rolled_back=False, **facts)
        return self._roll_back(name, previous, old_version, notes, facts)

    def _roll_back(
        self, name: str, previous: str, old_version: str, notes: list[str], facts: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            if self.docker.inspect(name) is not None:
                self.docker.remove(name, force=True)
            self.docker.rename(previous, name)
            self.docker.start(name)
            healthy, why = self.wait_healthy(name)
        except DockerError as exc:
            healthy, why = False, str(exc)
        notes.append(f"rolled back to {facts['previous_image']}: {why}")
        return failed("\n".join(notes), version=old_version, rolled_back=True, rollback_healthy=healthy, **facts)

    def restart(self, payload: dict[str, Any]) -> dict[str, Any]:
        component = payload.get("component")
        if component:
            found = self._find(str(component))
            if found is None:
                return failed(f"no container runs component {component!r}")
            targets = [found]
        else:
            targets = [c for c in self._containers() if not self._protected(c)]
        for container in targets:
            self.docker.restart(container.name)
        names = [c.name for c in targets]
        return succeeded(f"restarted {', '.join(names) or 'nothing'}", containers=names)

    def suspend(self, payload: dict[str, Any]) -> dict[str, Any]:
        running = [c for c in self._containers() if c.state == "running" and not self._protected(c)]
        already = (read_json(self.suspended_file) or {}).get("containers", [])
        names = sorted(set(already) | {c.name for c in running})
        # Written first: a crash halfway must still let `resume` find every container.
        write_json(self.suspended_file, {"containers": names})
        for container in running:
            self.docker.stop(container.name)
        return succeeded(f"stopped {', '.join(c.name for c in running) or 'nothing'}", containers=names)

    def resume(self, payload: dict[str, Any]) -> dict[str, Any]:
        record = read_json(self.suspended_file)
        if isinstance(record, dict):
            names = list(record.get("containers", []))
        else:
            names = [c.name for c in self._containers() if c.state != "running" and not self._protected(c)]
        errors = []
        for name in names:
            try:
                self.docker.start(name)
            except DockerError as exc:
                errors.append(str(exc))
        Path(self.suspended_file).unlink(missing_ok=True)
        if errors:
            return failed("\n".join(errors), containers=names)
        return succeeded(f"started {', '.join(names) or 'nothing'}", containers=names)

    def maintenance(self, payload: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(payload.get("enter"), bool):
            return failed("maintenance needs 'enter': true or false")
        if not payload["enter"]:
            record = read_json(self.maintenance_file)
            names = list(record.get("containers", [])) if isinstance(record, dict) else []
            errors = []
            for name in names:
                try:
                    self.docker.start(name)
                except DockerError as exc:
                    errors.append(str(exc))
            Path(self.maintenance_file).unlink(missing_ok=True)
            if errors:
                return failed("\n".join(errors), containers=names)
            return succeeded(f"out of maintenance; started {', '.join(names) or 'nothing'}", containers=names)
        writers = [
            c
            for c in self._containers()
            if c.state == "running"
            and not self._protected(c)
            and c.labels.get("com.docker.compose.service") not in DATABASE_SERVICES
        ]
        already = (read_json(self.maintenance_file) or {}).get("containers", [])
        names = sorted(set(already) | {c.name for c in writers})
        # Written first: a crash halfway must still let leaving find every container.
        write_json(self.maintenance_file, {"containers": names})
        for container in writers:
            self.docker.stop(container.name)
        return succeeded(f"in maintenance; stopped {', '.join(c.name for c in writers) or 'nothing'}", containers=names)

    def diagnostics(self, payload: dict[str, Any]) -> dict[str, Any]:
        report: dict[str, Any] = dict(self.diagnostics_source())
        report["docker_version"] = self.docker.version()
        report["containers"] = [
            {"name": c.name, "state": c.state, "health": c.health, "image": c.image, "component": c.component}
            for c in self._containers()
        ]
        # The report goes under details; the output stays a short summary so the
        # result stays well inside the Hub's request size limit.
        details = json.loads(json.dumps(report, default=str))
        running = sum(1 for c in report["containers"] if c["state"] == "running")
        summary = (
            f"{len(report['containers'])} containers ({running} running); docker {report['docker_version'] or '?'}; "
            f"outbox {report.get('outbox_pending', '?')} pending, {report.get('outbox_dead', '?')} dead"
        )
        return succeeded(summary, **details)
