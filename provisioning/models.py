"""Pool servers: the VPSes tenants run on (Netcup contract servers registered by staff,
Hetzner Cloud servers bought by the Hub)."""

from __future__ import annotations

from django.db import models

from hub.catalog import Region, Tier
from hub.crypto import EncryptedTextField


class ServerProvider(models.TextChoices):
    NETCUP = "NETCUP", "Netcup"
    HETZNER = "HETZNER", "Hetzner Cloud"


class ServerStatus(models.TextChoices):
    PREPARING = "PREPARING", "preparing"
    AVAILABLE = "AVAILABLE", "available"
    ALLOCATED = "ALLOCATED", "allocated"
    RELEASING = "RELEASING", "releasing"
    QUARANTINED = "QUARANTINED", "quarantined"
    DELETED = "DELETED", "deleted"


# Every move a server's status may make (provisioning.services.pool.server_set_status).
_QUARANTINE = ServerStatus.QUARANTINED
SERVER_TRANSITIONS: dict[str, frozenset[str]] = {
    # prepared, or failed preparation; a bought server whose purchase failed is dropped
    ServerStatus.PREPARING: frozenset({ServerStatus.AVAILABLE, _QUARANTINE, ServerStatus.DELETED}),
    # taken by an order (or assigned by staff), re-prepared or quarantined by staff
    ServerStatus.AVAILABLE: frozenset({ServerStatus.ALLOCATED, ServerStatus.PREPARING, _QUARANTINE}),
    # wiped after its tenant, deleted at Hetzner, re-prepared for the pool, or given
    # back (untouched) / quarantined (touched) when its order rolled back
    ServerStatus.ALLOCATED: frozenset(
        {ServerStatus.RELEASING, ServerStatus.DELETED, ServerStatus.PREPARING, ServerStatus.AVAILABLE, _QUARANTINE}
    ),
    ServerStatus.RELEASING: frozenset(
        {ServerStatus.DELETED, ServerStatus.PREPARING, ServerStatus.AVAILABLE, _QUARANTINE}
    ),
    # checked by staff: back to the pool, prepared again, or deleted with its tenant
    ServerStatus.QUARANTINED: frozenset({ServerStatus.AVAILABLE, ServerStatus.PREPARING, ServerStatus.DELETED}),
    ServerStatus.DELETED: frozenset(),
}


class Server(models.Model):
    provider = models.CharField(max_length=20, choices=ServerProvider.choices)
    region = models.CharField(max_length=8, choices=Region.choices)
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.BUILD)
    ipv4 = models.GenericIPAddressField(protocol="IPv4")
    ssh_port = models.PositiveIntegerField(default=22)
    status = models.CharField(
        max_length=20, choices=ServerStatus.choices, default=ServerStatus.PREPARING, db_index=True
    )
    # The provider's own id (Hetzner server id, Netcup contract/server name).
    provider_id = models.CharField(max_length=100, blank=True, default="")
    labels = models.JSONField(default=dict, blank=True)
    name = models.CharField(max_length=100, blank=True, default="")
    # A root key for a Netcup server that does not trust the Hub's key yet; encrypted.
    root_key = EncryptedTextField(blank=True, default="")
    # "ssh-ed25519 AAAA...": recorded on first contact, verified on every later one.
    host_key = models.TextField(blank=True, default="")
    host_key_recorded_at = models.DateTimeField(null=True, blank=True)
    # A setup script ran on it: it can no longer go back to the pool unchecked.
    touched = models.BooleanField(default=False)
    bought_for_order = models.ForeignKey(
        "provisioning.Order", null=True, blank=True, on_delete=models.SET_NULL, related_name="bought_servers"
    )
    # A Netcup server's 12-month contract (staff enter it when they register the server).
    contract_start = models.DateField(null=True, blank=True)
    contract_end = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["region", "tier", "status"])]

    def __str__(self) -> str:
        return f"{self.provider} {self.region}/{self.tier} {self.ipv4}:{self.ssh_port} ({self.status})"


