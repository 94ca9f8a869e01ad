from typing import cast

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse

from hub.admin_actions import ReadOnlyAdmin
from hub.errors import DomainError
from hub.pipeline.models import JOB_ACTIVE_STATUSES
from hub.pipeline.selectors import step_timeline
from provisioning.models import Order, OrderStatus, PoolPurchase, Server, ServerStatus, Snapshot, TenantMove
from provisioning.services.dns import WAITING_FOR_NAMESERVERS
from provisioning.services.moves import overflow_report
from provisioning.services.orders import order_assign_server, order_cancel, order_retry
from provisioning.services.pool import server_prepare_again, server_quarantine, server_release_to_pool
from tenants.admin import TenantAdmin

TIMELINE_LOG_TAIL = 4000


def order_timeline(order: Order) -> dict[str, object]:
    """The order's status and its job's steps, as the order page polls them."""
    job = order.job
    steps = step_timeline(job_id=order.job_id)
    return {
        "order": {
            "id": order.pk,
            "status": order.status,
            "terminal": order.is_terminal,
            "waiting_reason": order.waiting_reason,
        },
        "job": {"id": job.pk, "status": job.status, "active": job.status in JOB_ACTIVE_STATUSES, "error": job.error}
        if job
        else None,
        "steps": [
            {
                "position": step.position,
                "name": step.name,
                "kind": step.kind,
                "status": step.status,
                "attempts": step.attempts,
                "max_attempts": step.max_attempts,
                "started_at": step.started_at.isoformat() if step.started_at else None,
                "duration_seconds": step.duration_seconds,
                "next_run_at": step.next_run_at.isoformat() if step.next_run_at else None,
                "error": step.error[-2000:],
                "log_tail": step.log[-TIMELINE_LOG_TAIL:],
            }
            for step in steps
        ],
    }


