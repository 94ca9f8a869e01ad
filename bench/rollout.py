"""Benchmark 4: rollout dispatch. A one-stage (100%) rollout started over a small and
a large simulated fleet (tenants with servers and registered agents, all on the old
version, heartbeating): the time of `rollout_start`, which picks every eligible tenant
and writes its update in bulk, and the first ROLLOUT_COMMANDS_PER_TRANSACTION of their
`update` commands, and its queries on both fleets, which must be the same (the
side-by-side comparison of this bench). Then the time of the rest of the commands,
queued in parts after the start commits (`stage_send_rest`, run here as the
rollouts.send_updates task would run it), and of a pause before any agent took its
command (every command withdrawn, every update taken back), the resume that sends
them all again, and a rollback of the whole stage (a command back to the old version
for every tenant): each a constant number of queries too. The Hub's
CPU time (this process; Postgres works in its own) says how much is Python, whatever
the load on the machine.

The fleet has run for a while: each tenant already has `HISTORY_COMMANDS` answered
commands from earlier rollouts (a million at 100,000 tenants, with random v4 ids as the
Hub made them before 2026-12-05), so the new commands' index pages and key checks meet
a table the size of a real one, not an empty one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.common import Result, fresh_database

GOAL_SECONDS = 2.0
DIGEST = "@sha256:" + "b" * 64
COMPONENT = "safety-wrapper"
HISTORY_COMMANDS = 10


@dataclass
class Timed:
    seconds: float
    queries: int
    moved: int


@dataclass
class Dispatch:
    tenants: int
    seconds: float
    cpu_seconds: float
    queries: int
    sent: int
    commands_with_start: int
    rest_seconds: float
    commands: int
    pause: Timed
    resume: Timed
    rollback: Timed


def _fleet(count: int) -> None:
    from django.db import connection
    from django.utils import timezone

    from hub.models import AuditEvent
    from ops.simulation import fleet_simulate
    from provisioning.models import Server
    from rollouts.models import Release, Rollout
    from tenants.models import Command, Tenant

    Command.objects.all().delete()
    Rollout.objects.all().delete()
    Release.objects.all().delete()
    Tenant.objects.all().delete()
    Server.objects.all().delete()
    AuditEvent.objects.all().delete()
    fleet_simulate(count=count, internal=0, actor="bench")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Command._meta.db_table} (id, tenant_id, type, payload, status, created_by, created_at, "
            "expires_at, delivery_count, finished_at) "
            "SELECT gen_random_uuid(), t.id, 'update', '{}'::jsonb, 'SUCCEEDED', 'rollout:earlier', "
            "now() - interval '30 days', now() - interval '29 days', 1, now() - interval '29 days' "
            f"FROM {Tenant._meta.db_table} AS t, generate_series(1, %s)",
            [HISTORY_COMMANDS],
        )
    Tenant.objects.update(
        last_heartbeat_at=timezone.now(),
        versions={"agent": "1.4.2", COMPONENT: "1.0.0", "openclaw": "2.3.0", "secrets-proxy": "0.9.4"},
    )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def _dispatch(count: int) -> Dispatch:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from rollouts.models import RolloutStatus, TenantUpdate, UpdateStatus
    from rollouts.services import (
        StageSpec,
        release_create,
        rollout_create,
        rollout_pause,
        rollout_resume,
        rollout_rollback,
        rollout_start,
        stage_send_rest,
        updates_sync_outcomes,
    )
    from tenants.models import Command

    _fleet(count)
    release = release_create(
        component=COMPONENT, version="1.1.0", image=f"ghcr.io/example/{COMPONENT}:1.1.0{DIGEST}", actor="bench"
    )
    rollout = rollout_create(
        release_id=release.pk, actor="bench", stages=[StageSpec(percent=100, soak_seconds=0)], min_finished=1
    )
    with CaptureQueriesContext(connection) as captured:
        started, cpu_started = time.perf_counter(), time.process_time()
        rollout_start(rollout_id=rollout.pk, actor="bench")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    rollout.refresh_from_db()
    if rollout.status != RolloutStatus.RUNNING:
        raise RuntimeError(f"the rollout is {rollout.status} after start")
    commands = Command.objects.filter(type="update", payload__component=COMPONENT, created_by=f"rollout:{rollout.pk}")
    with_start = commands.count()
    # What the rollouts.send_updates task does after the commit, here in this process.
    started = time.perf_counter()
    stage_send_rest(rollout_id=rollout.pk)
    rest = time.perf_counter() - started
    sent = TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.SENT).count()
    all_commands = commands.count()
    pause = _timed(
        lambda: rollout_pause(rollout_id=rollout.pk, actor="bench"),
        lambda: TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.PENDING).count(),
    )
    resume = _timed(
        lambda: rollout_resume(rollout_id=rollout.pk, actor="bench"),
        lambda: TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.SENT, attempts=2).count(),
    )
    # Every agent answers (the update succeeded, its old image kept), and then the stage
    # is rolled back: a command back to 1.0.0 for every tenant.
    commands.filter(status="PENDING").update(
        status="SUCCEEDED",
        finished_at=timezone.now(),
        result={"status": "succeeded", "details": {"previous_image": f"ghcr.io/example/{COMPONENT}:1.0.0{DIGEST}"}},
    )
    updates_sync_outcomes()
    rollback = _timed(
        lambda: rollout_rollback(rollout_id=rollout.pk, actor="bench"),
        lambda: TenantUpdate.objects.filter(rollout=rollout, rollback_command__isnull=False).count(),
    )
    return Dispatch(
        tenants=count,
        seconds=elapsed,
        cpu_seconds=cpu,
        queries=len(captured.captured_queries),
        sent=sent,
        commands_with_start=with_start,
        rest_seconds=rest,
        commands=all_commands,
        pause=pause,
        resume=resume,
        rollback=rollback,
    )


def _timed(action: Callable[[], object], moved: Callable[[], int]) -> Timed:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        action()
        elapsed = time.perf_counter() - started
    return Timed(seconds=elapsed, queries=len(captured.captured_queries), moved=moved())


def run(quick: bool) -> Result:
    small, large = (20, 200) if quick else (1_000, 100_000)
    result = Result(f"rollout dispatch: rollout_start of one 100% stage over {small:,} and {large:,} tenants")
    with fresh_database():
        # Warm: imports, connection, the query plans' caches.
        _dispatch(small)
        little = _dispatch(small)
        big = _dispatch(large)
    result.add(f"start time at {small:,}", f"{little.seconds * 1000:.0f} ms", "")
    result.add(
        f"start time at {large:,}",
        f"{big.seconds * 1000:.0f} ms",
        f"< {GOAL_SECONDS:.0f} s",
        big.seconds < GOAL_SECONDS,
    )
    cpu = f"{little.cpu_seconds * 1000:.0f} / {big.cpu_seconds * 1000:.0f} ms"
    result.add(f"Hub CPU at {small:,} / {large:,}", cpu, "")
    result.add(f"per tenant at {large:,}", f"{big.seconds / large * 1e6:.0f} us", "")
    result.add(
        f"queries {small:,} vs {large:,}", f"{little.queries} vs {big.queries}", "equal", little.queries == big.queries
    )
    result.add(
        f"commands queued by the start at {large:,} / the rest after it, in parts",
        f"{big.commands_with_start:,} / {big.commands - big.commands_with_start:,} in {big.rest_seconds * 1000:.0f} ms",
        "",
    )
    result.add(
        "updates SENT / update commands",
        f"{little.sent:,}/{little.commands:,} and {big.sent:,}/{big.commands:,}",
        "every tenant",
        (little.sent, little.commands, big.sent, big.commands) == (small, small, large, large),
    )
    for name, small_run, large_run in (
        ("pause (every command withdrawn)", little.pause, big.pause),
        ("resume (every update sent again)", little.resume, big.resume),
        ("rollback (a command to every tenant)", little.rollback, big.rollback),
    ):
        result.add(
            f"{name} at {small:,} / {large:,}",
            f"{small_run.seconds * 1000:.0f} / {large_run.seconds * 1000:,.0f} ms",
            "",
        )
        result.add(
            f"  queries {small:,} vs {large:,}, updates moved",
            f"{small_run.queries} vs {large_run.queries}; {small_run.moved:,} and {large_run.moved:,}",
            "equal; every tenant",
            small_run.queries == large_run.queries and (small_run.moved, large_run.moved) == (small, large),
        )
    growth = big.seconds / little.seconds if little.seconds else float("nan")
    result.ratio = (
        f"queries at {large:,} / at {small:,} = {big.queries / little.queries:.2f}; "
        f"time {big.seconds:.2f} s / {little.seconds:.2f} s = {growth:.1f}x for {large // small}x the tenants"
    )
    return result
