"""The agent's life: register once, then heartbeat, report and run commands for good.

The main thread heartbeats, queues reports and delivers the outbox; one worker thread
runs commands one at a time, so a long update never silences the heartbeat. Time is
injected (`clock`, `sleep`) so a test can run the loop against a simulated clock.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import __version__, metrics
from agent.client import Backoff, HubClient, Reply
from agent.commands import Executor, failed
from agent.config import Config
from agent.docker import Docker, DockerError
from agent.journal import ACCEPTED, DONE, RUNNING, Journal
from agent.logs import redact
from agent.outbox import Outbox, utc_now_iso
from agent.storage import ensure_dir, read_json, write_atomic, write_json

log = logging.getLogger(__name__)

MIN_INTERVAL = 1.0
MAX_INTERVAL = 3600.0
PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
COMPONENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def result_path(command_id: str) -> str:
    return f"agent/commands/{urllib.parse.quote(command_id, safe='')}/result"


class CommandRunner:
    """Runs accepted commands in order on one thread (or inline, for tests), records the
    outcome in the journal and queues the result for the Hub."""

    def __init__(
        self,
        journal: Journal,
        executor: Executor,
        outbox: Outbox,
        *,
        on_result: Callable[[], None] = lambda: None,
        inline: bool = False,
    ) -> None:
        self.journal = journal
        self.executor = executor
        self.outbox = outbox
        self.on_result = on_result
        self.inline = inline
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.active: set[str] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.inline and self.thread is None:
            self.thread = threading.Thread(target=self._work, name="commands", daemon=True)
            self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join(timeout)

    def knows(self, command_id: str) -> bool:
        with self.lock:
            return command_id in self.active

    def idle(self) -> bool:
        with self.lock:
            return not self.active

    def submit(self, command_id: str) -> None:
        with self.lock:
            if command_id in self.active:
                return
            self.active.add(command_id)
        if self.inline:
            self._run(command_id)
        else:
            self.queue.put(command_id)

    def _work(self) -> None:
        while True:
            command_id = self.queue.get()
            if command_id is None:
                return
            self._run(command_id)

    def _run(self, command_id: str) -> None:
        try:
            entry = self.journal.get(command_id)
            if entry is None or entry.state != ACCEPTED:
                return
            self.journal.mark_running(command_id)
            log.info("command %s (%s) started", command_id, entry.type)
            result = self.executor.execute(entry.type, entry.payload)
            self.record(command_id, result)
            log.info("command %s (%s) %s", command_id, entry.type, result.get("status"))
        finally:
            with self.lock:
                self.active.discard(command_id)
        self.on_result()

    def record(self, command_id: str, result: dict[str, Any]) -> None:
        self.journal.finish(command_id, result)
        self.outbox.put("result", result_path(command_id), result)


class Agent:
    def __init__(
        self,
        config: Config,
        *,
        client: HubClient | None = None,
        docker: Docker | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        rand: Callable[[], float] = random.random,
        inline_commands: bool = False,
    ) -> None:
        self.config = config
        self.state_dir = ensure_dir(config.state_dir)
        self.client = client or HubClient(
            config.hub_url, connect_timeout=config.connect_timeout, read_timeout=config.read_timeout
        )
        self.docker = docker or Docker(
            config.docker_command, timeout=config.docker_timeout, pull_timeout=config.pull_timeout
        )
        self.clock = clock
        self.sleep = sleep
        self.rand = rand
        self.outbox = Outbox(self.state_dir / "outbox", max_items=config.outbox_max_items)
        self.journal = Journal(self.state_dir / "journal", retention_days=config.journal_retention_days)
        self.executor = Executor(
            config, self.docker, diagnostics=self.diagnostics, clock=clock, sleep=sleep or time.sleep
        )
        self.wake_event = threading.Event()
        self.stopping = threading.Event()
        self.runner = CommandRunner(
            self.journal, self.executor, self.outbox, on_result=self.wake_event.set, inline=inline_commands
        )
        self.backoff = Backoff(base=config.backoff_base, cap=config.backoff_max, rand=rand)
        self.interval = config.heartbeat_interval
        self.identity_file = self.state_dir / "agent.json"
        self.reported_file = self.state_dir / "reported.json"
        self.reported: dict[str, Any] = read_json(self.reported_file) or {}
        self.last_usage_check: float | None = None
        self.last_heartbeat_ok: str | None = None
        self.key_rotation_tried_at = 0.0
        self.started = False
        self._load_api_key()

    # --- identity ------------------------------------------------------------------

    def _load_api_key(self) -> None:
        try:
            key = self.config.api_key_path.read_text().strip()
        except OSError:
            key = ""
        redact(key)
        self.client.api_key = key

    @property
    def registered(self) -> bool:
        return bool(self.client.api_key)

    def register(self) -> bool:
        token = self.config.registration_token_value()
        redact(token)
        if not token:
            log.error(
                "no API key at %s and no registration token configured: cannot register", self.config.api_key_path
            )
            return False
        body = {"registration_token": token, "hostname": self.config.hostname, "agent_version": __version__}
        reply = self.client.post("agent/register", body, auth=False)
        data = reply.data if isinstance(reply.data, dict) else {}
        api_key = data.get("api_key")
        if not reply.ok or not isinstance(api_key, str) or not api_key:
            log.warning("registration failed: %s %s", reply.describe(), _detail(reply))
            return False
        redact(api_key)
        key_path = self.config.api_key_path
        key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(key_path, api_key.encode() + b"\n", mode=0o600)
        identity = {
            "tenant_id": data.get("tenant_id"),
            "registered_at": utc_now_iso(),
            "hub_url": self.config.hub_url,
            "token_sha256": _digest(token),
            "key_issued_at": time.time(),
        }
        write_json(self.identity_file, identity)
        self.client.api_key = api_key
        self._set_interval(data.get("heartbeat_interval"))
        log.info("registered with the Hub as tenant %s", data.get("tenant_id"))
        self._remove_used_token_file()
        return True

    def _remove_used_token_file(self) -> None:
        """A one-time token has no business on the disk once it is spent: remove its file
        when it holds the token this agent registered with. A new token that staff put
        there to re-key the agent stays until it is used."""
        path = self.config.registration_token_file
        if not path:
            return
        token = self.config.registration_token_value()
        if not token or _digest(token) != (read_json(self.identity_file) or {}).get("token_sha256"):
            return
        try:
            Path(path).unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("could not remove the used registration token file %s: %s", path, exc)
            return
        log.info("removed the used registration token file %s", path)

    def _register_again_if_new_token(self) -> None:
        """Re-keying an agent whose keys were revoked: put a new registration token in
        its configuration; the next 401 makes it register with that token."""
        token = self.config.registration_token_value()
        identity = read_json(self.identity_file) or {}
        if token and _digest(token) != identity.get("token_sha256"):
            log.warning("a new registration token is configured; registering again")
            self.client.api_key = ""

    def rotate_key_if_due(self) -> None:
        """Trade the API key for a new one every `key_rotation_days` (the Hub keeps the
        old one working for a while, so a lost answer costs nothing: the next try gets
        another key). A failed try waits an hour."""
        if self.config.key_rotation_days <= 0:
            return
        now = time.time()
        identity = read_json(self.identity_file) or {}
        issued = identity.get("key_issued_at")
        if not isinstance(issued, int | float):
            identity["key_issued_at"] = now
            write_json(self.identity_file, identity)
            return
        if now - issued < self.config.key_rotation_days * 86400 or now - self.key_rotation_tried_at < 3600:
            return
        self.key_rotation_tried_at = now
        reply = self.client.post("agent/rotate-key", {})
        api_key = reply.data.get("api_key") if isinstance(reply.data, dict) else None
        if not reply.ok or not isinstance(api_key, str) or not api_key:
            log.warning("API key rotation failed: %s %s", reply.describe(), _detail(reply))
            return
        redact(api_key)
        write_atomic(self.config.api_key_path, api_key.encode() + b"\n", mode=0o600)
        identity["key_issued_at"] = now
        write_json(self.identity_file, identity)
        self.client.api_key = api_key
        log.info("API key rotated")

    # --- the loop ------------------------------------------------------------------

    def start(self) -> None:
        """Pick up where a previous run left off: repair an update cut short, queue
        accepted commands again, report the ones that were running when it stopped as
        failed, never run them twice."""
        if self.started:
            return
        self.started = True
        if self.registered:
            # A run that stopped between registering and removing the file.
            self._remove_used_token_file()
        self.journal.prune()
        try:
            repairs = self.executor.repair_interrupted_updates()
        except DockerError as exc:
            log.warning("cannot check for interrupted updates: %s", exc)
            repairs = []
        for note in repairs:
            log.warning("%s", note)
        self.runner.start()
        for entry in self.journal.entries():
            if entry.state == ACCEPTED:
                self.runner.submit(entry.id)
            elif entry.state == RUNNING:
                log.warning("command %s was running when the agent stopped; reporting it failed", entry.id)
                output = "\n".join(["the agent stopped while this command was running; it was not run again", *repairs])
                self.runner.record(entry.id, failed(output, interrupted=True))

    def run(self) -> None:
        self.start()
        log.info("agent %s started; Hub %s", __version__, self.config.hub_url)
        while not self.stopping.is_set():
            delay = self.run_once()
            self.mark_alive(delay)
            self.wait(delay)
        self.runner.stop()
        log.info("agent stopped")

    def mark_alive(self, next_in: float) -> None:
        """For `python -m agent healthcheck`: the loop went round and when it means to again."""
        write_json(self.state_dir / "alive.json", {"at": time.time(), "next_in": next_in})

    def stop(self) -> None:
        self.stopping.set()
        self.wake_event.set()

    def wait(self, seconds: float) -> None:
        if self.sleep is not None:
            self.sleep(seconds)
            return
        self.wake_event.wait(seconds)
        self.wake_event.clear()

    def run_once(self) -> float:
        """One round; returns how long to wait before the next."""
        self.start()
        try:
            if not self.registered and not self.register():
                return self.backoff.failure()
            self.collect_reports()
            reply = self.heartbeat()
            if reply.ok:
                self.backoff.success()
                self.last_heartbeat_ok = utc_now_iso()
                self.handle_reply(reply.data)
                self.rotate_key_if_due()
            elif reply.status == 401:
                log.error("the Hub rejected the API key (HTTP 401); is this tenant deprovisioned?")
                self._register_again_if_new_token()
            else:
                log.warning("heartbeat failed: %s %s", reply.describe(), _detail(reply))
            if reply.status is not None and reply.status < 500 and reply.status not in (401, 429):
                flushed = self.outbox.flush(self.client.post, limit=self.config.outbox_batch)
                if flushed.delivered:
                    log.info("delivered %d queued item(s); %d pending", flushed.delivered, flushed.pending)
                if flushed.failure is not None:
                    log.warning("outbox delivery stopped: %s; %d pending", flushed.failure.describe(), flushed.pending)
                    return self.backoff.failure(flushed.failure.retry_after)
            if not reply.ok:
                return self.backoff.failure(reply.retry_after)
        # The loop must outlive any surprise: log it, back off, carry on.
        except Exception:
            log.exception("agent loop error")
            return self.backoff.failure()
        return self.interval * (0.9 + 0.2 * self.rand())

    def _set_interval(self, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            self.interval = min(MAX_INTERVAL, max(MIN_INTERVAL, float(value)))

    # --- heartbeat -----------------------------------------------------------------

    def heartbeat_body(self) -> dict[str, Any]:
        try:
            containers = self.docker.containers(self.config.compose_files)
        except (DockerError, ValueError) as exc:
            log.warning("cannot list containers: %s", exc)
            containers = []
        versions: dict[str, str] = {}
        # A running container's version wins over a stopped one of the same component.
        for c in sorted(containers, key=lambda c: c.state == "running"):
            if COMPONENT_NAME.match(c.component) and 0 < len(c.version) <= 128:
                versions[c.component] = c.version
        versions["agent"] = __version__
        readings = {
            "disk_percent": metrics.disk_percent(self.config.disk_path),
            "memory_percent": metrics.memory_percent(self.config.proc_root),
            "load": metrics.load_average(self.config.proc_root),
            "uptime_seconds": metrics.uptime_seconds(self.config.proc_root),
        }
        missing = [name for name, value in readings.items() if value is None]
        if missing:
            # The Hub requires every reading; a zero with a warning here beats a refused heartbeat.
            log.warning("cannot read %s; reporting 0", ", ".join(missing))
        return {
            **{name: value if value is not None else 0 for name, value in readings.items()},
            "containers": [{"name": c.name, "state": c.state, "health": c.health or None} for c in containers][:500],
            "versions": dict(list(versions.items())[-200:]),
            "tls_expires_at": metrics.tls_expires_at(self.config.tls_cert),
        }

    def heartbeat(self) -> Reply:
        return self.client.post("agent/heartbeat", self.heartbeat_body())

    def handle_reply(self, data: Any) -> None:
        if not isinstance(data, dict):
            log.warning("heartbeat reply is not a JSON object; ignored")
            return
        self._set_interval(data.get("heartbeat_interval"))
        commands = data.get("commands")
        if not isinstance(commands, list):
            return
        for command in commands:
            if (
                not isinstance(command, dict)
                or not isinstance(command.get("id"), str | int)
                or not isinstance(command.get("type"), str)
            ):
                log.warning("ignoring a malformed command in the heartbeat reply")
                continue
            payload = command.get("payload")
            self.accept_command(str(command["id"]), command["type"], payload if isinstance(payload, dict) else {})

    def accept_command(self, command_id: str, command_type: str, payload: dict[str, Any]) -> None:
        """At most once: a command the journal knows is never started again; if it has
        finished, its stored result is sent again (the first may not have arrived)."""
        entry = self.journal.get(command_id)
        if entry is None:
            self.journal.accept(command_id, command_type, payload)
            self.runner.submit(command_id)
        elif entry.state == DONE and entry.result is not None:
            if result_path(command_id) not in self.outbox.pending_paths():
                log.info("command %s re-delivered; sending its result again", command_id)
                self.outbox.put("result", result_path(command_id), entry.result)
        elif entry.state == ACCEPTED and not self.runner.knows(command_id):
            self.runner.submit(command_id)

    # --- reports -------------------------------------------------------------------

    def collect_reports(self) -> None:
        self.collect_backups()
        now = self.clock()
        if self.last_usage_check is None or now - self.last_usage_check >= self.config.usage_interval:
            self.last_usage_check = now
            self.collect_usage()

    def _save_reported(self) -> None:
        write_json(self.reported_file, self.reported)

    def collect_backups(self) -> None:
        """Queue backup-status.json for the Hub each time the backup job writes a new run."""
        path = self.config.backup_status_path
        try:
            st = path.stat()
        except OSError:
            return
        signature = f"{st.st_mtime_ns}:{st.st_size}"
        if self.reported.get("backups_signature") == signature:
            return
        data = read_json(path)
        self.reported["backups_signature"] = signature
        if not isinstance(data, dict) or "last_run" not in data:
            log.warning("%s is not a backup status object; not reported", path)
            self._save_reported()
            return
        if data.get("last_run") != self.reported.get("backups_last_run"):
            self.outbox.put("backups", "agent/backups", {**data, "report_id": str(uuid.uuid4())})
            self.reported["backups_last_run"] = data.get("last_run")
            log.info("queued backup report for the run of %s", data.get("last_run"))
        self._save_reported()

    def collect_usage(self) -> None:
        """Queue the token count of each billing period whose count changed. The file
        holds either {"period": "YYYY-MM", "tokens": n} or {"periods": {"YYYY-MM": n}}."""
        data = read_json(self.config.usage_path)
        if not isinstance(data, dict):
            return
        periods = data.get("periods")
        if not isinstance(periods, dict):
            periods = {data.get("period"): data.get("tokens")}
        sent: dict[str, int] = self.reported.setdefault("usage", {})
        changed = False
        for period, tokens in sorted(periods.items(), key=lambda kv: str(kv[0])):
            if not isinstance(period, str) or not PERIOD.match(period):
                continue
            if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
                continue
            if sent.get(period) != tokens:
                self.outbox.put(
                    "usage", "agent/usage", {"report_id": str(uuid.uuid4()), "period": period, "tokens": tokens}
                )
                sent[period] = tokens
                changed = True
        if changed:
            for old in sorted(sent)[:-3]:
                del sent[old]
            self._save_reported()

    # --- diagnostics ---------------------------------------------------------------

    def diagnostics(self) -> dict[str, Any]:
        identity = read_json(self.identity_file) or {}
        body = self.heartbeat_body()
        body.pop("containers", None)
        return {
            "agent_version": __version__,
            "tenant_id": identity.get("tenant_id"),
            "hub_url": self.config.hub_url,
            "heartbeat_interval": self.interval,
            "last_heartbeat_ok_at": self.last_heartbeat_ok,
            "outbox_pending": len(self.outbox),
            "outbox_dead": self.outbox.dead_count(),
            "journal_entries": len(self.journal.entries()),
            "state_dir": str(self.state_dir),
            "metrics": body,
            "backup_status_file": str(self.config.backup_status_path),
            "backup_status_present": Path(self.config.backup_status_path).exists(),
        }


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _detail(reply: Reply) -> str:
    if isinstance(reply.data, dict):
        return str(reply.data)[:300]
    return ""
