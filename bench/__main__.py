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

BENCHMARKS = ("heartbeat", "overhead", "checks", "rollout", "provisioning")


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
            result.notes.append(
                f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
                f"({os.cpu_count()} cores)"
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
