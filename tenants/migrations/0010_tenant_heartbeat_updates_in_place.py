"""Every heartbeat flush updates each tenant's row; with `last_heartbeat_at` indexed,
no such update could stay on its page (a HOT update), so each wrote a new entry into
all seven of the table's indexes. Nothing reads that index that would not scan the
tenants anyway (the fleet's counts and maxima, the staleness checks comparing with
each tenant's own interval). Without it, and with room left on each page, the update
rewrites the row in place. Dropped and made again concurrently: the table stays
writable meanwhile."""

from django.db import migrations, models

INDEX = "tenants_tenant_last_heartbeat_at_6a8a24bd"


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("tenants", "0009_sample_containers_when_changed"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="tenant",
                    name="last_heartbeat_at",
                    field=models.DateTimeField(blank=True, null=True),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}",
                    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON tenants_tenant (last_heartbeat_at)",
                ),
            ],
        ),
        # A new version of a row goes on the same page only if there is room: keep a
        # tenth of each page free (for pages written from now on).
        migrations.RunSQL(
            "ALTER TABLE tenants_tenant SET (fillfactor = 90)", "ALTER TABLE tenants_tenant RESET (fillfactor)"
        ),
    ]
