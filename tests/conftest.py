"""Fixtures that start the real components: a Celery worker consuming from the real
Redis broker against the test database, and helpers to wait for conditions."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

if TYPE_CHECKING:
    from hub.pipeline.models import Job
    from provisioning.models import Order

ROOT = Path(__file__).resolve().parent.parent
ALL_QUEUES = ",".join(settings.HUB_QUEUES)


def pytest_configure(config: pytest.Config) -> None:
    # WhiteNoise warns on every in-process request while STATIC_ROOT does not exist
    # (on a fresh clone, until the first web process collects the static files):
    # hundreds of warnings that would hide a real one.
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)


def waiting_on_a_lock(pid: int) -> bool:
    """Whether the Postgres backend `pid` is blocked on a lock (ask from autocommit:
    inside a transaction pg_stat_activity is a snapshot)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row is not None and row[0] == "Lock"


def blocked_behind(hold: Callable[[], Any], then: Callable[[], Any], *, what: str) -> tuple[Any, Any]:
    """Run `hold` in a transaction of its own thread and leave it open; run `then` in a
    second thread and wait until its Postgres backend is blocked on a lock; then let the
    first commit. Returns what each returned, or the exception it raised."""
    from django.db import connections, transaction

    held, may_commit = threading.Event(), threading.Event()
    pids: list[int] = []
    results: dict[str, Any] = {}

    def holding() -> None:
        try:
            with transaction.atomic():
                results["hold"] = hold()
                held.set()
                assert may_commit.wait(timeout=30)
        except BaseException as exc:  # returned to the test
            results["hold"] = exc
            held.set()
        finally:
            connections.close_all()

    def waiting() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids.append(cursor.fetchone()[0])
            results["then"] = then()
        except BaseException as exc:  # returned to the test
            results["then"] = exc
        finally:
            connections.close_all()

    holder = threading.Thread(target=holding)
    holder.start()
    assert held.wait(timeout=30)
    waiter = threading.Thread(target=waiting)
    try:
        if not isinstance(results["hold"], BaseException):
            waiter.start()
            wait_for(lambda: pids and waiting_on_a_lock(pids[0]), timeout=30, message=what)
    finally:
        may_commit.set()
        holder.join(timeout=30)
        if waiter.ident is not None:
            waiter.join(timeout=30)
    return results["hold"], results.get("then")


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.1, message: str = "") -> Any:
    """Poll until the predicate returns something truthy; fail after the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def job_of(order: Order) -> Job:
    """The order's pipeline job: placing an order starts one (the column allows none)."""
    assert order.job is not None, f"order {order.pk} has no job"
    return order.job


