"""Pipelines the engine tests run on the real worker. Each action writes what it did
to files in the job's `effects_dir`, which the test then reads: one line per call in
`calls.log` (what ran, in which order) and idempotent effects as marker files."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from hub.pipeline.context import StepContext
from hub.pipeline.registry import register
from hub.pipeline.spec import PermanentStepError, Pipeline, RetryPolicy, StepDeferred, StepSpec
from hub.pipeline.wakes import AGENT_REGISTERED, wake_on

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.4, max_delay=5)


def _record(ctx: StepContext, what: str) -> None:
    line = f"{what} job={ctx.job_id} attempt={ctx.attempt} pid={os.getpid()} t={time.time():.3f}\n"
    # O_APPEND writes of one short line are atomic across processes.
    fd = os.open(Path(ctx.context["effects_dir"]) / "calls.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _make_effect_once(ctx: StepContext, name: str) -> bool:
    """An idempotent side effect: creating a marker that exists at most once."""
    try:
        fd = os.open(Path(ctx.context["effects_dir"]) / f"effect-{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _plain(name: str) -> StepSpec:
    def action(ctx: StepContext) -> dict[str, Any]:
        _record(ctx, f"run {name}")
        ctx.log(f"{name} done")
        return {f"{name}_done": True}

    def undo(ctx: StepContext) -> None:
        _record(ctx, f"undo {name}")

    return StepSpec(name=name, action=action, compensate=undo, retry=FAST_RETRY)


register(Pipeline(name="test.five_steps", steps=tuple(_plain(f"s{i}") for i in range(1, 6))))


def _flaky(ctx: StepContext) -> None:
    _record(ctx, "run flaky")
    if ctx.attempt <= int(ctx.context.get("fail_times", 2)):
        raise RuntimeError(f"transient failure {ctx.attempt}")


register(
    Pipeline(
        name="test.flaky",
        steps=(_plain("before"), StepSpec(name="flaky", action=_flaky, retry=FAST_RETRY), _plain("after")),
    )
)


def _always_fails(ctx: StepContext) -> None:
    _record(ctx, "run doomed")
    raise RuntimeError("the disk is on fire")


register(
    Pipeline(
        name="test.doomed",
        steps=(
            _plain("a"),
            StepSpec(name="no_undo", action=lambda ctx: _record(ctx, "run no_undo")),
            _plain("b"),
            StepSpec(name="doomed", action=_always_fails, retry=RetryPolicy(max_attempts=2, base_delay=0.2)),
            _plain("never"),
        ),
    )
)


def _permanent(ctx: StepContext) -> None:
    _record(ctx, "run fixable")
    if not Path(ctx.context["effects_dir"], "fixed").exists():
        raise PermanentStepError("provider said 422: invalid input")


register(
    Pipeline(name="test.fixable", steps=(_plain("first"), StepSpec(name="fixable", action=_permanent), _plain("last")))
)


def _slow_effect(ctx: StepContext) -> None:
    """Idempotent: the effect is made once; the slow part is where a worker dies."""
    _record(ctx, "run slow")
    if _make_effect_once(ctx, "slow"):
        _record(ctx, "effect slow")
    time.sleep(float(ctx.context.get("sleep", 4)))


register(
    Pipeline(
        name="test.slow",
        steps=(_plain("one"), StepSpec(name="slow", action=_slow_effect, retry=FAST_RETRY), _plain("three")),
    )
)


def _kill_own_worker(ctx: StepContext) -> None:
    _record(ctx, "run killer")
    os.kill(os.getpid(), signal.SIGKILL)


def _count_once(ctx: StepContext) -> None:
    _record(ctx, "run counted")
    time.sleep(0.5)


register(Pipeline(name="test.single", steps=(StepSpec(name="counted", action=_count_once),)))


# The same pipelines on a queue only the fault tests' own workers consume, so a
# worker the test kills is the one that holds the step.
register(
    Pipeline(
        name="test.slow_faults",
        queue="test-faults",
        steps=(_plain("one"), StepSpec(name="slow", action=_slow_effect, retry=FAST_RETRY), _plain("three")),
    )
)
register(
    Pipeline(
        name="test.killer_faults",
        queue="test-faults",
        steps=(_plain("pre"), StepSpec(name="killer", action=_kill_own_worker, retry=FAST_RETRY)),
    )
)


def _half_done(ctx: StepContext) -> None:
    """Makes the first half of its effect, then fails for good."""
    _record(ctx, "run half")
    _make_effect_once(ctx, "half-1")
    raise PermanentStepError("the second half was refused")


def _undo_half(ctx: StepContext) -> None:
    _record(ctx, "undo half")
    Path(ctx.context["effects_dir"], "effect-half-1").unlink(missing_ok=True)


register(
    Pipeline(
        name="test.half_done",
        steps=(
            _plain("a"),
            StepSpec(name="half", action=_half_done, compensate=_undo_half, compensate_if_failed=True),
        ),
    )
)


def _undo_refused(ctx: StepContext) -> None:
    _record(ctx, "undo stuck")
    raise RuntimeError("the provider refuses to delete it")


register(
    Pipeline(
        name="test.stuck_undo",
        steps=(
            _plain("a"),
            StepSpec(
                name="stuck",
                action=lambda ctx: _record(ctx, "run stuck"),
                compensate=_undo_refused,
                compensation_retry=RetryPolicy(max_attempts=3, base_delay=0.1),
            ),
            StepSpec(name="fails", action=_permanent),
        ),
    )
)


# Pipelines the tests run step by step in their own process (to count statements):
# on a queue no worker consumes, so no worker runs their steps meanwhile.
IN_PROCESS_QUEUE = "test-inprocess"


def _noop(ctx: StepContext) -> dict[str, Any]:
    return {f"{ctx.step_name}_done": True}


register(
    Pipeline(
        name="test.noop_in_process",
        queue=IN_PROCESS_QUEUE,
        steps=tuple(StepSpec(name=f"n{i}", action=_noop) for i in range(1, 7)),
    )
)


def _wait_for_own_log_and_lease(ctx: StepContext) -> None:
    """Logs a line, then runs until the line is in the step's row and the lease was
    extended: only the lease keeper does both while the action runs."""
    from hub.pipeline.models import Step

    ctx.log("half way")
    first_lease = Step.objects.get(pk=ctx.step_id).lease_expires_at
    assert first_lease is not None  # the running step holds a lease
    deadline = time.monotonic() + 20
    while True:
        row = Step.objects.get(pk=ctx.step_id)
        assert row.lease_expires_at is not None
        if "half way" in row.log and row.lease_expires_at > first_lease:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the log line was not flushed nor the lease renewed while the step ran")
        time.sleep(0.05)
    ctx.log("seen")


register(
    Pipeline(
        name="test.log_streamed_in_process",
        queue=IN_PROCESS_QUEUE,
        steps=(StepSpec(name="streamed", action=_wait_for_own_log_and_lease, retry=RetryPolicy(max_attempts=1)),),
    )
)


def _wait_outside(ctx: StepContext) -> None:
    """Waits on the outside world every time, holding the job's deadline or not as the
    job's context says."""
    raise StepDeferred(
        "waiting on the outside world", delay=float(ctx.context["delay"]), hold_deadline=ctx.context["hold"]
    )


