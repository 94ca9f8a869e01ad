"""The heartbeat history: raw samples and their 5-minute rollups, written by the flush
in one statement (each sample counted once however often the flush runs), in
partitions made on demand and dropped whole once past retention; older days condensed
into hours, and all of it read back as one history."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from hub.checks import heartbeat_history_check
from hub.db.partitions import partitions, partitions_drop_before, partitions_ensure
from tenants import redis_store, selectors
from tenants.models import HeartbeatHourly, HeartbeatRollup, HeartbeatSample, Tenant
from tenants.services import heartbeat_flush
from tenants.services.heartbeats import _to_epoch_us
from tenants.services.history import (
    HOURLY,
    RAW,
    ROLLUPS,
    HistoryMaintenance,
    heartbeat_history_maintain,
    heartbeat_partitions_ensure,
    rollups_condense_day,
)

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


def rollup_at(
    tenant: Tenant, at: datetime, *, samples: int = 1, disk: float = 1, mem: float = 1, up: int = 1
) -> HeartbeatRollup:
    """A 5-minute rollup of `samples` samples that each said `disk` and `mem`."""
    return HeartbeatRollup(
        tenant=tenant,
        bucket_start=bucket_of(at),
        samples=samples,
        disk_sum=disk * samples,
        disk_max=disk,
        memory_sum=mem * samples,
        memory_max=mem,
        load_sum=0.5 * samples,
        load_max=0.5,
        uptime_min=up,
    )


@override_settings(
    HEARTBEAT_RAW_RETENTION_HOURS=24, HEARTBEAT_HISTORY_RETENTION_DAYS=30, HEARTBEAT_ROLLUP_RETENTION_DAYS=30
)
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


# --- Older days in hours ------------------------------------------------------------


def hour_at(tenant: Tenant, at: datetime, *, disk: float = 1, up: int = 1) -> HeartbeatHourly:
    """An hour of 12 samples that each said `disk`."""
    return HeartbeatHourly(
        tenant=tenant,
        bucket_start=at,
        samples=12,
        disk_sum=disk * 12,
        disk_max=disk,
        memory_sum=12,
        memory_max=1,
        load_sum=6,
        load_max=0.5,
        uptime_min=up,
    )


def rollups_of_day(day: datetime) -> list[HeartbeatRollup]:
    return list(HeartbeatRollup.objects.filter(bucket_start__gte=day, bucket_start__lt=day + timedelta(days=1)))


@override_settings(
    HEARTBEAT_ROLLUP_RETENTION_DAYS=7, HEARTBEAT_HISTORY_RETENTION_DAYS=30, HEARTBEAT_CONDENSE_DAYS_PER_RUN=100
)
def test_a_day_past_the_rollup_retention_is_condensed_into_hours_then_dropped(make_tenant):
    # given two tenants' 5-minute rollups of a day ten days ago, and of two days ago
    alice, bob = make_tenant(), make_tenant()
    now = timezone.now()
    day = ROLLUPS.floor(now - timedelta(days=10))
    recent = now - timedelta(days=2)
    heartbeat_partitions_ensure(first=day, last=now)
    HeartbeatRollup.objects.bulk_create(
        [
            rollup_at(alice, day + timedelta(hours=10), samples=5, disk=10, mem=30, up=600),
            rollup_at(alice, day + timedelta(hours=10, minutes=5), samples=5, disk=40, mem=20, up=900),
            rollup_at(alice, day + timedelta(hours=10, minutes=55), samples=4, disk=20, mem=10, up=3600),
            rollup_at(alice, day + timedelta(hours=11), samples=5, disk=50, mem=50, up=3900),
            rollup_at(bob, day + timedelta(hours=10, minutes=30), samples=5, disk=70, mem=70, up=7),
            rollup_at(alice, recent, samples=5),
        ]
    )

    # when the maintenance runs
    done = heartbeat_history_maintain(now=now)

    # then the old day is kept in hours, one row per tenant and hour, sums summed,
    # maxima the largest, uptime the smallest
    ten = day + timedelta(hours=10)
    hours = {(h.tenant_id, h.bucket_start): h for h in HeartbeatHourly.objects.all()}
    assert set(hours) == {(alice.pk, ten), (alice.pk, ten + timedelta(hours=1)), (bob.pk, ten)}
    alice_ten = hours[(alice.pk, ten)]
    assert (alice_ten.samples, alice_ten.disk_sum, alice_ten.disk_max) == (14, 330.0, 40.0)
    assert (alice_ten.memory_sum, alice_ten.memory_max, alice_ten.load_sum) == (290.0, 30.0, 7.0)
    assert alice_ten.uptime_min == 600
    assert (hours[(bob.pk, ten)].samples, hours[(bob.pk, ten)].disk_max) == (5, 70.0)
    # and its 5-minute partition is gone, the recent one untouched
    assert ROLLUPS.partition_name(day) in done.condensed
    assert ROLLUPS.partition_name(day) in done.dropped
    assert rollups_of_day(day) == []
    assert HeartbeatRollup.objects.filter(tenant=alice, bucket_start=bucket_of(recent)).exists()
    assert done.condensed_hours == 3 and not done.skipped


def test_condensing_a_day_again_counts_nothing_twice(make_tenant):
    # given a day's rollups condensed once (then, say, its drop timed out)
    tenant = make_tenant()
    day = ROLLUPS.floor(timezone.now() - timedelta(days=10))
    heartbeat_partitions_ensure(first=day, last=day)
    HeartbeatRollup.objects.bulk_create([rollup_at(tenant, day + timedelta(minutes=m), samples=5) for m in (0, 5)])
    partition = partitions(ROLLUPS)[ROLLUPS.partition_name(day)]
    rollups_condense_day(partition, report=HistoryMaintenance())

    # when it is condensed again
    again = HistoryMaintenance()
    rollups_condense_day(partition, report=again)

    # then the hour still counts each sample once
    (hour,) = HeartbeatHourly.objects.filter(tenant=tenant)
    assert (hour.bucket_start, hour.samples, hour.disk_sum) == (day, 10, 10.0)
    assert again.condensed_hours == 0


@override_settings(
    HEARTBEAT_ROLLUP_RETENTION_DAYS=7, HEARTBEAT_HISTORY_RETENTION_DAYS=30, HEARTBEAT_CONDENSE_DAYS_PER_RUN=1
)
def test_a_backlog_is_condensed_a_few_days_a_run_and_no_day_is_dropped_before_its_hours_are_kept(make_tenant):
    # given two days due for condensing, and a run that condenses one
    tenant = make_tenant()
    now = timezone.now()
    older, newer = ROLLUPS.floor(now - timedelta(days=12)), ROLLUPS.floor(now - timedelta(days=11))
    partitions_drop_before(ROLLUPS, cutoff=older)  # days the migrations made, due first otherwise
    heartbeat_partitions_ensure(first=older, last=now)
    HeartbeatRollup.objects.bulk_create([rollup_at(tenant, older, samples=3), rollup_at(tenant, newer, samples=4)])

    # when the maintenance runs once
    first = heartbeat_history_maintain(now=now)

    # then the older day is in hours and gone from the rollups; the newer one is kept as it was
    assert first.condensed == [ROLLUPS.partition_name(older)]
    assert ROLLUPS.partition_name(newer) not in first.dropped
    assert [r.samples for r in rollups_of_day(newer)] == [4]
    assert list(HeartbeatHourly.objects.values_list("bucket_start", "samples")) == [(older, 3)]

    # and the next run condenses the newer one
    second = heartbeat_history_maintain(now=now)
    assert second.condensed == [ROLLUPS.partition_name(newer)]
    assert rollups_of_day(newer) == []
    assert sorted(HeartbeatHourly.objects.values_list("bucket_start", "samples")) == [(older, 3), (newer, 4)]


@override_settings(HEARTBEAT_ROLLUP_RETENTION_DAYS=7, HEARTBEAT_HISTORY_RETENTION_DAYS=30)
def test_past_the_history_retention_hours_are_dropped_and_old_rollups_not_condensed(make_tenant):
    tenant = make_tenant()
    now = timezone.now()
    ancient, kept = ROLLUPS.floor(now - timedelta(days=40)), ROLLUPS.floor(now - timedelta(days=20))
    partitions_ensure(HOURLY, first=ancient, last=kept)
    heartbeat_partitions_ensure(first=ancient, last=ancient)
    HeartbeatRollup.objects.bulk_create([rollup_at(tenant, ancient)])
    HeartbeatHourly.objects.bulk_create([hour_at(tenant, ancient + timedelta(hours=1)), hour_at(tenant, kept)])

    done = heartbeat_history_maintain(now=now)

    assert list(HeartbeatHourly.objects.values_list("bucket_start", flat=True)) == [kept]
    assert HOURLY.partition_name(ancient) in done.dropped
    assert ROLLUPS.partition_name(ancient) in done.dropped
    assert ROLLUPS.partition_name(ancient) not in done.condensed
    assert not HeartbeatRollup.objects.filter(tenant=tenant).exists()


@override_settings(HEARTBEAT_ROLLUP_SECONDS=300)
def test_the_history_reads_5_minutes_where_kept_and_hours_before(make_tenant):
    # given a tenant's hours of a condensed day, one of them (10h) still in 5 minutes too,
    # and 5-minute rollups of today; and another tenant's rollups
    tenant, other = make_tenant(), make_tenant()
    now = timezone.now()
    day = ROLLUPS.floor(now - timedelta(days=8))
    heartbeat_partitions_ensure(first=day, last=now)
    partitions_ensure(HOURLY, first=day, last=day)
    HeartbeatHourly.objects.bulk_create(
        [hour_at(tenant, day + timedelta(hours=9), disk=18, up=9), hour_at(tenant, day + timedelta(hours=10))]
    )
    today = bucket_of(now - timedelta(hours=1))
    HeartbeatRollup.objects.bulk_create(
        [
            rollup_at(tenant, day + timedelta(hours=10), samples=5, disk=20),
            rollup_at(tenant, day + timedelta(hours=10, minutes=5), samples=5, disk=30),
            rollup_at(tenant, today, samples=5, disk=40),
            rollup_at(other, today, samples=5, disk=99),
        ]
    )

    # when the whole span is read
    points = selectors.heartbeat_history(tenant_id=tenant.pk, since=day, until=now)

    # then each moment is given once, oldest first, in the finest tier kept
    assert [(p.start, p.seconds, p.samples) for p in points] == [
        (day + timedelta(hours=9), 3600, 12),
        (day + timedelta(hours=10), 300, 5),
        (day + timedelta(hours=10, minutes=5), 300, 5),
        (today, 300, 5),
    ]
    assert (points[0].disk_avg, points[0].disk_max, points[0].uptime_min) == (18.0, 18.0, 9)
    assert [p.disk_avg for p in points[1:]] == [20.0, 30.0, 40.0]
    # and a span catches a bucket that began before it and nothing after it
    inside = selectors.heartbeat_history(
        tenant_id=tenant.pk, since=day + timedelta(hours=9, minutes=30), until=day + timedelta(hours=10, minutes=5)
    )
    assert [(p.start, p.seconds) for p in inside] == [
        (day + timedelta(hours=9), 3600),
        (day + timedelta(hours=10), 300),
    ]


def test_staff_read_a_tenants_history_and_bad_spans_are_refused(staff_api, api, make_tenant):
    tenant = make_tenant()
    now = timezone.now()
    heartbeat_partitions_ensure(first=now - timedelta(days=2), last=now)
    HeartbeatRollup.objects.bulk_create(
        [rollup_at(tenant, now - timedelta(hours=2), samples=5, disk=40), rollup_at(tenant, now - timedelta(days=2))]
    )
    url = f"/api/v1/tenants/{tenant.pk}/history/"

    # the last 24 hours by default
    body = staff_api.get(url).json()
    assert body["tenant"] == tenant.pk
    assert [(p["seconds"], p["samples"], p["disk_avg"]) for p in body["points"]] == [(300, 5, 40.0)]
    # a span of its own
    since = (now - timedelta(days=3)).isoformat()
    assert len(staff_api.get(url, {"since": since}).json()["points"]) == 2

    refused = [
        staff_api.get(url, {"since": "yesterday"}),
        staff_api.get(url, {"since": now.isoformat(), "until": (now - timedelta(hours=1)).isoformat()}),
        staff_api.get(url, {"since": "0001-01-01T00:00:00Z"}),
        staff_api.get(url, {"from": since}),
    ]
    assert [r.status_code for r in refused] == [400, 400, 400, 400]
    assert all("application/json" in r["Content-Type"] for r in refused)
    assert staff_api.get("/api/v1/tenants/999999/history/").status_code == 404
    assert api.get(url).status_code in (401, 403)


@override_settings(HEARTBEAT_ROLLUP_SECONDS=420)
def test_a_rollup_width_that_does_not_divide_an_hour_is_refused_at_startup():
    assert [e.id for e in heartbeat_history_check(None)] == ["hub.E004"]


@override_settings(HEARTBEAT_ROLLUP_SECONDS=900)
def test_a_rollup_width_that_divides_an_hour_is_accepted():
    assert heartbeat_history_check(None) == []
