"""The Stripe webhook inbox: store a verified event once, then handle it once.

An event row goes RECEIVED -> HANDLER_STARTED -> SUCCEEDED / FAILED / IGNORED, with the
handler's error kept on the row. The broker message that asks for handling is only a
doorbell: the row is claimed in the database first, so a duplicate message does
nothing, and the requeue sweep rings again for rows whose message was lost, whose
worker died, or whose handler failed and is due for another attempt."""

from __future__ import annotations

import logging
import random
import traceback
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.handlers import HandlerResult, handler_for
from billing.models import EVENT_CLAIMABLE_STATUSES, EventStatus, StripeEvent
from billing.services.notices import notice_to_staff
from hub.audit import audit_record
from hub.errors import DomainError
from hub.queue import enqueue_on_commit

PROCESS_EVENT = "billing.process_stripe_event"

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 3600


def _subscription_ref(event: dict[str, Any]) -> str:
    """The subscription an event is about, wherever its object type keeps the id."""
    obj = (event.get("data") or {}).get("object") or {}
    if not isinstance(obj, dict):
        return ""
    if obj.get("object") == "subscription":
        ref: Any = obj.get("id")
    else:
        ref = obj.get("subscription")
        if ref is None:
            parent = obj.get("parent") or {}
            ref = (parent.get("subscription_details") or {}).get("subscription") if isinstance(parent, dict) else None
    if isinstance(ref, dict):
        ref = ref.get("id")
    return ref if isinstance(ref, str) else ""


def stripe_event_receive(*, event: dict[str, Any]) -> tuple[StripeEvent, bool]:
    """Store a verified event (once per Stripe event id) and ask for it to be handled
    after commit. Returns the row and whether this delivery stored it."""
    created = event.get("created")
    with transaction.atomic():
        row, stored = StripeEvent.objects.get_or_create(
            stripe_event_id=event["id"][:255],
            defaults={
                "type": event["type"][:100],
                "created": int(created) if isinstance(created, int | float) else int(timezone.now().timestamp()),
                "livemode": bool(event.get("livemode", False)),
                "subscription_ref": _subscription_ref(event)[:255],
                "payload": event,
            },
        )
        # A redelivery of an event still waiting re-rings the doorbell (the first
        # message may be lost); the claim keeps it from being handled twice.
        if stored or row.status == EventStatus.RECEIVED:
            _enqueue_on_commit(row.pk)
    return row, stored


def _enqueue_on_commit(event_row_id: int, countdown: float = 0) -> None:
    enqueue_on_commit(PROCESS_EVENT, event_row_id, countdown=countdown)


def _claim(event_row_id: int) -> StripeEvent | None:
    max_attempts = settings.BILLING_EVENT_MAX_ATTEMPTS
    with transaction.atomic():
        row = (
            StripeEvent.objects.select_for_update(skip_locked=True)
            .filter(pk=event_row_id, status__in=EVENT_CLAIMABLE_STATUSES, attempts__lt=max_attempts)
            .first()
        )
        if row is None:
            return None
        row.status = EventStatus.HANDLER_STARTED
        row.attempts += 1
        row.handler_started_at = timezone.now()
        row.next_attempt_at = None
        row.save(update_fields=["status", "attempts", "handler_started_at", "next_attempt_at"])
        return row


def _finish(row: StripeEvent, result: HandlerResult) -> None:
    now = timezone.now()
    row.status = result.status
    if result.status == EventStatus.SUCCEEDED:
        row.error, row.outcome = "", result.detail[:2000]
    else:
        row.error = result.detail[:10000]
    row.finished_at = now
    fields = ["status", "error", "outcome", "finished_at", "next_attempt_at"]
    row.next_attempt_at = None
    if result.status == EventStatus.FAILED and row.attempts < settings.BILLING_EVENT_MAX_ATTEMPTS:
        ceiling = min(MAX_BACKOFF_SECONDS, 5 * 2 ** (row.attempts - 1))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        row.next_attempt_at = now + timedelta(seconds=delay)
        _enqueue_on_commit(row.pk, countdown=min(delay, settings.PIPELINE_MAX_BROKER_COUNTDOWN))
    elif result.status == EventStatus.FAILED:
        notice_to_staff(
            kind="event_failed",
            subject=f"Stripe event {row.stripe_event_id} failed for good",
            body=f"{row.type} {row.stripe_event_id} failed {row.attempts} times:\n\n{row.error}",
            dedup_key=f"event_failed:{row.stripe_event_id}",
        )
    row.save(update_fields=fields)


