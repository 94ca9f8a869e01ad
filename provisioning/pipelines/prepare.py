"""Pool preparation: a registered (or bought) server gets the base setup once, then
waits AVAILABLE in the pool. A server that fails it is quarantined for staff."""

from __future__ import annotations

from django.db import transaction

from hub.alerts.services import alert_raise
from hub.models import AlertSeverity
from hub.pipeline.context import StepContext
from hub.pipeline.models import Job, JobStatus
from provisioning.models import Server, ServerStatus
from provisioning.services import remote
from provisioning.services.pool import server_set_status


def _server(ctx: StepContext) -> Server:
    return Server.objects.get(pk=int(ctx.subject_id))


def probe_server(ctx: StepContext) -> None:
    server = _server(ctx)
    remote.probe(server, log=ctx.log)
    ctx.log(f"{server.ipv4}:{server.ssh_port} answers; host key recorded")


def run_base_script(name: str):
    def action(ctx: StepContext) -> None:
        server = _server(ctx)
        env = {"HUB_DOMAIN": server.name or f"pool-{server.pk}.invalid", "HUB_ADMIN_EMAIL": "ops@example.com"}
        if name == "06-tls":
            ctx.log("certificates are per tenant: issued when an order takes the server")
            return
        remote.run_on_server(server, name=name, script=remote.step_script(name), env=env, log=ctx.log)

    action.__name__ = f"prepare_{name}"
    return action


def make_available(ctx: StepContext) -> None:
    with transaction.atomic():
        server = Server.objects.select_for_update().get(pk=int(ctx.subject_id))
        if server.status == ServerStatus.PREPARING:
            server.touched = False
            server.save(update_fields=["touched", "updated_at"])
            server_set_status(server, ServerStatus.AVAILABLE, reason="prepared")


def preparation_finished(job: Job) -> None:
    if job.status == JobStatus.SUCCEEDED:
        return
    server = Server.objects.select_for_update().get(pk=int(job.subject_id))
    if server.status == ServerStatus.PREPARING:
        server_set_status(server, ServerStatus.QUARANTINED, reason=f"preparation failed: {job.error}")
    alert_raise(
        subject_type="server",
        subject_id=server.pk,
        kind="preparation_failed",
        severity=AlertSeverity.MEDIUM,
        message=f"server {server.pk} ({server.ipv4}) failed preparation: {job.error}",
    )
