"""`/metrics`, `/healthz` and `/readyz` against the real Postgres and Redis: the scrape
parses as Prometheus text, carries every family, moves when work happens, costs a
constant number of queries, and survives a broker that is down."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from hub.celery import app as celery_app
from hub.models import Alert, AlertSeverity
from hub.pipeline.models import Job, JobStatus, Step, StepKind, StepStatus
from hub.pipeline.services import job_start
from provisioning.models import OrderStatus, ServerStatus
from rollouts.models import Release, Rollout, RolloutStage, RolloutStatus, TenantUpdate
from tenants.models import Tenant, TenantStatus
from tests.conftest import WorkerProcess, wait_for
from tests.factories import OrderFactory, ServerFactory

pytestmark = pytest.mark.django_db

FAMILIES = {
    "hub_step_duration_seconds": "histogram",
    "hub_step_failures": "counter",
    "hub_steps_failed": "gauge",
    "hub_jobs": "gauge",
    "hub_queue_length": "gauge",
    "hub_broker_unacked_messages": "gauge",
    "hub_tenant_heartbeat_age_seconds": "histogram",
    "hub_tenants_without_heartbeat": "gauge",
    "hub_tenants": "gauge",
    "hub_alerts_open": "gauge",
    "hub_alerts_open_by_kind": "gauge",
    "hub_servers": "gauge",
    "hub_pool_target": "gauge",
    "hub_orders": "gauge",
    "hub_rollouts": "gauge",
    "hub_rollout_updates": "gauge",
    "hub_rollout_stage_position": "gauge",
    "hub_metrics_source_up": "gauge",
    "hub_metrics_scrape_duration_seconds": "gauge",
}


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}

    def samples(self, name: str) -> list[Sample]:
        return [sample for family in self.families.values() for sample in family.samples if sample.name == name]

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels (0 when absent: a series not yet born)."""
        for sample in self.samples(name):
            if sample.labels == labels:
                return sample.value
        return 0.0


def scrape(client: Client | None = None, **headers: str) -> Scrape:
    response = (client or Client()).get("/metrics", headers=headers)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/plain; version=")
    return Scrape(response.content.decode())


def make_job(
    pipeline: str,
    *,
    status: str,
    steps: list[tuple[str, str, float | None]],
    history: dict[str, list[str]] | None = None,
) -> Job:
    """A job with finished step rows, as the engine leaves them; `history` gives some
    steps their attempts' outcomes (the last failed one of a FAILED step is final)."""
    now = timezone.now()
    job = Job.objects.create(pipeline=pipeline, status=status, started_at=now, finished_at=now)
    Step.objects.bulk_create(
        [
            Step(
                job=job,
                position=position,
                name=name,
                kind=StepKind.ACTION,
                status=step_status,
                attempts=1,
                finished_at=now if duration is not None or step_status == StepStatus.FAILED else None,
                duration_seconds=duration,
                history=_history((history or {}).get(name, []), failed=step_status == StepStatus.FAILED),
            )
            for position, (name, step_status, duration) in enumerate(steps)
        ]
    )
    return job


def _history(outcomes: list[str], *, failed: bool) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = [{"attempt": n, "outcome": o} for n, o in enumerate(outcomes, start=1)]
    if failed and entries:
        entries[-1]["final"] = True
    return entries


def test_metrics_parse_as_prometheus_text_with_every_family(broker: redis.Redis) -> None:
    # when
    result = scrape()

    # then
    for name, kind in FAMILIES.items():
        assert name in result.families, f"{name} missing from /metrics"
        assert result.families[name].type == kind, name
    for source in ("steps", "jobs", "broker", "tenants", "alerts", "servers", "orders", "rollouts"):
        assert result.value("hub_metrics_source_up", source=source) == 1.0, source
    for queue in ("provisioning", "rollouts", "monitoring", "billing", "default"):
        assert [s for s in result.samples("hub_queue_length") if s.labels == {"queue": queue}], queue
    for severity in AlertSeverity.values:
        assert [s for s in result.samples("hub_alerts_open") if s.labels == {"severity": severity}], severity
    # The pool is zero-filled: an empty (region, tier) is a 0, not a missing series.
    assert [
        s for s in result.samples("hub_servers") if s.labels == {"region": "us", "tier": "scale", "status": "AVAILABLE"}
    ]


