"""Tenants and everything their agent tells the Hub or is told by it.

Secrets (registration tokens, API keys) are stored only as SHA-256 hashes: they are
random 256-bit values, so a fast hash is as strong as a slow one and lets every
heartbeat be checked without a password hash per request."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import F, Func, Q

from hub.catalog import Region, Tier
from hub.crypto import EncryptedTextField
from hub.db.ids import time_ordered_uuid


class TenantStatus(models.TextChoices):
    PROVISIONING = "PROVISIONING", "provisioning"
    ACTIVE = "ACTIVE", "active"
    SUSPENDED = "SUSPENDED", "suspended"
    # Being moved to another server: its tools stopped writing for the final backup.
    MAINTENANCE = "MAINTENANCE", "maintenance"
    DEPROVISIONING = "DEPROVISIONING", "deprovisioning"
    DEPROVISIONED = "DEPROVISIONED", "deprovisioned"


# Every move a tenant's status may make (tenants.services.lifecycle makes them).
TENANT_TRANSITIONS: dict[str, frozenset[str]] = {
    TenantStatus.PROVISIONING: frozenset(
        {TenantStatus.ACTIVE, TenantStatus.DEPROVISIONING, TenantStatus.DEPROVISIONED}
    ),
    TenantStatus.ACTIVE: frozenset({TenantStatus.SUSPENDED, TenantStatus.MAINTENANCE, TenantStatus.DEPROVISIONING}),
    TenantStatus.MAINTENANCE: frozenset({TenantStatus.ACTIVE, TenantStatus.DEPROVISIONING}),
    TenantStatus.SUSPENDED: frozenset({TenantStatus.ACTIVE, TenantStatus.DEPROVISIONING}),
    TenantStatus.DEPROVISIONING: frozenset({TenantStatus.DEPROVISIONED}),
    TenantStatus.DEPROVISIONED: frozenset(),
}

# A tenant in one of these has a server and (once registered) a live agent.
TENANT_LIVE_STATUSES = (
    TenantStatus.PROVISIONING,
    TenantStatus.ACTIVE,
    TenantStatus.SUSPENDED,
    TenantStatus.MAINTENANCE,
)
TENANT_TERMINAL_STATUSES = (TenantStatus.DEPROVISIONED,)

# A container is bad when Docker reports it in one of these states (it stopped or keeps
# dying) or its health check fails. Postgres's `tenant_containers_bad` holds the same
# words, frozen in migration 0007: changing them takes a migration that replaces the
# function and rewrites the column (`UPDATE tenants_tenantcontainers SET containers =
# containers`); a test fails while the two disagree.
CONTAINER_CRASHED_STATES = ("exited", "dead", "restarting")
CONTAINER_UNHEALTHY = "unhealthy"


class Tenant(models.Model):
    domain = models.CharField(max_length=253, unique=True)
    status = models.CharField(
        max_length=20, choices=TenantStatus.choices, default=TenantStatus.PROVISIONING, db_index=True
    )
    server = models.ForeignKey(
        "provisioning.Server", null=True, blank=True, on_delete=models.PROTECT, related_name="tenants"
    )
    plan = models.CharField(max_length=16, choices=Tier.choices, default=Tier.BUILD)
    region = models.CharField(max_length=8, choices=Region.choices, default=Region.EU)
    # Internal/staging tenants are the first stage of every rollout.
    is_internal = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    # The agent, as it registered.
    agent_hostname = models.CharField(max_length=253, blank=True, default="")
    agent_version = models.CharField(max_length=64, blank=True, default="")
    registered_at = models.DateTimeField(null=True, blank=True)
    heartbeat_interval = models.PositiveIntegerField(default=60)

    # Latest health, written in bulk by the heartbeat flush (seconds behind the agent).
    # Not indexed, so that the flush's update of every tenant stays on its page (a HOT
    # update, migration 0010); whatever reads it scans the tenants anyway.
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    disk_percent = models.FloatField(null=True, blank=True)
    memory_percent = models.FloatField(null=True, blank=True)
    load = models.FloatField(null=True, blank=True)
    uptime_seconds = models.BigIntegerField(null=True, blank=True)
    tls_expires_at = models.DateTimeField(null=True, blank=True)
    # component -> version. Heartbeats merge what the agent reports; a successful update
    # command sets its component at once. A heartbeat older than that update must not
    # undo it, hence the timestamp.
    versions = models.JSONField(default=dict, blank=True)
    versions_updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.domain

    @property
    def containers(self) -> list[dict[str, Any]]:
        """The containers the agent reported last ([] before its first heartbeat)."""
        try:
            return self.container_report.containers
        except TenantContainers.DoesNotExist:
            return []

    def can_receive_commands(self) -> bool:
        return self.status in TENANT_LIVE_STATUSES

    def can_register_agent(self) -> bool:
        return self.status in TENANT_LIVE_STATUSES

    def can_activate(self) -> bool:
        return self.status == TenantStatus.PROVISIONING

    def can_suspend(self) -> bool:
        return TenantStatus.SUSPENDED in TENANT_TRANSITIONS[self.status]

    def can_resume(self) -> bool:
        return self.status == TenantStatus.SUSPENDED

    def can_deprovision(self) -> bool:
        return TenantStatus.DEPROVISIONING in TENANT_TRANSITIONS[self.status]


class TenantContainers(models.Model):
    """The containers a tenant's agent reported last, beside the tenant rather than in
    its row: 20 containers are 1.4 kB, nine tenths of a tenant row, and every fleet
    check reads the whole tenants table (156 MB at 100,000 tenants with them, 15 MB
    without). The heartbeat flush writes a tenant's row only when its list changed."""

    tenant = models.OneToOneField(Tenant, primary_key=True, on_delete=models.CASCADE, related_name="container_report")
    containers = models.JSONField(default=list)
    digest = models.UUIDField(
        null=True,
        editable=False,
        help_text="md5 of the list last reported (as orjson writes it): the flush compares this, not the list",
    )
    # "name (state)" or "name (unhealthy)" of each container that crashed or failed its
    # health check, in the agent's order; NULL when there is none. Postgres derives it
    # whenever `containers` is written (the function is in migration 0007), so the
    # containers check reads one indexed column instead of unpacking 20 containers.
    bad = models.GeneratedField(
        expression=Func(F("containers"), function="tenant_containers_bad", output_field=ArrayField(models.TextField())),
        output_field=ArrayField(models.TextField()),
        db_persist=True,
    )

    class Meta:
        indexes = [models.Index(fields=["tenant"], name="tenant_containers_bad", condition=Q(bad__isnull=False))]

    def __str__(self) -> str:
        return f"containers of tenant {self.tenant_id}"