def stripe_event_process(*, event_row_id: int) -> StripeEvent | None:
    """Claim and handle one stored event. None when another worker has it or it is
    already finished (a duplicate message)."""
    row = _claim(event_row_id)
    if row is None:
        return None
    handler = handler_for(row.type)
    try:
        with transaction.atomic():
            result = HandlerResult.ignored(f"no handler for {row.type}") if handler is None else handler(row)
            _finish(row, result)
    except Exception as exc:
        logger.exception("stripe event %s (%s) failed", row.stripe_event_id, row.type)
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        with transaction.atomic():
            _finish(row, HandlerResult.failed(error))
    if row.status == EventStatus.FAILED:
        logger.warning("stripe event %s (%s): %s", row.stripe_event_id, row.type, row.error)
    return row


def stripe_events_requeue(*, actor: str = "") -> list[int]:
    """Ring again for events whose message was lost (RECEIVED and old), whose worker
    died (HANDLER_STARTED past the lease) or whose retry is due (FAILED). A staff
    member's sweep (`actor`) is audited on every event it touched; beat's is not."""
    now = timezone.now()
    lost_before = now - timedelta(seconds=settings.BILLING_EVENT_LOST_AFTER)
    lease_before = now - timedelta(seconds=settings.BILLING_EVENT_LEASE_SECONDS)
    stale = StripeEvent.objects.filter(
        Q(status=EventStatus.RECEIVED, received_at__lt=lost_before)
        | Q(status=EventStatus.HANDLER_STARTED, handler_started_at__lt=lease_before)
        | Q(
            status=EventStatus.FAILED,
            next_attempt_at__lte=now,
            attempts__lt=settings.BILLING_EVENT_MAX_ATTEMPTS,
        )
    ).order_by("id")
    requeued: list[int] = []
    with transaction.atomic():
        for row in stale.select_for_update(skip_locked=True)[:500]:
            if row.status == EventStatus.HANDLER_STARTED:
                row.status = EventStatus.FAILED
                row.error = "the worker handling this event stopped before it finished"
                row.save(update_fields=["status", "error"])
            _enqueue_on_commit(row.pk)
            requeued.append(row.pk)
            if actor:
                audit_record(
                    actor=actor,
                    action="stripe_event.requeue",
                    object_type="stripe_event",
                    object_id=row.stripe_event_id,
                    old=row.status,
                )
    if requeued:
        logger.warning("billing: re-enqueued %d stripe events", len(requeued))
    return requeued


@transaction.atomic
def stripe_event_retry(*, event_row_id: int, actor: str) -> StripeEvent:
    """Staff: hand a FAILED event (also one out of attempts) to a worker again."""
    row = StripeEvent.objects.select_for_update().get(pk=event_row_id)
    if row.status != EventStatus.FAILED:
        raise DomainError(
            f"event {row.stripe_event_id} is {row.status}; only a failed event is retried", code="not_failed"
        )
    old_attempts = row.attempts
    row.attempts = 0
    row.next_attempt_at = None
    row.save(update_fields=["attempts", "next_attempt_at"])
    audit_record(
        actor=actor,
        action="stripe_event.retry",
        object_type="stripe_event",
        object_id=row.stripe_event_id,
        old=old_attempts,
        new=0,
        reason="retried by staff",
    )
    _enqueue_on_commit(row.pk)
    return row
