"""Customers and subscriptions: applying what Stripe events say, and what the Hub does
when a subscription's state changes (notices, suspension, resumption, staff tasks).

Order independence: each field group keeps the version of the event it came from and
takes a newer version only; a cancelled subscription stays cancelled (Stripe never
revives one), whatever order its events arrive in. The consequences are derived from
the resulting state, so a late old event changes nothing and triggers nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone

from billing import ports
from billing.models import (
    SUBSCRIPTION_DUNNING_STATUSES,
    SUBSCRIPTION_PAID_STATUSES,
    SUBSCRIPTION_TERMINAL_STATUSES,
    Customer,
    StaffTask,
    StaffTaskStatus,
    StripeEvent,
    Subscription,
    SuspensionReason,
)
from billing.services.notices import notice_to_customer, notice_to_staff
from hub.audit import audit_record
from hub.errors import DomainError

logger = logging.getLogger(__name__)

ACTOR = "billing"
UNSET = object()


def _version_created(version: str) -> datetime:
    return datetime.fromtimestamp(int(version.split(":", 1)[0]), tz=UTC)


@transaction.atomic
def customer_upsert(*, stripe_customer_id: str, email: str, version: str) -> Customer:
    customer, _ = Customer.objects.get_or_create(stripe_customer_id=stripe_customer_id)
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    if email and version > customer.email_version and email != customer.email:
        audit_record(
            actor=ACTOR,
            action="customer.email",
            object_type="customer",
            object_id=customer.pk,
            old=customer.email,
            new=email,
        )
        customer.email = email
        customer.email_version = version
        customer.save(update_fields=["email", "email_version", "updated_at"])
    return customer


def _locked_subscription(stripe_subscription_id: str) -> Subscription:
    subscription, _ = Subscription.objects.get_or_create(stripe_subscription_id=stripe_subscription_id)
    return Subscription.objects.select_for_update().get(pk=subscription.pk)


@dataclass(frozen=True)
class SubscriptionState:
    """What one event says about a subscription; None means "this event doesn't say"."""

    version: str
    status: str | None = None
    plan: str | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool | None = None
    canceled_at: datetime | None = None
    # Subscription objects carry all details; invoices and sessions only some.
    carries_details: bool = False


@dataclass
class Applied:
    subscription: Subscription
    status_applied: bool = False
    details_applied: bool = False
    old_status: str = ""


@transaction.atomic
def subscription_apply_state(
    *, stripe_subscription_id: str, stripe_customer_id: str, state: SubscriptionState
) -> Applied:
    """Record what an event says, where it is newer than what is recorded, then act on
    the subscription's resulting state."""
    subscription = _locked_subscription(stripe_subscription_id)
    applied = Applied(subscription=subscription, old_status=subscription.status)
    fields: set[str] = set()

    if stripe_customer_id and not subscription.stripe_customer_id:
        subscription.stripe_customer_id = stripe_customer_id
        fields.add("stripe_customer_id")
    if subscription.customer_id is None and subscription.stripe_customer_id:
        customer = Customer.objects.filter(stripe_customer_id=subscription.stripe_customer_id).first()
        if customer is not None:
            subscription.customer = customer
            fields.add("customer")
    customer_linked = "customer" in fields

    if state.status is not None and _status_wins(subscription, state):
        if state.status != subscription.status:
            applied.status_applied = True
            subscription.status = state.status
        subscription.status_version = max(subscription.status_version, state.version)
        fields |= {"status", "status_version"}

    if state.carries_details and state.version > subscription.details_version:
        applied.details_applied = True
        if state.plan:
            subscription.plan = state.plan
        subscription.current_period_start = state.current_period_start or subscription.current_period_start
        subscription.current_period_end = state.current_period_end or subscription.current_period_end
        if state.cancel_at_period_end is not None:
            subscription.cancel_at_period_end = state.cancel_at_period_end
        subscription.details_version = state.version
        fields |= {"plan", "current_period_start", "current_period_end", "cancel_at_period_end", "details_version"}
    elif state.plan and not subscription.plan:
        subscription.plan = state.plan
        fields.add("plan")

    if state.canceled_at and (subscription.canceled_at is None or state.canceled_at < subscription.canceled_at):
        subscription.canceled_at = state.canceled_at
        fields.add("canceled_at")
    created = _version_created(state.version)
    if subscription.stripe_updated_at is None or created > subscription.stripe_updated_at:
        subscription.stripe_updated_at = created
        fields.add("stripe_updated_at")

    if fields:
        subscription.save(update_fields=[*sorted(fields), "updated_at"])
    if applied.status_applied:
        audit_record(
            actor=ACTOR,
            action="subscription.status",
            object_type="subscription",
            object_id=subscription.pk,
            old=applied.old_status,
            new=subscription.status,
            reason=f"stripe event version {state.version}",
        )
    subscription_reconcile(subscription=subscription, customer_linked=customer_linked)
    return applied


