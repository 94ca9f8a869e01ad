"""Benchmark 2: the step engine's overhead. A job of N no-op steps against a raw
Celery chain of N no-op tasks, on the same single prefork worker (-c 1), interleaved,
each ending when its last message sets a Redis key; the median of a few rounds. Beside
them, the same job on a second such worker that sends every step through the broker
(PIPELINE_RUN_ON_SECONDS=0), as the engine did before claim-next-in-record."""

from __future__ import annotations

import statistics
import time
import uuid

from bench.common import Result, bench_env, cpu_seconds, fresh_database, start_worker, wait_for
from bench.pipelines import HOP_QUEUE, QUEUE, pipeline_name, raw_chain

GOAL_PER_STEP_MS = 10.0
GOAL_RATIO = 1.5


def _wait_key(key: str, timeout: float) -> str:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    value = wait_for(lambda: client.get(key), timeout=timeout, interval=0.002, message=f"marker {key}")
    return bytes(value).decode()


def _time_job(steps: int, *, hop: bool = False) -> float:
    from hub.pipeline.services import job_start

    key = f"bench:done:{uuid.uuid4().hex}"
    started = time.perf_counter()
    job_start(pipeline=pipeline_name(steps, hop=hop), context={"done_key": key}, actor="bench")
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
        hop_worker = start_worker(
            "overhead-hop-worker",
            queues=HOP_QUEUE,
            pool="prefork",
            concurrency=1,
            env={**bench_env(), "PIPELINE_RUN_ON_SECONDS": "0"},
        )
        try:
            # Warm every path (imports, connections) before timing.
            _time_job(steps)
            _time_job(steps, hop=True)
            _time_chain(steps)
            jobs: list[float] = []
            hops: list[float] = []
            chains: list[float] = []
            job_cpu = chain_cpu = hop_cpu = 0.0
            for _ in range(rounds):
                before = cpu_seconds(worker)
                jobs.append(_time_job(steps))
                middle = cpu_seconds(worker)
                chains.append(_time_chain(steps))
                job_cpu += middle - before
                chain_cpu += cpu_seconds(worker) - middle
                before = cpu_seconds(hop_worker)
                hops.append(_time_job(steps, hop=True))
                hop_cpu += cpu_seconds(hop_worker) - before
        finally:
            worker.stop()
            hop_worker.stop()
    job_s = statistics.median(jobs)
    hop_s = statistics.median(hops)
    chain_s = statistics.median(chains)
    per_step_ms = (job_s - chain_s) / steps * 1000
    ratio = job_s / chain_s
    hop_ratio = hop_s / chain_s
    result.add("job wall time (median)", f"{job_s * 1000:.1f} ms", "")
    result.add("raw chain wall time (median)", f"{chain_s * 1000:.1f} ms", "")
    result.add("job, every step via the broker (median)", f"{hop_s * 1000:.1f} ms", "")
    result.add("job, per step", f"{job_s / steps * 1000:.2f} ms", "")
    result.add("raw chain, per task", f"{chain_s / steps * 1000:.2f} ms", "")
    result.add("job via the broker, per step", f"{hop_s / steps * 1000:.2f} ms", "")
    result.add(
        "overhead per step", f"{per_step_ms:.2f} ms", f"<= {GOAL_PER_STEP_MS:.0f} ms", per_step_ms <= GOAL_PER_STEP_MS
    )
    result.add("job / raw chain", f"{ratio:.2f}x", f"<= {GOAL_RATIO}x", ratio <= GOAL_RATIO)
    result.add("job via the broker / raw chain", f"{hop_ratio:.2f}x", "")
    # CPU of the worker (not of Postgres or Redis), which the machine's load does not inflate.
    result.add("worker CPU per step (job)", f"{job_cpu / rounds / steps * 1000:.2f} ms", "")
    result.add("worker CPU per step (job via the broker)", f"{hop_cpu / rounds / steps * 1000:.2f} ms", "")
    result.add("worker CPU per task (raw chain)", f"{chain_cpu / rounds / steps * 1000:.2f} ms", "")
    result.ratio = (
        f"job / raw chain = {ratio:.2f}x; job with every step via the broker / raw chain = {hop_ratio:.2f}x"
        f" (medians of {rounds} interleaved rounds)"
    )
    result.notes.append(
        "rounds, job ms: "
        + ", ".join(f"{v * 1000:.0f}" for v in jobs)
        + "; chain ms: "
        + ", ".join(f"{v * 1000:.0f}" for v in chains)
        + "; job via the broker ms: "
        + ", ".join(f"{v * 1000:.0f}" for v in hops)
    )
    return result
