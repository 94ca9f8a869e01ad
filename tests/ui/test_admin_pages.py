"""The operator pages through Django's test client: the dashboard's numbers follow the
rows and its cost does not grow with the fleet, the order page and its timeline.json
show every step, list pages search and filter, and no secret reaches any page."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from hub.models import Alert, AlertSeverity, AlertStatus, Job
from hub.pipeline.models import JobStatus, StepKind, StepStatus
from provisioning.models import Order, OrderStatus, Server, ServerStatus
from rollouts.models import RolloutStage, RolloutStatus, StageStatus, TenantUpdate, UpdateStatus
from rollouts.services import StageSpec, release_create, rollout_create
from tenants.models import AgentCredential, CommandType, RegistrationToken, Tenant, TenantStatus
from tenants.services import agent_register, backup_repository_ensure, command_queue, registration_token_issue
from tests.conftest import job_of
from tests.factories import ServerFactory, TenantFactory
from tests.ui.conftest import make_failed_order, mark_job_failed

pytestmark = pytest.mark.django_db

INDEX = "/admin/"


def number(html: str, attribute: str) -> int:
    """The count in the dashboard cell marked with the data attribute."""
    match = re.search(rf'{re.escape(attribute)}">\s*(\d+)\s*<', html)
    assert match, f"no dashboard cell {attribute} in the page"
    return int(match.group(1))


def section(html: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}"[^>]*>(.*?)</section>', html, re.S)
    assert match, f"no section {section_id}"
    return match.group(1)


def dashboard(client: Client) -> str:
    response = client.get(INDEX)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="hub-dashboard"' in html
    return html


def make_rollout(*, status: str = RolloutStatus.RUNNING, passed: int = 1) -> Any:
    release = release_create(
        component="openclaw",
        version="1.1.0",
        image="registry.example.test/openclaw:1.1.0@sha256:" + "b" * 64,
        actor="test",
    )
    rollout = rollout_create(
        release_id=release.pk,
        actor="test",
        stages=[StageSpec(internal=True, soak_seconds=0)]
        + [StageSpec(percent=p, soak_seconds=0) for p in (5, 25, 100)],
    )
    type(rollout).objects.filter(pk=rollout.pk).update(status=status)
    stages = list(RolloutStage.objects.filter(rollout=rollout).order_by("position"))
    for stage in stages[:passed]:
        stage.status = StageStatus.PASSED
        stage.save(update_fields=["status"])
    if passed < len(stages):
        stages[passed].status = StageStatus.UPDATING
        stages[passed].save(update_fields=["status"])
    return rollout, stages


# --- The dashboard ---------------------------------------------------------------------


def test_dashboard_counts_follow_the_rows(staff_client: Client, tmp_path: Path) -> None:
    # given: an empty fleet
    html = dashboard(staff_client)
    assert number(html, 'data-count="total') == 0
    assert number(html, 'data-severity="HARD') == 0
    assert "No rollout running." in html
    assert "None in the last 7 days." in html

    # when: rows of every kind appear
    now = timezone.now()
    server = ServerFactory.create(status=ServerStatus.ALLOCATED, ipv4="127.0.50.1")
    fresh = [TenantFactory.create(domain=f"fresh-{n}.example.test", server=server) for n in range(3)]
    Tenant.objects.filter(pk__in=[t.pk for t in fresh]).update(last_heartbeat_at=now, registered_at=now)
    stale = TenantFactory.create(domain="stale.example.test")
    Tenant.objects.filter(pk=stale.pk).update(last_heartbeat_at=now - timedelta(hours=1), registered_at=now)
    suspended = TenantFactory.create(domain="suspended.example.test")
    Tenant.objects.filter(pk=suspended.pk).update(status=TenantStatus.SUSPENDED)
    gone = TenantFactory.create(domain="gone.example.test")
    Tenant.objects.filter(pk=gone.pk).update(status=TenantStatus.DEPROVISIONED)
    Tenant.objects.create(domain="new.example.test", status=TenantStatus.PROVISIONING)

    for n, severity in enumerate([AlertSeverity.HARD, AlertSeverity.MEDIUM, AlertSeverity.MEDIUM, AlertSeverity.SOFT]):
        Alert.objects.create(subject_type="tenant", subject_id=str(n), kind="disk", severity=severity, message="x")
    Alert.objects.create(
        subject_type="tenant", subject_id="9", kind="disk", severity="HARD", message="x", status=AlertStatus.RESOLVED
    )

    for status, count in [(OrderStatus.AWAITING_SERVER, 2), (OrderStatus.PROVISIONING, 1), (OrderStatus.FULFILLED, 3)]:
        for n in range(count):
            Order.objects.create(domain=f"{status.lower()}-{n}.example.test", status=status, region="eu", plan="build")

    for n in range(2):
        ServerFactory.create(status=ServerStatus.AVAILABLE, region="eu", tier="build", ipv4=f"127.0.50.{10 + n}")
    ServerFactory.create(status=ServerStatus.PREPARING, region="eu", tier="build", ipv4="127.0.50.20")
    for n in range(3):
        ServerFactory.create(status=ServerStatus.AVAILABLE, region="us", tier="build", ipv4=f"127.0.50.{30 + n}")

    rollout, stages = make_rollout(passed=2)
    for tenant, state in zip(fresh, [UpdateStatus.SUCCEEDED, UpdateStatus.SUCCEEDED, UpdateStatus.SENT], strict=True):
        TenantUpdate.objects.create(
            rollout=rollout, stage=stages[1], tenant=tenant, to_version="1.1.0", from_version="1.0.0", status=state
        )

    order = make_failed_order(tmp_path)
    mark_job_failed(job_of(order))
    Job.objects.filter(pk=job_of(order).pk).update(finished_at=now)
    old_failure = make_failed_order(tmp_path, domain="old.example.test")
    mark_job_failed(job_of(old_failure))
    Job.objects.filter(pk=job_of(old_failure).pk).update(finished_at=now - timedelta(days=8))

    # then: every section counts them
    html = dashboard(staff_client)
    fleet = section(html, "dash-fleet")
    assert number(fleet, 'data-count="total') == 6
    assert number(fleet, 'data-count="active') == 4
    assert number(fleet, 'data-count="healthy') == 3
    assert number(fleet, 'data-count="stale') == 1
    assert number(fleet, 'data-count="provisioning') == 1
    assert number(fleet, 'data-count="suspended') == 1

    alerts = section(html, "dash-alerts")
    assert "Open alerts (4)" in alerts
    assert [number(alerts, f'data-severity="{s}') for s in ("SOFT", "MEDIUM", "HARD")] == [1, 2, 1]

    orders = section(html, "dash-orders")
    assert "Orders in flight (3)" in orders
    assert number(orders, 'data-status="AWAITING_SERVER') == 2
    assert number(orders, 'data-status="PROVISIONING') == 1
    assert "FULFILLED" not in orders

    pool = section(html, "dash-pool")
    eu = re.search(r'data-pool="eu-build">(.*?)</tr>', pool, re.S)
    us = re.search(r'data-pool="us-build">(.*?)</tr>', pool, re.S)
    assert eu and us
    assert re.search(r'class="num bad">\s*2 / 3\s*<', eu.group(1)), "eu is short of its target of 3"
    assert "1 preparing" in eu.group(1)
    assert re.search(r'class="num">\s*3 / 2\s*<', us.group(1)), "us is above its target of 2"

    rollouts = section(html, "dash-rollouts")
    assert f'data-rollout="{rollout.pk}"' in rollouts
    assert "openclaw &rarr; 1.1.0" in rollouts
    assert "stage 2 of 4 passed" in rollouts
    assert 'style="width:50%"' in rollouts
    assert "5%: updating" in rollouts
    assert "succeeded 2" in rollouts and "sent 1" in rollouts

    failed = section(html, "dash-failed-jobs")
    assert "Failed jobs needing attention (1)" in failed
    assert f'data-job="{order.job_id}"' in failed
    assert f'data-job="{old_failure.job_id}"' not in failed
    assert f"order {order.pk}" in failed
    assert "fixable failed" in failed

    # when: the rollout finishes, the alerts resolve, the failed job is retried
    type(rollout).objects.filter(pk=rollout.pk).update(status=RolloutStatus.COMPLETED)
    Alert.objects.update(status=AlertStatus.RESOLVED)
    Job.objects.filter(pk=job_of(order).pk).update(status=JobStatus.RUNNING, finished_at=None)

    # then: they leave the dashboard
    html = dashboard(staff_client)
    assert "Open alerts (0)" in html
    assert "No rollout running." in html
    assert "None in the last 7 days." in html


def test_dashboard_is_not_shown_to_a_non_staff_user(client: Client, django_user_model: Any) -> None:
    user = django_user_model.objects.create_user("customer", password="x")
    client.force_login(user)
    response = client.get(INDEX, follow=True)
    assert 'id="hub-dashboard"' not in response.content.decode()


def _fleet(start: int, count: int) -> None:
    now = timezone.now()
    servers = Server.objects.bulk_create(
        [
            Server(provider="NETCUP", region="eu", tier="build", ipv4=f"10.9.{n // 250}.{n % 250}", status="ALLOCATED")
            for n in range(start, start + count)
        ]
    )
    Tenant.objects.bulk_create(
        [
            Tenant(
                domain=f"t{n}.example.test",
                status=TenantStatus.ACTIVE,
                server=server,
                last_heartbeat_at=now,
                registered_at=now,
            )
            for n, server in zip(range(start, start + count), servers, strict=True)
        ]
    )
    Alert.objects.bulk_create(
        [
            Alert(subject_type="tenant", subject_id=str(n), kind="disk", severity=AlertSeverity.SOFT, message="x")
            for n in range(start, start + count)
        ]
    )
    Order.objects.bulk_create(
        [
            Order(domain=f"o{n}.example.test", status=OrderStatus.AWAITING_SERVER, region="eu", plan="build")
            for n in range(start, start + count)
        ]
    )


def test_dashboard_query_count_does_not_grow_with_the_fleet(staff_client: Client, tmp_path: Path) -> None:
    make_rollout(passed=1)
    for n in range(3):
        mark_job_failed(job_of(make_failed_order(tmp_path, domain=f"failed-{n}.example.test")))
    Job.objects.update(finished_at=timezone.now())

    _fleet(0, 10)
    with CaptureQueriesContext(connection) as small:
        html = dashboard(staff_client)
    assert number(html, 'data-count="total') == 10

    _fleet(10, 90)
    with CaptureQueriesContext(connection) as large:
        html = dashboard(staff_client)
    assert number(html, 'data-count="total') == 100
    assert "Open alerts (100)" in html

    assert len(large.captured_queries) == len(small.captured_queries), (
        f"10 tenants: {len(small.captured_queries)} queries, 100 tenants: {len(large.captured_queries)}"
    )


# --- The order page and its timeline -------------------------------------------------


@pytest.fixture
def failed_order(tmp_path: Path) -> Order:
    order = make_failed_order(tmp_path)
    mark_job_failed(job_of(order))
    started = timezone.now() - timedelta(minutes=5)
    job_of(order).steps.filter(name="first").update(
        started_at=started, finished_at=started + timedelta(seconds=2), duration_seconds=2.0, log="first done\n"
    )
    job_of(order).steps.filter(name="fixable").update(
        started_at=started + timedelta(seconds=3),
        duration_seconds=1.25,
        log="calling the provider\nprovider answered 422\n",
    )
    return order


def test_order_timeline_json_shows_every_step(staff_client: Client, failed_order: Order) -> None:
    url = reverse("admin:provisioning_order_timeline", args=[failed_order.pk])
    response = staff_client.get(url)
    assert response.status_code == 200
    data = response.json()
    assert data["order"] == {
        "id": failed_order.pk,
        "status": OrderStatus.FAILED,
        "terminal": True,
        "waiting_reason": "",
    }
    assert data["job"]["status"] == JobStatus.ROLLED_BACK
    assert data["job"]["active"] is False
    assert data["job"]["error"] == "fixable failed"
    steps = {step["name"]: step for step in data["steps"]}
    assert [step["name"] for step in data["steps"]] == ["first", "fixable", "last"]
    assert steps["first"]["status"] == StepStatus.SUCCEEDED
    assert steps["first"]["duration_seconds"] == 2.0
    assert steps["first"]["log_tail"] == "first done\n"
    fixable = steps["fixable"]
    assert (fixable["status"], fixable["attempts"], fixable["kind"]) == (StepStatus.FAILED, 1, StepKind.ACTION)
    assert fixable["error"] == "provider said 422: invalid input"
    assert fixable["started_at"] is not None
    assert fixable["duration_seconds"] == 1.25
    assert "provider answered 422" in fixable["log_tail"]
    assert steps["last"]["status"] == StepStatus.PENDING
    assert steps["last"]["started_at"] is None
    assert steps["last"]["attempts"] == 0


def test_order_timeline_json_is_for_staff_only(client: Client, failed_order: Order) -> None:
    url = reverse("admin:provisioning_order_timeline", args=[failed_order.pk])
    response = client.get(url)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_order_page_shows_the_timeline_and_the_retry_button(staff_client: Client, failed_order: Order) -> None:
    response = staff_client.get(reverse("admin:provisioning_order_change", args=[failed_order.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    row = re.search(
        r'<tr class="step-row" data-step="fixable" data-kind="ACTION" data-status="FAILED">(.*?)</tr>', html, re.S
    )
    assert row, "the failed step's row"
    cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row.group(1), re.S)]
    assert cells[1] == "fixable"
    assert cells[2] == "FAILED"
    assert cells[3] == "1 / 3"
    assert cells[4] != "-"
    assert cells[5] == "1.25 s"
    assert cells[6] == "provider said 422: invalid input"
    assert "provider answered 422" in cells[7]
    assert 'data-step="first" data-kind="ACTION" data-status="SUCCEEDED"' in html
    assert 'id="order-retry-button"' in html
    assert reverse("admin:provisioning_order_retry", args=[failed_order.pk]) in html
    assert reverse("admin:provisioning_order_timeline", args=[failed_order.pk]) in html
    assert f'id="job-status" data-status="{JobStatus.ROLLED_BACK}"' in html


def test_job_page_shows_the_steps(staff_client: Client, failed_order: Order) -> None:
    response = staff_client.get(reverse("admin:hub_job_change", args=[failed_order.job_id]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-step="fixable" data-status="FAILED"' in html
    assert "provider said 422: invalid input" in html
    assert 'id="job-retry-button"' in html


@pytest.mark.parametrize(
    ("status", "buttons"),
    [
        (ServerStatus.AVAILABLE, {"quarantine", "prepare"}),
        (ServerStatus.QUARANTINED, {"release", "prepare"}),
        (ServerStatus.ALLOCATED, {"quarantine"}),
        (ServerStatus.DELETED, set()),
    ],
)
def test_server_page_offers_the_operations_its_status_allows(
    staff_client: Client, status: str, buttons: set[str]
) -> None:
    server = ServerFactory.create(status=status)
    response = staff_client.get(reverse("admin:provisioning_server_change", args=[server.pk]))
    assert response.status_code == 200
    shown = set(re.findall(r'id="server-(\w+)-button"', response.content.decode()))
    assert shown == buttons


# --- List pages: search and filters -------------------------------------------------


@pytest.fixture
def fleet_rows() -> dict[str, Any]:
    server_a = ServerFactory.create(status=ServerStatus.AVAILABLE, region="eu", ipv4="127.0.50.1")
    server_b = ServerFactory.create(status=ServerStatus.QUARANTINED, region="us", ipv4="127.0.50.2")
    tenant_a = TenantFactory.create(domain="alpha.example.test", server=server_a)
    tenant_b = TenantFactory.create(domain="bravo.example.test", server=server_b)
    Tenant.objects.filter(pk=tenant_b.pk).update(status=TenantStatus.SUSPENDED)
    order_a = Order.objects.create(domain="alpha.example.test", status=OrderStatus.FULFILLED, region="eu", plan="build")
    order_b = Order.objects.create(
        domain="bravo.example.test", status=OrderStatus.AWAITING_SERVER, region="us", plan="build"
    )
    alert_a = Alert.objects.create(
        subject_type="tenant", subject_id=str(tenant_a.pk), kind="disk_full", severity="HARD", message="alpha disk 97%"
    )
    alert_b = Alert.objects.create(
        subject_type="tenant", subject_id=str(tenant_b.pk), kind="tls_expiry", severity="SOFT", message="bravo tls"
    )
    command_a = command_queue(tenant_id=tenant_a.pk, type=CommandType.RESTART, payload={}, actor="ops")
    command_b = command_queue(tenant_id=tenant_b.pk, type=CommandType.DIAGNOSTICS, payload={}, actor="ops")
    rollout, _ = make_rollout(status=RolloutStatus.PAUSED)
    return {
        "order": (order_a, order_b),
        "server": (server_a, server_b),
        "tenant": (tenant_a, tenant_b),
        "alert": (alert_a, alert_b),
        "command": (command_a, command_b),
        "rollout": rollout,
    }


def _ids(html: str, url_name: str) -> set[str]:
    """The ids of the objects the change list links to."""
    prefix = reverse(url_name, args=[0]).removesuffix("0/change/")
    return set(re.findall(rf'href="{re.escape(prefix)}([^/"]+)/change/', html))


LISTS = [
    # (model, change url, (query string that finds only the first row, ...), query string for the second)
    ("order", "admin:provisioning_order_change", ["q=alpha", "status__exact=FULFILLED"], ["region__exact=us"]),
    ("server", "admin:provisioning_server_change", ["q=127.0.50.1", "status__exact=AVAILABLE"], ["region__exact=us"]),
    ("tenant", "admin:tenants_tenant_change", ["q=alpha", "status__exact=ACTIVE"], ["status__exact=SUSPENDED"]),
    ("alert", "admin:hub_alert_change", ["q=97%25", "severity__exact=HARD"], ["kind__exact=tls_expiry"]),
    ("command", "admin:tenants_command_change", ["q=alpha", "type__exact=restart"], ["q=bravo"]),
]


@pytest.mark.parametrize(("kind", "url_name", "first_only", "second_only"), LISTS, ids=[row[0] for row in LISTS])
def test_list_pages_search_and_filter(
    staff_client: Client,
    fleet_rows: dict[str, Any],
    kind: str,
    url_name: str,
    first_only: list[str],
    second_only: list[str],
) -> None:
    first, second = fleet_rows[kind]
    changelist = reverse(url_name.replace("_change", "_changelist"))
    response = staff_client.get(changelist)
    assert response.status_code == 200
    assert _ids(response.content.decode(), url_name) >= {str(first.pk), str(second.pk)}
    for query, expected in [*((q, first.pk) for q in first_only), *((q, second.pk) for q in second_only)]:
        response = staff_client.get(f"{changelist}?{query}")
        assert response.status_code == 200, query
        assert _ids(response.content.decode(), url_name) == {str(expected)}, query


def test_rollout_list_searches_and_filters(staff_client: Client, fleet_rows: dict[str, Any]) -> None:
    rollout = fleet_rows["rollout"]
    changelist = reverse("admin:rollouts_rollout_changelist")
    for query, found in [
        ("", True),
        ("q=openclaw", True),
        ("q=nothing-like-it", False),
        ("status__exact=PAUSED", True),
        ("status__exact=RUNNING", False),
    ]:
        response = staff_client.get(f"{changelist}?{query}")
        assert response.status_code == 200
        assert (str(rollout.pk) in _ids(response.content.decode(), "admin:rollouts_rollout_change")) is found, query
    response = staff_client.get(reverse("admin:rollouts_rollout_change", args=[rollout.pk]))
    assert response.status_code == 200


# --- Secrets never reach a page -----------------------------------------------------


ROOT_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nroot-key-material-that-must-stay-hidden\n-----END OPENSSH PRIVATE KEY-----"
)


@pytest.fixture
def secrets() -> list[str]:
    """A server with a root key, a tenant whose agent registered (an API key), and a
    second registration token not used yet: every secret and every hash of one."""
    server = ServerFactory.create(status=ServerStatus.ALLOCATED, ipv4="127.0.50.7")
    Server.objects.filter(pk=server.pk).update(root_key=ROOT_KEY)
    server.refresh_from_db()
    assert server.root_key == ROOT_KEY
    with connection.cursor() as cursor:
        cursor.execute("SELECT root_key FROM provisioning_server WHERE id = %s", [server.pk])
        (ciphertext,) = cursor.fetchone()
    assert ciphertext and ROOT_KEY not in ciphertext

    tenant = TenantFactory.create(domain="secret.example.test", server=server)
    _, token = registration_token_issue(tenant_id=tenant.pk, actor="ops")
    _, api_key = agent_register(token=token, hostname="secret-host", agent_version="1.0.0")
    _, unused_token = registration_token_issue(tenant_id=tenant.pk, actor="ops")
    command_queue(tenant_id=tenant.pk, type=CommandType.DIAGNOSTICS, payload={}, actor="ops")
    hashes = [*AgentCredential.objects.values_list("key_hash", flat=True)]
    hashes += RegistrationToken.objects.values_list("token_hash", flat=True)
    assert len(hashes) == 3
    repository = backup_repository_ensure(tenant_id=tenant.pk, host="backup.example.net", port=23, actor="ops")
    with connection.cursor() as cursor:
        cursor.execute("SELECT password, ssh_private_key FROM tenants_backuprepository WHERE id = %s", [repository.pk])
        stored = list(cursor.fetchone())
    key_body = "".join(line for line in repository.ssh_private_key.splitlines() if not line.startswith("-----"))
    return [
        "root-key-material-that-must-stay-hidden",
        ciphertext,
        api_key,
        token,
        unused_token,
        *hashes,
        repository.password,
        key_body[:64],
        *stored,
    ]


def _admin_pages() -> list[str]:
    """Every registered model's list page and the change page of each of its rows."""
    urls = [INDEX]
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        urls.append(reverse("admin:{}_{}_changelist".format(*info)))
        for pk in model._default_manager.values_list("pk", flat=True)[:20]:
            try:
                urls.append(reverse("admin:{}_{}_change".format(*info), args=[pk]))
            except NoReverseMatch:
                continue
    return urls


def test_no_secret_appears_on_any_admin_page(staff_client: Client, secrets: list[str]) -> None:
    pages = _admin_pages()
    assert any("/tenants/agentcredential/" in url and url.endswith("/change/") for url in pages)
    assert any("/provisioning/server/" in url and url.endswith("/change/") for url in pages)
    assert any("/tenants/registrationtoken/" in url and url.endswith("/change/") for url in pages)
    assert any("/tenants/backuprepository/" in url and url.endswith("/change/") for url in pages)
    for url in pages:
        response = staff_client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        for secret in secrets:
            assert secret not in html, f"a secret ({secret[:12]}…) is on {url}"