class OrderStatus(models.TextChoices):
    PAYMENT_PENDING = "PAYMENT_PENDING", "payment pending"
    PAYMENT_CONFIRMED = "PAYMENT_CONFIRMED", "payment confirmed"
    AWAITING_SERVER = "AWAITING_SERVER", "awaiting server"
    SERVER_READY = "SERVER_READY", "server ready"
    DNS_PENDING = "DNS_PENDING", "DNS pending"
    DNS_READY = "DNS_READY", "DNS ready"
    PROVISIONING = "PROVISIONING", "provisioning"
    FULFILLED = "FULFILLED", "fulfilled"
    FAILED = "FAILED", "failed"
    ROLLED_BACK = "ROLLED_BACK", "rolled back"
    CANCELLED = "CANCELLED", "cancelled"


ORDER_FLOW = (
    OrderStatus.PAYMENT_PENDING,
    OrderStatus.PAYMENT_CONFIRMED,
    OrderStatus.AWAITING_SERVER,
    OrderStatus.SERVER_READY,
    OrderStatus.DNS_PENDING,
    OrderStatus.DNS_READY,
    OrderStatus.PROVISIONING,
    OrderStatus.FULFILLED,
)
ORDER_TERMINAL_STATUSES = (
    OrderStatus.FULFILLED,
    OrderStatus.FAILED,
    OrderStatus.ROLLED_BACK,
    OrderStatus.CANCELLED,
)
ORDER_IN_FLIGHT_STATUSES = tuple(s for s in ORDER_FLOW if s not in ORDER_TERMINAL_STATUSES)
_ORDER_ENDS = frozenset({OrderStatus.FAILED, OrderStatus.ROLLED_BACK, OrderStatus.CANCELLED})
# An order moves forward along the flow, or ends; an order that ended without being
# fulfilled can be retried (back into the flow). FULFILLED is final.
ORDER_TRANSITIONS: dict[str, frozenset[str]] = {
    **{
        status: frozenset(ORDER_FLOW[position + 1 :]) | _ORDER_ENDS
        for position, status in enumerate(ORDER_FLOW)
        if status != OrderStatus.FULFILLED
    },
    OrderStatus.FULFILLED: frozenset(),
    **{status: frozenset(ORDER_FLOW) for status in _ORDER_ENDS},
}


class OrderMode(models.TextChoices):
    AUTO = "AUTO", "auto (buy overflow capacity)"
    MANUAL = "MANUAL", "manual (wait for staff)"


class Order(models.Model):
    status = models.CharField(
        max_length=20, choices=OrderStatus.choices, default=OrderStatus.PAYMENT_PENDING, db_index=True
    )
    mode = models.CharField(max_length=10, choices=OrderMode.choices, default=OrderMode.AUTO)
    plan = models.CharField(max_length=16, choices=Tier.choices, default=Tier.BUILD)
    region = models.CharField(max_length=8, choices=Region.choices, default=Region.EU)
    domain = models.CharField(max_length=253)
    tools = models.JSONField(default=list, blank=True)
    customer_email = models.EmailField(blank=True, default="")
    stripe_customer_id = models.CharField(max_length=100, blank=True, default="")
    stripe_subscription_id = models.CharField(max_length=100, blank=True, default="")
    # The Stripe event (or API request) that created it: the same one never makes two.
    source_event_id = models.CharField(max_length=200, null=True, blank=True, unique=True)
    server = models.ForeignKey(Server, null=True, blank=True, on_delete=models.PROTECT, related_name="orders")
    tenant = models.ForeignKey(
        "tenants.Tenant", null=True, blank=True, on_delete=models.SET_NULL, related_name="orders"
    )
    job = models.OneToOneField("hub.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="order")
    failure_reason = models.TextField(blank=True, default="")
    # What the order waits on outside the Hub, shown to staff ("waiting for the
    # customer's nameservers"), and since when; blank when it waits on nothing.
    waiting_reason = models.CharField(max_length=200, blank=True, default="")
    waiting_since = models.DateTimeField(null=True, blank=True)
    # The Cloudflare zone the domain's records are in; `dns_zone_created`: the Hub
    # added it for this order (so a rollback deletes it), `dns_nameservers` are the
    # ones Cloudflare assigned it.
    dns_zone_id = models.CharField(max_length=64, blank=True, default="")
    dns_zone_name = models.CharField(max_length=253, blank=True, default="")
    dns_zone_created = models.BooleanField(default=False)
    dns_nameservers = models.JSONField(default=list, blank=True)
    nameservers_notice_sent_at = models.DateTimeField(null=True, blank=True)
    nameservers_expired_notice_sent_at = models.DateTimeField(null=True, blank=True)
    welcome_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    status_changed_at = models.DateTimeField(auto_now_add=True)
    fulfilled_at = models.DateTimeField(null=True, blank=True)
    # How its first provisioning attempt ended (True: FULFILLED; False: FAILED or
    # ROLLED_BACK), kept when staff retry it; None while the first attempt runs, or
    # when it was cancelled. Provisioning's first-attempt success rate (/metrics).
    first_attempt_succeeded = models.BooleanField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "status_changed_at"])]

    def __str__(self) -> str:
        return f"order #{self.pk} {self.domain} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in ORDER_TERMINAL_STATUSES

    def can_assign_server(self) -> bool:
        return self.status == OrderStatus.AWAITING_SERVER and self.server_id is None

    def can_cancel(self) -> bool:
        return not self.is_terminal


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
    server = models.OneToOneField(Server, on_delete=models.PROTECT, related_name="pool_purchase")
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
        # The table it had when the replenishment lived in monitoring.
        db_table = "monitoring_poolpurchase"
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"pool purchase {self.idempotency_key} ({self.status})"

    def can_buy(self) -> bool:
        return self.status in PURCHASE_OPEN_STATUSES


