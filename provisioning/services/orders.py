"""Orders: creating them from a payment, moving their status, and the staff actions
(assign a server to a MANUAL order, retry, cancel)."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from hub.alerts.services import alert_raise
from hub.audit import audit_record, status_move
from hub.db.locks import xact_lock
from hub.errors import DomainError, NotFound
from hub.models import AlertSeverity
from hub.notices.services import customer_notice_queue
from hub.pipeline.models import Job, JobStatus
from hub.pipeline.services import job_cancel, job_retry, job_start
from hub.pipeline.transitions import step_wake
from provisioning import catalog
from provisioning.models import (
    ORDER_FLOW,
    ORDER_IN_FLIGHT_STATUSES,
    ORDER_TERMINAL_STATUSES,
    ORDER_TRANSITIONS,
    Order,
    OrderMode,
    OrderStatus,
    Server,
    ServerStatus,
)
from provisioning.pipeline_names import PROVISION_ORDER
from provisioning.services.pool import server_set_status
from tenants.models import Tenant, TenantStatus

logger = logging.getLogger(__name__)

# The statuses that end an order's first provisioning attempt, and whether it succeeded.
FIRST_ATTEMPT_OUTCOMES: dict[str, bool] = {
    OrderStatus.FULFILLED: True,
    OrderStatus.FAILED: False,
    OrderStatus.ROLLED_BACK: False,
}


def order_set_status(order: Order, new_status: str, *, actor: str = "system", reason: str = "") -> None:
    """Move along the flow, or to an end (ORDER_TRANSITIONS). An order already past the
    status stays where it is, so steps can be re-run."""
    old = order.status
    if new_status in ORDER_FLOW and old in ORDER_FLOW and ORDER_FLOW.index(new_status) < ORDER_FLOW.index(old):
        return
    order.status_changed_at = timezone.now()
    fields = ["status_changed_at"]
    if new_status == OrderStatus.FULFILLED:
        order.fulfilled_at = order.status_changed_at
        fields.append("fulfilled_at")
    if order.first_attempt_succeeded is None and new_status in FIRST_ATTEMPT_OUTCOMES:
        order.first_attempt_succeeded = FIRST_ATTEMPT_OUTCOMES[new_status]
        fields.append("first_attempt_succeeded")
    if reason and new_status in (OrderStatus.FAILED, OrderStatus.ROLLED_BACK, OrderStatus.CANCELLED):
        order.failure_reason = reason[:4000]
        fields.append("failure_reason")
    if new_status in ORDER_TERMINAL_STATUSES and (order.waiting_reason or order.waiting_since):
        # An order that ended waits on nothing any more.
        order.waiting_reason = ""
        order.waiting_since = None
        fields += ["waiting_reason", "waiting_since"]
    status_move(order, new_status, actor=actor, reason=reason, fields=fields, transitions=ORDER_TRANSITIONS)


def domain_taken(domain: str, *, excluding_order: int | None = None) -> bool:
    live_orders = Order.objects.filter(domain=domain, status__in=[*ORDER_IN_FLIGHT_STATUSES, OrderStatus.FULFILLED])
    if excluding_order:
        live_orders = live_orders.exclude(pk=excluding_order)
    return (
        live_orders.exists() or Tenant.objects.filter(domain=domain).exclude(status=TenantStatus.DEPROVISIONED).exists()
    )


def _domain_lock(domain: str) -> None:
    """Held until the caller's transaction ends: two orders for one domain, placed at
    the same moment, are checked one after the other, so only one of them is taken."""
    xact_lock(f"order.domain:{domain}")


@transaction.atomic
def order_create(
    *,
    plan: str,
    region: str,
    domain: str,
    tools: list[str],
    mode: str = OrderMode.AUTO,
    customer_email: str = "",
    stripe_customer_id: str = "",
    stripe_subscription_id: str = "",
    source_event_id: str | None = None,
    actor: str = "system",
) -> Order:
    """A paid order. Valid: PAYMENT_CONFIRMED and its provisioning job starts on
    commit. Invalid: created FAILED with the reason, staff alerted, nothing started.
    The same source event never creates two orders."""
    if source_event_id:
        existing = Order.objects.filter(source_event_id=source_event_id).first()
        if existing is not None:
            return existing
    domain = (domain or "").strip().lower().rstrip(".")
    tools = catalog.parse_tools(tools)
    errors = catalog.validate_order_request(plan, region, domain, tools)
    if not errors:
        _domain_lock(domain)
        if domain_taken(domain):
            errors.append(f"domain {domain} is already taken")
    try:
        with transaction.atomic():
            order = Order.objects.create(
                plan=plan if plan in catalog.PLANS else catalog.DEFAULT_PLAN,
                region=region if region in catalog.REGIONS else "eu",
                domain=domain[:253],
                tools=tools,
                mode=mode,
                customer_email=customer_email,
                stripe_customer_id=stripe_customer_id,
                stripe_subscription_id=stripe_subscription_id,
                source_event_id=source_event_id,
                status=OrderStatus.PAYMENT_CONFIRMED if not errors else OrderStatus.FAILED,
                failure_reason="; ".join(errors),
            )
    except IntegrityError:
        return Order.objects.get(source_event_id=source_event_id)
    audit_record(
        actor=actor,
        action="order.create",
        object_type="order",
        object_id=order.pk,
        new=order.status,
        reason=order.failure_reason,
    )
    if errors:
        alert_raise(
            subject_type="order",
            subject_id=order.pk,
            kind="order_invalid",
            severity=AlertSeverity.MEDIUM,
            message=f"order {order.pk} for {domain!r} refused: {order.failure_reason}",
        )
        return order
    order_start_provisioning(order=order)
    return order


def order_create_from_checkout(
    *,
    plan: str,
    region: str,
    domain: str,
    tools: list[str],
    customer_email: str,
    stripe_customer_id: str,
    stripe_subscription_id: str,
    source_event_id: str,
) -> Order:
    """Billing's entry point: a completed Stripe Checkout Session."""
    return order_create(
        plan=plan,
        region=region,
        domain=domain,
        tools=tools,
        customer_email=customer_email,
        stripe_customer_id=stripe_customer_id,
        stripe_subscription_id=stripe_subscription_id,
        source_event_id=source_event_id,
        actor="stripe",
    )


