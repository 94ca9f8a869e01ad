from typing import Any

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
