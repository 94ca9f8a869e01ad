"""Heartbeat history that scales: the raw samples move to a table partitioned by the
hour (kept HEARTBEAT_RAW_RETENTION_HOURS), and 5-minute rollups per tenant go to a
table partitioned by the day (kept HEARTBEAT_HISTORY_RETENTION_DAYS). Retention drops
whole partitions (hub.db.partitions) instead of deleting rows from the live table.

The old table's last day of samples is copied and all of it within retention is
rolled up, then it is dropped."""

from datetime import timedelta

from django.conf import settings
from django.db import migrations, models
from django.utils import timezone

CREATE = """
ALTER TABLE tenants_heartbeatsample RENAME TO tenants_heartbeatsample_legacy;
ALTER TABLE tenants_heartbeatsample_legacy RENAME CONSTRAINT heartbeat_sample_once TO heartbeat_sample_legacy_once;
CREATE TABLE tenants_heartbeatsample (
    tenant_id bigint NOT NULL,
    received_at timestamptz NOT NULL,
    disk_percent double precision NOT NULL,
    memory_percent double precision NOT NULL,
    load double precision NOT NULL,
    uptime_seconds bigint NOT NULL,
    containers jsonb NOT NULL,
    tls_expires_at timestamptz NULL,
    PRIMARY KEY (tenant_id, received_at)
) PARTITION BY RANGE (received_at);
CREATE TABLE tenants_heartbeatrollup (
    tenant_id bigint NOT NULL,
    bucket_start timestamptz NOT NULL,
    samples integer NOT NULL,
    disk_sum double precision NOT NULL,
    disk_max double precision NOT NULL,
    memory_sum double precision NOT NULL,
    memory_max double precision NOT NULL,
    load_sum double precision NOT NULL,
    load_max double precision NOT NULL,
    uptime_min bigint NOT NULL,
    PRIMARY KEY (tenant_id, bucket_start)
) PARTITION BY RANGE (bucket_start);
"""

REVERSE = """
DROP TABLE tenants_heartbeatsample;
DROP TABLE tenants_heartbeatrollup;
ALTER TABLE tenants_heartbeatsample_legacy RENAME TO tenants_heartbeatsample;
ALTER TABLE tenants_heartbeatsample RENAME CONSTRAINT heartbeat_sample_legacy_once TO heartbeat_sample_once;
"""


def move_history(apps, schema_editor):  # type: ignore[no-untyped-def]
    from hub.db.partitions import partitions_ensure
    from tenants.services.history import RAW, ROLLUPS, ROLLUP_SQL_BUCKET

    now = timezone.now()
    raw_from = now - timedelta(hours=settings.HEARTBEAT_RAW_RETENTION_HOURS)
    rollups_from = now - timedelta(days=settings.HEARTBEAT_HISTORY_RETENTION_DAYS)
    ahead = now + timedelta(hours=settings.HEARTBEAT_PARTITIONS_AHEAD_HOURS)
    partitions_ensure(RAW, first=raw_from, last=ahead, lock_timeout_ms=0)
    partitions_ensure(ROLLUPS, first=rollups_from, last=ahead, lock_timeout_ms=0)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tenants_heartbeatsample SELECT tenant_id, received_at, disk_percent, memory_percent, load,"
            " uptime_seconds, containers, tls_expires_at FROM tenants_heartbeatsample_legacy"
            " WHERE received_at >= %s AND received_at <= %s",
            [raw_from, ahead],
        )
        cursor.execute(
            "INSERT INTO tenants_heartbeatrollup SELECT tenant_id, "
            + ROLLUP_SQL_BUCKET.format(seconds=int(settings.HEARTBEAT_ROLLUP_SECONDS), column="received_at")
            + ", count(*), sum(disk_percent), max(disk_percent), sum(memory_percent), max(memory_percent),"
            " sum(load), max(load), min(uptime_seconds) FROM tenants_heartbeatsample_legacy"
            " WHERE received_at >= %s AND received_at <= %s GROUP BY 1, 2",
            [ROLLUPS.floor(rollups_from), ahead],
        )
        cursor.execute("DROP TABLE tenants_heartbeatsample_legacy")


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0004_tenant_moves"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(CREATE, REVERSE),
                migrations.RunPython(move_history, migrations.RunPython.noop),
            ],
            state_operations=[
                migrations.DeleteModel(name="HeartbeatSample"),
                migrations.CreateModel(
                    name="HeartbeatSample",
                    fields=[
                        (
                            "pk",
                            models.CompositePrimaryKey(
                                "tenant", "received_at", blank=True, editable=False, primary_key=True, serialize=False
                            ),
                        ),
                        (
                            "tenant",
                            models.ForeignKey(
                                db_constraint=False,
                                on_delete=models.deletion.CASCADE,
                                related_name="heartbeats",
                                to="tenants.tenant",
                            ),
                        ),
                        ("received_at", models.DateTimeField()),
                        ("disk_percent", models.FloatField()),
                        ("memory_percent", models.FloatField()),
                        ("load", models.FloatField()),
                        ("uptime_seconds", models.BigIntegerField()),
                        ("containers", models.JSONField(default=list)),
                        ("tls_expires_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        "db_table": "tenants_heartbeatsample",
                        "ordering": ["-received_at"],
                        "managed": False,
                    },
                ),
                migrations.CreateModel(
                    name="HeartbeatRollup",
                    fields=[
                        (
                            "pk",
                            models.CompositePrimaryKey(
                                "tenant", "bucket_start", blank=True, editable=False, primary_key=True, serialize=False
                            ),
                        ),
                        (
                            "tenant",
                            models.ForeignKey(
                                db_constraint=False,
                                on_delete=models.deletion.CASCADE,
                                related_name="heartbeat_rollups",
                                to="tenants.tenant",
                            ),
                        ),
                        ("bucket_start", models.DateTimeField()),
                        ("samples", models.IntegerField()),
                        ("disk_sum", models.FloatField()),
                        ("disk_max", models.FloatField()),
                        ("memory_sum", models.FloatField()),
                        ("memory_max", models.FloatField()),
                        ("load_sum", models.FloatField()),
                        ("load_max", models.FloatField()),
                        ("uptime_min", models.BigIntegerField()),
                    ],
                    options={
                        "db_table": "tenants_heartbeatrollup",
                        "ordering": ["-bucket_start"],
                        "managed": False,
                    },
                ),
            ],
        ),
    ]
