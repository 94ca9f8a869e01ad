"""The fleet freeze: one switch that stops every rollout from dispatching and every
automatic migration, for an emergency. Work that starts fleet-wide asks
`fleet_frozen()` first; set and cleared by staff (the admin, `POST/DELETE
/api/v1/fleet/freeze/`), audited.

Apps whose running work must react at the moment of the switch (the rollouts take
back their undelivered updates, and send them again on unfreeze) register a listener
when they start (`fleet_freeze_listen`, from their AppConfig.ready, as rollouts does):
the listeners run in the transaction that flips the switch, so the switch and its
effect commit together. `hub` imports no app; the apps come to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from hub.audit import audit_record
from hub.errors import DomainError
from hub.models import FleetFreeze

FREEZE_ROW = 1


@dataclass(frozen=True)
class FreezeChange:
    frozen: bool
    actor: str
    reason: str
    at: datetime
    # When the state that ends now began (None: never set before).
    previous_since: datetime | None


FreezeListener = Callable[[FreezeChange], None]
_listeners: list[FreezeListener] = []


class FleetFrozen(DomainError):
    """Fleet-wide work refused while the fleet is frozen: 409."""

    code = "fleet_frozen"


def fleet_freeze_listen(listener: FreezeListener) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def fleet_frozen() -> bool:
    return FleetFreeze.objects.filter(pk=FREEZE_ROW, frozen=True).exists()


def fleet_refuse_if_frozen(what: str) -> None:
    """Raise FleetFrozen (409) when the fleet is frozen; `what` names the refused work.
    Inside the caller's transaction the switch's row stays locked until it commits,
    so a freeze cannot slip in between this check and the work it allows."""
    row = FleetFreeze.objects.select_for_update(no_key=True).filter(pk=FREEZE_ROW).first()
    if row is None or not row.frozen:
        return
    why = f": {row.reason}" if row.reason else ""
    raise FleetFrozen(f"the fleet is frozen (by {row.changed_by or 'staff'}{why}); {what} waits for the unfreeze")


def fleet_freeze_state() -> FleetFreeze:
    return FleetFreeze.objects.filter(pk=FREEZE_ROW).first() or FleetFreeze(pk=FREEZE_ROW)


@transaction.atomic
def fleet_freeze_set(*, frozen: bool, actor: str, reason: str = "") -> FleetFreeze:
    """Freeze or unfreeze the fleet; setting the state it already has changes nothing."""
    row, _ = FleetFreeze.objects.select_for_update().get_or_create(pk=FREEZE_ROW)
    if row.frozen == frozen:
        return row
    previous_since = row.changed_at
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
    change = FreezeChange(frozen=frozen, actor=actor, reason=reason, at=row.changed_at, previous_since=previous_since)
    for listener in _listeners:
        listener(change)
    return row
