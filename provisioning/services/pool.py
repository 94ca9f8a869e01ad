"""The warm pool: taking a server for an order under a row lock, giving it back,
quarantining one that was touched, registering Netcup contract servers."""

from __future__ import annotations

from datetime import date

from django.db import transaction

from hub.audit import audit_record, status_move
from hub.errors import DomainError, NotFound
from hub.pipeline.models import JOB_ACTIVE_STATUSES, Job
from hub.pipeline.services import job_start
from provisioning.models import SERVER_TRANSITIONS, Server, ServerProvider, ServerStatus
from provisioning.pipeline_names import PREPARE_SERVER


def server_set_status(server: Server, new_status: str, *, actor: str = "system", reason: str = "") -> None:
    """With the server locked: the one way its status moves (checked and audited)."""
    status_move(server, new_status, actor=actor, reason=reason, transitions=SERVER_TRANSITIONS)


def server_take_available(*, region: str, tier: str, provider: str | None = None) -> Server | None:
    """An AVAILABLE server of the region and tier (and provider, if given), locked so
    that concurrent orders never share one (SKIP LOCKED: a racing order takes the next
    one, not this one). Call inside a transaction."""
    candidates = Server.objects.select_for_update(skip_locked=True).filter(
        region=region, tier=tier, status=ServerStatus.AVAILABLE
    )
    if provider:
        candidates = candidates.filter(provider=provider)
    server = candidates.order_by("id").first()
    if server is not None:
        server_set_status(server, ServerStatus.ALLOCATED, reason="allocated to an order")
    return server


@transaction.atomic
def server_register(
    *,
    provider: str,
    region: str,
    tier: str,
    ipv4: str,
    ssh_port: int,
    name: str = "",
    root_key: str = "",
    contract_start: date | None = None,
    contract_end: date | None = None,
    actor: str,
) -> Server:
    """Staff register a Netcup contract server; the pool-preparation job makes it ready."""
    if Server.objects.filter(ipv4=ipv4, ssh_port=ssh_port).exclude(status=ServerStatus.DELETED).exists():
        raise DomainError(f"a server at {ipv4}:{ssh_port} is already registered", code="duplicate")
    server = Server.objects.create(
        provider=provider or ServerProvider.NETCUP,
        region=region,
        tier=tier,
        ipv4=ipv4,
        ssh_port=ssh_port,
        name=name,
        root_key=root_key,
        contract_start=contract_start,
        contract_end=contract_end,
        status=ServerStatus.PREPARING,
    )
    audit_record(
        actor=actor, action="server.register", object_type="server", object_id=server.pk, new=ServerStatus.PREPARING
    )
    job_start(
        pipeline=PREPARE_SERVER,
        subject_type="server",
        subject_id=server.pk,
        idempotency_key=f"prepare-server-{server.pk}-{server.created_at.timestamp()}",
        actor=actor,
    )
    return server


@transaction.atomic
def server_quarantine(*, server_id: int, actor: str, reason: str) -> Server:
    server = Server.objects.select_for_update().get(pk=server_id)
    if server.status == ServerStatus.DELETED:
        raise DomainError(f"server {server.pk} is deleted")
    server_set_status(server, ServerStatus.QUARANTINED, actor=actor, reason=reason)
    return server


@transaction.atomic
def server_release_to_pool(*, server_id: int, actor: str) -> Server:
    server = Server.objects.select_for_update().get(pk=server_id)
    if server.status not in (ServerStatus.QUARANTINED, ServerStatus.RELEASING):
        raise DomainError(f"server {server.pk} is {server.status}; only a quarantined or releasing one goes back")
    if (
        server.orders.filter(tenant__isnull=False, status="FULFILLED").exists()
        and server.tenants.exclude(status="DEPROVISIONED").exists()
    ):
        raise DomainError(f"server {server.pk} still carries a tenant")
    server.touched = False
    server.save(update_fields=["touched", "updated_at"])
    server_set_status(server, ServerStatus.AVAILABLE, actor=actor, reason="released to the pool by staff")
    return server


@transaction.atomic
def server_prepare_again(*, server_id: int, actor: str) -> Server:
    """Staff re-run the preparation pipeline on a server (a quarantined one that was
    checked, or one whose preparation failed); it ends AVAILABLE or QUARANTINED again."""
    from django.utils import timezone

    server = Server.objects.select_for_update().filter(pk=server_id).first()
    if server is None:
        raise NotFound(f"server {server_id} does not exist")
    if server.status not in (ServerStatus.QUARANTINED, ServerStatus.AVAILABLE, ServerStatus.PREPARING):
        raise DomainError(f"server {server.pk} is {server.status}; only a quarantined or pool server is prepared again")
    if Job.objects.filter(
        pipeline=PREPARE_SERVER, subject_type="server", subject_id=str(server.pk), status__in=JOB_ACTIVE_STATUSES
    ).exists():
        raise DomainError(f"server {server.pk} is being prepared already")
    server_set_status(server, ServerStatus.PREPARING, actor=actor, reason="preparation re-run by staff")
    job = job_start(
        pipeline=PREPARE_SERVER,
        subject_type="server",
        subject_id=server.pk,
        idempotency_key=f"prepare-server-{server.pk}-again-{timezone.now().timestamp()}",
        actor=actor,
    )
    audit_record(actor=actor, action="server.prepare_again", object_type="server", object_id=server.pk, new=job.pk)
    return server
