"""What the checks remember between runs: each check's last run, the Hub's own
presence (for the outage grace) and the Hub database backups."""

from __future__ import annotations

from django.db import models


class CheckOutcome(models.TextChoices):
    OK = "OK", "ok"
    SKIPPED = "SKIPPED", "skipped (another run held the lock)"
    ERROR = "ERROR", "error"


class CheckRun(models.Model):
    """The latest run of one check: when, how long, what it found, or why it failed."""

    name = models.CharField(max_length=64, unique=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=10, choices=CheckOutcome.choices, blank=True, default="")
    last_duration_ms = models.PositiveIntegerField(default=0)
    last_summary = models.JSONField(default=dict, blank=True)
    last_error = models.TextField(blank=True, default="")
    runs = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.last_outcome or 'never run'})"


class HubPresence(models.Model):
    """One row: when the Hub last looked at the fleet (beat alive) and last heard any
    heartbeat (web and flush alive), and when it came back from its last outage. A
    tenant's staleness clock never starts before `resumed_at`."""

    beat_seen_at = models.DateTimeField(null=True, blank=True)
    intake_seen_at = models.DateTimeField(null=True, blank=True)
    resumed_at = models.DateTimeField(null=True, blank=True)
    outage_reason = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        verbose_name_plural = "hub presence"

    def __str__(self) -> str:
        return f"hub seen {self.beat_seen_at}, resumed {self.resumed_at}"


class HubBackupStatus(models.TextChoices):
    RUNNING = "RUNNING", "running"
    SUCCEEDED = "SUCCEEDED", "succeeded"
    FAILED = "FAILED", "failed"
    PRUNED = "PRUNED", "rotated out"


class HubBackup(models.Model):
    """One pg_dump of the Hub's own database and what became of it."""

    status = models.CharField(max_length=10, choices=HubBackupStatus.choices, default=HubBackupStatus.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    path = models.CharField(max_length=500, blank=True, default="")
    # The Hub's keys, age-encrypted to HUB_BACKUP_RECIPIENT (empty: not set, not backed up).
    keys_path = models.CharField(max_length=500, blank=True, default="")
    size_bytes = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, default="")
    uploaded = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"hub backup {self.started_at:%Y-%m-%d %H:%M} ({self.status})"


class RestoreDrillOutcome(models.TextChoices):
    PASSED = "PASSED", "passed"
    FAILED = "FAILED", "failed"


class RestoreDrill(models.Model):
    """One tenant's latest backup restored into a scratch area and checked."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="restore_drills")
    # restic's id of the snapshot restored (empty when none could be found).
    backup_id = models.CharField(max_length=64, blank=True, default="")
    backup_time = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=RestoreDrillOutcome.choices)
    files_restored = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"restore drill of tenant {self.tenant_id} ({self.outcome})"