def order_start_provisioning(*, order: Order) -> Job:
    job = job_start(
        pipeline=PROVISION_ORDER,
        subject_type="order",
        subject_id=order.pk,
        idempotency_key=f"provision-order-{order.pk}",
    )
    order.job = job
    order.save(update_fields=["job", "updated_at"])
    return job


def _locked_order(order_id: int) -> Order:
    order = Order.objects.select_for_update().filter(pk=order_id).first()
    if order is None:
        raise NotFound(f"order {order_id} does not exist")
    return order


@transaction.atomic
def order_assign_server(*, order_id: int, server_id: int, actor: str) -> Order:
    """Staff give a waiting MANUAL order a server; its job goes on at once."""
    order = _locked_order(order_id)
    if not order.can_assign_server():
        raise DomainError(f"order {order.pk} is {order.status}; only an order waiting for a server can get one")
    server = Server.objects.select_for_update().filter(pk=server_id).first()
    if server is None or server.status != ServerStatus.AVAILABLE:
        raise DomainError(f"server {server_id} is not AVAILABLE")
    if (server.region, server.tier) != (order.region, order.plan):
        raise DomainError(
            f"server {server_id} is {server.region}/{server.tier}; the order needs {order.region}/{order.plan}"
        )
    server_set_status(server, ServerStatus.ALLOCATED, actor=actor, reason=f"assigned to order {order.pk}")
    order.server = server
    order.save(update_fields=["server", "updated_at"])
    audit_record(actor=actor, action="order.assign_server", object_type="order", object_id=order.pk, new=server.pk)
    if order.job_id:
        step_wake(job_id=order.job_id, step_name="allocate_server")
    return order


