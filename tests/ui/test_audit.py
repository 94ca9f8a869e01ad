"""Every staff action, in the admin and through the staff API, leaves an audit record:
who (the staff user), when, what (the action) and on which object."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from billing.models import EventStatus, StaffTask, StaffTaskStatus, StripeEvent, Subscription
from hub.models import Alert, AlertSeverity, AuditEvent
from hub.pipeline.models import Job, JobStatus
from provisioning.models import Order, OrderMode, OrderStatus, Server, ServerStatus
from rollouts.models import Rollout, RolloutStage, RolloutStatus, StageStatus
from rollouts.services import StageSpec, release_create, rollout_create
from tenants.models import Command, CommandType, Tenant
from tenants.services import agent_register, registration_token_issue
from tests.conftest import job_of
from tests.factories import ServerFactory, TenantFactory
from tests.ui.conftest import make_failed_order, mark_job_failed

pytestmark = pytest.mark.django_db

STAFF = "ops-anna"
IMAGE = "registry.example.test/openclaw:1.1.0@sha256:" + "b" * 64


@pytest.fixture
def since() -> datetime:
    return timezone.now()


@pytest.fixture
def api(staff_user: User) -> APIClient:
    """The staff API as the design says staff use it: DRF token authentication."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff_user).key}")
    return client


def audited(since: datetime, *, action: str, object_type: str, object_id: object, actor: str = STAFF) -> AuditEvent:
    """The one audit row of this action on this object, written by the staff user since the test began."""
    rows = list(
        AuditEvent.objects.filter(
            action=action, object_type=object_type, object_id=str(object_id), created_at__gte=since
        )
    )
    recorded = AuditEvent.objects.filter(created_at__gte=since).values_list(
        "actor", "action", "object_type", "object_id"
    )
    assert rows, f"no {action} audit event on {object_type} {object_id}; recorded: {list(recorded)}"
    assert [row.actor for row in rows] == [actor], f"{action} on {object_type} {object_id} recorded by {rows}"
    return rows[0]


def admin_action(client: Client, changelist: str, action: str, *pks: object) -> None:
    response = client.post(reverse(changelist), {"action": action, "_selected_action": [str(pk) for pk in pks]})
    assert response.status_code == 302, response.content[:2000]


def post(client: Client, url: str, data: dict[str, Any] | None = None) -> None:
    response = client.post(url, data or {})
    assert response.status_code == 302, response.content[:2000]


# --- Orders --------------------------------------------------------------------------


@pytest.fixture
def failed_order(tmp_path: Path) -> Order:
    order = make_failed_order(tmp_path)
    mark_job_failed(job_of(order))
    return order


@pytest.mark.parametrize("via", ["button", "admin action", "api"])
def test_order_retry_is_audited(
    via: str, staff_client: Client, api: APIClient, failed_order: Order, since: datetime
) -> None:
    if via == "button":
        post(staff_client, reverse("admin:provisioning_order_retry", args=[failed_order.pk]))
    elif via == "admin action":
        admin_action(staff_client, "admin:provisioning_order_changelist", "retry_orders", failed_order.pk)
    else:
        assert api.post(f"/api/v1/orders/{failed_order.pk}/retry/").status_code == 200

    event = audited(since, action="order.retry", object_type="order", object_id=failed_order.pk)
    assert (event.old, event.new) == (OrderStatus.FAILED, OrderStatus.PAYMENT_CONFIRMED)
    job_event = audited(since, action="job.retry", object_type="job", object_id=failed_order.job_id)
    assert (job_event.old, job_event.new) == (JobStatus.ROLLED_BACK, JobStatus.RUNNING)
    failed_order.refresh_from_db()
    assert failed_order.status == OrderStatus.PAYMENT_CONFIRMED


@pytest.mark.parametrize("via", ["button", "admin action", "api"])
def test_order_cancel_is_audited(via: str, staff_client: Client, api: APIClient, since: datetime) -> None:
    order = Order.objects.create(domain="wait.example.test", status=OrderStatus.AWAITING_SERVER, region="eu")
    if via == "button":
        post(staff_client, reverse("admin:provisioning_order_cancel", args=[order.pk]))
    elif via == "admin action":
        admin_action(staff_client, "admin:provisioning_order_changelist", "cancel_orders", order.pk)
    else:
        assert api.post(f"/api/v1/orders/{order.pk}/cancel/").status_code == 200

    assert audited(since, action="order.cancel", object_type="order", object_id=order.pk).old == "AWAITING_SERVER"
    status = audited(since, action="order.status", object_type="order", object_id=order.pk)
    assert (status.old, status.new) == (OrderStatus.AWAITING_SERVER, OrderStatus.CANCELLED)


