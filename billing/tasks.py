"""Billing's Celery tasks (queue `billing`). Each takes ids, calls one service and is
safe to run twice: the services claim their rows in the database first."""

from __future__ import annotations

from celery import shared_task

from billing.services.dunning import dunning_enforce
from billing.services.events import PROCESS_EVENT, stripe_event_process
from billing.services.notices import SEND_NOTICE, notice_send
from billing.services.requeue import billing_requeue
from billing.services.usage import SEND_METER_REPORT, meter_report_send, usage_evaluate, usage_sweep


@shared_task(name=PROCESS_EVENT, ignore_result=True)
def process_stripe_event(event_row_id: int) -> None:
    stripe_event_process(event_row_id=event_row_id)


@shared_task(name=SEND_NOTICE, ignore_result=True)
def send_notice(notice_id: int) -> None:
    notice_send(notice_id=notice_id)


@shared_task(name=SEND_METER_REPORT, ignore_result=True)
def send_meter_report(meter_report_id: int) -> None:
    meter_report_send(meter_report_id=meter_report_id)


@shared_task(name="billing.evaluate_usage", ignore_result=True)
def evaluate_usage(tenant_id: int, period: str) -> None:
    """Enqueued by the agents' usage endpoint after it stores a report."""
    usage_evaluate(tenant_id=tenant_id, period=period)


@shared_task(name="billing.sweep_usage", ignore_result=True)
def sweep_usage() -> None:
    usage_sweep()


@shared_task(name="billing.enforce_dunning", ignore_result=True)
def enforce_dunning() -> None:
    dunning_enforce()


@shared_task(name="billing.requeue", ignore_result=True)
def requeue() -> None:
    billing_requeue()
