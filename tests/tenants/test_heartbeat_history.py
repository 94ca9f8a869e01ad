"""The heartbeat history: raw samples and their 5-minute rollups, written by the flush
in one statement (each sample counted once however often the flush runs), in
partitions made on demand and dropped whole once past retention."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from hub.db.partitions import partitions
from tenants import redis_store
from tenants.models import HeartbeatRollup, HeartbeatSample, Tenant
from tenants.services import heartbeat_flush
from tenants.services.heartbeats import _to_epoch_us
from tenants.services.history import RAW, ROLLUPS, heartbeat_history_maintain, heartbeat_partitions_ensure

pytestmark = pytest.mark.django_db


def buffered(tenant: Tenant, at: datetime, *, disk: float = 10.0, mem: float = 20.0, up: int = 100) -> None:
    """A sample in the Redis buffer, as the heartbeat's fast path leaves it."""
    sample: dict[str, Any] = {
        "tenant": tenant.pk,
        "at": _to_epoch_us(at),
        "disk": disk,
        "mem": mem,
        "load": 0.5,
        "up": up,
        "containers": [],
        "versions": {},
        "tls": None,
    }
    redis_store.client().rpush(redis_store.HISTORY_KEY, json.dumps(sample))


def bucket_of(moment: datetime) -> datetime:
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % 300, tz=UTC)


def test_flush_rolls_samples_up_into_5_minute_buckets_once(make_tenant, monkeypatch):
    # given four samples of one tenant: three in one 5-minute bucket, one in the next
    tenant = make_tenant()
    start = bucket_of(timezone.now() - timedelta(minutes=20))
    for offset, disk, up in ((10, 10.0, 500), (70, 30.0, 560), (130, 20.0, 40), (310, 50.0, 220)):
        buffered(tenant, start + timedelta(seconds=offset), disk=disk, up=up)

    # when the flush runs twice over the same buffer (the first died before clearing it)
    monkeypatch.setattr(redis_store, "heartbeats_taken_done", lambda: None)
    heartbeat_flush()
    monkeypatch.undo()
    heartbeat_flush()

    # then every sample is in the history once and counted once in its bucket
    assert HeartbeatSample.objects.filter(tenant=tenant).count() == 4
    first, second = HeartbeatRollup.objects.filter(tenant=tenant).order_by("bucket_start")
    assert (first.bucket_start, first.samples) == (start, 3)
    assert (first.disk_avg, first.disk_max, first.uptime_min) == (20.0, 30.0, 40)
    assert first.memory_avg == 20.0 and first.load_max == 0.5
    assert (second.bucket_start, second.samples, second.disk_max) == (start + timedelta(minutes=5), 1, 50.0)


def test_later_flushes_merge_into_the_same_bucket(make_tenant):
    tenant = make_tenant()
    start = bucket_of(timezone.now() - timedelta(minutes=10))
    buffered(tenant, start + timedelta(seconds=5), disk=10.0, up=300)
    heartbeat_flush()
    buffered(tenant, start + timedelta(seconds=65), disk=40.0, up=360)
    heartbeat_flush()

    (rollup,) = HeartbeatRollup.objects.filter(tenant=tenant)
    assert (rollup.samples, rollup.disk_sum, rollup.disk_max, rollup.uptime_min) == (2, 50.0, 40.0, 300)


def test_a_sample_whose_hour_has_no_partition_is_still_stored(make_tenant):
    # given a sample three days old: no partition was made for its hour
    tenant = make_tenant()
    old = timezone.now() - timedelta(days=3)
    assert RAW.partition_name(old) not in partitions(RAW)
    buffered(tenant, old)

    result = heartbeat_flush()

    assert result.samples == 1
    assert HeartbeatSample.objects.filter(tenant=tenant).count() == 1
    assert HeartbeatRollup.objects.get(tenant=tenant).samples == 1
    assert redis_store.heartbeats_buffered() == 0


def sample_at(tenant: Tenant, at: datetime) -> HeartbeatSample:
    return HeartbeatSample(tenant=tenant, received_at=at, disk_percent=1, memory_percent=1, load=0, uptime_seconds=1)


def rollup_at(tenant: Tenant, at: datetime) -> HeartbeatRollup:
    return HeartbeatRollup(
        tenant=tenant,
        bucket_start=bucket_of(at),
        samples=1,
        disk_sum=1,
        disk_max=1,
        memory_sum=1,
        memory_max=1,
        load_sum=0,
        load_max=0,
        uptime_min=1,
    )


@override_settings(HEARTBEAT_RAW_RETENTION_HOURS=24, HEARTBEAT_HISTORY_RETENTION_DAYS=30)
def test_maintenance_drops_whole_partitions_past_retention_and_keeps_everything_younger(make_tenant):
    # given raw samples and rollups on both sides of their retention
    tenant = make_tenant()
    now = timezone.now()
    raw_times = [now - timedelta(hours=h) for h in (30, 26, 23, 1)] + [now]
    rollup_times = [now - timedelta(days=d) for d in (40, 31, 29, 1)]
    heartbeat_partitions_ensure(first=now - timedelta(days=41), last=now)
    HeartbeatSample.objects.bulk_create([sample_at(tenant, t) for t in raw_times])
    HeartbeatRollup.objects.bulk_create([rollup_at(tenant, t) for t in rollup_times])

    # when the maintenance runs
    done = heartbeat_history_maintain(now=now)

    # then what is past retention is gone and nothing younger than it
    raw_cutoff, rollup_cutoff = now - timedelta(hours=24), now - timedelta(days=30)
    kept_raw = set(HeartbeatSample.objects.values_list("received_at", flat=True))
    assert {t for t in raw_times if t >= raw_cutoff} <= kept_raw
    assert all(t >= raw_cutoff - RAW.width for t in kept_raw)
    kept_rollups = set(HeartbeatRollup.objects.values_list("bucket_start", flat=True))
    assert {bucket_of(t) for t in rollup_times if t >= rollup_cutoff} <= kept_rollups
    assert all(t >= rollup_cutoff - ROLLUPS.width for t in kept_rollups)
    assert RAW.partition_name(now - timedelta(hours=30)) in done.dropped
    assert ROLLUPS.partition_name(now - timedelta(days=40)) in done.dropped
    assert not done.skipped
    # and the partitions of the hours ahead exist
    ahead = set(partitions(RAW))
    assert all(RAW.partition_name(now + timedelta(hours=h)) in ahead for h in range(6))


@pytest.mark.django_db(transaction=True)
@override_settings(HEARTBEAT_RAW_RETENTION_HOURS=2)
def test_outside_a_transaction_old_partitions_are_detached_concurrently_then_dropped(make_tenant):
    tenant = make_tenant()
    now = timezone.now()
    heartbeat_partitions_ensure(first=now - timedelta(hours=5), last=now)
    HeartbeatSample.objects.bulk_create([sample_at(tenant, now - timedelta(hours=4)), sample_at(tenant, now)])

    done = heartbeat_history_maintain(now=now)

    assert RAW.partition_name(now - timedelta(hours=4)) in done.dropped
    assert list(HeartbeatSample.objects.filter(tenant=tenant).values_list("received_at", flat=True)) == [now]
    with connection.cursor() as cursor:
        gone = RAW.partition_name(now - timedelta(hours=4))
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname = %s", [gone])
        assert cursor.fetchone() == (0,)