def test_order_assign_server_is_audited(staff_client: Client, since: datetime) -> None:
    order = Order.objects.create(
        domain="manual.example.test",
        status=OrderStatus.AWAITING_SERVER,
        region="eu",
        plan="build",
        mode=OrderMode.MANUAL,
    )
    server = ServerFactory.create(status=ServerStatus.AVAILABLE, region="eu", tier="build")
    post(staff_client, reverse("admin:provisioning_order_assign_server", args=[order.pk]), {"server": server.pk})

    assert audited(since, action="order.assign_server", object_type="order", object_id=order.pk).new == server.pk
    order.refresh_from_db()
    assert order.server_id == server.pk


def test_order_create_through_the_api_is_audited(api: APIClient, since: datetime) -> None:
    response = api.post(
        "/api/v1/orders/", {"plan": "build", "region": "eu", "domain": "api.example.test"}, format="json"
    )
    assert response.status_code == 201, response.content
    audited(since, action="order.create", object_type="order", object_id=response.json()["id"])


# --- Servers -------------------------------------------------------------------------

SERVER_OPERATIONS = [
    # (button, admin action, status before, audit action, status after)
    ("quarantine", "quarantine", ServerStatus.AVAILABLE, "server.status", ServerStatus.QUARANTINED),
    ("release", "release_to_pool", ServerStatus.QUARANTINED, "server.status", ServerStatus.AVAILABLE),
    ("prepare", "prepare_again", ServerStatus.QUARANTINED, "server.prepare_again", ServerStatus.PREPARING),
]


@pytest.mark.parametrize("via", ["button", "admin action"])
@pytest.mark.parametrize(
    ("button", "action", "before", "audit_action", "after"), SERVER_OPERATIONS, ids=[op[0] for op in SERVER_OPERATIONS]
)
def test_server_operations_are_audited(
    via: str,
    button: str,
    action: str,
    before: str,
    audit_action: str,
    after: str,
    staff_client: Client,
    since: datetime,
) -> None:
    server = ServerFactory.create(status=before)
    if via == "button":
        post(staff_client, reverse("admin:provisioning_server_operate", args=[server.pk, button]))
    else:
        admin_action(staff_client, "admin:provisioning_server_changelist", action, server.pk)

    server.refresh_from_db()
    assert server.status == after
    audited(since, action=audit_action, object_type="server", object_id=server.pk)
    status = audited(since, action="server.status", object_type="server", object_id=server.pk)
    assert (status.old, status.new) == (before, after)


def test_server_register_through_the_api_is_audited(api: APIClient, since: datetime) -> None:
    response = api.post("/api/v1/servers/", {"region": "eu", "ipv4": "127.0.60.1", "ssh_port": 2222}, format="json")
    assert response.status_code == 201, response.content
    server_id = response.json()["id"]
    assert audited(since, action="server.register", object_type="server", object_id=server_id).new == "PREPARING"
    audited(since, action="job.start", object_type="job", object_id=Job.objects.get(subject_id=str(server_id)).pk)


# --- Tenants and commands ------------------------------------------------------------


@pytest.fixture
def tenant() -> Tenant:
    return TenantFactory.create(
        domain="tenant.example.test", server=ServerFactory.create(status=ServerStatus.ALLOCATED, ipv4="127.0.50.9")
    )


@pytest.fixture
def registered_tenant(tenant: Tenant) -> Tenant:
    _, token = registration_token_issue(tenant_id=tenant.pk, actor="provisioning")
    agent_register(token=token, hostname="tenant-host", agent_version="1.0.0")
    return tenant


@pytest.mark.parametrize(
    ("action", "command_type"), [("queue_restart", "restart"), ("queue_diagnostics", "diagnostics")]
)
def test_tenant_queue_command_admin_action_is_audited(
    action: str, command_type: str, staff_client: Client, tenant: Tenant, since: datetime
) -> None:
    admin_action(staff_client, "admin:tenants_tenant_changelist", action, tenant.pk)

    command = Command.objects.get(tenant=tenant)
    assert (command.type, command.created_by) == (command_type, STAFF)
    event = audited(since, action="command.queue", object_type="command", object_id=command.pk)
    assert event.new is not None
    assert event.new["tenant"] == tenant.pk