class AgentCredential(models.Model):
    """One API key of one agent. A rotation gives the old key an `expires_at` (the
    overlap during which both work); a revocation ends it at once."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="credentials")
    # The first characters of the key, to find its row without a hash index scan.
    key_prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["tenant"], name="credential_tenant_usable", condition=Q(revoked_at=None))]

    def __str__(self) -> str:
        return f"{self.key_prefix}… (tenant {self.tenant_id})"

    def is_usable(self, *, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def can_revoke(self) -> bool:
        return self.revoked_at is None


class RegistrationToken(models.Model):
    """A one-time, short-lived token the provisioning hands to the agent."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="registration_tokens")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    # A second agent of the tenant (on the server it moves to): registering with this
    # token leaves the first agent's keys working until the move switches over.
    keeps_other_keys = models.BooleanField(default=False)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"registration token #{self.pk} (tenant {self.tenant_id})"

    def can_use(self, *, now: datetime) -> bool:
        return self.used_at is None and self.expires_at > now


class HeartbeatSample(models.Model):
    """Raw heartbeat history, kept HEARTBEAT_RAW_RETENTION_HOURS. Bulk-inserted by the
    flush into a table partitioned by the hour (migration 0004, hub.db.partitions), so
    old samples go a whole partition at a time. (tenant, received_at) is the key, so a
    flush that runs twice over the same buffer inserts each sample once. No foreign key
    in the database: partitions come and go without touching the tenants table."""

    pk = models.CompositePrimaryKey("tenant", "received_at")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="heartbeats", db_constraint=False)
    received_at = models.DateTimeField()
    disk_percent = models.FloatField()
    memory_percent = models.FloatField()
    load = models.FloatField()
    uptime_seconds = models.BigIntegerField()
    # A tenant's containers change rarely, and they were 83% of a raw sample
    # (heartbeats._samples_write decides).
    containers = models.JSONField(
        null=True,
        blank=True,
        help_text="the agent's list when it changed since the tenant's previous sample, else NULL",
    )
    tls_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        managed = False
        db_table = "tenants_heartbeatsample"
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"heartbeat {self.tenant_id} @ {self.received_at:%Y-%m-%d %H:%M:%S}"