def _status_wins(subscription: Subscription, state: SubscriptionState) -> bool:
    current_terminal = subscription.status in SUBSCRIPTION_TERMINAL_STATUSES
    new_terminal = state.status in SUBSCRIPTION_TERMINAL_STATUSES
    if current_terminal and not new_terminal:
        return False
    if new_terminal and not current_terminal:
        return True
    return state.version > subscription.status_version


@transaction.atomic
def subscription_record_checkout(
    *, stripe_subscription_id: str, stripe_customer_id: str, plan: str, domain: str, checkout_event_id: str
) -> Subscription:
    """What the checkout ordered: the domain that names the tenant and the plan it is
    provisioned with (a later tier change is compared with it)."""
    subscription = _locked_subscription(stripe_subscription_id)
    fields: list[str] = []
    if not subscription.checkout_event_id:
        subscription.checkout_event_id = checkout_event_id
        subscription.domain = domain[:253]
        subscription.provisioned_plan = plan
        fields += ["checkout_event_id", "domain", "provisioned_plan"]
    if stripe_customer_id and not subscription.stripe_customer_id:
        subscription.stripe_customer_id = stripe_customer_id
        fields.append("stripe_customer_id")
    customer_linked = False
    if subscription.customer_id is None:
        subscription.customer = Customer.objects.filter(stripe_customer_id=stripe_customer_id).first()
        fields.append("customer")
        customer_linked = subscription.customer is not None
    if fields:
        subscription.save(update_fields=[*fields, "updated_at"])
    subscription_reconcile(subscription=subscription, customer_linked=customer_linked)
    return subscription


def _past_due_since(subscription: Subscription) -> datetime | None:
    """The first payment failure since the last payment, from the inbox: the same
    answer whatever order the invoice events were handled in."""
    if subscription.status not in SUBSCRIPTION_DUNNING_STATUSES:
        return None
    events = StripeEvent.objects.filter(subscription_ref=subscription.stripe_subscription_id)
    last_paid = events.filter(type="invoice.paid").aggregate(last=Max("created"))["last"]
    failures = events.filter(type="invoice.payment_failed")
    if last_paid is not None:
        failures = failures.filter(created__gt=last_paid)
    first_failure = failures.aggregate(first=Min("created"))["first"]
    if first_failure is not None:
        return datetime.fromtimestamp(first_failure, tz=UTC)
    return _version_created(subscription.status_version) if subscription.status_version else timezone.now()


def subscription_reconcile(*, subscription: Subscription, customer_linked: bool = False) -> None:
    """Bring what the Hub did in line with the subscription's state. Called with the
    row locked after every change; each action is idempotent and each notice is
    keyed, so calling it again does nothing new. `customer_linked`: the customer (and
    so their address) was just found, after notices they should have had."""
    past_due_since = _past_due_since(subscription)
    if past_due_since != subscription.past_due_since:
        # A new episode is told once; an older failure arriving late only moves its
        # start (telling it again would be a second notice for the same failure).
        new_episode = subscription.past_due_since is None
        subscription.past_due_since = past_due_since
        subscription.save(update_fields=["past_due_since", "updated_at"])
        if past_due_since is not None and new_episode:
            _notify_past_due(subscription)

    if subscription.status in SUBSCRIPTION_TERMINAL_STATUSES:
        if subscription.deprovision_due_at is None:
            _suspend_for_cancellation(subscription)
        elif subscription.deprovision_started_at is None and subscription.deprovision_due_at != _deprovision_due(
            subscription
        ):
            # An older event brought an earlier cancellation time.
            subscription.deprovision_due_at = _deprovision_due(subscription)
            subscription.save(update_fields=["deprovision_due_at", "updated_at"])
    elif subscription.status in SUBSCRIPTION_PAID_STATUSES and subscription.can_resume():
        subscription_resume(subscription=subscription)

    if (
        subscription.plan
        and subscription.provisioned_plan
        and subscription.plan != subscription.provisioned_plan
        and subscription.status not in SUBSCRIPTION_TERMINAL_STATUSES
    ):
        _open_tier_change_task(subscription)
    if customer_linked:
        _notify_customer_catch_up(subscription)


