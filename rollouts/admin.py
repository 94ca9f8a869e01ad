"""Releases and rollouts in the admin: progress per stage as bars, counts by status,
the failing tenants with their errors, and the staff actions (start, pause, resume,
promote, abort, rollback, retry). Every change goes through the services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from hub.errors import DomainError
from rollouts import selectors, services
from rollouts.models import Release, Rollout, RolloutStage, TenantUpdate, UpdateStatus

BAR_COLOURS = {
    UpdateStatus.SUCCEEDED: "#2e7d32",
    UpdateStatus.SENT: "#1565c0",
    UpdateStatus.PENDING: "#9e9e9e",
    UpdateStatus.FAILED: "#c62828",
    UpdateStatus.ROLLED_BACK: "#ef6c00",
    UpdateStatus.SKIPPED: "#bdbdbd",
}


def _bar(counts: dict[str, int], planned: int | None) -> SafeString:
    """A horizontal bar: one coloured segment per update status, as a share of the
    stage's planned size (or of what it dispatched, when larger)."""
    total = max(planned or 0, sum(counts.values()), 1)
    segments = format_html_join(
        "",
        '<span title="{}: {}" style="display:inline-block;height:12px;width:{}%;background:{}"></span>',
        (
            (status, n, round(100 * n / total, 2), BAR_COLOURS[status])
            for status in BAR_COLOURS
            if (n := counts.get(status, 0))
        ),
    )
    legend = ", ".join(f"{status.lower()} {n}" for status, n in counts.items()) or "nothing sent"
    return format_html(
        '<div style="width:320px;background:#eee;display:flex">{}</div><small>{}</small>', segments, legend
    )


