"""Starting a tenant's deprovisioning after its subscription ended and the retention
period ran out (its steps: provisioning.pipelines.deprovision)."""

from __future__ import annotations

from django.db import transaction

from hub.pipeline.models import Job
from hub.pipeline.services import job_start
from provisioning.pipeline_names import DEPROVISION_TENANT
from tenants.models import Tenant
from tenants.services import lifecycle


def tenant_deprovision_start(*, tenant_id: int, reason: str, actor: str = "billing") -> Job:
    """Move the tenant to DEPROVISIONING and start its job; calling it again returns
    the job the first call started."""
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
        lifecycle.tenant_deprovision_begin(tenant=tenant, actor=actor, reason=reason)
        return job_start(
            pipeline=DEPROVISION_TENANT,
            subject_type="tenant",
            subject_id=tenant.pk,
            context={"reason": reason},
            idempotency_key=f"deprovision:tenant:{tenant.pk}",
            actor=actor,
        )