def _notify_customer_catch_up(subscription: Subscription) -> None:
    """Events about a subscription can be handled before its checkout names the
    customer; the notices the customer could not get then (no address) are sent now,
    for what is still the case. Their keys are those of the first attempt, so a notice
    already sent is not sent twice."""
    if subscription.past_due_since is not None:
        _notify_past_due(subscription, staff=False)
    if subscription.status in SUBSCRIPTION_TERMINAL_STATUSES and subscription.deprovision_due_at is not None:
        _notify_cancelled(subscription, staff=False)
    elif subscription.suspension_reason == SuspensionReason.UNPAID and subscription.past_due_since is not None:
        _notify_suspended_unpaid(subscription, staff=False)


def _customer_email(subscription: Subscription) -> str:
    if subscription.customer_id is None:
        return ""
    return Customer.objects.filter(pk=subscription.customer_id).values_list("email", flat=True).first() or ""


def _label(subscription: Subscription) -> str:
    return subscription.domain or subscription.stripe_subscription_id


def _notify_past_due(subscription: Subscription, *, staff: bool = True) -> None:
    assert subscription.past_due_since is not None
    key = f"past_due:{subscription.stripe_subscription_id}:{int(subscription.past_due_since.timestamp())}"
    grace = settings.BILLING_GRACE_PERIOD_DAYS
    suspend_on = subscription.past_due_since + timedelta(days=grace)
    notice_to_customer(
        kind="payment_failed",
        email=_customer_email(subscription),
        subject=f"Payment failed for {_label(subscription)}",
        body=(
            f"We could not collect the payment for your {subscription.plan or ''} plan ({_label(subscription)}).\n"
            f"Please update your payment method. Unless the invoice is paid by {suspend_on:%Y-%m-%d}, "
            "the service will be suspended."
        ),
        dedup_key=key,
    )
    if not staff:
        return
    notice_to_staff(
        kind="payment_failed",
        subject=f"payment failed: {_label(subscription)}",
        body=(
            f"Subscription {subscription.stripe_subscription_id} ({_label(subscription)}) is {subscription.status} "
            f"since {subscription.past_due_since:%Y-%m-%d %H:%M} UTC; suspension after {grace} days."
        ),
        dedup_key=key,
    )


def _open_tier_change_task(subscription: Subscription) -> None:
    old, new = subscription.provisioned_plan, subscription.plan
    task, created = StaffTask.objects.get_or_create(
        dedup_key=f"tier_change:{subscription.stripe_subscription_id}:{old}->{new}",
        defaults={
            "kind": "tier_change",
            "subscription": subscription,
            "title": f"Move {_label(subscription)} from {old} to {new}",
            "details": {"from": old, "to": new, "stripe_subscription_id": subscription.stripe_subscription_id},
        },
    )
    if created:
        audit_record(
            actor=ACTOR,
            action="staff_task.open",
            object_type="subscription",
            object_id=subscription.pk,
            old=old,
            new=new,
            reason="tier change",
        )
        notice_to_staff(
            kind="tier_change",
            subject=task.title,
            body=f"The customer changed the plan of {_label(subscription)} from {old} to {new} in Stripe. "
            "Move the tenant to a server of the new tier, then mark the task done in the admin.",
            dedup_key=task.dedup_key,
        )


def _tenant_id(subscription: Subscription) -> int | None:
    if subscription.tenant_id is None:
        tenant_id = ports.tenant_for_subscription(
            stripe_subscription_id=subscription.stripe_subscription_id, domain=subscription.domain
        )
        if tenant_id is not None:
            subscription.tenant_id = tenant_id
            subscription.save(update_fields=["tenant_id", "updated_at"])
    return subscription.tenant_id


