"""Releases, staged rollout campaigns, their stages and the per-tenant updates.

A rollout walks its stages in order (internal -> 5% -> 25% -> 100% by default). Each
stage dispatches `update` commands to its tenants in bulk, waits for their answers,
soaks, and passes a gate before the next one starts. The truth about each tenant's
update is its TenantUpdate row, which learns its outcome from the command's row."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

COMPONENT_MAX = 64
VERSION_MAX = 128


class Release(models.Model):
    """One deployable version of one component, its image pinned by digest."""

    component = models.CharField(max_length=COMPONENT_MAX)
    version = models.CharField(max_length=VERSION_MAX)
    image = models.CharField(max_length=400, help_text="image reference pinned by digest (…@sha256:…)")
    notes = models.TextField(blank=True, default="")
    # What a new tenant gets while no rollout of the component has COMPLETED (staff
    # choose it; see rollouts.selectors.current_releases).
    is_default = models.BooleanField(
        default=False, help_text="installed on new tenants until a rollout of the component completes"
    )
    created_by = models.CharField(max_length=150, default="system")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["component", "version"], name="release_once_per_version"),
            models.UniqueConstraint(
                fields=["component"], condition=Q(is_default=True), name="release_one_default_per_component"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.component} {self.version}"


class RolloutStatus(models.TextChoices):
    DRAFT = "DRAFT", "draft"
    RUNNING = "RUNNING", "running"
    PAUSED = "PAUSED", "paused"
    HALTED = "HALTED", "halted"
    ROLLING_BACK = "ROLLING_BACK", "rolling back"
    ROLLED_BACK = "ROLLED_BACK", "rolled back"
    COMPLETED = "COMPLETED", "completed"
    ABORTED = "ABORTED", "aborted"


# A component has at most one rollout in these (a halted one waits for a decision).
ROLLOUT_ACTIVE_STATUSES = (
    RolloutStatus.RUNNING,
    RolloutStatus.PAUSED,
    RolloutStatus.HALTED,
    RolloutStatus.ROLLING_BACK,
)
ROLLOUT_TERMINAL_STATUSES = (RolloutStatus.ROLLED_BACK, RolloutStatus.COMPLETED, RolloutStatus.ABORTED)


class OnHalt(models.TextChoices):
    ROLLBACK = "ROLLBACK", "roll back every tenant it updated"
    FREEZE = "FREEZE", "leave tenants where they are, wait for staff"


class Rollout(models.Model):
    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="rollouts")
    # Copied from the release so the database can enforce one active rollout per component.
    component = models.CharField(max_length=COMPONENT_MAX)
    target_version = models.CharField(max_length=VERSION_MAX)
    status = models.CharField(max_length=16, choices=RolloutStatus.choices, default=RolloutStatus.DRAFT)
    status_reason = models.TextField(blank=True, default="")

    auto_advance = models.BooleanField(default=True, help_text="start the next stage on PASS, else wait for promote")
    on_halt = models.CharField(max_length=10, choices=OnHalt.choices, default=OnHalt.ROLLBACK)
    failure_rate = models.FloatField()
    min_failures = models.PositiveIntegerField()
    min_finished = models.PositiveIntegerField()
    heartbeat_loss_rate = models.FloatField()
    update_timeout_seconds = models.PositiveIntegerField()
    stage_deadline_seconds = models.PositiveIntegerField()

    # Eligible non-internal tenants when it started: the base of the stage percentages.
    population = models.PositiveIntegerField(null=True, blank=True)
    current_position = models.PositiveSmallIntegerField(null=True, blank=True)

    created_by = models.CharField(max_length=150, default="system")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    halted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["component"],
                condition=Q(status__in=["RUNNING", "PAUSED", "HALTED", "ROLLING_BACK"]),
                name="rollout_one_active_per_component",
            )
        ]
        indexes = [models.Index(fields=["status"], name="rollout_by_status")]

    def __str__(self) -> str:
        return f"rollout #{self.pk} {self.component} {self.target_version} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ROLLOUT_ACTIVE_STATUSES

    @property
    def is_terminal(self) -> bool:
        return self.status in ROLLOUT_TERMINAL_STATUSES

    def can_start(self) -> bool:
        return self.status == RolloutStatus.DRAFT

    def can_pause(self) -> bool:
        return self.status == RolloutStatus.RUNNING

    def can_resume(self) -> bool:
        return self.status == RolloutStatus.PAUSED

    def can_promote(self) -> bool:
        return self.status == RolloutStatus.RUNNING

    def can_halt(self) -> bool:
        return self.status in (RolloutStatus.RUNNING, RolloutStatus.PAUSED)

    def can_retry(self) -> bool:
        return self.status == RolloutStatus.HALTED

    def can_rollback(self) -> bool:
        return self.status in (RolloutStatus.RUNNING, RolloutStatus.PAUSED, RolloutStatus.HALTED)

    def can_abort(self) -> bool:
        return self.status in (RolloutStatus.DRAFT, RolloutStatus.RUNNING, RolloutStatus.PAUSED, RolloutStatus.HALTED)


class StageStatus(models.TextChoices):
    PENDING = "PENDING", "not started"
    UPDATING = "UPDATING", "updates in flight"
    SOAKING = "SOAKING", "soaking"
    AWAITING_PROMOTE = "AWAITING_PROMOTE", "passed, waiting for a promote"
    PASSED = "PASSED", "passed"
    HALTED = "HALTED", "halted"


STAGE_STARTED_STATUSES = (StageStatus.UPDATING, StageStatus.SOAKING, StageStatus.AWAITING_PROMOTE)


class GateOutcome(models.TextChoices):
    PASS = "PASS", "pass"
    FAIL = "FAIL", "fail"
    INCONCLUSIVE = "INCONCLUSIVE", "inconclusive"


class RolloutStage(models.Model):
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="stages")
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=32)
    # The internal stage takes every eligible internal tenant; the others take their
    # cumulative percentage of the rest, newest tenants first.
    internal = models.BooleanField(default=False)
    percent = models.PositiveSmallIntegerField(null=True, blank=True)
    soak_seconds = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=StageStatus.choices, default=StageStatus.PENDING)
    planned_size = models.PositiveIntegerField(null=True, blank=True)
    dispatched = models.PositiveIntegerField(default=0)
    updates_unsent = models.PositiveIntegerField(
        default=0, help_text="dispatched updates whose commands are still to be queued (a large stage goes in parts)"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    updates_done_at = models.DateTimeField(null=True, blank=True, help_text="soak starts here")
    awaiting_promote_since = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    gate = models.CharField(max_length=12, choices=GateOutcome.choices, blank=True, default="")
    gate_reason = models.TextField(blank=True, default="")
    gate_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["rollout_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "position"], name="rollout_stage_position_once"),
            # What a tenant update's (stage, rollout) key references (migration 0004).
            models.UniqueConstraint(fields=["id", "rollout"], name="rollout_stage_id_with_rollout"),
        ]

    def __str__(self) -> str:
        return f"stage {self.position} ({self.name}) of rollout #{self.rollout_id}"


class UpdateStatus(models.TextChoices):
    PENDING = "PENDING", "not sent (yet, or withdrawn by a pause)"
    SENT = "SENT", "sent, no answer yet"
    SUCCEEDED = "SUCCEEDED", "succeeded"
    FAILED = "FAILED", "failed"
    ROLLED_BACK = "ROLLED_BACK", "rolled back"
    SKIPPED = "SKIPPED", "skipped"


UPDATE_FINISHED_STATUSES = (UpdateStatus.SUCCEEDED, UpdateStatus.FAILED)
# The tenant was handed the update (it may have applied it).
UPDATE_DISPATCHED_STATUSES = (UpdateStatus.SENT, UpdateStatus.SUCCEEDED, UpdateStatus.FAILED)


class TenantUpdate(models.Model):
    # Postgres checks both at once, (stage_id, rollout_id) against the stage's (id,
    # rollout_id), so an update names a stage of its own rollout: once per statement
    # by triggers (migration 0007), where a foreign key checked each of a dispatch's
    # 100,000 rows. Indexes of their own would repeat the composite ones below.
    rollout = models.ForeignKey(
        Rollout, on_delete=models.CASCADE, related_name="updates", db_constraint=False, db_index=False
    )
    stage = models.ForeignKey(
        RolloutStage, on_delete=models.CASCADE, related_name="updates", db_constraint=False, db_index=False
    )
    # No key in Postgres either: a dispatch takes its tenants from the tenants table in
    # the same statement, tenants are never deleted (the admin refuses; an ORM delete
    # still cascades in Django), and the key's checks locked every tenant of the stage
    # row by row, a fifth of a 100,000-tenant dispatch (bench/RESULTS.md, 2026-12-06 23:20).
    # Nor an index of its own: every lookup names the rollout too, which the unique
    # (rollout, tenant) index serves, and each index is an entry per update a dispatch
    # writes (bench/RESULTS.md, 2026-12-07 06:00).
    tenant = models.ForeignKey(
        "tenants.Tenant",
        on_delete=models.CASCADE,
        related_name="rollout_updates",
        db_constraint=False,
        db_index=False,
    )
    from_version = models.CharField(max_length=VERSION_MAX, blank=True, default="")
    to_version = models.CharField(max_length=VERSION_MAX)
    status = models.CharField(max_length=12, choices=UpdateStatus.choices, default=UpdateStatus.PENDING)
    # The id of the `update` command that carries this update, chosen when the update is
    # written. A large stage's commands are queued in parts after the dispatch commits
    # (rollouts.services.dispatch), so for a moment the id names a command not written
    # yet: no key in Postgres, which would refuse that at commit; the rollback command's
    # has none either (its check ran for each row, even a NULL). Commands are never
    # deleted; an ORM delete would still clear the id (SET_NULL runs in Django).
    command = models.ForeignKey(
        "tenants.Command",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    rollback_command = models.ForeignKey(
        "tenants.Command",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    rollback_sent_at = models.DateTimeField(null=True, blank=True)
    rollback_finished_at = models.DateTimeField(null=True, blank=True)
    rollback_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["rollout", "tenant"], name="tenant_update_once_per_rollout")]
        # A rollout's updates by status come from the unique (rollout, tenant) index: the
        # rollout-wide reads (counts, bars, a pause's or a rollback's moves) read every
        # update of the rollout or most of them, and a (rollout, status) index cost a
        # dispatch 8% (bench/RESULTS.md, 2026-12-07 06:00).
        indexes = [
            models.Index(fields=["stage", "status"], name="tenant_update_stage_status"),
            # The command ids are indexed only where they are looked up: updates and
            # rollbacks awaiting an answer (the evaluation's outcome sync, a withdrawal).
            # Full indexes would add two entries a row to a dispatch, for no query.
            models.Index(fields=["command"], name="tenant_update_awaiting", condition=Q(status="SENT")),
            models.Index(
                fields=["rollback_command"],
                name="tenant_update_rb_awaiting",
                condition=Q(rollback_command__isnull=False, rollback_finished_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"update {self.tenant_id} {self.from_version or '?'} -> {self.to_version} ({self.status})"