def test_step_and_job_metrics_move_when_jobs_run(broker: redis.Redis) -> None:
    # given
    before = scrape()
    configure = {"pipeline": "ops.metrics", "step": "configure", "kind": "action"}
    buy = {"pipeline": "ops.metrics", "step": "buy", "kind": "action"}

    # when: two jobs finish; in the second, buy succeeds on its second attempt and
    # configure fails for good after a failed attempt and a lost worker
    make_job(
        "ops.metrics",
        status=JobStatus.SUCCEEDED,
        steps=[("buy", StepStatus.SUCCEEDED, 3.0), ("configure", StepStatus.SUCCEEDED, 42.0)],
    )
    failed_job = make_job(
        "ops.metrics",
        status=JobStatus.FAILED,
        steps=[("buy", StepStatus.SUCCEEDED, 0.5), ("configure", StepStatus.FAILED, None)],
        history={"buy": ["failed", "succeeded"], "configure": ["failed", "lost", "failed"]},
    )
    after = scrape()

    # then
    assert after.value("hub_jobs", pipeline="ops.metrics", status="SUCCEEDED") == 1
    assert after.value("hub_jobs", pipeline="ops.metrics", status="FAILED") == 1
    assert after.value("hub_jobs", pipeline="ops.metrics", status="RUNNING") == 0
    assert (
        after.value("hub_step_duration_seconds_count", **buy) - before.value("hub_step_duration_seconds_count", **buy)
        == 2
    )
    assert after.value("hub_step_duration_seconds_sum", **buy) == pytest.approx(3.5)
    assert after.value("hub_step_duration_seconds_bucket", **buy, le="1.0") == 1
    assert after.value("hub_step_duration_seconds_bucket", **buy, le="5.0") == 2
    assert after.value("hub_step_duration_seconds_bucket", **configure, le="30.0") == 0
    assert after.value("hub_step_duration_seconds_bucket", **configure, le="60.0") == 1
    assert after.value("hub_step_duration_seconds_bucket", **configure, le="+Inf") == 1
    assert after.value("hub_step_failures_total", **configure, outcome="failed") == 2
    assert after.value("hub_step_failures_total", **configure, outcome="lost") == 1
    assert after.value("hub_step_failures_total", **buy, outcome="failed") == 1
    assert after.value("hub_steps_failed", **configure) == 1

    # when: staff retry the job, which resets the failed step's row
    Step.objects.filter(job=failed_job, name="configure").update(status=StepStatus.PENDING, attempts=0)
    retried = scrape()

    # then: nothing is failed for good any more, and the counter has not gone back
    assert retried.value("hub_steps_failed", **configure) == 0
    assert retried.value("hub_step_failures_total", **configure, outcome="failed") == 2


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_flaky_job_on_the_real_worker_shows_in_the_step_metrics(celery_worker: WorkerProcess, tmp_path: Path) -> None:
    # given
    flaky = {"pipeline": "test.flaky", "step": "flaky", "kind": "action"}
    before = scrape()

    # when: the flaky step fails twice, then succeeds (tests/pipelines.py)
    job = job_start(pipeline="test.flaky", context={"effects_dir": str(tmp_path), "fail_times": 2})

    def finished() -> Job | None:
        job.refresh_from_db()
        return job if job.status == JobStatus.SUCCEEDED else None

    wait_for(finished, timeout=30, message=f"job {job.pk} to succeed")
    after = scrape()

    # then
    assert (
        after.value("hub_step_failures_total", **flaky, outcome="failed")
        - before.value("hub_step_failures_total", **flaky, outcome="failed")
        == 2
    )
    assert (
        after.value("hub_step_duration_seconds_count", **flaky)
        - before.value("hub_step_duration_seconds_count", **flaky)
        == 1
    )
    assert after.value("hub_jobs", pipeline="test.flaky", status="SUCCEEDED") >= 1