def _suspend(subscription: Subscription, *, reason: str, why: str) -> None:
    old = subscription.suspension_reason
    already = subscription.is_suspended
    subscription.suspension_reason = reason
    fields = ["suspension_reason", "updated_at"]
    if not already:
        subscription.suspended_at = timezone.now()
        fields.append("suspended_at")
        tenant_id = _tenant_id(subscription)
        if tenant_id is not None:
            ports.tenant_suspend(tenant_id=tenant_id, reason=why)
        else:
            logger.warning("subscription %s suspended with no tenant yet", subscription.stripe_subscription_id)
    subscription.save(update_fields=fields)
    audit_record(
        actor=ACTOR,
        action="subscription.suspend",
        object_type="subscription",
        object_id=subscription.pk,
        old=old or None,
        new=reason,
        reason=why,
    )


def _deprovision_due(subscription: Subscription) -> datetime:
    ended = subscription.canceled_at or _version_created(subscription.status_version or "0:")
    return ended + timedelta(days=settings.BILLING_RETENTION_DAYS)


def _suspend_for_cancellation(subscription: Subscription) -> None:
    _suspend(subscription, reason=SuspensionReason.CANCELED, why="subscription cancelled")
    subscription.deprovision_due_at = _deprovision_due(subscription)
    subscription.save(update_fields=["deprovision_due_at", "updated_at"])
    _notify_cancelled(subscription)


def _notify_cancelled(subscription: Subscription, *, staff: bool = True) -> None:
    assert subscription.deprovision_due_at is not None
    key = f"canceled:{subscription.stripe_subscription_id}"
    notice_to_customer(
        kind="subscription_canceled",
        email=_customer_email(subscription),
        subject=f"Your subscription for {_label(subscription)} has ended",
        body=(
            f"Your service {_label(subscription)} is suspended. Your data is kept until "
            f"{subscription.deprovision_due_at:%Y-%m-%d}; after that the server is wiped."
        ),
        dedup_key=key,
    )
    if not staff:
        return
    notice_to_staff(
        kind="subscription_canceled",
        subject=f"subscription cancelled: {_label(subscription)}",
        body=f"Tenant suspended; deprovisioning after {subscription.deprovision_due_at:%Y-%m-%d %H:%M} UTC.",
        dedup_key=key,
    )


@transaction.atomic
def subscription_suspend_for_nonpayment(*, subscription_id: int) -> bool:
    """Suspend the tenant of a subscription unpaid past the grace period (dunning)."""
    subscription = Subscription.objects.select_for_update().get(pk=subscription_id)
    cutoff = timezone.now() - timedelta(days=settings.BILLING_GRACE_PERIOD_DAYS)
    if (
        not subscription.can_suspend_for_nonpayment()
        or subscription.past_due_since is None
        or subscription.past_due_since > cutoff
    ):
        return False
    _suspend(subscription, reason=SuspensionReason.UNPAID, why="unpaid past the grace period")
    _notify_suspended_unpaid(subscription)
    return True


def _notify_suspended_unpaid(subscription: Subscription, *, staff: bool = True) -> None:
    assert subscription.past_due_since is not None
    key = f"suspended:{subscription.stripe_subscription_id}:{int(subscription.past_due_since.timestamp())}"
    notice_to_customer(
        kind="suspended",
        email=_customer_email(subscription),
        subject=f"{_label(subscription)} is suspended",
        body="Your service is suspended because the invoice is unpaid. Paying it resumes the service at once.",
        dedup_key=key,
    )
    if not staff:
        return
    notice_to_staff(
        kind="suspended",
        subject=f"suspended for non-payment: {_label(subscription)}",
        body=f"Unpaid since {subscription.past_due_since:%Y-%m-%d %H:%M} UTC.",
        dedup_key=key,
    )


def subscription_resume(*, subscription: Subscription) -> None:
    """Resume a tenant suspended for non-payment (the row is locked by the caller)."""
    if not subscription.can_resume():
        raise DomainError(f"subscription {subscription.pk} cannot be resumed", code="not_resumable")
    suspended_at = subscription.suspended_at
    tenant_id = _tenant_id(subscription)
    if tenant_id is not None:
        ports.tenant_resume(tenant_id=tenant_id, reason="invoice paid")
    subscription.suspended_at = None
    subscription.suspension_reason = SuspensionReason.NONE
    subscription.save(update_fields=["suspended_at", "suspension_reason", "updated_at"])
    audit_record(
        actor=ACTOR,
        action="subscription.resume",
        object_type="subscription",
        object_id=subscription.pk,
        old=SuspensionReason.UNPAID,
        new=None,
        reason="invoice paid",
    )
    stamp = int(suspended_at.timestamp()) if suspended_at else 0
    notice_to_customer(
        kind="resumed",
        email=_customer_email(subscription),
        subject=f"{_label(subscription)} is running again",
        body="Thank you for your payment: your service is resumed.",
        dedup_key=f"resumed:{subscription.stripe_subscription_id}:{stamp}",
    )


