"""The audit trail: who changed what, when, from which value to which, and why.

`status_move` is the one way a status changes: it checks the move against the model's
transition map, saves only the columns it changed and writes the audit row, in the
caller's transaction."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from django.db import models

from hub import events
from hub.errors import IllegalMove
from hub.models import AuditEvent


def audit_record(
    *, actor: str, action: str, object_type: str, object_id: object, old: Any = None, new: Any = None, reason: str = ""
) -> AuditEvent:
    return AuditEvent.objects.create(
        actor=actor or "system",
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        old=old,
        new=new,
        reason=reason[:2000],
    )


def _has_field(obj: models.Model, name: str) -> bool:
    try:
        obj._meta.get_field(name)
    except Exception:  # noqa: BLE001 - FieldDoesNotExist, whatever the model
        return False
    return True


def status_move(
    obj: models.Model,
    new: str,
    *,
    actor: str,
    reason: str = "",
    fields: Sequence[str] = (),
    transitions: Mapping[str, Collection[str]] | None = None,
    field: str = "status",
    object_type: str | None = None,
    action: str | None = None,
    as_recorded: Callable[[str], Any] | None = None,
) -> bool:
    """Move `obj.<field>` to `new`, save exactly that column (with `fields`, and
    `updated_at` where the model has one) and write the audit row, `<object_type>.<field>`
    unless the move has a name of its own (`action`, e.g. "order.retry"), with the old
    and new value (`as_recorded` shapes them, for a trail that records more than the
    bare value). A move the transition map does not
    allow raises IllegalMove; moving to the current value does nothing (False). Once
    the caller's transaction commits, the move is published as the live event
    `<object_type>.<field>` (hub/events.py) on the object's own stream too."""
    old = getattr(obj, field)
    if old == new:
        return False
    if transitions is not None and new not in transitions.get(old, ()):
        raise IllegalMove(f"{obj._meta.model_name} {obj.pk} is {old}; it cannot become {new}")
    setattr(obj, field, new)
    update = [field, *fields]
    if _has_field(obj, "updated_at") and "updated_at" not in update:
        update.append("updated_at")
    obj.save(update_fields=update)
    kind = object_type or obj._meta.model_name or "object"
    shape = as_recorded or (lambda value: value)
    audit_record(
        actor=actor,
        action=action or f"{kind}.{field}",
        object_type=kind,
        object_id=obj.pk,
        old=shape(old),
        new=shape(new),
        reason=reason,
    )
    events.publish(
        f"{kind}.{field}",
        {"id": obj.pk, "old": shape(old), "new": shape(new), "actor": actor or "system"},
        scopes=[f"{kind}:{obj.pk}"],
    )
    return True
