"""Every benchmark runs in quick mode (tiny sizes, a few seconds each) so `make bench`
cannot rot: one `python -m bench --quick` for all of them, whose JSON results each
test reads. What is asserted is that the table was produced with sane numbers (no
errors, the ratio computed, equal query counts for the two fleet sizes), never a
timing goal: speed depends on the machine."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

QUICK_TIMEOUT_SECONDS = int(os.environ.get("BENCH_QUICK_TIMEOUT", "420"))


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    env = {
        **os.environ,
        # Its own database, so a full bench run and this one never meet.
        "BENCH_DATABASE_NAME": os.environ.get("BENCH_QUICK_DATABASE_NAME", "bench_hub_quick"),
    }
    for key in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "TEST_DATABASE_NAME"):
        env.pop(key, None)
    # 140 s alone; in `make test` it shares 2 cores with two other shards, and took up
    # to 240 s and more on a slow sitting (2026-12-07). A timeout interrupts it (Ctrl-C),
    # so that it stops the web processes, workers and sandbox it started, each in a
    # session of its own; then its own session is killed.
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=QUICK_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            stdout, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, _ = process.communicate()
        pytest.fail(f"the quick run took over {QUICK_TIMEOUT_SECONDS} s; it printed:\n{stdout[-3000:]}")
    assert out.exists(), f"no results (exit {process.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}"
    results: dict[str, Any] = json.loads(out.read_text())
    results["_stdout"] = stdout
    results["_returncode"] = process.returncode
    return results


def result(quick: dict[str, Any], name: str) -> dict[str, Any]:
    data = quick[name]
    assert "error" not in data, f"{name} raised:\n{data['error']}"
    assert f"== {data['title']} ==" in quick["_stdout"], f"{name} printed no table"
    assert data["rows"], f"{name} has an empty table"
    return data


def row(data: dict[str, Any], name: str) -> dict[str, Any]:
    matching = [r for r in data["rows"] if r["name"].strip() == name]
    assert matching, f"no row {name!r} in {[r['name'] for r in data['rows']]}"
    return matching[0]


def ratio_value(data: dict[str, Any], label: str) -> float:
    match = re.search(re.escape(label) + r" = ([0-9.]+)", data["ratio"])
    assert match, f"no '{label} = <number>' in the ratio line: {data['ratio']!r}"
    value = float(match.group(1))
    assert math.isfinite(value) and value > 0, data["ratio"]
    return value


def test_the_quick_run_ends_without_a_failed_benchmark(quick: dict[str, Any]) -> None:
    assert quick["_returncode"] == 0, quick["_stdout"][-3000:]


def test_heartbeat_ingest_answers_every_heartbeat_and_compares_with_the_trivial_view(quick: dict[str, Any]) -> None:
    data = result(quick, "heartbeat")
    assert row(data, "heartbeat errors")["passed"], row(data, "heartbeat errors")
    assert row(data, "samples in Postgres after flush")["passed"], row(data, "samples in Postgres after flush")
    assert float(row(data, "heartbeats/s")["value"].replace(",", "")) > 0
    ratio_value(data, "heartbeat / trivial view throughput")
    # The paced run (wrk's delay(), a script of its own) answered at the pace it was given.
    assert row(data, "paced: errors")["passed"], row(data, "paced: errors")
    assert float(row(data, "paced: p99")["value"].split()[0]) > 0


def test_pipeline_overhead_times_the_job_and_the_raw_chain(quick: dict[str, Any]) -> None:
    data = result(quick, "overhead")
    assert float(row(data, "job wall time (median)")["value"].split()[0]) > 0
    assert float(row(data, "raw chain wall time (median)")["value"].split()[0]) > 0
    ratio_value(data, "job / raw chain")


def test_fleet_checks_take_as_many_queries_for_the_small_and_the_large_fleet(quick: dict[str, Any]) -> None:
    data = result(quick, "checks")
    equal = [r for r in data["rows"] if r["goal"] == "equal"]
    assert len(equal) >= 6, "every fleet check has a query row"
    assert all(r["passed"] for r in equal), [r for r in equal if not r["passed"]]
    opened = [r for r in data["rows"] if r["name"].endswith("alerts opened")]
    assert opened and all(r["passed"] for r in opened), opened
    assert "1.00 for every check" in data["ratio"]


def test_rollout_dispatch_pause_and_resume_move_every_tenant_in_constant_queries(quick: dict[str, Any]) -> None:
    data = result(quick, "rollout")
    queries = [r for r in data["rows"] if r["name"].startswith("queries ")]
    assert queries and queries[0]["passed"], queries
    assert row(data, "updates SENT / update commands")["passed"]
    assert ratio_value(data, "queries at 200 / at 20") == 1.0
    # A pause that withdraws every command, the resume that sends them all again, and a
    # rollback of them all.
    moved = [r for r in data["rows"] if r["name"].strip().endswith("updates moved")]
    assert len(moved) == 3 and all(r["passed"] for r in moved), moved


def test_heartbeat_history_flushes_every_sample_and_prunes_only_what_is_past_retention(quick: dict[str, Any]) -> None:
    data = result(quick, "history")
    assert row(data, "flush of one minute of the fleet")["passed"], row(data, "flush of one minute of the fleet")
    kept = row(data, "kept: everything younger than retention")
    assert kept["passed"], kept
    assert row(data, "maintenance")["passed"], row(data, "maintenance")
    assert "longest lock-holding statement" in data["ratio"]


def test_concurrent_provisioning_fulfils_every_order(quick: dict[str, Any]) -> None:
    data = result(quick, "provisioning")
    fulfilled = [r for r in data["rows"] if r["name"].strip() == "fulfilled"]
    assert fulfilled and all(r["passed"] for r in fulfilled), fulfilled
    assert float(row(data, "one order alone (threads)")["value"].split()[0]) > 0
    ratio_value(data, "2 orders / one order")


def test_the_redis_restart_loop_is_declared_and_left_out_of_quick_runs(quick: dict[str, Any]) -> None:
    data = result(quick, "redis_restart")
    assert "not run in quick mode" in row(data, "rounds")["value"]


def test_event_streams_reach_every_open_stream_and_time_commit_to_client(quick: dict[str, Any]) -> None:
    data = result(quick, "streams")
    assert row(data, "heartbeat errors")["passed"], row(data, "heartbeat errors")
    assert row(data, "open streams that got the next event")["passed"], row(
        data, "open streams that got the next event"
    )
    assert float(row(data, "commit -> client p95")["value"].split()[0]) > 0
    ratio_value(data, "ingest with / without 20 idle streams")


def test_tenant_moves_recover_and_migrate_the_tenant_and_measure_the_downtime(quick: dict[str, Any]) -> None:
    data = result(quick, "tenant_moves")
    assert float(row(data, "fresh provisioning (Hetzner, pool empty)")["value"].split()[0]) > 0
    downtime = row(data, "downtime (maintenance -> first heartbeat from the target)")["value"]
    assert float(downtime.split()[0]) > 0
    assert ratio_value(data, "recovery / fresh") > 0
