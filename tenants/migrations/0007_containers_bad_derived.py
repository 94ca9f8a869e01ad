"""The containers check's question asked once per write instead of once per check: a
stored generated column, `containers_bad`, that Postgres derives from `containers`.

The words are frozen here as they stand in tenants.models (CONTAINER_CRASHED_STATES,
CONTAINER_UNHEALTHY); a later change to them needs a migration that replaces the
function and rewrites the column (`UPDATE tenants_tenant SET containers = containers`).
The containment test (`@>`) comes first: a healthy tenant's 20 containers are never
unpacked."""

import django.contrib.postgres.fields
from django.db import migrations, models

BAD = ("exited", "dead", "restarting")
PATTERNS = ", ".join(f"""'[{{"state": "{state}"}}]'""" for state in BAD) + """, '[{"health": "unhealthy"}]'"""
STATES = ", ".join(f"'{state}'" for state in BAD)

CREATE_FUNCTION = f"""
CREATE FUNCTION tenant_containers_bad(containers jsonb) RETURNS text[]
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
    SELECT CASE WHEN containers @> ANY(ARRAY[{PATTERNS}]::jsonb[]) THEN (
        SELECT array_agg(
                   coalesce(c->>'name', 'None') || ' ('
                   || CASE WHEN c->>'state' = ANY(ARRAY[{STATES}]) THEN c->>'state' ELSE 'unhealthy' END
                   || ')'
                   ORDER BY position)
          FROM jsonb_array_elements(containers) WITH ORDINALITY AS listed(c, position)
         WHERE jsonb_typeof(c) = 'object'
           AND (c->>'state' = ANY(ARRAY[{STATES}]) OR c->>'health' = 'unhealthy')
    ) END
$$
"""


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0006_command_ids_time_ordered"),
    ]

    operations = [
        migrations.RunSQL(CREATE_FUNCTION, "DROP FUNCTION tenant_containers_bad(jsonb)"),
        migrations.AddField(
            model_name="tenant",
            name="containers_bad",
            field=models.GeneratedField(
                db_persist=True,
                expression=models.Func(
                    models.F("containers"),
                    function="tenant_containers_bad",
                    output_field=django.contrib.postgres.fields.ArrayField(base_field=models.TextField(), size=None),
                ),
                output_field=django.contrib.postgres.fields.ArrayField(base_field=models.TextField(), size=None),
            ),
        ),
    ]
