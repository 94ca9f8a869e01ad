"""A tenant's containers move out of its row into their own table (TenantContainers):
they were nine tenths of a tenant row, and every fleet check reads the whole tenants
table. The containers of each tenant are copied across before the columns go."""

import django.contrib.postgres.fields
import django.db.models.deletion
from django.db import migrations, models

COPY = """
INSERT INTO tenants_tenantcontainers (tenant_id, containers)
SELECT id, containers FROM tenants_tenant WHERE containers <> '[]'::jsonb
"""
COPY_BACK = """
UPDATE tenants_tenant AS t SET containers = c.containers
  FROM tenants_tenantcontainers AS c WHERE c.tenant_id = t.id
"""


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0007_containers_bad_derived"),
    ]

    operations = [
        migrations.CreateModel(
            name="TenantContainers",
            fields=[
                (
                    "tenant",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="container_report",
                        serialize=False,
                        to="tenants.tenant",
                    ),
                ),
                ("containers", models.JSONField(default=list)),
                (
                    "bad",
                    models.GeneratedField(
                        db_persist=True,
                        expression=models.Func(
                            models.F("containers"),
                            function="tenant_containers_bad",
                            output_field=django.contrib.postgres.fields.ArrayField(
                                base_field=models.TextField(), size=None
                            ),
                        ),
                        output_field=django.contrib.postgres.fields.ArrayField(
                            base_field=models.TextField(), size=None
                        ),
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(
                        condition=models.Q(("bad__isnull", False)), fields=["tenant"], name="tenant_containers_bad"
                    )
                ],
            },
        ),
        migrations.RunSQL(COPY, COPY_BACK),
        migrations.RemoveField(
            model_name="tenant",
            name="containers_bad",
        ),
        migrations.RemoveField(
            model_name="tenant",
            name="containers",
        ),
    ]
