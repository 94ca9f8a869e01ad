"""The steps of a tenant's deprovisioning: its DNS records go, its server is wiped (a
Netcup contract server is prepared again into the pool) or deleted at Hetzner, its
agent is cut off, and the tenant ends DEPROVISIONED. Every step is idempotent; the job
is started once per tenant (provisioning.services.deprovision)."""

from __future__ import annotations

from django.db import transaction

from hub.pipeline.context import StepContext
from hub.pipeline.services import job_start
from provisioning.integrations import cloudflare
from provisioning.models import Order, Server, ServerProvider, ServerStatus
from provisioning.pipeline_names import PREPARE_SERVER
from provisioning.providers import backend_for
from provisioning.services import remote
from provisioning.services.dns import names_to_remove
from provisioning.services.pool import server_set_status
from tenants.models import Tenant
from tenants.services import lifecycle


def _tenant(ctx: StepContext) -> Tenant:
    return Tenant.objects.select_related("server").get(pk=int(ctx.subject_id))


def remove_dns(ctx: StepContext) -> None:
    """The tenant's A records leave its domain's zone; the zone itself stays in the
    account (the domain is the customer's, and may point elsewhere next)."""
    tenant = _tenant(ctx)
    zone = cloudflare.zone_for_domain(tenant.domain, fresh=True)
    if zone is None:
        ctx.log(f"{tenant.domain} is in no zone of the account: no records to delete")
        return
    order = Order.objects.filter(tenant_id=tenant.pk).order_by("-id").first()
    names = names_to_remove(domain=tenant.domain, tools=list(order.tools) if order else [])
    deleted = cloudflare.records_delete(zone_id=zone.id, names=names)
    ctx.log(f"deleted {deleted} DNS records of {tenant.domain} from zone {zone.name}")


def wipe_server(ctx: StepContext) -> None:
    tenant = _tenant(ctx)
    server = tenant.server
    if server is None or server.status == ServerStatus.DELETED:
        ctx.log("no server to wipe")
        return
    if server.provider == ServerProvider.HETZNER:
        ctx.log(f"hetzner server {server.provider_id} is deleted in the next step, not wiped")
        return
    if server.status == ServerStatus.ALLOCATED:
        with transaction.atomic():
            locked = Server.objects.select_for_update().get(pk=server.pk)
            server_set_status(locked, ServerStatus.RELEASING, reason=f"wiping after tenant {tenant.pk}")
    remote.run_on_server(
        server, name="90-wipe", script=remote.step_script("90-wipe"), env={"HUB_DOMAIN": tenant.domain}, log=ctx.log
    )


def release_server(ctx: StepContext) -> dict[str, object]:
    """Hetzner servers are deleted (billed by the hour, the pool buys fresh ones);
    Netcup contract servers are prepared again and go back into the pool."""
    tenant = _tenant(ctx)
    server = tenant.server
    if server is None:
        return {}
    with transaction.atomic():
        locked = Server.objects.select_for_update().get(pk=server.pk)
        if locked.status in (ServerStatus.DELETED, ServerStatus.PREPARING, ServerStatus.AVAILABLE):
            ctx.log(f"server {locked.pk} already {locked.status}")
            return {"server_status": locked.status}
        if locked.provider == ServerProvider.HETZNER:
            gone = backend_for(locked.provider).deallocate(locked)
            ctx.log(f"hetzner server {locked.provider_id} {'deleted' if gone else 'was already gone'}")
            server_set_status(locked, ServerStatus.DELETED, reason=f"tenant {tenant.pk} deprovisioned")
            return {"server_status": locked.status}
        server_set_status(locked, ServerStatus.PREPARING, reason=f"wiped after tenant {tenant.pk}")
        locked.touched = False
        locked.save(update_fields=["touched"])
        job = job_start(
            pipeline=PREPARE_SERVER,
            subject_type="server",
            subject_id=locked.pk,
            idempotency_key=f"prepare:server:{locked.pk}:after-tenant:{tenant.pk}",
        )
    ctx.log(f"server {locked.pk} wiped: preparing it again for the pool (job {job.pk})")
    return {"server_status": ServerStatus.PREPARING, "prepare_job_id": job.pk}


def finish(ctx: StepContext) -> None:
    tenant = lifecycle.tenant_deprovision_finish(
        tenant_id=int(ctx.subject_id), actor="provisioning", reason=str(ctx.context.get("reason", ""))
    )
    ctx.log(f"tenant {tenant.pk} deprovisioned")