def test_command_added_in_the_admin_form_is_audited(staff_client: Client, tenant: Tenant, since: datetime) -> None:
    response = staff_client.post(
        reverse("admin:tenants_command_add"), {"tenant": tenant.pk, "type": CommandType.RESTART, "payload": "{}"}
    )
    assert response.status_code == 302, response.content[:3000]

    command = Command.objects.get(tenant=tenant)
    queued = audited(since, action="command.queue", object_type="command", object_id=command.pk)
    assert queued.new is not None
    assert queued.new["type"] == "restart"
    audited(since, action="admin.add", object_type="command", object_id=command.pk)


def test_tenant_key_revoke_and_token_issue_admin_actions_are_audited(
    staff_client: Client, registered_tenant: Tenant, since: datetime
) -> None:
    admin_action(staff_client, "admin:tenants_tenant_changelist", "revoke_agent_keys", registered_tenant.pk)
    assert audited(since, action="agent.key.revoke", object_type="tenant", object_id=registered_tenant.pk).new == {
        "revoked": 1
    }
    admin_action(staff_client, "admin:tenants_tenant_changelist", "issue_registration_token", registered_tenant.pk)
    audited(since, action="agent.registration_token.issue", object_type="tenant", object_id=registered_tenant.pk)


def test_tenant_staff_api_endpoints_are_audited(api: APIClient, registered_tenant: Tenant, since: datetime) -> None:
    base = f"/api/v1/tenants/{registered_tenant.pk}"
    response = api.post(f"{base}/commands/", {"type": "diagnostics", "payload": {}}, format="json")
    assert response.status_code == 201, response.content
    audited(since, action="command.queue", object_type="command", object_id=response.json()["id"])

    assert api.post(f"{base}/revoke-keys/").status_code == 200
    audited(since, action="agent.key.revoke", object_type="tenant", object_id=registered_tenant.pk)

    assert api.post(f"{base}/registration-token/", {}, format="json").status_code == 201
    audited(since, action="agent.registration_token.issue", object_type="tenant", object_id=registered_tenant.pk)


# --- Alerts --------------------------------------------------------------------------


def test_alert_acknowledge_is_audited(staff_client: Client, since: datetime) -> None:
    alerts = [
        Alert.objects.create(
            subject_type="tenant", subject_id=str(n), kind="disk", severity=AlertSeverity.HARD, message="x"
        )
        for n in range(2)
    ]
    admin_action(staff_client, "admin:hub_alert_changelist", "acknowledge", *(a.pk for a in alerts))

    for alert in alerts:
        audited(since, action="alert.acknowledge", object_type="alert", object_id=alert.pk)
        alert.refresh_from_db()
        assert alert.acknowledged_by == STAFF


# --- Jobs ----------------------------------------------------------------------------


def _running_job(tmp_path: Path) -> Job:
    return make_failed_order(tmp_path, domain="running.example.test").job  # type: ignore[return-value]


@pytest.mark.parametrize("via", ["button", "admin action", "api"])
@pytest.mark.parametrize("operation", ["retry", "cancel"])
def test_job_retry_and_cancel_are_audited(
    operation: str, via: str, staff_client: Client, api: APIClient, failed_order: Order, tmp_path: Path, since: datetime
) -> None:
    job = failed_order.job if operation == "retry" else _running_job(tmp_path)
    assert job is not None
    before = Job.objects.get(pk=job.pk).status
    if via == "button":
        post(staff_client, reverse(f"admin:hub_job_{operation}", args=[job.pk]))
    elif via == "admin action":
        admin_action(staff_client, "admin:hub_job_changelist", f"{operation}_jobs", job.pk)
    else:
        assert api.post(f"/api/v1/jobs/{job.pk}/{operation}/").status_code == 200

    event = audited(since, action=f"job.{operation}", object_type="job", object_id=job.pk)
    assert event.old == before


# --- Rollouts ------------------------------------------------------------------------


@pytest.fixture
def rollout() -> Rollout:
    """A DRAFT rollout with one tenant that may take it."""
    now = timezone.now()
    tenant = TenantFactory.create(
        domain="fleet.example.test", server=ServerFactory.create(status=ServerStatus.ALLOCATED, ipv4="127.0.50.8")
    )
    Tenant.objects.filter(pk=tenant.pk).update(last_heartbeat_at=now, registered_at=now, versions={"openclaw": "1.0.0"})
    release = release_create(component="openclaw", version="1.1.0", image=IMAGE, actor="ci")
    stages = [StageSpec(internal=True, soak_seconds=0), StageSpec(percent=100, soak_seconds=0)]
    return rollout_create(release_id=release.pk, actor="ci", stages=stages)


