"""What the checks remember between runs: notifications of alert openings, each
check's last run, the Hub's own presence (for the outage grace), pool purchases and
the Hub database backups."""

from __future__ import annotations

from django.db import models


class NotificationChannel(models.TextChoices):
    EMAIL = "EMAIL", "staff email"
    WEBHOOK = "WEBHOOK", "chat webhook"


class NotificationStatus(models.TextChoices):
    PENDING = "PENDING", "pending"
    SENT = "SENT", "sent"
    FAILED = "FAILED", "failed"


class Notification(models.Model):
    """One message about one opening of an alert on one channel, or, in a storm, about
    many openings of one kind at once (a digest; `alert` is the first of them). The
    dedup key (alert or storm, opening, channel) is unique, and the row is written in
    the transaction that opens the alerts, so an opening is announced once per channel
    whatever the broker does."""

    alert = models.ForeignKey("hub.Alert", on_delete=models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=10, choices=NotificationChannel.choices)
    dedup_key = models.CharField(max_length=200, unique=True)
    status = models.CharField(
        max_length=10, choices=NotificationStatus.choices, default=NotificationStatus.PENDING, db_index=True
    )
    subject = models.CharField(max_length=300)
    body = models.TextField()
    covers = models.PositiveIntegerField(default=1, help_text="alert openings announced: more than 1 is a storm digest")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.channel} for alert {self.alert_id} ({self.status})"

    def can_send(self) -> bool:
        return self.status == NotificationStatus.PENDING


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


class PurchaseStatus(models.TextChoices):
    PENDING = "PENDING", "decided, not bought yet"
    BOUGHT = "BOUGHT", "bought at the provider"
    STARTED = "STARTED", "preparation job started"
    FAILED = "FAILED", "failed"


PURCHASE_OPEN_STATUSES = (PurchaseStatus.PENDING, PurchaseStatus.BOUGHT)


class PoolPurchase(models.Model):
    """One server the pool replenishment decided to buy. Written with its PREPARING
    Server row, under the pool lock and before the provider is called; the idempotency
    key is also the server's `replenish` label, so a retried purchase finds the server
    an earlier attempt bought instead of buying another."""

    idempotency_key = models.CharField(max_length=100, unique=True)
    server = models.OneToOneField("provisioning.Server", on_delete=models.PROTECT, related_name="pool_purchase")
    region = models.CharField(max_length=8)
    tier = models.CharField(max_length=16)
    status = models.CharField(
        max_length=10, choices=PurchaseStatus.choices, default=PurchaseStatus.PENDING, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"pool purchase {self.idempotency_key} ({self.status})"

    def can_buy(self) -> bool:
        return self.status in PURCHASE_OPEN_STATUSES


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
    size_bytes = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, default="")
    uploaded = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"hub backup {self.started_at:%Y-%m-%d %H:%M} ({self.status})"