class HeartbeatBuckets(models.Model):
    """A tenant's heartbeats summed over one bucket of time: the columns the 5-minute
    rollups and the hours share. Sums, not averages, so that buckets merge. Each
    declares its own `tenant`, for the name the tenant calls its rows by."""

    pk = models.CompositePrimaryKey("tenant", "bucket_start")
    bucket_start = models.DateTimeField()
    samples = models.IntegerField()
    disk_sum = models.FloatField()
    disk_max = models.FloatField()
    memory_sum = models.FloatField()
    memory_max = models.FloatField()
    load_sum = models.FloatField()
    load_max = models.FloatField()
    uptime_min = models.BigIntegerField()

    class Meta:
        abstract = True
        ordering = ["-bucket_start"]

    @property
    def disk_avg(self) -> float:
        return self.disk_sum / self.samples

    @property
    def memory_avg(self) -> float:
        return self.memory_sum / self.samples

    @property
    def load_avg(self) -> float:
        return self.load_sum / self.samples


class HeartbeatRollup(HeartbeatBuckets):
    """The downsampled history: one row per tenant and HEARTBEAT_ROLLUP_SECONDS bucket
    (5 minutes), kept HEARTBEAT_ROLLUP_RETENTION_DAYS, in a table partitioned by the
    day. Written in the flush's own statement from exactly the samples it inserted, so
    a sample is counted once however often the flush runs; sums and maxima merge."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="heartbeat_rollups", db_constraint=False)

    class Meta(HeartbeatBuckets.Meta):
        managed = False
        db_table = "tenants_heartbeatrollup"

    def __str__(self) -> str:
        return f"heartbeats {self.tenant_id} @ {self.bucket_start:%Y-%m-%d %H:%M} x{self.samples}"


class HeartbeatHourly(HeartbeatBuckets):
    """The older history: one row per tenant and hour, condensed from a day's 5-minute
    rollups once they are HEARTBEAT_ROLLUP_RETENTION_DAYS old (the 5-minute day is then
    dropped), and kept until HEARTBEAT_HISTORY_RETENTION_DAYS, in daily partitions. An
    hour's row is written once and never updated."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="heartbeat_hours", db_constraint=False)

    class Meta(HeartbeatBuckets.Meta):
        managed = False
        db_table = "tenants_heartbeathourly"

    def __str__(self) -> str:
        return f"heartbeats {self.tenant_id} @ {self.bucket_start:%Y-%m-%d %H}h x{self.samples}"


class BackupOutcome(models.TextChoices):
    SUCCESS = "SUCCESS", "every database backed up"
    PARTIAL = "PARTIAL", "some databases failed"
    FAILED = "FAILED", "every database failed"


