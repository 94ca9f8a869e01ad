"""Running a check: under its single-flight lock, with its last run recorded (when, how
long, what it found or why it failed) and a hub alert while it keeps failing."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.utils import timezone

from hub.alerts.services import alert_raise, alert_resolve
from hub.db.locks import single_flight
from hub.models import AlertSeverity
from monitoring.models import CheckOutcome, CheckRun

logger = logging.getLogger(__name__)


@dataclass
class CheckResult:
    name: str
    ran: bool
    summary: dict[str, Any] = field(default_factory=dict)


def _record(*, name: str, outcome: str, started: Any, duration_ms: int, summary: dict[str, Any], error: str) -> None:
    table = CheckRun._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (name, last_started_at, last_finished_at, last_outcome, last_duration_ms,
                                 last_summary, last_error, runs)
            VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, 1)
            ON CONFLICT (name) DO UPDATE SET
                last_started_at = EXCLUDED.last_started_at, last_finished_at = EXCLUDED.last_finished_at,
                last_outcome = EXCLUDED.last_outcome, last_duration_ms = EXCLUDED.last_duration_ms,
                last_summary = EXCLUDED.last_summary, last_error = EXCLUDED.last_error,
                runs = {table}.runs + 1
            """,  # noqa: S608 - the table name is ours, the values are parameters
            [name, started, timezone.now(), outcome, duration_ms, _json(summary), error[:4000]],
        )


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, default=str)


def check_run(name: str, check: Callable[[], dict[str, Any]]) -> CheckResult:
    """Run `check` unless another run of it holds the lock. A failure is recorded,
    raised as a MEDIUM hub alert (resolved by the next good run) and re-raised."""
    started = timezone.now()
    clock = time.monotonic()
    with single_flight(f"monitoring.check:{name}") as locked:
        if not locked:
            logger.info("check %s: another run holds the lock; skipped", name)
            return CheckResult(name=name, ran=False)
        try:
            summary = check()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            _record(
                name=name,
                outcome=CheckOutcome.ERROR,
                started=started,
                duration_ms=int((time.monotonic() - clock) * 1000),
                summary={},
                error=error,
            )
            alert_raise(
                subject_type="hub",
                subject_id=name,
                kind="check_failed",
                severity=AlertSeverity.MEDIUM,
                message=f"the {name} check failed: {error}",
            )
            raise
        _record(
            name=name,
            outcome=CheckOutcome.OK,
            started=started,
            duration_ms=int((time.monotonic() - clock) * 1000),
            summary=summary,
            error="",
        )
        alert_resolve(subject_type="hub", subject_id=name, kind="check_failed")
    return CheckResult(name=name, ran=True, summary=summary)
