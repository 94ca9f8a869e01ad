"""Benchmark 6: one order's provisioning now against the code of 2026-12-03, side by side.

The customer-zone lookup, the DNS read-back, the DNS-01 flow through the Hub, the
generated tool stacks and restic backups all add work to an order. To say what they
cost, the provisioning benchmark of a commit from before them (BASELINE_COMMIT,
exported with `git archive` into var/bench/) and the same benchmark of this tree run in
turns, ROUNDS times each, each in its own process with its own database, sandbox, Hub
and worker. Measured is one order alone, twice: as the provisioning benchmark runs it
(the stand-ins wait about a second a script, as package installs and image pulls do),
which is the goal's figure, and with no added waits, which is the code's own cost."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import BENCH_DATABASE, ROOT, VAR, Result

BASELINE_COMMIT = "bb3d22b"
GOAL_FACTOR = 1.15
ROUNDS = 3
SCRIPT_SECONDS = 1  # bench.provisioning's wait per script


def _export_baseline() -> Path:
    target = VAR / f"baseline-{BASELINE_COMMIT}"
    if (target / "manage.py").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", BASELINE_COMMIT], cwd=ROOT, check=True, capture_output=True, timeout=120
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True, timeout=120)
    return target


# Run in the tree under test, with its own bench package: one order alone, on the
# threads pool, as that tree's provisioning benchmark runs it.
DRIVER = """
import json, sys
from bench import common
common.configure_process()
common.prepare_template()
from bench import provisioning
try:
    _, batch, _ = provisioning._configuration(
        pool="threads", concurrency=1, orders=1, single=False, wait_seconds=int(sys.argv[1]), timeout=300
    )
finally:
    common.drop_template()
print(json.dumps({"seconds": batch.wall_seconds, "failures": batch.failures}))
"""


def _one_order_seconds(tree: Path, database: str, *, wait_seconds: int) -> float:
    completed = subprocess.run(
        [sys.executable, "-c", DRIVER, str(wait_seconds)],
        cwd=tree,
        env={**_clean_environment(), "BENCH_DATABASE_NAME": database},
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"{tree}: exit {completed.returncode}:\n{completed.stderr[-3000:]}")
    outcome = json.loads(lines[-1])
    if outcome["failures"]:
        raise RuntimeError(f"{tree}: the order failed: {outcome['failures']}")
    return float(outcome["seconds"])


def _clean_environment() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "TEST_DATABASE_NAME", "PYTHONPATH"):
        env.pop(key, None)
    return env


def run(quick: bool) -> Result:
    result = Result(f"one order's provisioning, this tree vs {BASELINE_COMMIT} (2026-12-03), in turns")
    if quick:
        # Exporting and migrating a second tree is minutes of work, and one order of this
        # tree alone is what the provisioning benchmark's quick run already times: not
        # for CI, whose suite shares 2 cores with the rest of the tests.
        result.add("rounds", "not run in quick mode (the provisioning benchmark times one order)")
        result.ratio = "quick mode: no baseline run"
        return result
    baseline_tree = _export_baseline()
    runs: dict[tuple[str, int], list[float]] = {}
    try:
        for _ in range(ROUNDS):
            for wait_seconds in (SCRIPT_SECONDS, 0):
                for label, tree in (("baseline", baseline_tree), ("now", ROOT)):
                    seconds = _one_order_seconds(tree, f"{BENCH_DATABASE}_{label}", wait_seconds=wait_seconds)
                    runs.setdefault((label, wait_seconds), []).append(seconds)
    finally:
        shutil.rmtree(baseline_tree, ignore_errors=True)
    ratios = []
    for wait_seconds, how in ((SCRIPT_SECONDS, "as the provisioning benchmark"), (0, "no added waits")):
        before, now = runs[("baseline", wait_seconds)], runs[("now", wait_seconds)]
        factor = statistics.median(now) / statistics.median(before)
        ratios.append(f"{factor:.2f}x {how}")
        result.add(f"one order, {BASELINE_COMMIT}, {how}", _series(before), "")
        result.add(f"one order, this tree, {how}", _series(now), "")
        goal = wait_seconds == SCRIPT_SECONDS
        result.add(
            "  this tree / baseline (medians)",
            f"{factor:.2f}x",
            f"<= {GOAL_FACTOR}x" if goal else "",
            (factor <= GOAL_FACTOR) if goal else None,
        )
    result.ratio = f"median one-order wall time now / {BASELINE_COMMIT}: " + ", ".join(ratios)
    result.notes.append(f"{ROUNDS} rounds, the two trees in turns; each run a fresh sandbox, Hub, worker and database")
    return result


def _series(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s ({', '.join(f'{v:.2f}' for v in values)})"