class AssignServerForm(forms.Form):
    server = forms.ModelChoiceField(queryset=Server.objects.none())

    def __init__(self, *args, order: Order, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # `fields` is typed as plain Fields; "server" is the ModelChoiceField declared above.
        cast(forms.ModelChoiceField, self.fields["server"]).queryset = Server.objects.filter(
            status=ServerStatus.AVAILABLE, region=order.region, tier=order.plan
        )


class WaitingFilter(admin.SimpleListFilter):
    title = "waiting on"
    parameter_name = "waiting"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("nameservers", "the customer's nameservers"), ("anything", "anything outside the Hub")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Order]) -> QuerySet[Order]:
        if self.value() == "nameservers":
            return queryset.filter(waiting_reason=WAITING_FOR_NAMESERVERS)
        if self.value() == "anything":
            return queryset.exclude(waiting_reason="")
        return queryset


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "domain",
        "status",
        "waiting_reason",
        "plan",
        "region",
        "mode",
        "server",
        "created_at",
        "fulfilled_at",
    ]
    list_filter = ["status", WaitingFilter, "plan", "region", "mode"]
    search_fields = ["=id", "domain", "customer_email", "stripe_subscription_id"]
    actions = ["retry_orders", "cancel_orders"]
    readonly_fields = [
        "status",
        "mode",
        "plan",
        "region",
        "domain",
        "tools",
        "customer_email",
        "stripe_customer_id",
        "stripe_subscription_id",
        "server",
        "tenant",
        "job",
        "failure_reason",
        "waiting_reason",
        "waiting_since",
        "dns_zone_name",
        "dns_zone_id",
        "dns_zone_created",
        "dns_nameservers",
        "nameservers_notice_sent_at",
        "nameservers_expired_notice_sent_at",
        "welcome_sent_at",
        "created_at",
        "status_changed_at",
        "fulfilled_at",
    ]
    exclude = ["source_event_id"]
    change_form_template = "admin/provisioning/order/change_form.html"
    list_select_related = ["server"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Order | None = None) -> bool:
        return False

    def _each(self, request: HttpRequest, queryset: QuerySet[Order], operation, verb: str) -> None:
        done = 0
        for order in queryset:
            try:
                operation(order_id=order.pk, actor=request.user.get_username())
                done += 1
            except DomainError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if done:
            self.message_user(request, f"{verb} {done} order(s).", messages.SUCCESS)

    @admin.action(description="Retry from the failed step")
    def retry_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        self._each(request, queryset, order_retry, "Retried")

    @admin.action(description="Cancel (and roll back)")
    def cancel_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        self._each(request, queryset, order_cancel, "Cancelled")

    def get_urls(self):
        return [
            path(
                "<int:pk>/assign-server/",
                self.admin_site.admin_view(self.assign_server_view),
                name="provisioning_order_assign_server",
            ),
            path(
                "<int:pk>/timeline.json",
                self.admin_site.admin_view(self.timeline_view),
                name="provisioning_order_timeline",
            ),
            path("<int:pk>/retry/", self.admin_site.admin_view(self.retry_view), name="provisioning_order_retry"),
            path("<int:pk>/cancel/", self.admin_site.admin_view(self.cancel_view), name="provisioning_order_cancel"),
            *super().get_urls(),
        ]

    def assign_server_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        order = get_object_or_404(Order, pk=pk)
        form = AssignServerForm(request.POST or None, order=order)
        if request.method == "POST" and form.is_valid():
            try:
                order_assign_server(
                    order_id=order.pk, server_id=form.cleaned_data["server"].pk, actor=request.user.get_username()
                )
                self.message_user(request, f"Server assigned to order {order.pk}.", messages.SUCCESS)
            except DomainError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:provisioning_order_change", args=[order.pk]))
        context = {
            **self.admin_site.each_context(request),
            "order": order,
            "form": form,
            "title": f"Assign a server to order {order.pk}",
            "opts": self.model._meta,
        }
        return render(request, "admin/provisioning/order/assign_server.html", context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        order = get_object_or_404(Order.objects.select_related("job"), pk=object_id)
        extra_context = {
            **(extra_context or {}),
            "can_assign": order.status == OrderStatus.AWAITING_SERVER,
            "order": order,
            "can_retry": order.job is not None and order.job.can_retry(),
            "can_cancel": order.can_cancel(),
            "timeline": order_timeline(order),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def timeline_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        if not self.has_view_permission(request):
            return JsonResponse({"detail": "forbidden"}, status=403)
        order = get_object_or_404(Order.objects.select_related("job"), pk=pk)
        return JsonResponse(order_timeline(order))

    def _button(self, request: HttpRequest, pk: int, operation, verb: str) -> HttpResponseRedirect:
        order = get_object_or_404(Order, pk=pk)
        if request.method == "POST" and self.has_change_permission(request, order):
            self._each(request, Order.objects.filter(pk=order.pk), operation, verb)
        return HttpResponseRedirect(reverse("admin:provisioning_order_change", args=[order.pk]))

    def retry_view(self, request: HttpRequest, pk: int) -> HttpResponseRedirect:
        return self._button(request, pk, order_retry, "Retried")

    def cancel_view(self, request: HttpRequest, pk: int) -> HttpResponseRedirect:
        return self._button(request, pk, order_cancel, "Cancelled")


@admin.register(Server)
class ServerAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "provider",
        "region",
        "tier",
        "ipv4",
        "ssh_port",
        "status",
        "touched",
        "contract_start",
        "contract_end",
    ]
    list_filter = ["status", "provider", "region", "tier"]
    search_fields = ["=id", "ipv4", "name", "provider_id"]
    actions = ["quarantine", "release_to_pool", "prepare_again"]
    change_form_template = "admin/provisioning/server/change_form.html"
    # The root key is write-only: never shown once stored.
    readonly_fields = ["status", "host_key", "host_key_recorded_at", "touched", "bought_for_order", "created_at"]
    exclude = ["root_key"]

    @admin.action(description="Quarantine")
    def quarantine(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        for server in queryset:
            try:
                server_quarantine(server_id=server.pk, actor=request.user.get_username(), reason="staff action")
            except DomainError as exc:
                self.message_user(request, str(exc), messages.WARNING)

    @admin.action(description="Release to the pool")
    def release_to_pool(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        for server in queryset:
            try:
                server_release_to_pool(server_id=server.pk, actor=request.user.get_username())
            except DomainError as exc:
                self.message_user(request, str(exc), messages.WARNING)

    @admin.action(description="Re-run preparation")
    def prepare_again(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        for server in queryset:
            try:
                server_prepare_again(server_id=server.pk, actor=request.user.get_username())
            except DomainError as exc:
                self.message_user(request, str(exc), messages.WARNING)

    def get_urls(self):
        return [
            path(
                "<int:pk>/operate/<str:operation>/",
                self.admin_site.admin_view(self.operate_view),
                name="provisioning_server_operate",
            ),
            *super().get_urls(),
        ]

    def operate_view(self, request: HttpRequest, pk: int, operation: str) -> HttpResponseRedirect:
        """The buttons on the server page: one POST runs one action on this server."""
        server = get_object_or_404(Server, pk=pk)
        actions = {"quarantine": self.quarantine, "release": self.release_to_pool, "prepare": self.prepare_again}
        if request.method == "POST" and operation in actions and self.has_change_permission(request, server):
            actions[operation](request, Server.objects.filter(pk=server.pk))
            server.refresh_from_db()
            self.message_user(request, f"Server {server.pk} is {server.status}.", messages.INFO)
        return HttpResponseRedirect(reverse("admin:provisioning_server_change", args=[server.pk]))


@admin.register(PoolPurchase)
class PoolPurchaseAdmin(ReadOnlyAdmin):
    list_display = ("idempotency_key", "region", "tier", "status", "server", "attempts", "created_at", "error")
    list_select_related = ("server",)
    list_filter = ("status", "region", "tier")


class SnapshotInline(admin.TabularInline):
    """The tenant's provider snapshots, newest first, on its admin page (read-only)."""

    model = Snapshot
    fields = ("day", "state", "provider", "provider_image_id", "server", "attempts", "available_at", "error")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-day", "-id"]
    verbose_name_plural = "provider snapshots (daily, 3 kept)"

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# The tenant's page lives on the floor below, which cannot know provisioning's models:
# provisioning adds its inline to it.
TenantAdmin.inlines = [*TenantAdmin.inlines, SnapshotInline]


@admin.register(TenantMove)
class TenantMoveAdmin(ReadOnlyAdmin):
    """Recoveries and migrations, with the migration's downtime; above the list, the
    tenants still on Hetzner overflow and what each costs above a contract server."""

    list_display = (
        "id",
        "kind",
        "tenant",
        "source_server",
        "target_server",
        "job_status",
        "downtime_seconds",
        "created_at",
        "switched_at",
        "finished_at",
    )
    list_select_related = ("tenant", "source_server", "target_server", "job")
    list_filter = ("kind",)
    search_fields = ("=tenant__id", "tenant__domain")
    change_list_template = "admin/provisioning/tenantmove/change_list.html"

    @admin.display(description="job")
    def job_status(self, move: TenantMove) -> str:
        return f"#{move.job_id} {move.job.status}" if move.job else "-"

    def changelist_view(self, request: HttpRequest, extra_context=None):
        rows = overflow_report()
        extra_context = {
            **(extra_context or {}),
            "overflow": rows,
            "overflow_total": round(sum(row.extra_eur_per_month for row in rows), 2),
        }
        return super().changelist_view(request, extra_context)
