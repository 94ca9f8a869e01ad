"""Dispatching a stage is bulk: the same number of queries for 1,000 tenants as for
10,000."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from rollouts.models import RolloutStatus, TenantUpdate, UpdateStatus
from rollouts.services import StageSpec, release_create, rollout_create, rollout_start
from tenants.models import Command, Tenant, TenantStatus

pytestmark = pytest.mark.django_db

DIGEST = "@sha256:" + "c" * 64


def make_tenants(count: int, *, start: int, versions: dict[str, str]) -> None:
    now = timezone.now()
    Tenant.objects.bulk_create(
        [
            Tenant(
                domain=f"bulk{start + i}.example.test",
                status=TenantStatus.ACTIVE,
                registered_at=now,
                last_heartbeat_at=now - timedelta(seconds=5),
                versions=versions,
            )
            for i in range(count)
        ],
        batch_size=5000,
    )


def start_and_count(component: str, on_commit) -> tuple[int, int]:
    release = release_create(component=component, version="2.0", image=f"registry.test/{component}{DIGEST}", actor="t")
    rollout = rollout_create(
        release_id=release.pk, actor="test", stages=[StageSpec(percent=100, soak_seconds=0)], min_finished=1
    )
    with CaptureQueriesContext(connection) as queries:
        on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.RUNNING
    return len(queries), TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.SENT).count()


def test_dispatching_ten_thousand_tenants_takes_as_many_queries_as_one_thousand(on_commit):
    # given 10,000 tenants: all of them on alpha 1.0, but 9,000 on beta 2.0 already
    make_tenants(1_000, start=0, versions={"alpha": "1.0", "beta": "1.0"})
    make_tenants(9_000, start=1_000, versions={"alpha": "1.0", "beta": "2.0"})

    # when a one-stage rollout of each is started (beta: 1,000 tenants, alpha: 10,000)
    small_queries, small = start_and_count("beta", on_commit)
    large_queries, large = start_and_count("alpha", on_commit)

    # then both dispatched every eligible tenant, with the same number of queries
    assert (small, large) == (1_000, 10_000)
    assert small_queries == large_queries
    assert large_queries <= 30, large_queries
    assert Command.objects.filter(type="update", payload__component="alpha").count() == 10_000
