"""`make demo` tells the whole story on one machine and cleans up after itself:
scripts/demo.sh run non-interactively (DEMO_EXIT=1), on free ports and with a
database, Redis database and state directory of its own."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.control import free_port
from tests import conftest

ROOT = conftest.ROOT
DEMO_REDIS_DB = "13"
# The story itself takes about a minute here; starting and stopping the rest, another.
DEMO_TIMEOUT = 300
SHELL_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "USER", "DATABASE_URL")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(DEMO_TIMEOUT + 60)]


def process_groups() -> dict[int, list[str]]:
    """Every running process's group id -> the command lines (and working directories:
    an agent on a sandbox host runs in the host's directory) of that group."""
    groups: dict[int, list[str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(stat.parent / "cwd")
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            groups.setdefault(int(fields[2]), []).append(f"{cmdline} (in {cwd})")
    return groups


def drop_database(name: str) -> None:
    base = os.environ.get("DATABASE_URL") or "postgres://postgres:postgres@127.0.0.1:5432/hub"
    subprocess.run(
        ["psql", f"{base.rsplit('/', 1)[0]}/postgres", "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
        check=False,
        capture_output=True,
        timeout=30,
    )


@pytest.fixture
def demo_database() -> Iterator[str]:
    name = f"hub_demo_test_{os.getpid()}"
    yield name
    drop_database(name)


def test_demo_tells_the_story_and_leaves_nothing_running(tmp_path: Path, demo_database: str) -> None:
    # given free ports and a database, Redis database and state directory of its own
    port, flower_port = free_port(), free_port()
    demo_dir = tmp_path / "demo"
    # Only what a person's shell would have: the test run's own settings stay out.
    env = {key: value for key, value in os.environ.items() if key in SHELL_ENV}
    env.update(
        {
            "DEMO_EXIT": "1",
            "DEMO_PORT": str(port),
            "DEMO_FLOWER_PORT": str(flower_port),
            "DEMO_DB": demo_database,
            "DEMO_REDIS_DB": DEMO_REDIS_DB,
            "DEMO_DIR": str(demo_dir),
        }
    )

    # when the demo runs without a terminal
    try:
        done = subprocess.run(
            ["bash", "scripts/demo.sh"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=DEMO_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"the demo did not finish within {DEMO_TIMEOUT}s:\n{out[-4000:]}")
    out = done.stdout

    # then it told the whole story and exited 0
    logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(demo_dir.glob("*.log")))
    assert done.returncode == 0, f"exit {done.returncode}:\n{out[-5000:]}{logs}"
    for customer in ("acme", "globex", "initech"):
        assert re.search(rf"{customer}\s+\[#+\]\s+\d+/\d+\s+FULFILLED", out), f"{customer} not FULFILLED:\n{out}"
        assert re.search(rf"heartbeat {customer}\.\S+ at \d\d:\d\d:\d\d: disk \d+%", out), out
    assert re.search(r"-> HTTP 200", out), out
    assert re.search(r"rollout #\d+ COMPLETED", out), out
    assert f"admin   http://127.0.0.1:{port}/admin/   login: " in out
    assert f"flower  http://127.0.0.1:{flower_port}/" in out

    # and nothing it started is left: no process group it printed, nothing of its sandbox
    started = {name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)", out)}
    assert {"web", "worker", "worker-provisioning", "beat", "flower", "stripe"} <= set(started), out
    groups = process_groups()
    left = {name: groups[pid] for name, pid in started.items() if pid in groups}
    assert not left, f"still running after the demo exited: {left}"
    of_the_sandbox = [cmd for cmds in groups.values() for cmd in cmds if str(demo_dir) in cmd]
    assert not of_the_sandbox, f"sandbox processes left: {of_the_sandbox}"
