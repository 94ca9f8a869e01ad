"""Opening, counting and resolving alerts. Checks call these every time they look; an
alert already open for the same subject and kind is counted, not duplicated.

A new opening (and an escalation to a severity with more channels) writes its
notification rows in the same transaction, and their messages go out on commit: an
opening is announced once per channel, however often the check sees it again.

`alert_raise` / `alert_resolve` are for one subject; `alerts_sync` is the set-based
form for fleet-wide checks: it takes every subject that fails one kind of check and
opens, counts and resolves in a constant number of queries."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from hub import events
from hub.alerts.notify import Opening, notifications_create
from hub.audit import audit_record
from hub.db.bulksql import JSON_ROWS, array_text, insert_skipping_conflicts, json_rows
from hub.models import Alert, AlertSeverity, AlertStatus, AuditEvent

logger = logging.getLogger(__name__)

SEVERITY_RANK: dict[str, int] = {AlertSeverity.SOFT: 0, AlertSeverity.MEDIUM: 1, AlertSeverity.HARD: 2}


class Failing(NamedTuple):
    """One subject that fails a check: how badly and why. A named tuple, quick to make
    by the 100,000."""

    severity: str
    message: str


@dataclass
class SyncResult:
    opened: list[str] = field(default_factory=list)
    counted: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    notifications: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "opened": len(self.opened),
            "counted": len(self.counted),
            "resolved": len(self.resolved),
            "notifications": len(self.notifications),
        }


def _from_epoch_us(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000, tz=UTC) + timedelta(microseconds=value % 1_000_000)


def _escalated(old: str, new: str) -> bool:
    return SEVERITY_RANK.get(new, 0) > SEVERITY_RANK.get(old, 0)


def _may_escalate(conditions: Iterable[Failing], open_severities: Iterable[str]) -> bool:
    """Whether any condition's severity outranks the lowest of the open alerts: a
    steady storm (the same severity run after run) skips the subject-by-subject
    comparison of its 100,000 alerts."""
    highest_new = max((SEVERITY_RANK.get(severity, 0) for severity in {c.severity for c in conditions}), default=-1)
    lowest_open = min((SEVERITY_RANK.get(severity, 0) for severity in set(open_severities)), default=99)
    return highest_new > lowest_open


def alert_raise(*, subject_type: str, subject_id: object, kind: str, severity: str, message: str) -> Alert:
    """Open the alert, or count it when it is already open."""
    subject = str(subject_id)
    for _ in range(3):
        with transaction.atomic():
            now = timezone.now()
            alert = (
                Alert.objects.select_for_update()
                .filter(subject_type=subject_type, subject_id=subject, kind=kind, status=AlertStatus.OPEN)
                .first()
            )
            if alert is not None:
                old_severity = alert.severity
                alert.count += 1
                alert.last_seen_at = now
                alert.message = message
                alert.severity = severity
                alert.save(update_fields=["count", "last_seen_at", "message", "severity"])
                if _escalated(old_severity, severity):
                    notifications_create([Opening.of(alert)])
                return alert
            try:
                with transaction.atomic():
                    alert = Alert.objects.create(
                        subject_type=subject_type, subject_id=subject, kind=kind, severity=severity, message=message
                    )
            except IntegrityError:
                continue  # opened concurrently: count it instead
            audit_record(
                actor="monitoring",
                action="alert.open",
                object_type="alert",
                object_id=alert.pk,
                new=severity,
                reason=message,
            )
            notifications_create([Opening.of(alert)])
            _publish_alert("alert.opened", alert.pk, subject_type, subject, kind, severity)
        logger.warning("alert %s: %s %s:%s: %s", severity, kind, subject_type, subject, message)
        return alert
    raise RuntimeError("could not open or count the alert")


def alert_resolve(*, subject_type: str, subject_id: object, kind: str) -> int:
    """Resolve the open alert of this subject and kind (the condition cleared)."""
    subject = str(subject_id)
    with transaction.atomic():
        resolved = _resolve(
            where="subject_type = %s AND subject_id = %s AND kind = %s", params=[subject_type, subject, kind]
        )
        for alert_id, _ in resolved:
            _publish_alert("alert.resolved", alert_id, subject_type, subject, kind, "")
    return len(resolved)


def _publish_alert(
    event_type: str, alert_id: int, subject_type: str, subject_id: str, kind: str, severity: str
) -> None:
    events.publish(
        event_type,
        {"id": alert_id, "subject_type": subject_type, "subject_id": subject_id, "kind": kind, "severity": severity},
    )


def _resolve(*, where: str, params: list[str], now: datetime | None = None) -> list[tuple[int, str]]:
    """Resolve the open alerts `where` says and write their audit rows, in one statement
    and server-side: a fleet that heals at once is 100,000 rows, too many to build as
    model instances. Returns their (id, subject)."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH resolved AS (
                UPDATE {Alert._meta.db_table} SET status = %s, resolved_at = %s
                 WHERE {where} AND status = 'OPEN'
                RETURNING id, subject_id
            ), audited AS (
                INSERT INTO {AuditEvent._meta.db_table} (actor, action, object_type, object_id, new, reason, created_at)
                SELECT 'monitoring', 'alert.resolve', 'alert', id::text, to_jsonb(%s::text), '', %s FROM resolved
            )
            SELECT id, subject_id FROM resolved
            """,  # noqa: S608 - the table names are ours, `where` is the caller's SQL, the values are parameters
            [AlertStatus.RESOLVED, now, *params, AlertStatus.RESOLVED, now],
        )
        return cursor.fetchall()


@transaction.atomic
def alerts_sync(*, kind: str, subject_type: str, failing: Mapping[int, Failing] | Mapping[str, Failing]) -> SyncResult:
    """Make the open alerts of this kind match `failing` (every subject that fails the
    check now): open the new ones, count those still failing, resolve the others.
    Constant number of queries, whatever the number of subjects."""
    table = Alert._meta.db_table
    audit_table = AuditEvent._meta.db_table
    now = timezone.now()
    wanted = {str(subject): condition for subject, condition in failing.items()}
    result = SyncResult()

    open_rows: list[tuple[int, str, str, int]] = []
    if not wanted:
        # Nothing fails: every open alert of the kind resolves, and none is read first. A
        # fleet healing at once is 100,000 rows Python would only have passed back.
        healed = _resolve(where="subject_type = %s AND kind = %s", params=[subject_type, kind], now=now)
        result.resolved = [subject for _, subject in healed]
    else:
        with connection.cursor() as cursor:
            # first_seen_at as epoch microseconds: only an escalation needs it as a datetime,
            # and loading 10,000 timestamps is a tenth of a storm's Python time.
            cursor.execute(
                f"""
                SELECT id, subject_id, severity, (EXTRACT(EPOCH FROM first_seen_at) * 1000000)::bigint
                  FROM {table} WHERE subject_type = %s AND kind = %s AND status = 'OPEN'
                """,  # noqa: S608 - the table name is ours, the values are parameters
                [subject_type, kind],
            )
            open_rows = cursor.fetchall()
    open_by_subject = {subject: (pk, severity, first_seen_us) for pk, subject, severity, first_seen_us in open_rows}

    gone = [pk for pk, subject, _, _ in open_rows if subject not in wanted]
    if gone:
        healed = _resolve(where="id = ANY(%s::bigint[])", params=[array_text(gone)], now=now)
        result.resolved = [subject for _, subject in healed]

    counted = [s for s in wanted if s in open_by_subject]
    openings: list[Opening] = []
    if counted:
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                UPDATE {table} AS a
                   SET count = a.count + 1, last_seen_at = %s, message = s.message, severity = s.severity
                  FROM {JSON_ROWS.format(columns="(r->>0)::bigint AS id, r->>1 AS severity, r->>2 AS message")} AS s
                 WHERE a.id = s.id AND a.status = 'OPEN'
                """,  # noqa: S608 - the table name is ours, the values are parameters
                # A row is the alert's id and its Failing, (severity, message), as they are.
                [now, json_rows([(open_by_subject[s][0], *wanted[s]) for s in counted])],
            )
        result.counted = counted
        if _may_escalate(wanted.values(), (severity for _, _, severity, _ in open_rows)):
            for subject in counted:
                pk, old_severity, first_seen_us = open_by_subject[subject]
                condition = wanted[subject]
                if _escalated(old_severity, condition.severity):
                    openings.append(
                        Opening(
                            alert_id=pk,
                            subject_type=subject_type,
                            subject_id=subject,
                            kind=kind,
                            severity=condition.severity,
                            message=condition.message,
                            first_seen_at=_from_epoch_us(first_seen_us),
                        )
                    )

    new = [(s, c) for s, c in wanted.items() if s not in open_by_subject] if len(counted) < len(wanted) else []
    if new:
        # The audit rows of the openings are written by the same statement. A subject
        # whose alert another transaction opened meanwhile is skipped.
        inserted = insert_skipping_conflicts(
            f"""
            WITH opened AS (
                INSERT INTO {table}
                    (subject_type, subject_id, kind, severity, status, message, count,
                     first_seen_at, last_seen_at, acknowledged_by)
                SELECT %s, s.subject_id, %s, s.severity, 'OPEN', s.message, 1, %s, %s, ''
                  FROM {JSON_ROWS.format(columns="r->>0 AS subject_id, r->>1 AS severity, r->>2 AS message")} AS s
                {{on_conflict}}
                RETURNING id, subject_id, severity, message
            ), audited AS (
                INSERT INTO {audit_table} (actor, action, object_type, object_id, new, reason, created_at)
                SELECT 'monitoring', 'alert.open', 'alert', id::text, to_jsonb(severity), left(message, 2000), %s
                  FROM opened
            )
            SELECT id, subject_id, severity, message FROM opened
            """,  # noqa: S608 - the table names are ours, the values are parameters
            [
                subject_type,
                kind,
                now,
                now,
                json_rows([(s, c.severity, c.message) for s, c in new]),
                now,
            ],
            on_conflict="ON CONFLICT DO NOTHING",
        ).rows
        # Positional: a storm makes 100,000 of them, and keywords double their cost.
        openings.extend(
            Opening(pk, subject_type, subject, kind, severity, message, now)
            for pk, subject, severity, message in inserted
        )
        result.opened.extend(subject for _, subject, _, _ in inserted)
        if inserted:
            logger.warning("alerts: %d opened for %s on %s", len(inserted), kind, subject_type)

    if openings:
        result.notifications = notifications_create(openings)
    if result.opened or result.resolved:
        # One event for the whole run: a storm of openings is one line on the streams.
        events.publish(
            "alerts.synced",
            {
                "kind": kind,
                "subject_type": subject_type,
                "opened": len(result.opened),
                "resolved": len(result.resolved),
            },
        )
    return result


@transaction.atomic
def alert_acknowledge(*, alert_ids: Iterable[int], actor: str, at: datetime | None = None) -> int:
    """Staff saw it: recorded on the alert, which stays open until its check clears it."""
    now = at or timezone.now()
    ids = list(Alert.objects.filter(pk__in=list(alert_ids), acknowledged_at__isnull=True).values_list("id", flat=True))
    if not ids:
        return 0
    Alert.objects.filter(pk__in=ids).update(acknowledged_by=actor, acknowledged_at=now)
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                actor=actor, action="alert.acknowledge", object_type="alert", object_id=str(pk), new="acknowledged"
            )
            for pk in ids
        ]
    )
    return len(ids)
