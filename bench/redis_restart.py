"""Redis restarted empty mid-provisioning, ten times over: the fault suite's scenario
(tests/faults/test_redis_restart.py: ten orders on a threads-pool worker, a private
redis-server killed and started again while they run) in a loop of ROUNDS runs, each
a pytest run of its own. A rare hang (a consumer that stops after the restart) shows
only over many rounds; the goal is every round passing with no order left behind.

Not in CI: quick mode runs nothing (the suite runs the scenario once per run)."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time

from bench.common import BENCH_DATABASE, BENCH_REDIS_URL, ROOT, Result

# What bench.common puts in a bench's environment: the test run has settings of its own.
BENCH_ONLY = (
    "DJANGO_SETTINGS_MODULE",
    "DATABASE_URL",
    "DATABASE_CONN_MAX_AGE",
    "CELERY_BROKER_URL",
    "REDIS_URL",
    "RATE_LIMIT_REDIS_URL",
    "PIPELINE_MODULES",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "HUB_ENV",
)

ROUNDS = 10
ORDERS_PER_ROUND = 10
TEST = "tests/faults/test_redis_restart.py"
RECOVERED = re.compile(r"reaper recovered (\d+) steps; outcomes Counter\((\{.*?\})\)")
FULFILLED = re.compile(r"'FULFILLED': (\d+)")
STUCK = re.compile(r"orders not ended: (\[.*\])")


def _round(index: int) -> tuple[bool, float, int | None, int, str]:
    """One pytest run: (passed, seconds, steps the reaper recovered, orders fulfilled, tail)."""
    # The test suite's own settings (hub.settings_test, INFO logs: a worker is ready
    # when it logs so), on the bench's database server and Redis database.
    env = {key: value for key, value in os.environ.items() if key not in BENCH_ONLY}
    env.update(TEST_DATABASE_NAME=f"{BENCH_DATABASE}_redis_restart", TEST_REDIS_URL=BENCH_REDIS_URL)
    # The test database is made once and kept for the other rounds.
    cmd = [sys.executable, "-m", "pytest", TEST, "-q", "-s", "-p", "no:cacheprovider", "--reuse-db"]
    if index == 0:
        cmd.append("--create-db")
    started = time.monotonic()
    completed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    out = completed.stdout + completed.stderr
    match = RECOVERED.search(out)
    recovered = int(match.group(1)) if match else None
    fulfilled = 0
    if match:
        counted = FULFILLED.search(match.group(2))
        fulfilled = int(counted.group(1)) if counted else 0
    elif completed.returncode != 0:
        stuck = STUCK.search(out)
        left = stuck.group(1).count("(") if stuck else ORDERS_PER_ROUND
        fulfilled = ORDERS_PER_ROUND - left
    passed = completed.returncode == 0
    return passed, seconds, recovered, fulfilled, out[-2000:]


def run(quick: bool) -> Result:
    result = Result(f"Redis restarted empty mid-provisioning, {ROUNDS} rounds of {ORDERS_PER_ROUND} orders")
    if quick:
        result.add("rounds", "not run in quick mode (the fault suite runs one)")
        result.ratio = "n/a"
        return result
    outcomes = []
    for index in range(ROUNDS):
        passed, seconds, recovered, fulfilled, tail = _round(index)
        outcomes.append((passed, seconds, recovered, fulfilled))
        print(
            f"[bench] redis_restart round {index + 1}: {'passed' if passed else 'FAILED'} in {seconds:.0f}s, "
            f"reaper recovered {recovered} steps, {fulfilled}/{ORDERS_PER_ROUND} fulfilled",
            flush=True,
        )
        if not passed:
            result.notes.append(f"round {index + 1} failed:\n{tail}")
    passed_rounds = sum(1 for passed, *_ in outcomes if passed)
    fulfilled_total = sum(fulfilled for *_, fulfilled in outcomes)
    recovered_counts = [recovered for _, _, recovered, _ in outcomes if recovered is not None]
    durations = [seconds for _, seconds, _, _ in outcomes]
    result.add("rounds passed", f"{passed_rounds}/{ROUNDS}", f"{ROUNDS}/{ROUNDS}", passed_rounds == ROUNDS)
    result.add(
        "orders fulfilled",
        f"{fulfilled_total}/{ROUNDS * ORDERS_PER_ROUND}",
        "all, none left behind",
        fulfilled_total == ROUNDS * ORDERS_PER_ROUND,
    )
    if recovered_counts:
        result.add(
            "steps the reaper recovered per round",
            f"min {min(recovered_counts)}, median {statistics.median(recovered_counts):.0f}, "
            f"max {max(recovered_counts)}",
        )
    result.add("round wall time (median)", f"{statistics.median(durations):.0f} s", "")
    result.ratio = f"rounds passed / rounds = {passed_rounds / ROUNDS:.2f}"
    result.notes.append(
        "each round is a pytest run of tests/faults/test_redis_restart.py (a private redis-server, "
        "a threads-pool worker with the watchdog, the reaper called by the test); the first round "
        "creates the test database"
    )
    return result
