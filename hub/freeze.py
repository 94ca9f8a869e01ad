"""The fleet freeze: one switch that stops every rollout from dispatching and every
automatic migration, for an emergency. Checked where fleet-wide work starts
(`fleet_frozen()`); set and cleared by staff, audited."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from hub.audit import audit_record
from hub.models import FleetFreeze

FREEZE_ROW = 1


def fleet_frozen() -> bool:
    return FleetFreeze.objects.filter(pk=FREEZE_ROW, frozen=True).exists()


def fleet_freeze_state() -> FleetFreeze:
    return FleetFreeze.objects.filter(pk=FREEZE_ROW).first() or FleetFreeze(pk=FREEZE_ROW)


@transaction.atomic
def fleet_freeze_set(*, frozen: bool, actor: str, reason: str = "") -> FleetFreeze:
    """Freeze or unfreeze the fleet; setting the state it already has changes nothing."""
    row, _ = FleetFreeze.objects.select_for_update().get_or_create(pk=FREEZE_ROW)
    if row.frozen == frozen:
        return row
    row.frozen = frozen
    row.reason = reason[:2000]
    row.changed_by = actor
    row.changed_at = timezone.now()
    row.save(update_fields=["frozen", "reason", "changed_by", "changed_at"])
    audit_record(
        actor=actor,
        action="fleet.freeze" if frozen else "fleet.unfreeze",
        object_type="fleet",
        object_id=FREEZE_ROW,
        old=not frozen,
        new=frozen,
        reason=reason,
    )
    return row