ROLLOUT_OPERATIONS = [
    # (operation, status before, status after)
    ("start", RolloutStatus.DRAFT, RolloutStatus.RUNNING),
    ("pause", RolloutStatus.RUNNING, RolloutStatus.PAUSED),
    ("resume", RolloutStatus.PAUSED, RolloutStatus.RUNNING),
    ("abort", RolloutStatus.RUNNING, RolloutStatus.ABORTED),
    # Nothing was dispatched, so there is nothing to roll back: it ends at once.
    ("rollback", RolloutStatus.RUNNING, RolloutStatus.ROLLED_BACK),
    ("retry", RolloutStatus.HALTED, RolloutStatus.RUNNING),
]


@pytest.mark.parametrize("via", ["admin action", "api"])
@pytest.mark.parametrize(("operation", "before", "after"), ROLLOUT_OPERATIONS, ids=[op[0] for op in ROLLOUT_OPERATIONS])
def test_rollout_operations_are_audited(
    operation: str,
    before: str,
    after: str,
    via: str,
    staff_client: Client,
    api: APIClient,
    rollout: Rollout,
    since: datetime,
) -> None:
    if before != RolloutStatus.DRAFT:
        Rollout.objects.filter(pk=rollout.pk).update(status=before)
    if via == "admin action":
        admin_action(staff_client, "admin:rollouts_rollout_changelist", operation, rollout.pk)
    else:
        response = api.post(f"/api/v1/rollouts/{rollout.pk}/{operation}/", {}, format="json")
        assert response.status_code == 200, response.content

    rollout.refresh_from_db()
    assert rollout.status == after
    # The rollouts app names its staff actors "staff:<username>" (admin and API alike).
    moves = list(
        AuditEvent.objects.filter(
            action="rollout.status", object_type="rollout", object_id=str(rollout.pk), created_at__gte=since
        ).order_by("id")
    )
    assert moves, f"no rollout.status audit event for {operation}"
    assert {move.actor for move in moves} == {f"staff:{STAFF}"}
    assert (moves[0].old, moves[-1].new) == ({"status": before}, {"status": after})


def test_release_and_rollout_created_through_the_api_are_audited(api: APIClient, since: datetime) -> None:
    response = api.post(
        "/api/v1/releases/", {"component": "openclaw", "version": "2.0.0", "image": IMAGE}, format="json"
    )
    assert response.status_code == 201, response.content
    release_id = response.json()["id"]
    audited(since, action="release.create", object_type="release", object_id=release_id, actor=f"staff:{STAFF}")

    response = api.post("/api/v1/rollouts/", {"release": release_id}, format="json")
    assert response.status_code == 201, response.content
    audited(
        since, action="rollout.create", object_type="rollout", object_id=response.json()["id"], actor=f"staff:{STAFF}"
    )


# --- Billing -------------------------------------------------------------------------


def test_stripe_event_retry_is_audited(staff_client: Client, since: datetime) -> None:
    event = StripeEvent.objects.create(
        stripe_event_id="evt_audit_1", type="invoice.paid", created=0, payload={}, status=EventStatus.FAILED, attempts=5
    )
    admin_action(staff_client, "admin:billing_stripeevent_changelist", "retry_events", event.pk)
    row = audited(since, action="stripe_event.retry", object_type="stripe_event", object_id="evt_audit_1")
    assert (row.old, row.new) == (5, 0)


def test_stripe_event_requeue_sweep_is_audited_on_each_event_it_touched(
    staff_client: Client, since: datetime, settings: Any
) -> None:
    settings.BILLING_EVENT_LOST_AFTER = 0
    lost = StripeEvent.objects.create(
        stripe_event_id="evt_audit_lost", type="invoice.paid", created=0, payload={}, status=EventStatus.RECEIVED
    )
    done = StripeEvent.objects.create(
        stripe_event_id="evt_audit_done", type="invoice.paid", created=0, payload={}, status=EventStatus.SUCCEEDED
    )

    admin_action(staff_client, "admin:billing_stripeevent_changelist", "requeue_events", lost.pk)

    row = audited(since, action="stripe_event.requeue", object_type="stripe_event", object_id="evt_audit_lost")
    assert row.old == EventStatus.RECEIVED
    assert not AuditEvent.objects.filter(object_id=done.stripe_event_id).exists(), "only what the sweep touched"