def test_database_url() -> str:
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class WorkerProcess:
    """A real `celery worker` process against the test database and broker."""

    # Every worker this session started: one that a failed test left running would
    # go on consuming the next tests' messages with its stale settings.
    started: list[WorkerProcess] = []

    def __init__(
        self,
        *,
        queues: str = ALL_QUEUES,
        concurrency: int = 2,
        pool: str = "prefork",
        name: str = "w1",
        env: dict[str, str] | None = None,
        log_dir: Path,
    ) -> None:
        self.queues = queues
        self.concurrency = concurrency
        self.pool = pool
        self.name = name
        self.extra_env = env or {}
        self.log_path = log_dir / f"worker-{name}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.hostname = f"{name}-{os.getpid()}@{socket.gethostname()}"

    def start(self) -> WorkerProcess:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "hub.settings_test",
            "DATABASE_URL": test_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "hub",
            "worker",
            "-Q",
            self.queues,
            "-c",
            str(self.concurrency),
            "--pool",
            self.pool,
            "-n",
            self.hostname,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "INFO",
        ]
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        proc = self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        WorkerProcess.started.append(self)
        wait_for(
            lambda: b"ready." in self.log_path.read_bytes() or proc.poll() is not None,
            timeout=60,
            message=f"worker {self.name} to start",
        )
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited:\n{self.log_path.read_text()[-3000:]}")
        return self

    def kill(self) -> None:
        """SIGKILL the whole worker: the main process and its pool children."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log_file.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # A warm shutdown: only the main process is told; it lets running tasks end.
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log_file.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WebServer:
    """The real web process, started the one way it starts (scripts/web.sh: gunicorn's
    ASGI worker, static files, the event streams) against the test database and Redis."""

    def __init__(self, *, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.log_path = log_dir / f"web-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WebServer:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "hub.settings_test",
            "DATABASE_URL": test_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "REDIS_URL": settings.REDIS_URL,
            "EVENTS_REDIS_URL": settings.EVENTS_REDIS_URL,
            "WEB_CONCURRENCY": "1",
            "WEB_GRACEFUL_TIMEOUT": "2",
            "LOG_FORMAT": "plain",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "web.sh"), "--bind", f"127.0.0.1:{self.port}"],
            cwd=ROOT,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = self.proc

        def answers() -> bool:
            if proc.poll() is not None:
                return True
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    return sock.recv(64).startswith(b"HTTP/1.1 200")
            except OSError:
                return False

        wait_for(answers, timeout=60, interval=0.2, message="the web process (scripts/web.sh) to answer")
        if proc.poll() is not None:
            raise RuntimeError(f"scripts/web.sh exited:\n{self.log()[-3000:]}")
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log_file.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def web_server(
    django_db_setup: None, django_db_blocker: Any, broker: redis.Redis, worker_logs: Path
) -> Iterator[WebServer]:
    """One web process for the session (`bash scripts/web.sh`), on the test database;
    idle event streams send a keep-alive comment every second."""
    with django_db_blocker.unblock():
        server = WebServer(log_dir=worker_logs, env={"EVENTS_KEEPALIVE_SECONDS": "1"}).start()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def no_worker_outlives_the_session() -> Iterator[None]:
    yield
    for worker in WorkerProcess.started:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.kill()


@pytest.fixture(scope="session")
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture(scope="session")
def worker_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workers")


@pytest.fixture(scope="session")
def celery_worker(
    django_db_setup: None, django_db_blocker: Any, broker: redis.Redis, worker_logs: Path
) -> Iterator[WorkerProcess]:
    """One worker on every queue for the whole session, started after the test
    database exists and stopped before it is dropped."""
    global _session_worker
    with django_db_blocker.unblock():
        worker = WorkerProcess(log_dir=worker_logs, name="session").start()
    _session_worker = worker
    yield worker
    _session_worker = None
    worker.stop()


_session_worker: WorkerProcess | None = None


@contextmanager
def queues_taken_from_session_worker(queues: list[str], *, purge: bool = False) -> Iterator[None]:
    """A module that runs its own worker on some queues (other settings, another pool)
    must not share their messages with the session worker, if one is running: it
    stops consuming them (a real `cancel_consumer` control command) until the
    block ends. With `purge`, what the block left in them (meant for its own worker)
    is dropped before the session worker gets them back."""
    from hub.celery import app

    worker = _session_worker
    if worker is None:
        yield
        return
    for queue in queues:
        replies = app.control.cancel_consumer(queue, destination=[worker.hostname], reply=True, timeout=5)
        assert replies, f"the session worker did not confirm it stopped consuming {queue}"
    try:
        yield
    finally:
        if purge:
            with app.connection_for_write() as conn:
                for queue in queues:
                    conn.default_channel.queue_purge(queue)
        for queue in queues:
            app.control.add_consumer(queue, destination=[worker.hostname], reply=True, timeout=5)


@pytest.fixture
def start_worker(
    django_db_setup: None, broker: redis.Redis, worker_logs: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start extra workers in a test (to kill them); all are stopped afterwards."""
    started: list[WorkerProcess] = []

    def start(**kwargs: Any) -> WorkerProcess:
        worker = WorkerProcess(log_dir=worker_logs, **kwargs).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def api() -> APIClient:
    """A client of the REST API, not logged in."""
    return APIClient()