class ReleaseForm(forms.ModelForm):
    # Not the model field: replacing the component's default is the service's work,
    # which the model's one-default constraint would refuse in the form's checks.
    make_default = forms.BooleanField(
        required=False, label="Default", help_text="what new tenants of the component get until a rollout completes"
    )

    class Meta:
        model = Release
        fields = ["component", "version", "image", "notes"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # a ModelForm's clean() returns its cleaned_data
        if all(data.get(name) for name in ("component", "version", "image")):
            errors = services.release_spec_errors(
                component=data["component"], version=data["version"], image=data["image"]
            )
            if errors:
                raise forms.ValidationError(errors)
        return data


@admin.register(Release)
class ReleaseAdmin(admin.ModelAdmin):
    form = ReleaseForm
    list_display = ["id", "component", "version", "image", "is_default", "created_by", "created_at"]
    list_filter = ["component", "is_default"]
    search_fields = ["component", "version", "image"]
    actions = ["mark_default"]

    def get_fields(self, request: HttpRequest, obj: Release | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("component", "version", "image", "notes", "make_default")
        return ("component", "version", "image", "notes", "is_default", "created_by", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Release | None = None) -> list[str]:
        # A release is immutable once made: a digest never changes its meaning. Which
        # release is the default moves with the action, so it is read-only here too.
        return (
            ["component", "version", "image", "notes", "is_default", "created_by", "created_at"]
            if obj
            else ["created_by", "created_at"]
        )

    @admin.action(description="Make the default of its component (what new tenants get until a rollout completes)")
    def mark_default(self, request: HttpRequest, queryset: QuerySet[Release]) -> None:
        chosen = list(queryset.order_by("component", "-id"))
        components = [release.component for release in chosen]
        if len(set(components)) != len(components):
            self.message_user(request, "choose one release per component", messages.ERROR)
            return
        for release in chosen:
            services.release_mark_default(release_id=release.pk, actor=f"staff:{request.user.get_username()}")
        self.message_user(
            request, "default now: " + ", ".join(f"{r.component} {r.version}" for r in chosen), messages.SUCCESS
        )

    def save_model(self, request: HttpRequest, obj: Release, form: Any, change: bool) -> None:
        if change:
            return
        release = services.release_create(
            component=obj.component,
            version=obj.version,
            image=obj.image,
            notes=obj.notes,
            is_default=form.cleaned_data.get("make_default", False),
            actor=f"staff:{request.user.get_username()}",
        )
        obj.pk = release.pk

    def has_delete_permission(self, request: HttpRequest, obj: Release | None = None) -> bool:
        return False


STAGE_FIELDS = (
    "position",
    "name",
    "soak_seconds",
    "status",
    "progress",
    "updates_unsent",
    "gate",
    "gate_reason",
    "deadline_at",
)


class StageInline(admin.TabularInline):
    model = RolloutStage
    fields = STAGE_FIELDS
    readonly_fields = STAGE_FIELDS
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["position"]

    def get_formset(self, request: HttpRequest, obj: Rollout | None = None, **kwargs: Any) -> Any:
        self._counts = selectors.status_counts(rollout_id=obj.pk) if obj is not None else {}
        return super().get_formset(request, obj, **kwargs)

    @admin.display(description="progress")
    def progress(self, stage: RolloutStage) -> SafeString:
        return _bar(self._counts.get(stage.pk, {}), stage.planned_size)


def _run(
    admin_: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Rollout], service: Callable[..., Any], verb: str
) -> None:
    done = 0
    for rollout_id in queryset.values_list("pk", flat=True):
        try:
            service(
                rollout_id=rollout_id, actor=f"staff:{request.user.get_username()}", reason=f"{verb} from the admin"
            )
        except DomainError as exc:
            admin_.message_user(request, f"rollout #{rollout_id}: {exc}", messages.ERROR)
        else:
            done += 1
    if done:
        admin_.message_user(request, f"{verb}: {done} rollout(s)", messages.SUCCESS)


@admin.register(Rollout)
class RolloutAdmin(admin.ModelAdmin):
    list_display = ["id", "component", "target_version", "status", "current_stage", "started_at", "finished_at"]
    list_filter = ["status", "component"]
    search_fields = ["=id", "component", "target_version"]
    list_select_related = ["release"]
    inlines = [StageInline]
    actions = ["start", "pause", "resume", "promote", "abort", "rollback", "retry"]
    fields = ROLLOUT_FIELDS = (
        "release",
        "component",
        "target_version",
        "status",
        "status_reason",
        "counts",
        "failing_tenants",
        "auto_advance",
        "on_halt",
        "failure_rate",
        "min_failures",
        "min_finished",
        "heartbeat_loss_rate",
        "update_timeout_seconds",
        "stage_deadline_seconds",
        "population",
        "created_by",
        "created_at",
        "started_at",
        "paused_at",
        "halted_at",
        "finished_at",
    )
    readonly_fields = ROLLOUT_FIELDS

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Rollouts are created through the API (CI), which validates stages and thresholds.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Rollout | None = None) -> bool:
        return False

    @admin.display(description="stage")
    def current_stage(self, rollout: Rollout) -> str:
        return "-" if rollout.current_position is None else str(rollout.current_position)

    @admin.display(description="updates by status")
    def counts(self, rollout: Rollout) -> SafeString:
        totals: dict[str, int] = {}
        for per_stage in selectors.status_counts(rollout_id=rollout.pk).values():
            for status, n in per_stage.items():
                totals[status] = totals.get(status, 0) + n
        return _bar(totals, None)

    @admin.display(description="failing tenants")
    def failing_tenants(self, rollout: Rollout) -> SafeString:
        rows = selectors.failing_updates(rollout_id=rollout.pk)
        if not rows:
            return mark_safe("<em>none</em>")
        return format_html(
            "<table><tr><th>tenant</th><th>stage</th><th>status</th><th>error</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{} ({})</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
                (
                    (u.tenant.domain, u.tenant_id, u.stage.name, u.status, (u.error or u.rollback_error)[:500])
                    for u in rows
                ),
            ),
        )

    @admin.action(description="Start the selected rollouts")
    def start(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> None:
        _run(self, request, queryset, services.rollout_start, "started")

    @admin.action(description="Pause (stop dispatch)")
    def pause(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> None:
        _run(self, request, queryset, services.rollout_pause, "paused")

    @admin.action(description="Resume")
    def resume(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> None:
        _run(self, request, queryset, services.rollout_resume, "resumed")

    @admin.action(description="Promote the current stage")
    def promote(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> None:
        _run(self, request, queryset, services.rollout_promote, "promoted")

    @admin.action(description="Abort (no rollback)")
    def abort(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> None:
        _run(self, request, queryset, services.rollout_abort, "aborted")

    @admin.action(description="Roll back every tenant updated")
    def rollback(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> None:
        _run(self, request, queryset, services.rollout_rollback, "rolling back")

    @admin.action(description="Retry the failed updates (halted rollouts)")
    def retry(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> None:
        _run(self, request, queryset, services.rollout_retry, "retried")


@admin.register(TenantUpdate)
class TenantUpdateAdmin(admin.ModelAdmin):
    list_display = ["id", "rollout", "stage", "tenant", "from_version", "to_version", "status", "attempts", "error"]
    list_filter = ["status", "rollout__component"]
    search_fields = ["=rollout__id", "=tenant__id", "tenant__domain", "error"]
    list_select_related = ["stage", "tenant", "rollout"]
    readonly_fields = [f.name for f in TenantUpdate._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: TenantUpdate | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TenantUpdate | None = None) -> bool:
        return False