@pytest.mark.parametrize("kind", ["tier_change", "manual_move"])
def test_staff_task_complete_is_audited(kind: str, staff_client: Client, since: datetime) -> None:
    subscription = Subscription.objects.create(stripe_subscription_id=f"sub_audit_{kind}", plan="scale")
    task = StaffTask.objects.create(
        kind=kind, subscription=subscription, title="move it", details={"to": "scale"}, dedup_key=f"audit-{kind}"
    )
    admin_action(staff_client, "admin:billing_stafftask_changelist", "complete_tasks", task.pk)

    task.refresh_from_db()
    assert (task.status, task.done_by) == (StaffTaskStatus.DONE, STAFF)
    row = audited(since, action="staff_task.complete", object_type="staff_task", object_id=task.pk)
    assert (row.old, row.new) == (StaffTaskStatus.OPEN, StaffTaskStatus.DONE)


@pytest.mark.parametrize("via", ["admin action", "api"])
def test_rollout_promote_is_audited(
    via: str, staff_client: Client, api: APIClient, rollout: Rollout, since: datetime
) -> None:
    Rollout.objects.filter(pk=rollout.pk).update(status=RolloutStatus.RUNNING, current_position=0)
    stage = RolloutStage.objects.get(rollout=rollout, position=0)
    RolloutStage.objects.filter(pk=stage.pk).update(status=StageStatus.AWAITING_PROMOTE)
    if via == "admin action":
        admin_action(staff_client, "admin:rollouts_rollout_changelist", "promote", rollout.pk)
    else:
        response = api.post(f"/api/v1/rollouts/{rollout.pk}/promote/", {}, format="json")
        assert response.status_code == 200, response.content

    stage.refresh_from_db()
    assert stage.status == StageStatus.PASSED
    passed = AuditEvent.objects.filter(
        action="rollout.stage.status", object_type="rollout", object_id=str(rollout.pk), created_at__gte=since
    ).get(new__status=StageStatus.PASSED)
    assert passed.actor == f"staff:{STAFF}"
    assert (passed.old, passed.new) == (
        {"stage": 0, "status": StageStatus.AWAITING_PROMOTE},
        {"stage": 0, "status": StageStatus.PASSED},
    )


# --- Generic admin edits -------------------------------------------------------------


def test_bulk_delete_selected_is_audited_once_per_object(staff_client: Client, since: datetime) -> None:
    # given: two servers; "delete selected" logs them with one bulk_create, which sends no post_save
    servers = [ServerFactory.create(ipv4=f"127.0.50.{n}") for n in (31, 32)]

    # when: the staff confirm the built-in "delete selected" action
    response = staff_client.post(
        reverse("admin:provisioning_server_changelist"),
        {"action": "delete_selected", "_selected_action": [str(s.pk) for s in servers], "post": "yes"},
    )

    # then
    assert response.status_code == 302, response.content[:2000]
    assert not Server.objects.filter(pk__in=[s.pk for s in servers]).exists()
    for server in servers:
        row = audited(since, action="admin.delete", object_type="server", object_id=server.pk)
        assert row.reason == str(server)


def test_single_delete_is_audited_once(staff_client: Client, since: datetime) -> None:
    server = ServerFactory.create(ipv4="127.0.50.33")
    post(staff_client, reverse("admin:provisioning_server_delete", args=[server.pk]), {"post": "yes"})

    assert not Server.objects.filter(pk=server.pk).exists()
    audited(since, action="admin.delete", object_type="server", object_id=server.pk)


def test_change_form_edit_is_audited(staff_client: Client, since: datetime) -> None:
    server = ServerFactory.create(ipv4="127.0.50.34")
    url = reverse("admin:provisioning_server_change", args=[server.pk])
    form = staff_client.get(url).context["adminform"].form
    data = {name: value for name in form.fields if (value := form[name].value()) is not None}

    post(staff_client, url, {**data, "name": "renamed-by-staff"})

    server.refresh_from_db()
    assert server.name == "renamed-by-staff"
    row = audited(since, action="admin.change", object_type="server", object_id=server.pk)
    assert "Name" in str(row.new), row.new