def test_steps_that_finished_before_the_window_leave_the_histogram(broker: redis.Redis) -> None:
    # given
    job = make_job("ops.window", status=JobStatus.SUCCEEDED, steps=[("old", StepStatus.SUCCEEDED, 7.0)])
    labels = {"pipeline": "ops.window", "step": "old", "kind": "action"}
    assert scrape().value("hub_step_duration_seconds_count", **labels) == 1

    # when
    Step.objects.filter(job=job).update(finished_at=timezone.now() - timedelta(hours=25))

    # then
    with override_settings(METRICS_WINDOW_HOURS=24):
        assert scrape().value("hub_step_duration_seconds_count", **labels) == 0


def test_alert_server_order_and_tenant_metrics_move(broker: redis.Redis) -> None:
    # given
    before = scrape()
    now = timezone.now()

    # when
    Alert.objects.create(
        subject_type="hub", subject_id="ops-test", kind="ops_probe", severity=AlertSeverity.HARD, message="probe"
    )
    ServerFactory.create(provider="NETCUP", region="us", tier="scale", ipv4="127.0.9.1", status=ServerStatus.AVAILABLE)
    OrderFactory.create(domain="metrics.ops.test", status=OrderStatus.AWAITING_SERVER)
    Tenant.objects.bulk_create(
        [
            Tenant(domain="fresh.ops.test", status=TenantStatus.ACTIVE, last_heartbeat_at=now - timedelta(seconds=20)),
            Tenant(domain="stale.ops.test", status=TenantStatus.ACTIVE, last_heartbeat_at=now - timedelta(hours=2)),
            Tenant(domain="silent.ops.test", status=TenantStatus.PROVISIONING),
            Tenant(domain="gone.ops.test", status=TenantStatus.DEPROVISIONED, last_heartbeat_at=now),
        ]
    )
    after = scrape()

    # then
    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("hub_alerts_open", severity="HARD") == 1
    assert delta("hub_alerts_open", severity="SOFT") == 0
    assert delta("hub_alerts_open_by_kind", severity="HARD", kind="ops_probe") == 1
    assert delta("hub_servers", region="us", tier="scale", status="AVAILABLE") == 1
    assert delta("hub_orders", status="AWAITING_SERVER") == 1
    assert delta("hub_tenants", status="ACTIVE") == 2
    assert delta("hub_tenants", status="DEPROVISIONED") == 1
    assert delta("hub_tenants_without_heartbeat") == 1
    # Two live tenants reporting: one 20 s ago, one two hours ago; the deprovisioned one is out.
    assert delta("hub_tenant_heartbeat_age_seconds_count") == 2
    assert delta("hub_tenant_heartbeat_age_seconds_bucket", le="30.0") == 1
    assert delta("hub_tenant_heartbeat_age_seconds_bucket", le="3600.0") == 1
    assert delta("hub_tenant_heartbeat_age_seconds_bucket", le="21600.0") == 2
    assert delta("hub_tenant_heartbeat_age_seconds_sum") == pytest.approx(20 + 7200, abs=30)


def make_rollout(component: str, *, statuses: tuple[str, ...]) -> Rollout:
    """A RUNNING rollout at its second stage with one tenant update per status."""
    release = Release.objects.create(component=component, version="2.0.0")
    rollout = Rollout.objects.create(
        release=release,
        component=component,
        target_version="2.0.0",
        status=RolloutStatus.RUNNING,
        failure_rate=0.01,
        min_failures=3,
        min_finished=10,
        heartbeat_loss_rate=0.03,
        update_timeout_seconds=3600,
        stage_deadline_seconds=3600,
        current_position=1,
    )
    stage = RolloutStage.objects.create(
        rollout=rollout, position=1, name="5%", percent=5, soak_seconds=0, status="UPDATING"
    )
    tenants = Tenant.objects.bulk_create(
        [Tenant(domain=f"{component}-{i}.ops.test", status=TenantStatus.ACTIVE) for i in range(len(statuses))]
    )
    for tenant, status in zip(tenants, statuses, strict=True):
        TenantUpdate.objects.create(rollout=rollout, stage=stage, tenant=tenant, to_version="2.0.0", status=status)
    return rollout


