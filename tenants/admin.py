"""The fleet in the admin. Every change goes through the services; key and token
hashes are never shown."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from hub.errors import DomainError
from hub.models import Alert, AlertStatus
from hub.pipeline.models import Job
from hub.pipeline.selectors import step_timeline
from tenants.command_payloads import command_payload_errors
from tenants.models import (
    AgentCredential,
    BackupReport,
    BackupRepository,
    Command,
    CommandType,
    RegistrationToken,
    Tenant,
    UsageReport,
)
from tenants.services import agent_key_revoke, command_queue, registration_token_issue


class CommandInline(admin.TabularInline):
    model = Command
    fields = (
        "id",
        "type",
        "status",
        "created_by",
        "created_at",
        "delivered_at",
        "delivery_count",
        "finished_at",
        "result",
    )
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-created_at"]
    show_change_link = True


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][-200:] if lines else ""


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["id", "domain", "status", "region", "plan", "is_internal", "last_heartbeat_at", "agent_version"]
    list_filter = ["status", "region", "plan", "is_internal"]
    search_fields = ["=id", "domain", "agent_hostname"]
    list_select_related = ["server"]
    raw_id_fields = ["server"]
    readonly_fields = [
        "heartbeat_summary",
        "open_alerts",
        "jobs_timeline",
        "queue_command",
        "status",
        "created_at",
        "agent_hostname",
        "agent_version",
        "registered_at",
        "last_heartbeat_at",
        "disk_percent",
        "memory_percent",
        "load",
        "uptime_seconds",
        "containers",
        "tls_expires_at",
        "versions",
        "versions_updated_at",
    ]
    inlines = [CommandInline]
    actions = ["queue_restart", "queue_diagnostics", "revoke_agent_keys", "issue_registration_token"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Tenants are made by the provisioning pipeline, not by hand.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return False

    @admin.display(description="latest heartbeat")
    def heartbeat_summary(self, tenant: Tenant) -> str:
        if tenant.last_heartbeat_at is None:
            return "never"
        age = int((timezone.now() - tenant.last_heartbeat_at).total_seconds())
        unhealthy = [
            c.get("name", "?") for c in tenant.containers or [] if c.get("health") not in (None, "", "healthy")
        ]
        return (
            f"{age} s ago; disk {tenant.disk_percent}%, memory {tenant.memory_percent}%, load {tenant.load}; "
            f"{len(tenant.containers or [])} containers" + (f", unhealthy: {', '.join(unhealthy)}" if unhealthy else "")
        )

    @admin.display(description="backups and moves")
    def jobs_timeline(self, tenant: Tenant) -> SafeString | str:
        """The tenant's latest jobs (backup now, recover, migrate) with their steps, as
        an order's page shows its timeline; the page shows each step's state when loaded."""
        jobs = list(Job.objects.filter(subject_type="tenant", subject_id=str(tenant.pk)).order_by("-id")[:3])
        if not jobs:
            return "none"
        parts = []
        for job in jobs:
            steps = format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        step.name + (f" (undo {step.compensates.name})" if step.compensates else ""),
                        step.status,
                        step.attempts,
                        f"{step.duration_seconds:.1f} s" if step.duration_seconds is not None else "",
                        _last_line(step.error or step.log),
                    )
                    for step in step_timeline(job_id=job.pk)
                ),
            )
            parts.append(
                format_html(
                    '<div class="tenant-job"><a href="{}"><b>{}</b> #{}</a>: {} {}'
                    "<table><tr><th>step</th><th>status</th><th>attempts</th><th>took</th><th>last line</th></tr>"
                    "{}</table></div>",
                    reverse("admin:hub_job_change", args=[job.pk]),
                    job.pipeline,
                    job.pk,
                    job.status,
                    job.error[:300],
                    steps,
                )
            )
        return format_html_join("", "{}", ((part,) for part in parts))

    @admin.display(description="open alerts")
    def open_alerts(self, tenant: Tenant) -> SafeString | str:
        alerts = Alert.objects.filter(subject_type="tenant", subject_id=str(tenant.pk), status=AlertStatus.OPEN)
        if not alerts:
            return "none"
        return format_html_join(
            "",
            '<div><a href="{}"><b>{}</b> {}</a>: {}</div>',
            (
                (reverse("admin:hub_alert_change", args=[a.pk]), a.severity, a.kind, a.message[:200])
                for a in alerts[:20]
            ),
        )

    @admin.display(description="commands")
    def queue_command(self, tenant: Tenant) -> SafeString:
        url = reverse("admin:tenants_command_add") + f"?tenant={tenant.pk}"
        listing = reverse("admin:tenants_command_changelist") + f"?tenant__id__exact={tenant.pk}"
        return format_html(
            '<a class="button" href="{}">Queue a command</a> <a href="{}">all commands</a>', url, listing
        )

    def _queue(self, request: HttpRequest, queryset: QuerySet[Tenant], command_type: str) -> None:
        queued = 0
        for tenant in queryset:
            try:
                command_queue(tenant_id=tenant.pk, type=command_type, payload={}, actor=request.user.get_username())
                queued += 1
            except DomainError as exc:
                self.message_user(request, f"{tenant}: {exc}", messages.WARNING)
        self.message_user(request, f"Queued {command_type} for {queued} tenant(s).")

    @admin.action(description="Queue a restart command")
    def queue_restart(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._queue(request, queryset, CommandType.RESTART)

    @admin.action(description="Queue a diagnostics command")
    def queue_diagnostics(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._queue(request, queryset, CommandType.DIAGNOSTICS)

    @admin.action(description="Revoke the agent's API keys")
    def revoke_agent_keys(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        revoked = sum(
            agent_key_revoke(tenant_id=tenant.pk, actor=request.user.get_username(), reason="admin action")
            for tenant in queryset
        )
        self.message_user(request, f"Revoked {revoked} key(s).")

    @admin.action(description="Issue a registration token (shown once)")
    def issue_registration_token(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset[:20]:
            try:
                token, plaintext = registration_token_issue(tenant_id=tenant.pk, actor=request.user.get_username())
            except DomainError as exc:
                self.message_user(request, f"{tenant}: {exc}", messages.WARNING)
                continue
            self.message_user(
                request, f"{tenant}: registration token {plaintext} (expires {token.expires_at:%Y-%m-%d %H:%M} UTC)"
            )


class CommandQueueForm(forms.ModelForm):
    ttl_seconds = forms.IntegerField(
        min_value=10, max_value=30 * 86400, required=False, help_text="default COMMAND_TTL"
    )

    class Meta:
        model = Command
        fields = ["tenant", "type", "payload"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        errors = command_payload_errors(type=cleaned.get("type", ""), payload=cleaned.get("payload"))
        tenant = cleaned.get("tenant")
        if tenant is not None and not tenant.can_receive_commands():
            errors.append(f"tenant {tenant} is {tenant.status}; it takes no commands")
        if errors:
            raise forms.ValidationError(errors)
        return cleaned


@admin.register(Command)
class CommandAdmin(admin.ModelAdmin):
    """Staff queue a command with "Add command"; it is created by command_queue."""

    list_display = ["id", "tenant", "type", "status", "created_by", "created_at", "delivery_count", "finished_at"]
    list_filter = ["status", "type"]
    search_fields = ["=id", "tenant__domain"]
    list_select_related = ["tenant"]
    raw_id_fields = ["tenant"]
    readonly_fields = [
        "id",
        "tenant",
        "type",
        "payload",
        "status",
        "created_by",
        "created_at",
        "expires_at",
        "delivered_at",
        "delivery_count",
        "finished_at",
        "result",
    ]

    def get_form(self, request: HttpRequest, obj: Command | None = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = CommandQueueForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Command | None = None) -> Any:
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: Command | None = None) -> Any:
        return self.readonly_fields if obj is not None else ["tenant", "type", "payload", "ttl_seconds"]

    def save_model(self, request: HttpRequest, obj: Command, form: Any, change: bool) -> None:
        if change:
            return
        queued = command_queue(
            tenant_id=obj.tenant_id,
            type=obj.type,
            payload=obj.payload,
            actor=request.user.get_username(),
            ttl_seconds=form.cleaned_data.get("ttl_seconds"),
        )
        obj.pk = queued.pk
        obj._state.adding = False

    def has_change_permission(self, request: HttpRequest, obj: Command | None = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Command | None = None) -> bool:
        return False


@admin.register(AgentCredential)
class AgentCredentialAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "key_prefix", "created_at", "expires_at", "revoked_at"]
    search_fields = ["key_prefix", "tenant__domain"]
    list_select_related = ["tenant"]
    fields = ("tenant", "key_prefix", "created_at", "expires_at", "revoked_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AgentCredential | None = None) -> bool:
        return False


@admin.register(RegistrationToken)
class RegistrationTokenAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "created_at", "expires_at", "used_at"]
    list_select_related = ["tenant"]
    fields = ("tenant", "created_at", "expires_at", "used_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(BackupReport)
class BackupReportAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "last_run", "outcome", "duration_seconds", "received_at"]
    list_filter = ["outcome"]
    list_select_related = ["tenant"]
    search_fields = ["tenant__domain"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: BackupReport | None = None) -> bool:
        return False


@admin.register(BackupRepository)
class BackupRepositoryAdmin(admin.ModelAdmin):
    """Where a tenant's backups go. The repository password and the SSH private key
    are never shown: they leave the Hub only for the tenant's own server."""

    list_display = ["id", "tenant", "url", "account", "authorized_at"]
    list_select_related = ["tenant"]
    search_fields = ["tenant__domain", "account"]
    fields = ("tenant", "url", "account", "ssh_public_key", "created_at", "authorized_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: BackupRepository | None = None) -> bool:
        return False


@admin.register(UsageReport)
class UsageReportAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "period", "tokens", "received_at"]
    list_filter = ["period"]
    list_select_related = ["tenant"]
    search_fields = ["tenant__domain"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageReport | None = None) -> bool:
        return False
