import functools
from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry, LogEntryManager
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from hub.alerts import admin as alerts_admin  # noqa: F401 - registers the alert and notification admins
from hub.audit import audit_record
from hub.errors import DomainError
from hub.freeze import FREEZE_ROW, fleet_freeze_set
from hub.models import AuditEvent, FleetFreeze, Job
from hub.notices import admin as notices_admin  # noqa: F401 - registers the customer notices' admin
from hub.pipeline.models import JobStatus
from hub.pipeline.selectors import step_timeline
from hub.pipeline.services import job_cancel, job_retry

STATUS_COLOURS: dict[str, str] = {
    JobStatus.SUCCEEDED: "#2e7d32",
    JobStatus.RUNNING: "#1565c0",
    JobStatus.PENDING: "#757575",
    JobStatus.COMPENSATING: "#ef6c00",
    JobStatus.ROLLED_BACK: "#ef6c00",
    JobStatus.CANCELLED: "#757575",
    JobStatus.FAILED: "#c62828",
}


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "pipeline", "coloured_status", "subject", "current_step", "created_at", "finished_at"]
    list_filter = ["status", "pipeline", "stop_reason"]
    search_fields = ["=id", "subject_id", "pipeline", "error"]
    actions = ["retry_jobs", "cancel_jobs"]
    change_form_template = "admin/hub/job/change_form.html"
    readonly_fields = [
        "pipeline",
        "status",
        "queue",
        "subject_type",
        "subject_id",
        "error",
        "stop_reason",
        "compensation_failed",
        "created_at",
        "started_at",
        "finished_at",
        "deadline_at",
    ]
    exclude = ["context", "idempotency_key", "stop_requested_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return super().get_queryset(request).prefetch_related("steps")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False

    @admin.display(description="status", ordering="status")
    def coloured_status(self, job: Job) -> str:
        return format_html('<b style="color:{}">{}</b>', STATUS_COLOURS.get(job.status, "#000"), job.status)

    @admin.display(description="subject")
    def subject(self, job: Job) -> str:
        return f"{job.subject_type} {job.subject_id}".strip()

    @admin.display(description="step")
    def current_step(self, job: Job) -> str:
        steps = sorted(job.steps.all(), key=lambda s: s.position)
        active = [s for s in steps if s.status in ("QUEUED", "RUNNING", "RETRY_WAIT", "FAILED")]
        step = active[-1] if active else (steps[-1] if steps else None)
        return f"{step.name} ({step.status})" if step else "-"

    def _operate(self, request: HttpRequest, queryset: QuerySet[Job], operation, verb: str) -> None:
        done = 0
        for job in queryset:
            try:
                operation(job_id=job.pk, actor=request.user.get_username())
                done += 1
            except DomainError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if done:
            self.message_user(request, f"{verb} {done} job(s).", messages.SUCCESS)

    @admin.action(description="Retry from the failed step")
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._operate(request, queryset, job_retry, "Retried")

    @admin.action(description="Cancel (and compensate)")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._operate(request, queryset, job_cancel, "Cancelled")

    def get_urls(self):
        return [
            path("<int:pk>/retry/", self.admin_site.admin_view(self.retry_view), name="hub_job_retry"),
            path("<int:pk>/cancel/", self.admin_site.admin_view(self.cancel_view), name="hub_job_cancel"),
            *super().get_urls(),
        ]

    def _button_view(self, request: HttpRequest, pk: int, operation, verb: str) -> HttpResponseRedirect:
        job = get_object_or_404(Job, pk=pk)
        if request.method == "POST":
            self._operate(request, Job.objects.filter(pk=job.pk), operation, verb)
        return HttpResponseRedirect(reverse("admin:hub_job_change", args=[job.pk]))

    def retry_view(self, request: HttpRequest, pk: int) -> HttpResponseRedirect:
        return self._button_view(request, pk, job_retry, "Retried")

    def cancel_view(self, request: HttpRequest, pk: int) -> HttpResponseRedirect:
        return self._button_view(request, pk, job_cancel, "Cancelled")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        job = get_object_or_404(Job, pk=object_id)
        extra_context = {
            **(extra_context or {}),
            "job": job,
            "steps": step_timeline(job_id=job.pk),
        }
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor", "action", "object_type", "object_id", "old", "new", "reason"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "object_id", "reason"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False


@admin.register(FleetFreeze)
class FleetFreezeAdmin(admin.ModelAdmin):
    """The fleet freeze's switch: one row (added by the first freeze), flipped through
    hub.freeze, which writes the audit row and lets the rollouts react in the same
    transaction."""

    list_display = ["__str__", "frozen", "reason", "changed_by", "changed_at"]
    fields = ["frozen", "reason", "changed_by", "changed_at"]
    readonly_fields = ["changed_by", "changed_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not FleetFreeze.objects.filter(pk=FREEZE_ROW).exists()

    def has_delete_permission(self, request: HttpRequest, obj: FleetFreeze | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: FleetFreeze, form: Any, change: bool) -> None:
        row = fleet_freeze_set(frozen=obj.frozen, actor=request.user.get_username(), reason=obj.reason)
        obj.pk, obj.changed_by, obj.changed_at = row.pk, row.changed_by, row.changed_at

    # fleet_freeze_set wrote the audit row (fleet.freeze / fleet.unfreeze); the admin's
    # own log entry would add a second one that says less.
    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None


ADMIN_LOG_ACTIONS = {ADDITION: "admin.add", CHANGE: "admin.change", DELETION: "admin.delete"}


def admin_log_entries_audit(*, user_id: object, entries: Iterable[LogEntry]) -> None:
    """One audit row per admin log entry: who, what, on which object."""
    actor = get_user_model().objects.get(pk=str(user_id)).get_username()
    for entry in entries:
        content_type_id: int | None = entry.content_type_id
        audit_record(
            actor=actor,
            action=ADMIN_LOG_ACTIONS.get(entry.action_flag, "admin.log"),
            # get_for_id is cached: no query per entry, unlike entry.content_type.
            object_type=ContentType.objects.get_for_id(content_type_id).model if content_type_id else "",
            object_id=entry.object_id or "",
            new=entry.get_change_message() or None,
            reason=entry.object_repr,
        )


def admin_log_audit_install() -> None:
    """Every add, change and delete made through an admin form or the "delete selected"
    action also lands in the audit trail (admin actions and buttons call services, which
    write their own audit rows).

    The admin writes its log through LogEntryManager.log_actions, for every ModelAdmin
    including Django's and third-party ones; a bulk "delete selected" saves its entries
    with bulk_create, which sends no post_save, so the hook sits on log_actions itself."""
    if getattr(LogEntryManager.log_actions, "hub_audited", False):
        return
    log_actions: Callable[..., Any] = LogEntryManager.log_actions

    @functools.wraps(log_actions)
    def audited_log_actions(
        self: LogEntryManager,
        user_id: object,
        queryset: Iterable[Any],
        action_flag: int,
        change_message: Any = "",
        *,
        single_object: bool = False,
    ) -> Any:
        logged = log_actions(self, user_id, queryset, action_flag, change_message, single_object=single_object)
        admin_log_entries_audit(user_id=user_id, entries=logged if isinstance(logged, list) else [logged])
        return logged

    audited_log_actions.hub_audited = True  # type: ignore[attr-defined]
    LogEntryManager.log_actions = audited_log_actions  # type: ignore[method-assign]
