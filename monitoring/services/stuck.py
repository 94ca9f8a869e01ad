"""Stuck work: the pipeline reaper (steps whose worker died or whose message was lost,
jobs past their deadline), and orders that stay in one status past its deadline."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from hub.alerts.services import Failing, alerts_sync
from hub.collector import collector_paused
from hub.db.bulksql import EpochSeconds
from hub.models import AlertSeverity
from hub.pipeline.reaper import pipeline_reap
from provisioning.models import Order


def orders_stuck(*, now: datetime) -> list[tuple[int, str, float]]:
    """(id, status, since when in seconds since the epoch) of every order past its
    status's deadline."""
    deadlines = settings.ORDER_STATUS_DEADLINES
    if not deadlines:
        return []
    condition = Q()
    for status, seconds in deadlines.items():
        condition |= Q(status=status, status_changed_at__lt=now - timedelta(seconds=seconds))
    # An order waiting on its customer (DNS_PENDING until the nameservers are delegated)
    # has its own, longer deadline (DNS_NAMESERVER_DEADLINE_SECONDS): it is not stuck.
    waiting_on_nobody = Q(waiting_reason="")
    rows = (
        Order.objects.filter(condition & waiting_on_nobody)
        .annotate(since=EpochSeconds("status_changed_at"))
        .values_list("id", "status", "since")
    )
    return cast(list[tuple[int, str, float]], list(rows))


@collector_paused()
def check_stuck_work() -> dict[str, Any]:
    report = pipeline_reap()
    now = timezone.now()
    now_epoch = now.timestamp()
    failing = {
        order_id: Failing(
            AlertSeverity.MEDIUM,
            (
                f"order {order_id} has been {status} for {int((now_epoch - since) // 60)} min "
                f"(deadline {settings.ORDER_STATUS_DEADLINES[status] // 60} min)"
            ),
        )
        for order_id, status, since in orders_stuck(now=now)
    }
    result = alerts_sync(kind="order_stuck", subject_type="order", failing=failing)
    return {
        "reaper_ran": report.ran,
        "lost_leases": len(report.lost_leases),
        "lost_messages": len(report.lost_messages),
        "due_retries": len(report.due_retries),
        "jobs_past_deadline": len(report.past_deadline),
        "orders": result.summary(),
    }
