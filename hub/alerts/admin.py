"""The alert list (SOFT alerts live only here), with the acknowledge action, and the
notifications that announced each opening."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from hub.admin_actions import ReadOnlyAdmin
from hub.alerts.models import Alert, Notification
from hub.alerts.services import alert_acknowledge


class NotificationInline(admin.TabularInline):
    model = Notification
    extra = 0
    can_delete = False
    fields = ("channel", "covers", "status", "attempts", "sent_at", "last_error")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "severity",
        "kind",
        "subject_type",
        "subject_id",
        "status",
        "count",
        "first_seen_at",
        "last_seen_at",
        "acknowledged_by",
        "message",
    )
    list_filter = ("severity", "kind", "status", "subject_type", ("acknowledged_at", admin.EmptyFieldListFilter))
    search_fields = ("subject_id", "message", "kind")
    date_hierarchy = "last_seen_at"
    actions = ("acknowledge",)
    inlines = (NotificationInline,)
    readonly_fields = (
        "subject_type",
        "subject_id",
        "kind",
        "severity",
        "status",
        "message",
        "count",
        "first_seen_at",
        "last_seen_at",
        "resolved_at",
        "acknowledged_by",
        "acknowledged_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Acknowledge the selected alerts")
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        count = alert_acknowledge(
            alert_ids=list(queryset.values_list("id", flat=True)), actor=request.user.get_username()
        )
        self.message_user(request, f"{count} alert(s) acknowledged.", messages.SUCCESS)


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("id", "alert", "covers", "channel", "status", "attempts", "created_at", "sent_at", "last_error")
    list_filter = ("channel", "status")
    list_select_related = ("alert",)
