"""Benchmark 2: the step engine's overhead. A job of N no-op steps against a raw
Celery chain of N no-op tasks, on the same single prefork worker (-c 1), interleaved,
each ending when its last message sets a Redis key; the median of a few rounds."""

from __future__ import annotations

import statistics
import time
import uuid

from bench.common import Result, bench_env, cpu_seconds, fresh_database, start_worker, wait_for
from bench.pipelines import QUEUE, pipeline_name, raw_chain

GOAL_PER_STEP_MS = 10.0
GOAL_RATIO = 2.0


def _wait_key(key: str, timeout: float) -> str:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    value = wait_for(lambda: client.get(key), timeout=timeout, interval=0.002, message=f"marker {key}")
    return bytes(value).decode()


def _time_job(steps: int) -> float:
    from hub.pipeline.services import job_start

    key = f"bench:done:{uuid.uuid4().hex}"
    started = time.perf_counter()
    job_start(pipeline=pipeline_name(steps), context={"done_key": key}, actor="bench")
    status = _wait_key(key, timeout=60 + steps * 2)
    elapsed = time.perf_counter() - started
    if status != "SUCCEEDED":
        raise RuntimeError(f"the bench job ended {status}")
    return elapsed


def _time_chain(steps: int) -> float:
    key = f"bench:done:{uuid.uuid4().hex}"
    started = time.perf_counter()
    raw_chain(steps, key).apply_async()
    _wait_key(key, timeout=60 + steps * 2)
    return time.perf_counter() - started


def run(quick: bool) -> Result:
    steps = 5 if quick else 20
    rounds = 2 if quick else 7
    result = Result(f"pipeline overhead: {steps}-step job vs raw chain of {steps} tasks, 1 prefork worker (-c 1)")
    with fresh_database():
        worker = start_worker("overhead-worker", queues=QUEUE, pool="prefork", concurrency=1, env=bench_env())
        try:
            # Warm both paths (imports, connections) before timing.
            _time_job(steps)
            _time_chain(steps)
            jobs: list[float] = []
            chains: list[float] = []
            job_cpu = chain_cpu = 0.0
            for _ in range(rounds):
                before = cpu_seconds(worker)
                jobs.append(_time_job(steps))
                middle = cpu_seconds(worker)
                chains.append(_time_chain(steps))
                job_cpu += middle - before
                chain_cpu += cpu_seconds(worker) - middle
        finally:
            worker.stop()
    job_s = statistics.median(jobs)
    chain_s = statistics.median(chains)
    per_step_ms = (job_s - chain_s) / steps * 1000
    ratio = job_s / chain_s
    result.add("job wall time (median)", f"{job_s * 1000:.1f} ms", "")
    result.add("raw chain wall time (median)", f"{chain_s * 1000:.1f} ms", "")
    result.add("job, per step", f"{job_s / steps * 1000:.2f} ms", "")
    result.add("raw chain, per task", f"{chain_s / steps * 1000:.2f} ms", "")
    result.add(
        "overhead per step", f"{per_step_ms:.2f} ms", f"<= {GOAL_PER_STEP_MS:.0f} ms", per_step_ms <= GOAL_PER_STEP_MS
    )
    result.add("job / raw chain", f"{ratio:.2f}x", f"<= {GOAL_RATIO:.0f}x", ratio <= GOAL_RATIO)
    # CPU of the worker (not of Postgres or Redis), which the machine's load does not inflate.
    result.add("worker CPU per step (job)", f"{job_cpu / rounds / steps * 1000:.2f} ms", "")
    result.add("worker CPU per task (raw chain)", f"{chain_cpu / rounds / steps * 1000:.2f} ms", "")
    result.ratio = f"job / raw chain = {ratio:.2f}x (medians of {rounds} interleaved rounds)"
    result.notes.append(
        "rounds, job ms: "
        + ", ".join(f"{v * 1000:.0f}" for v in jobs)
        + "; chain ms: "
        + ", ".join(f"{v * 1000:.0f}" for v in chains)
    )
    return result