class BackupReport(models.Model):
    """The tenant's backup-status.json as the agent sent it, stored once per report_id."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="backup_reports")
    report_id = models.UUIDField()
    received_at = models.DateTimeField(auto_now_add=True)
    last_run = models.DateTimeField()
    duration_seconds = models.PositiveIntegerField()
    databases = models.JSONField(default=dict)
    remote_sync = models.JSONField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=BackupOutcome.choices)

    class Meta:
        ordering = ["-last_run"]
        constraints = [models.UniqueConstraint(fields=["tenant", "report_id"], name="backup_report_once")]
        indexes = [models.Index(fields=["tenant", "-last_run"])]

    def __str__(self) -> str:
        return f"backup {self.tenant_id} {self.last_run:%Y-%m-%d} {self.outcome}"


class BackupRepository(models.Model):
    """A tenant's off-site restic repository: where its server's nightly backups go
    (encrypted with `password`, reached over SFTP with `ssh_private_key` as `account` on
    the backup target, which holds only the public key). It belongs to the tenant, not
    to its server: a recovery or a migration restores from it onto another server. The
    password and the private key are stored encrypted (FIELD_ENCRYPTION_KEY) and leave
    the Hub only in the environment of the setup script that writes them, root-only,
    onto the tenant's own server."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="backup_repository")
    url = models.CharField(max_length=500, help_text="the restic repository, e.g. sftp://account@host:22//repo")
    account = models.CharField(max_length=32, help_text="the tenant's SFTP account on the backup target")
    password = EncryptedTextField(help_text="restic's repository password")
    ssh_private_key = EncryptedTextField()
    ssh_public_key = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    # When the target last confirmed the account and its key (set up again on every setup).
    authorized_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "backup repositories"

    def __str__(self) -> str:
        return f"{self.url} (tenant {self.tenant_id})"


class UsageReport(models.Model):
    """AI token usage for one billing period (YYYY-MM), stored once per report_id."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage_reports")
    report_id = models.UUIDField()
    period = models.CharField(max_length=7)
    tokens = models.BigIntegerField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["tenant", "report_id"], name="usage_report_once")]
        indexes = [models.Index(fields=["tenant", "period"])]

    def __str__(self) -> str:
        return f"usage {self.tenant_id} {self.period}: {self.tokens}"


class CommandType(models.TextChoices):
    UPDATE = "update", "update a component"
    RESTART = "restart", "restart"
    DIAGNOSTICS = "diagnostics", "collect diagnostics"
    SUSPEND = "suspend", "suspend"
    RESUME = "resume", "resume"
    MAINTENANCE = "maintenance", "enter or leave maintenance"


class CommandStatus(models.TextChoices):
    PENDING = "PENDING", "pending"
    DELIVERED = "DELIVERED", "delivered"
    SUCCEEDED = "SUCCEEDED", "succeeded"
    FAILED = "FAILED", "failed"
    EXPIRED = "EXPIRED", "expired"


# Waiting for an answer from the agent: delivered (again) in heartbeat replies.
COMMAND_OPEN_STATUSES = (CommandStatus.PENDING, CommandStatus.DELIVERED)
COMMAND_ANSWERED_STATUSES = (CommandStatus.SUCCEEDED, CommandStatus.FAILED)
COMMAND_TERMINAL_STATUSES = (CommandStatus.SUCCEEDED, CommandStatus.FAILED, CommandStatus.EXPIRED)


class Command(models.Model):
    """An instruction for one agent: delivered at least once in heartbeat replies until
    a result answers it; the agent executes it once, by id."""

    id = models.UUIDField(primary_key=True, default=time_ordered_uuid, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="commands")
    type = models.CharField(max_length=20, choices=CommandType.choices)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=12, choices=CommandStatus.choices, default=CommandStatus.PENDING)
    created_by = models.CharField(max_length=150, default="system")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_count = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["tenant", "created_at"],
                name="command_open_by_tenant",
                condition=Q(status__in=["PENDING", "DELIVERED"]),
            ),
            models.Index(
                fields=["expires_at"], name="command_open_by_expiry", condition=Q(status__in=["PENDING", "DELIVERED"])
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id} ({self.status})"

    def can_record_result(self) -> bool:
        # A late answer to an expired command is still the truth about the server.
        return self.status in (*COMMAND_OPEN_STATUSES, CommandStatus.EXPIRED)

    def can_expire(self) -> bool:
        return self.status in COMMAND_OPEN_STATUSES