def test_rollout_metrics_follow_the_rollout_and_its_updates(broker: redis.Redis) -> None:
    # when
    rollout = make_rollout("ops-probe", statuses=("SUCCEEDED", "SUCCEEDED", "FAILED"))
    result = scrape()

    # then
    names = {"rollout": str(rollout.pk), "component": "ops-probe", "version": "2.0.0"}
    assert result.value("hub_rollouts", status="RUNNING") >= 1
    assert result.value("hub_rollout_updates", **names, status="SUCCEEDED") == 2
    assert result.value("hub_rollout_updates", **names, status="FAILED") == 1
    assert result.value("hub_rollout_updates", **names, status="SENT") == 0
    assert result.value("hub_rollout_stage_position", **names, status="RUNNING") == 1


def test_queue_lengths_are_read_from_the_broker(broker: redis.Redis) -> None:
    # given: a queue no worker consumes, with messages at two priorities
    queue = "ops-metrics-probe"
    broker.delete(queue, f"{queue}\x06\x163")
    broker.rpush(queue, "a", "b", "c")
    broker.rpush(f"{queue}\x06\x163", "d")
    try:
        # when
        with override_settings(HUB_QUEUES=(queue,)):
            result = scrape()
    finally:
        broker.delete(queue, f"{queue}\x06\x163")

    # then
    assert result.value("hub_queue_length", queue=queue) == 4


def test_a_broker_that_is_down_costs_only_the_queue_lengths(broker: redis.Redis) -> None:
    # when
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:1/0", METRICS_BROKER_TIMEOUT=0.5):
        result = scrape()

    # then
    assert result.value("hub_metrics_source_up", source="broker") == 0
    assert result.value("hub_metrics_source_up", source="jobs") == 1
    assert "hub_queue_length" not in result.families
    assert "hub_jobs" in result.families


def test_a_scrape_costs_the_same_queries_however_much_there_is(broker: redis.Redis) -> None:
    # given
    with CaptureQueriesContext(connection) as small:
        scrape()

    # when: more pipelines, steps, alerts, servers and tenants
    for index in range(5):
        make_job(
            f"ops.many{index}",
            status=JobStatus.FAILED,
            steps=[(f"s{n}", StepStatus.SUCCEEDED, float(n)) for n in range(4)] + [("x", StepStatus.FAILED, None)],
        )
        Alert.objects.create(
            subject_type="hub", subject_id=f"q{index}", kind=f"k{index}", severity=AlertSeverity.MEDIUM, message="m"
        )
        ServerFactory.create(provider="NETCUP", region="eu", tier="build", ipv4=f"127.0.8.{index + 1}")
    Tenant.objects.bulk_create([Tenant(domain=f"q{i}.ops.test", last_heartbeat_at=timezone.now()) for i in range(50)])
    with CaptureQueriesContext(connection) as large:
        scrape()

    # then
    assert len(large.captured_queries) == len(small.captured_queries)
    assert len(large.captured_queries) <= 20


@override_settings(METRICS_TOKEN="ops-metrics-token-0123456789")
def test_metrics_token_is_required_when_set(broker: redis.Redis) -> None:
    client = Client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Token ops-metrics-token-0123456789"}).status_code == 401
    assert scrape(client, Authorization="Bearer ops-metrics-token-0123456789").families
    assert client.post("/metrics", headers={"Authorization": "Bearer ops-metrics-token-0123456789"}).status_code == 405


def test_healthz_answers_200() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_answers_200_when_database_and_broker_are_up(broker: redis.Redis) -> None:
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


@pytest.fixture
def broker_unreachable() -> Iterator[None]:
    """The web process's broker URL points at a port where nothing listens, as when Redis is down.
    Celery resolved broker_write_url from broker_url when it was configured: set both."""
    names = ("broker_url", "broker_write_url")
    configured = {name: celery_app.conf[name] for name in names}
    celery_app.conf.update(dict.fromkeys(names, "redis://127.0.0.1:1/0"))
    try:
        yield
    finally:
        celery_app.conf.update(configured)


def test_readyz_answers_503_and_names_the_broker_when_it_is_unreachable(broker_unreachable: None) -> None:
    response = Client().get("/readyz")

    assert response.status_code == 503, response.content
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("error: "), body