@transaction.atomic
def subscription_deprovision(*, subscription_id: int) -> bool:
    """After the retention period: once a backup taken after the suspension is confirmed,
    start the deprovisioning job; until then, tell staff (once) and try again later."""
    subscription = Subscription.objects.select_for_update().get(pk=subscription_id)
    now = timezone.now()
    if not subscription.can_start_deprovisioning() or subscription.deprovision_due_at > now:  # type: ignore[operator]
        return False
    tenant_id = _tenant_id(subscription)
    if tenant_id is not None:
        since = subscription.suspended_at or subscription.deprovision_due_at
        if not ports.tenant_final_backup_confirmed(tenant_id=tenant_id, since=since):  # type: ignore[arg-type]
            notice_to_staff(
                kind="final_backup_missing",
                subject=f"no final backup for {_label(subscription)}",
                body=(
                    f"The retention period of {_label(subscription)} (tenant {tenant_id}) is over, but no successful, "
                    "off-site backup since its suspension is on record. Deprovisioning waits until one is."
                ),
                dedup_key=f"final_backup_missing:{subscription.stripe_subscription_id}",
            )
            return False
        ports.tenant_deprovision_start(tenant_id=tenant_id, reason="subscription cancelled; retention period over")
    subscription.deprovision_started_at = now
    subscription.save(update_fields=["deprovision_started_at", "updated_at"])
    audit_record(
        actor=ACTOR,
        action="subscription.deprovision",
        object_type="subscription",
        object_id=subscription.pk,
        new=tenant_id,
        reason="retention period over" if tenant_id else "retention period over; no tenant",
    )
    return True


@transaction.atomic
def staff_task_complete(*, task_id: int, actor: str) -> StaffTask:
    """Staff moved the tenant to the new tier: the subscription's provisioned plan
    follows, so the same change does not open the task again."""
    task = StaffTask.objects.select_for_update().get(pk=task_id)
    if not task.can_complete():
        raise DomainError(f"task {task_id} is already done", code="task_done")
    task.status = StaffTaskStatus.DONE
    task.done_at = timezone.now()
    task.done_by = actor
    task.save(update_fields=["status", "done_at", "done_by"])
    audit_record(
        actor=actor,
        action="staff_task.complete",
        object_type="staff_task",
        object_id=task.pk,
        old=StaffTaskStatus.OPEN,
        new=StaffTaskStatus.DONE,
        reason=task.title,
    )
    if task.kind == "tier_change":
        subscription = Subscription.objects.select_for_update().get(pk=task.subscription_id)
        old = subscription.provisioned_plan
        subscription.provisioned_plan = task.details.get("to", subscription.plan)
        subscription.save(update_fields=["provisioned_plan", "updated_at"])
        audit_record(
            actor=actor,
            action="subscription.provisioned_plan",
            object_type="subscription",
            object_id=subscription.pk,
            old=old,
            new=subscription.provisioned_plan,
            reason=f"staff task {task.pk} done",
        )
    return task


@transaction.atomic
def subscription_suspension_catch_up(*, subscription_id: int) -> bool:
    """A subscription suspended before its tenant existed (or was linked): suspend the
    tenant now that it can be found."""
    subscription = Subscription.objects.select_for_update().get(pk=subscription_id)
    if not subscription.is_suspended or subscription.tenant_id is not None or subscription.deprovision_started_at:
        return False
    tenant_id = _tenant_id(subscription)
    if tenant_id is None:
        return False
    ports.tenant_suspend(tenant_id=tenant_id, reason=f"billing: {subscription.get_suspension_reason_display()}")
    audit_record(
        actor=ACTOR,
        action="subscription.suspend",
        object_type="subscription",
        object_id=subscription.pk,
        new=subscription.suspension_reason,
        reason=f"tenant {tenant_id} found after the suspension",
    )
    return True
