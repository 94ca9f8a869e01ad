"""What every benchmark shares: its own database and Redis database, the processes it
starts (gunicorn, celery workers), bounded waits, and the result table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
VAR = ROOT / "var" / "bench"

# A bench never touches the dev or the test databases: its own Postgres database
# (recreated from a migrated template for every benchmark) and its own Redis database.
BENCH_DATABASE = os.environ.get("BENCH_DATABASE_NAME", "bench_hub")
BENCH_TEMPLATE = f"{BENCH_DATABASE}_template"
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
_SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def database_url(name: str = BENCH_DATABASE) -> str:
    parts = urlsplit(_SERVER_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of every process a bench starts, and of the bench itself."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": database_url(),
        "DATABASE_CONN_MAX_AGE": "60",
        "CELERY_BROKER_URL": BENCH_REDIS_URL,
        "REDIS_URL": BENCH_REDIS_URL,
        "RATE_LIMIT_REDIS_URL": BENCH_REDIS_URL,
        "PIPELINE_MODULES": "bench.pipelines",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "plain",
        "PYTHONUNBUFFERED": "1",
        "HUB_ENV": "development",
    }
    env.pop("TEST_DATABASE_NAME", None)
    env.update(extra)
    return env


def configure_process() -> None:
    """Point this process's Django at the bench database and broker, then set it up."""
    for key in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "RATE_LIMIT_REDIS_URL"):
        os.environ[key] = bench_env()[key]
    os.environ["PIPELINE_MODULES"] = "bench.pipelines"
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["LOG_FORMAT"] = "plain"
    import django

    django.setup()


def _admin_execute(*statements: str) -> None:
    import psycopg

    with psycopg.connect(_SERVER_URL, autocommit=True, connect_timeout=10) as conn:
        for statement in statements:
            conn.execute(statement)


def _drop(name: str) -> None:
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare_template() -> None:
    """Create and migrate the template database once per run."""
    _drop(BENCH_TEMPLATE)
    _admin_execute(f'CREATE DATABASE "{BENCH_TEMPLATE}"')
    started = time.monotonic()
    subprocess.run(
        [PY, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=bench_env(DATABASE_URL=database_url(BENCH_TEMPLATE)),
        check=True,
        timeout=600,
    )
    print(f"[bench] migrated {BENCH_TEMPLATE} in {time.monotonic() - started:.1f}s", flush=True)


def drop_template() -> None:
    _drop(BENCH_TEMPLATE)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A fresh, migrated bench database and an empty bench Redis database."""
    from django.db import connections

    connections.close_all()
    _drop(BENCH_DATABASE)
    _admin_execute(f'CREATE DATABASE "{BENCH_DATABASE}" TEMPLATE "{BENCH_TEMPLATE}"')
    redis_flush()
    try:
        yield BENCH_DATABASE
    finally:
        connections.close_all()
        _drop(BENCH_DATABASE)
        redis_flush()


def redis_flush() -> None:
    import redis

    redis.Redis.from_url(BENCH_REDIS_URL).flushdb()


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A subprocess in its own session, logged to a file, always killed on stop()."""

    def __init__(self, name: str, cmd: list[str], *, env: dict[str, str]) -> None:
        VAR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.cmd = cmd
        self.env = env
        self.log_path = VAR / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, *, ready: Callable[[], bool], timeout: float = 60) -> Process:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.cmd, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        proc = self.proc
        wait_for(lambda: proc.poll() is not None or ready(), timeout=timeout, message=f"{self.name} to start")
        if proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        # Pool children left behind by a dead parent share its process group.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


def start_worker(
    name: str, *, queues: str, pool: str, concurrency: int, env: dict[str, str], include: str = "bench.pipelines"
) -> Process:
    process = Process(
        name,
        [
            PY,
            "-m",
            "celery",
            "-A",
            "hub",
            "worker",
            "-Q",
            queues,
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-n",
            f"{name}-{os.getpid()}@%h",
            "--include",
            include,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "INFO",
        ],
        # INFO as in production; it is also how the worker says "ready.".
        env={**env, "LOG_LEVEL": "INFO"},
    )
    return process.start(ready=lambda: "ready." in process.log(), timeout=60)


def start_gunicorn(name: str, *, port: int, workers: int, threads: int, env: dict[str, str]) -> Process:
    import urllib.request

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    process = Process(
        name,
        [
            PY,
            "-m",
            "gunicorn",
            "hub.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--worker-class",
            "gthread" if threads > 1 else "sync",
            "--keep-alive",
            "30",
            "--backlog",
            "2048",
            "--timeout",
            "60",
        ],
        env=env,
    )
    return process.start(ready=answers, timeout=60)


def process_tree(root: int) -> list[int]:
    """`root` and every process under it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds_by_process(process: Process) -> dict[int, float]:
    """User plus system CPU time so far of the process and of each of its children
    (e.g. gunicorn's workers), by pid."""
    if process.proc is None:
        return {}
    spent = {}
    for pid in process_tree(process.proc.pid):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            spent[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            continue
    return spent


def cpu_seconds(process: Process) -> float:
    """User plus system CPU time of the process and its children (e.g. gunicorn's
    workers) so far: what a request costs, whatever else the machine is doing."""
    return sum(cpu_seconds_by_process(process).values())


# --- results --------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    value: str
    goal: str = ""
    passed: bool | None = None


@dataclass
class Result:
    name: str
    rows: list[Row] = field(default_factory=list)
    ratio: str = ""
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: str, goal: str = "", passed: bool | None = None) -> None:
        self.rows.append(Row(name, value, goal, passed))

    @property
    def goals_met(self) -> bool:
        return all(row.passed is not False for row in self.rows)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.name,
            "rows": [{"name": r.name, "value": r.value, "goal": r.goal, "passed": r.passed} for r in self.rows],
            "ratio": self.ratio,
            "notes": self.notes,
            "goals_met": self.goals_met,
        }

    def table(self) -> str:
        headers = ("metric", "value", "goal", "pass")
        cells = [
            (r.name, r.value, r.goal, "" if r.passed is None else ("PASS" if r.passed else "FAIL")) for r in self.rows
        ]
        widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
        lines = [f"== {self.name} =="]
        lines.append(" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        lines.append("-+-".join("-" * w for w in widths))
        lines.extend(" | ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells)
        lines.append(f"side-by-side ratio: {self.ratio}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]
