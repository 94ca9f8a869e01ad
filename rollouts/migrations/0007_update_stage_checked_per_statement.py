"""An update's stage checked once per statement instead of once per row.

Migration 0004 made one foreign key, (stage_id, rollout_id) -> the stage's (id,
rollout_id), check that an update names a stage of its own rollout. Postgres runs a
foreign key's check for each inserted row: a dispatch of 100,000 updates ran it
100,000 times for the one stage they all name, a fifth of the dispatch's time
(bench/RESULTS.md, 2026-12-06 23:20). The same rule is now kept by triggers:

- an INSERT into the updates checks, once for the statement, the distinct (stage,
  rollout) pairs it wrote, and holds a key-share lock on those stages until commit, as
  the foreign key's check did, so a stage cannot be deleted under it;
- an update's stage and rollout, and a stage's id and rollout, never change;
- a DELETE of stages is refused while an update names one of them.

Each refusal is a foreign_key_violation naming the old constraint, so Django raises
IntegrityError as before. The rollback command's key goes too (its check ran for every
inserted row, even a NULL one): commands are never deleted, and Django still clears
the id if one ever is.
"""

import django.db.models.deletion
from django.db import migrations, models

UPDATES = "rollouts_tenantupdate"
STAGES = "rollouts_rolloutstage"
RULE = "tenant_update_stage_of_its_rollout"

FOREIGN_KEY = (
    f"ALTER TABLE {UPDATES} ADD CONSTRAINT {RULE} FOREIGN KEY (stage_id, rollout_id) "
    f"REFERENCES {STAGES} (id, rollout_id) DEFERRABLE INITIALLY DEFERRED"
)

TRIGGERS = f"""
CREATE FUNCTION tenant_update_stage_present() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing record;
BEGIN
    PERFORM 1 FROM {STAGES} AS s
    WHERE (s.id, s.rollout_id) IN (SELECT stage_id, rollout_id FROM written)
    FOR KEY SHARE;
    SELECT w.stage_id, w.rollout_id INTO missing
    FROM (SELECT DISTINCT stage_id, rollout_id FROM written) AS w
    WHERE NOT EXISTS (SELECT 1 FROM {STAGES} AS s WHERE s.id = w.stage_id AND s.rollout_id = w.rollout_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'insert on table "{UPDATES}" violates foreign key constraint "{RULE}"',
            DETAIL = format('Key (stage_id, rollout_id)=(%s, %s) is not present in table "{STAGES}".',
                            missing.stage_id, missing.rollout_id),
            CONSTRAINT = '{RULE}';
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION rollout_stage_still_named() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    named record;
BEGIN
    SELECT u.stage_id, u.rollout_id INTO named
    FROM removed AS r JOIN {UPDATES} AS u ON u.stage_id = r.id AND u.rollout_id = r.rollout_id
    LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'delete on table "{STAGES}" violates foreign key constraint "{RULE}"',
            DETAIL = format('Key (id, rollout_id)=(%s, %s) is still referenced from table "{UPDATES}".',
                            named.stage_id, named.rollout_id),
            CONSTRAINT = '{RULE}';
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION rollout_keys_unchanged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE foreign_key_violation USING
        MESSAGE = format('update on table "%s" changes the key of "{RULE}"', TG_TABLE_NAME),
        DETAIL = 'An update''s stage and rollout, and a stage''s id and rollout, never change.',
        CONSTRAINT = '{RULE}';
END $$;

CREATE TRIGGER {RULE} AFTER INSERT ON {UPDATES}
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION tenant_update_stage_present();
CREATE TRIGGER tenant_update_stage_unchanged BEFORE UPDATE OF stage_id, rollout_id ON {UPDATES}
    FOR EACH ROW WHEN (OLD.stage_id IS DISTINCT FROM NEW.stage_id OR OLD.rollout_id IS DISTINCT FROM NEW.rollout_id)
    EXECUTE FUNCTION rollout_keys_unchanged();
CREATE TRIGGER rollout_stage_kept_while_named AFTER DELETE ON {STAGES}
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION rollout_stage_still_named();
CREATE TRIGGER rollout_stage_key_unchanged BEFORE UPDATE OF id, rollout_id ON {STAGES}
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.rollout_id IS DISTINCT FROM NEW.rollout_id)
    EXECUTE FUNCTION rollout_keys_unchanged();
"""

TRIGGERS_DROPPED = f"""
DROP TRIGGER {RULE} ON {UPDATES};
DROP TRIGGER tenant_update_stage_unchanged ON {UPDATES};
DROP TRIGGER rollout_stage_kept_while_named ON {STAGES};
DROP TRIGGER rollout_stage_key_unchanged ON {STAGES};
DROP FUNCTION tenant_update_stage_present();
DROP FUNCTION rollout_stage_still_named();
DROP FUNCTION rollout_keys_unchanged();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("rollouts", "0006_update_keys_and_indexes_a_dispatch_needs"),
        ("tenants", "0011_heartbeat_hourly"),
    ]

    operations = [
        migrations.RunSQL(f"ALTER TABLE {UPDATES} DROP CONSTRAINT {RULE}", reverse_sql=FOREIGN_KEY),
        migrations.RunSQL(TRIGGERS, reverse_sql=TRIGGERS_DROPPED),
        migrations.AlterField(
            model_name="tenantupdate",
            name="rollback_command",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="tenants.command",
            ),
        ),
    ]
