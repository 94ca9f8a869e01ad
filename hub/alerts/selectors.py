"""Reads of alerts for the API: the open ones and those resolved recently."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q, QuerySet

from hub.alerts.models import Alert, AlertStatus


def alerts_open_and_recent(
    *,
    resolved_since: datetime,
    status: str | None = None,
    severity: str | None = None,
    kind: str | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
) -> QuerySet[Alert]:
    """Every open alert, and the resolved ones resolved since `resolved_since`; newest
    activity first (ties by id, so pages never repeat or skip a row)."""
    queryset = Alert.objects.filter(Q(status=AlertStatus.OPEN) | Q(resolved_at__gte=resolved_since))
    exact = {"status": status, "severity": severity, "kind": kind, "subject_type": subject_type}
    queryset = queryset.filter(**{field: value for field, value in exact.items() if value})
    if subject_id:
        queryset = queryset.filter(subject_id=subject_id)
    return queryset.order_by("-last_seen_at", "-id")