class SnapshotState(models.TextChoices):
    CREATING = "CREATING", "creating"
    AVAILABLE = "AVAILABLE", "available"
    FAILED = "FAILED", "failed"
    DELETED = "DELETED", "deleted"


class Snapshot(models.Model):
    """A daily provider snapshot of a tenant's server. `label` names the tenant and the
    day; the image at the provider carries the same in its labels, so a retried call
    finds the image an earlier one made instead of making a second."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="snapshots")
    server = models.ForeignKey(Server, null=True, blank=True, on_delete=models.SET_NULL, related_name="snapshots")
    provider = models.CharField(max_length=20, choices=ServerProvider.choices)
    day = models.DateField()
    label = models.CharField(max_length=100)
    provider_image_id = models.CharField(max_length=100, blank=True, default="")
    state = models.CharField(max_length=10, choices=SnapshotState.choices, default=SnapshotState.CREATING)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    available_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-day", "-id"]
        constraints = [models.UniqueConstraint(fields=["tenant", "day"], name="snapshot_one_per_tenant_and_day")]
        indexes = [models.Index(fields=["state", "day"])]

    def __str__(self) -> str:
        return f"{self.label} ({self.state})"


class MoveKind(models.TextChoices):
    RECOVER = "RECOVER", "recover (the server is lost)"
    MIGRATE = "MIGRATE", "migrate (to another server)"


class TenantMove(models.Model):
    """A tenant put on another server: recovered from its backups when its server is
    lost, or migrated from a living one. Its job (subject: the tenant) does the work;
    this row holds what the steps must find again after a worker died: the target
    server taken or bought, the source's agent keys, and the times of the switch."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="moves")
    kind = models.CharField(max_length=10, choices=MoveKind.choices)
    job = models.OneToOneField("hub.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="tenant_move")
    source_server = models.ForeignKey(Server, on_delete=models.PROTECT, related_name="moves_out")
    target_server = models.ForeignKey(Server, null=True, blank=True, on_delete=models.PROTECT, related_name="moves_in")
    # What staff asked for (migrate): this very server, or any pool server of a provider.
    wanted_server = models.ForeignKey(Server, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    wanted_provider = models.CharField(max_length=20, blank=True, default="")
    reason = models.CharField(max_length=500, blank=True, default="")
    # The agent keys that worked before the move: revoked at the switch, kept on a rollback.
    # (None until the handover recorded them.)
    source_credential_ids = models.JSONField(null=True, blank=True, default=None)
    maintenance_started_at = models.DateTimeField(null=True, blank=True)
    switched_at = models.DateTimeField(null=True, blank=True)
    target_heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Maintenance start to the first heartbeat from the target (a migration).
    downtime_seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.kind.lower()} of tenant {self.tenant_id} (move {self.pk})"
