"""The older heartbeat history in hours: a day of 5-minute rollups is condensed into
hourly rows once it is HEARTBEAT_ROLLUP_RETENTION_DAYS old, and the hourly rows are
kept until HEARTBEAT_HISTORY_RETENTION_DAYS (tenants.services.history). At 100,000
tenants the 5-minute rollups of 30 days were 150 GB; 7 days of them and 23 days of
hours are about 45 GB. The table is partitioned by the day like the rollups; its
partitions are made by the condensing itself."""

from django.db import migrations, models

CREATE = """
CREATE TABLE tenants_heartbeathourly (
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


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0010_tenant_heartbeat_updates_in_place"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(CREATE, "DROP TABLE tenants_heartbeathourly")],
            state_operations=[
                migrations.CreateModel(
                    name="HeartbeatHourly",
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
                                related_name="heartbeat_hours",
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
                        "db_table": "tenants_heartbeathourly",
                        "ordering": ["-bucket_start"],
                        "managed": False,
                    },
                ),
            ],
        ),
    ]
