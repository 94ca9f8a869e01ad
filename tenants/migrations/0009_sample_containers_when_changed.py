"""A raw heartbeat sample keeps its containers only when they changed since the tenant's
previous sample (NULL otherwise), and a tenant's latest list carries its md5, so the
flush compares digests instead of turning every sample's list into jsonb. The
containers were 83% of a raw sample and most of the flush's time."""

from django.db import migrations, models

# Dropping NOT NULL is a catalogue change, on the parent and every partition; no row is
# read or rewritten.
ALLOW_NULL = "ALTER TABLE tenants_heartbeatsample ALTER COLUMN containers DROP NOT NULL"
# Going back, a sample that kept no list gets the empty one: its list is not recoverable
# here without reading the samples before it.
FORBID_NULL = """
UPDATE tenants_heartbeatsample SET containers = '[]'::jsonb WHERE containers IS NULL;
ALTER TABLE tenants_heartbeatsample ALTER COLUMN containers SET NOT NULL
"""


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0008_containers_beside_the_tenant"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenantcontainers",
            name="digest",
            field=models.UUIDField(
                editable=False,
                help_text="md5 of the list last reported (as orjson writes it): the flush compares this, not the list",
                null=True,
            ),
        ),
        migrations.RunSQL(ALLOW_NULL, FORBID_NULL),
        migrations.AlterField(
            model_name="heartbeatsample",
            name="containers",
            field=models.JSONField(
                blank=True,
                help_text="the agent's list when it changed since the tenant's previous sample, else NULL",
                null=True,
            ),
        ),
    ]
