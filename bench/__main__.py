"""python -m bench [name ...] [--quick]: run the benchmarks (all by default), print a
table for each, and exit non-zero only when a benchmark could not run. A missed goal
is reported, not an error."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

BENCHMARKS = (
    "heartbeat",
    "overhead",
    "checks",
    "rollout",
    "provisioning",
    "baseline",
    "redis_restart",
    "streams",
    "tenant_moves",
    "history",
)


def cpu_yardstick(steps: int = 10_000_000) -> float:
    """Seconds of CPU one core takes for 10 million steps of a pure-Python loop (fewer
    steps, scaled, in quick mode). The shared machines here run the same code up to two
    times slower from one hour to the next; this says which kind of hour a table was
    measured in."""
    started = time.process_time()
    total = 0
    for step in range(steps):
        total += step
    return (time.process_time() - started) * 10_000_000 / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="name", help=", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every result to PATH as JSON")
    args = parser.parse_args(argv)
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    from bench import common

    common.configure_process()
    started = time.monotonic()
    failures: list[str] = []
    summary: list[str] = []
    results: dict[str, dict[str, object]] = {}
    common.prepare_template()
    try:
        for name in names:
            print(f"[bench] {name}{' (quick)' if args.quick else ''} ...", flush=True)
            t0 = time.monotonic()
            load_before = os.getloadavg()[0]
            yardstick_steps = 1_000_000 if args.quick else 10_000_000
            speed_before = cpu_yardstick(yardstick_steps)
            try:
                module = importlib.import_module(f"bench.{name}")
                result = module.run(args.quick)
            except Exception:
                traceback.print_exc()
                failures.append(name)
                summary.append(f"{name}: ERROR")
                results[name] = {"error": traceback.format_exc()}
                continue
            # The machine is shared: what else ran says how far to trust the timings.
            speed_after = cpu_yardstick(yardstick_steps)
            result.notes.append(
                f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
                f"({os.cpu_count()} cores); CPU yardstick {speed_before:.2f} s before, {speed_after:.2f} s after"
            )
            print(result.table(), flush=True)
            results[name] = result.as_dict()
            print(f"[bench] {name} took {time.monotonic() - t0:.1f}s\n", flush=True)
            summary.append(f"{name}: {'goals met' if result.goals_met else 'goal(s) missed'}")
    finally:
        common.drop_template()
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    print(f"[bench] done in {time.monotonic() - started:.1f}s: " + "; ".join(summary), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