# A deadline long past by the time the reaper looks.
register(
    Pipeline(
        name="test.waits_outside_in_process",
        queue=IN_PROCESS_QUEUE,
        deadline=timedelta(milliseconds=1),
        steps=(StepSpec(name="wait", action=_wait_outside), StepSpec(name="after", action=_noop)),
    )
)


def _report_backend(ctx: StepContext) -> None:
    """Records which Postgres backend (connection) the worker ran the step on."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    _record(ctx, f"backend {pid}")


register(
    Pipeline(
        name="test.backends_faults",
        queue="test-faults",
        steps=tuple(StepSpec(name=f"b{i}", action=_report_backend, retry=FAST_RETRY) for i in range(1, 5)),
    )
)


AGENT_POLL_SECONDS = 300.0


def _wait_agent(ctx: StepContext) -> dict[str, Any]:
    """As provisioning's `wait_agent_registered`: done once the tenant's agent has
    registered, else it waits, looking again only after a long poll. With `register_meanwhile`
    the agent registers while the step looks (after it read the tenant, before it defers)."""
    from tenants.models import Tenant
    from tenants.services import agent_register

    tenant = Tenant.objects.get(pk=ctx.context["tenant_id"])
    if tenant.registered_at is not None:
        return {"registered": True}
    token = ctx.context.pop("register_meanwhile", None)
    if token:
        agent_register(token=token, hostname="vps-1.example.test", agent_version="1.2.3")
    raise StepDeferred("waiting for the agent to register", delay=AGENT_POLL_SECONDS)


register(
    Pipeline(
        name="test.wait_agent_in_process",
        queue=IN_PROCESS_QUEUE,
        steps=(StepSpec(name="wait_agent", action=_wait_agent), StepSpec(name="after", action=_noop)),
    )
)


def _jobs_waiting_for_agent(tenant_id: str) -> list[int]:
    from hub.pipeline.models import Job

    return list(
        Job.objects.filter(pipeline="test.wait_agent_in_process", subject_type="tenant", subject_id=tenant_id)
        .exclude(status__in=("SUCCEEDED", "FAILED", "ROLLED_BACK", "CANCELLED"))
        .values_list("pk", flat=True)
    )


wake_on(AGENT_REGISTERED, step_name="wait_agent", waiting_jobs=_jobs_waiting_for_agent)
