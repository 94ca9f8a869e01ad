"""Billing in the admin: read-only views of what Stripe told the Hub (changes go
through Stripe and its webhooks), plus staff actions that call the services. No
secret is shown: events hold no keys, and the webhook secret lives in settings."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.models import Customer, MeterReport, Notice, StaffTask, StripeEvent, Subscription, UsagePeriod
from billing.services.events import stripe_event_retry, stripe_events_requeue
from billing.services.subscriptions import staff_task_complete
from hub.errors import DomainError


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Customer)
class CustomerAdmin(ReadOnlyAdmin):
    list_display = ["id", "email", "stripe_customer_id", "created_at"]
    search_fields = ["email", "=stripe_customer_id"]


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "stripe_subscription_id",
        "domain",
        "plan",
        "status",
        "current_period_end",
        "past_due_since",
        "suspension_reason",
        "deprovision_due_at",
        "tenant_id",
    ]
    list_filter = ["status", "plan", "suspension_reason"]
    search_fields = ["=stripe_subscription_id", "=stripe_customer_id", "domain", "customer__email"]
    list_select_related = ["customer"]


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "stripe_event_id", "type", "status", "attempts", "subscription_ref", "received_at"]
    list_filter = ["status", "type"]
    search_fields = ["=stripe_event_id", "=subscription_ref"]
    actions = ["retry_events", "requeue_events"]

    @admin.action(description="Retry the selected failed events (attempts start again)")
    def retry_events(self, request: HttpRequest, queryset: QuerySet[StripeEvent]) -> None:
        retried = 0
        for event_row_id in queryset.values_list("id", flat=True):
            try:
                stripe_event_retry(event_row_id=event_row_id, actor=request.user.get_username())
                retried += 1
            except DomainError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"{retried} events handed to a worker again.", messages.SUCCESS)

    @admin.action(description="Sweep now: re-enqueue every lost, stuck or due event")
    def requeue_events(self, request: HttpRequest, queryset: QuerySet[StripeEvent]) -> None:
        requeued = stripe_events_requeue(actor=request.user.get_username())
        self.message_user(request, f"{len(requeued)} events re-enqueued.", messages.SUCCESS)


@admin.register(Notice)
class NoticeAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "audience", "recipient", "status", "attempts", "created_at", "sent_at"]
    list_filter = ["status", "kind", "audience"]
    search_fields = ["recipient", "dedup_key"]


@admin.register(StaffTask)
class StaffTaskAdmin(ReadOnlyAdmin):
    list_display = ["id", "title", "kind", "status", "created_at", "done_at", "done_by"]
    list_filter = ["status", "kind"]
    actions = ["complete_tasks"]

    @admin.action(description="Mark done (the tenant was moved)")
    def complete_tasks(self, request: HttpRequest, queryset: QuerySet[StaffTask]) -> None:
        done = 0
        for task_id in queryset.values_list("id", flat=True):
            try:
                staff_task_complete(task_id=task_id, actor=request.user.get_username())
                done += 1
            except DomainError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"{done} tasks done.", messages.SUCCESS)


@admin.register(UsagePeriod)
class UsagePeriodAdmin(ReadOnlyAdmin):
    list_display = ["id", "tenant_id", "period", "tokens_used", "token_pool", "highest_threshold_notified"]
    list_filter = ["period"]
    search_fields = ["=tenant_id"]


@admin.register(MeterReport)
class MeterReportAdmin(ReadOnlyAdmin):
    list_display = ["id", "identifier", "stripe_customer_id", "value", "status", "attempts", "sent_at"]
    list_filter = ["status"]