@transaction.atomic
def order_retry(*, order_id: int, actor: str) -> Order:
    order = _locked_order(order_id)
    if order.job_id is None:
        raise DomainError(f"order {order.pk} has no provisioning job to retry")
    job_retry(job_id=order.job_id, actor=actor)
    order.failure_reason = ""
    order.status_changed_at = timezone.now()
    moved = status_move(
        order,
        OrderStatus.PAYMENT_CONFIRMED,
        actor=actor,
        action="order.retry",
        fields=["failure_reason", "status_changed_at"],
        transitions=ORDER_TRANSITIONS,
    )
    if not moved:
        order.save(update_fields=["failure_reason", "status_changed_at", "updated_at"])
    return order


@transaction.atomic
def order_cancel(*, order_id: int, actor: str, reason: str = "cancelled by staff") -> Order:
    order = _locked_order(order_id)
    if not order.can_cancel():
        raise DomainError(f"order {order.pk} is {order.status}; it cannot be cancelled")
    audit_record(
        actor=actor, action="order.cancel", object_type="order", object_id=order.pk, old=order.status, reason=reason
    )
    if order.job_id and Job.objects.filter(pk=order.job_id, status__in=[JobStatus.PENDING, JobStatus.RUNNING]).exists():
        job_cancel(job_id=order.job_id, actor=actor, reason=reason)
    else:
        order_set_status(order, OrderStatus.CANCELLED, actor=actor, reason=reason)
    return order


def order_job_finished(job: Job) -> None:
    """The provisioning job ended (called inside the transaction that ended it)."""
    order = Order.objects.select_for_update().filter(pk=int(job.subject_id)).first()
    if order is None:
        return
    if job.status == JobStatus.SUCCEEDED:
        return  # the last step already made it FULFILLED
    if job.status == JobStatus.CANCELLED:
        order_set_status(order, OrderStatus.CANCELLED, reason=job.error or "cancelled")
    elif job.status == JobStatus.ROLLED_BACK:
        order_set_status(order, OrderStatus.ROLLED_BACK, reason=job.error)
        order_rolled_back_tell(order, job=job)
    else:
        order_set_status(order, OrderStatus.FAILED, reason=job.error or "a compensation failed")
        alert_raise(
            subject_type="order",
            subject_id=order.pk,
            kind="provisioning_rollback_failed",
            severity=AlertSeverity.HARD,
            message=f"order {order.pk} ({order.domain}): rollback incomplete, resources may be left: {job.error}",
        )


def order_rolled_back_tell(order: Order, *, job: Job) -> None:
    """A paid order that rolled back: staff get an alert (counted, not opened again,
    while it is open) and the customer one notice per order (its dedup key). An order
    whose customer was already told why (nameservers never delegated) is not told twice."""
    reason = job.error or "the setup failed"
    alert_raise(
        subject_type="order",
        subject_id=order.pk,
        kind="order_rolled_back",
        severity=AlertSeverity.MEDIUM,
        message=f"order {order.pk} ({order.domain}) rolled back: {reason}"[:2000],
    )
    if order.nameservers_expired_notice_sent_at is not None:
        return
    customer_notice_queue(
        kind="order_rolled_back",
        subject_type="order",
        subject_id=order.pk,
        email=order.customer_email,
        subject=f"We could not set up your server for {order.domain}",
        body=(
            f"We could not finish setting up your server for {order.domain}, so everything prepared\n"
            "for it was removed again and nothing of it keeps running. Our team has been told and\n"
            "will contact you; you do not need to order again. Reply to this email with any question.\n"
        ),
        dedup_key=f"order:{order.pk}:rolled_back",
    )
