"""Stripe customers and subscriptions as the Hub knows them, the webhook inbox, the
notices sent about billing, the staff tasks billing opens, and AI token usage.

Stripe is the source of truth for money; these rows are the Hub's copy, built only
from signed webhook events. Events arrive late, twice and out of order, so every
piece of state that an event carries remembers the version (event `created` and id)
it came from, and an older version never overwrites a newer one."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from hub.outbox import OutboxRow


def event_version(*, created: int, event_id: str) -> str:
    """A total order over Stripe events: by `created` (seconds), ties broken by id, so
    the same set of events ends in the same state whatever order they came in."""
    return f"{created:012d}:{event_id}"


class Customer(models.Model):
    stripe_customer_id = models.CharField(max_length=255, unique=True)
    email = models.EmailField(blank=True, default="")
    email_version = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.email or '?'} ({self.stripe_customer_id})"


class SubscriptionStatus(models.TextChoices):
    """Stripe's own subscription statuses."""

    INCOMPLETE = "incomplete", "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired", "incomplete, expired"
    TRIALING = "trialing", "trialing"
    ACTIVE = "active", "active"
    PAST_DUE = "past_due", "past due"
    UNPAID = "unpaid", "unpaid"
    PAUSED = "paused", "paused"
    CANCELED = "canceled", "canceled"


# The customer owes money: the grace period runs, then the tenant is suspended.
SUBSCRIPTION_DUNNING_STATUSES = (SubscriptionStatus.PAST_DUE, SubscriptionStatus.UNPAID)
SUBSCRIPTION_PAID_STATUSES = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING)
# Stripe never brings a cancelled subscription back: once seen, it stays.
SUBSCRIPTION_TERMINAL_STATUSES = (SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED)


class SuspensionReason(models.TextChoices):
    NONE = "", "not suspended"
    UNPAID = "unpaid", "unpaid past the grace period"
    CANCELED = "canceled", "subscription cancelled"


class Subscription(models.Model):
    stripe_subscription_id = models.CharField(max_length=255, unique=True)
    # Events about a subscription can come before the checkout that names its customer.
    stripe_customer_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="subscriptions"
    )
    # What Stripe says, each with the version of the event it came from.
    status = models.CharField(max_length=20, choices=SubscriptionStatus.choices, default=SubscriptionStatus.INCOMPLETE)
    status_version = models.CharField(max_length=300, blank=True, default="")
    plan = models.CharField(max_length=16, blank=True, default="")
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    details_version = models.CharField(max_length=300, blank=True, default="")
    stripe_updated_at = models.DateTimeField(null=True, blank=True)
    canceled_at = models.DateTimeField(null=True, blank=True)
    # The oldest unpaid failure since the last payment (computed from the inbox, so it
    # is the same whatever order the invoice events came in).
    past_due_since = models.DateTimeField(null=True, blank=True)

    # What was ordered at checkout: the plan the tenant was provisioned with, and the
    # domain that identifies the tenant until provisioning links it.
    domain = models.CharField(max_length=253, blank=True, default="")
    provisioned_plan = models.CharField(max_length=16, blank=True, default="")
    checkout_event_id = models.CharField(max_length=255, blank=True, default="")
    tenant_id = models.BigIntegerField(null=True, blank=True, db_index=True)

    # What the Hub did about it.
    suspension_reason = models.CharField(
        max_length=10, choices=SuspensionReason.choices, blank=True, default=SuspensionReason.NONE
    )
    suspended_at = models.DateTimeField(null=True, blank=True)
    deprovision_due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    deprovision_started_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["past_due_since"],
                name="subscription_dunning",
                condition=Q(status__in=["past_due", "unpaid"], suspended_at=None),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.stripe_subscription_id} {self.plan or '?'} ({self.status})"

    @property
    def is_suspended(self) -> bool:
        return self.suspended_at is not None

    def can_suspend_for_nonpayment(self) -> bool:
        return self.status in SUBSCRIPTION_DUNNING_STATUSES and not self.is_suspended

    def can_resume(self) -> bool:
        return (
            self.suspension_reason == SuspensionReason.UNPAID
            and self.status in SUBSCRIPTION_PAID_STATUSES
            and self.deprovision_started_at is None
        )

    def can_start_deprovisioning(self) -> bool:
        return (
            self.status in SUBSCRIPTION_TERMINAL_STATUSES
            and self.deprovision_due_at is not None
            and self.deprovision_started_at is None
        )


class EventStatus(models.TextChoices):
    RECEIVED = "RECEIVED", "received"
    HANDLER_STARTED = "HANDLER_STARTED", "handler started"
    SUCCEEDED = "SUCCEEDED", "succeeded"
    FAILED = "FAILED", "failed"
    IGNORED = "IGNORED", "ignored"


EVENT_CLAIMABLE_STATUSES = (EventStatus.RECEIVED, EventStatus.FAILED)
EVENT_TERMINAL_STATUSES = (EventStatus.SUCCEEDED, EventStatus.IGNORED)


class StripeEvent(models.Model):
    """The webhook inbox: one row per Stripe event id, stored before it is handled."""

    stripe_event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    created = models.BigIntegerField(help_text="Stripe's `created` (unix seconds)")
    livemode = models.BooleanField(default=False)
    # The subscription the event is about, for the per-subscription reads of dunning.
    subscription_ref = models.CharField(max_length=255, blank=True, default="", db_index=True)
    payload = models.JSONField()
    status = models.CharField(max_length=20, choices=EventStatus.choices, default=EventStatus.RECEIVED)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    outcome = models.TextField(blank=True, default="", help_text="what the handler did")
    received_at = models.DateTimeField(auto_now_add=True)
    handler_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["received_at"],
                name="stripe_event_unfinished",
                condition=Q(status__in=["RECEIVED", "HANDLER_STARTED", "FAILED"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.stripe_event_id} ({self.status})"

    @property
    def version(self) -> str:
        return event_version(created=self.created, event_id=self.stripe_event_id)

    def can_claim(self, *, max_attempts: int) -> bool:
        return self.status in EVENT_CLAIMABLE_STATUSES and self.attempts < max_attempts


class NoticeAudience(models.TextChoices):
    CUSTOMER = "customer", "customer"
    STAFF = "staff", "staff"


class Notice(OutboxRow):
    """An email about billing, sent once: the dedup key says which occasion it is for."""

    kind = models.CharField(max_length=50, db_index=True)
    audience = models.CharField(max_length=10, choices=NoticeAudience.choices)
    recipient = models.CharField(max_length=1000)
    subject = models.CharField(max_length=200)
    body = models.TextField()
    dedup_key = models.CharField(max_length=300, unique=True)

    def __str__(self) -> str:
        return f"{self.kind} to {self.audience} ({self.status})"


class StaffTaskStatus(models.TextChoices):
    OPEN = "OPEN", "open"
    DONE = "DONE", "done"


class StaffTask(models.Model):
    """Work billing leaves to a person, e.g. moving a tenant to another tier."""

    kind = models.CharField(max_length=50)
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="staff_tasks")
    title = models.CharField(max_length=200)
    details = models.JSONField(default=dict, blank=True)
    dedup_key = models.CharField(max_length=300, unique=True)
    status = models.CharField(max_length=10, choices=StaffTaskStatus.choices, default=StaffTaskStatus.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)
    done_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.title} ({self.status})"

    def can_complete(self) -> bool:
        return self.status == StaffTaskStatus.OPEN


class UsagePeriod(models.Model):
    """A tenant's AI token usage in one billing period (YYYY-MM), summed from the
    agents' reports, with the thresholds already announced and the overage already
    handed to Stripe."""

    tenant_id = models.BigIntegerField()
    period = models.CharField(max_length=7)
    subscription = models.ForeignKey(
        Subscription, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_periods"
    )
    token_pool = models.BigIntegerField()
    tokens_used = models.BigIntegerField(default=0)
    highest_threshold_notified = models.PositiveSmallIntegerField(default=0)
    overage_metered = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-period", "tenant_id"]
        constraints = [models.UniqueConstraint(fields=["tenant_id", "period"], name="usage_period_once")]

    def __str__(self) -> str:
        return f"usage {self.tenant_id} {self.period}: {self.tokens_used}/{self.token_pool}"

    @property
    def overage(self) -> int:
        return max(0, self.tokens_used - self.token_pool)


class MeterReport(OutboxRow):
    """An outbox row for one Stripe meter event: written in the same transaction that
    counts the overage, sent afterwards with its identifier as Stripe's idempotency
    key, so a retry never bills the same tokens twice."""

    usage_period = models.ForeignKey(UsagePeriod, on_delete=models.PROTECT, related_name="meter_reports")
    stripe_customer_id = models.CharField(max_length=255)
    identifier = models.CharField(max_length=100, unique=True)
    value = models.BigIntegerField()
    timestamp = models.BigIntegerField()

    def __str__(self) -> str:
        return f"meter {self.identifier} {self.value} ({self.status})"
