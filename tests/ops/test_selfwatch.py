"""The Hub watching itself: the /metrics families of hub.selfwatch move when their
events happen, and the self-watch check opens (and resolves) its alerts: a periodic
job gone silent (a real worker runs it as beat would send it), a provider's bucket
above its alert ratio."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.test import Client, override_settings
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from rest_framework.authtoken.models import Token

from hub.celery import app as celery_app
from hub.integrations.ratelimit import provider_bucket
from hub.models import Alert, AlertStatus, PeriodicJobSuccess
from hub.selfwatch.checks import PERIODIC_JOB_SILENT, PROVIDER_QUOTA_HIGH, periodic_jobs_check, provider_quota_check
from hub.selfwatch.periodic import crontab_period_seconds, periodic_job_succeeded
from hub.selfwatch.web import request_stats
from provisioning.models import Order, OrderStatus
from provisioning.services.orders import order_set_status
from tests.conftest import wait_for
from tests.ops.test_metrics import scrape

BACKUP_JOB = "monitoring hub database backup"


def open_alert(kind: str, subject: str) -> Alert | None:
    return Alert.objects.filter(kind=kind, subject_id=subject, status=AlertStatus.OPEN).first()


@pytest.mark.django_db
@override_settings(METRICS_FLUSH_SECONDS=0)
def test_a_request_moves_its_route_s_counter_and_histogram(broker: redis.Redis) -> None:
    user = get_user_model().objects.create_user("watch-staff", password="x", is_staff=True)
    client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    route = {"route": "api/v1/alerts/", "method": "GET"}
    request_stats().flush()  # what earlier tests of this process left unflushed
    before = scrape()

    assert client.get("/api/v1/alerts/").status_code == 200
    assert client.get("/api/v1/alerts/").status_code == 200
    assert client.get("/api/v1/alerts/", {"status": "NOPE"}).status_code == 400
    assert client.get("/api/v1/no-such-route/").status_code == 404
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("hub_http_requests_total", **route, status="200") == 2
    assert delta("hub_http_requests_total", **route, status="400") == 1
    assert delta("hub_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert delta("hub_http_request_duration_seconds_count", **route) == 3
    assert delta("hub_http_request_duration_seconds_bucket", **route, le="+Inf") == 3
    assert delta("hub_http_request_duration_seconds_sum", **route) > 0
    assert after.families["hub_http_request_duration_seconds"].type == "histogram"


@pytest.mark.django_db
def test_a_failing_query_moves_the_database_error_counter(broker: redis.Redis) -> None:
    before = scrape().value("hub_database_errors_total", error="ProgrammingError")

    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT * FROM selfwatch_no_such_table")

    assert scrape().value("hub_database_errors_total", error="ProgrammingError") == before + 1


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@override_settings(PERIODIC_JOB_SILENT_MIN_SECONDS=0)
def test_a_beat_job_that_stops_raises_the_silence_alert_and_its_next_success_resolves_it(
    celery_worker: Any, broker: redis.Redis
) -> None:
    # given a periodic job every second (a harmless task: no rollout to evaluate)
    name = "selfwatch test job"
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name=name, task="rollouts.evaluate", interval=every, queue="rollouts")

    def run_as_beat_sends_it() -> None:
        before = PeriodicJobSuccess.objects.filter(name=name).values_list("last_success_at", flat=True).first()
        celery_app.send_task("rollouts.evaluate", queue="rollouts", headers={"periodic_task_name": name})
        wait_for(
            lambda: PeriodicJobSuccess.objects.filter(name=name).exclude(last_success_at=before).exists(),
            timeout=20,
            message="the worker to record the job's success",
        )

    # when it runs: its success is recorded, and it is not silent
    run_as_beat_sends_it()
    periodic_jobs_check()
    assert open_alert(PERIODIC_JOB_SILENT, name) is None
    assert scrape().value("hub_periodic_job_silent", job=name, task="rollouts.evaluate") == 0

    # when it stops for more than twice its period (its last success moved 2.5 s back)
    PeriodicJobSuccess.objects.filter(name=name).update(last_success_at=F("last_success_at") - timedelta(seconds=2.5))
    periodic_jobs_check()

    # then the alert is open and the metric says so
    alert = open_alert(PERIODIC_JOB_SILENT, name)
    assert alert is not None and "rollouts.evaluate" in alert.message
    result = scrape()
    assert result.value("hub_periodic_job_silent", job=name, task="rollouts.evaluate") == 1
    assert result.value("hub_periodic_job_period_seconds", job=name, task="rollouts.evaluate") == 1

    # and its next success resolves it
    run_as_beat_sends_it()
    periodic_jobs_check()
    assert open_alert(PERIODIC_JOB_SILENT, name) is None


@pytest.mark.django_db
def test_the_hub_backup_is_silent_after_two_days_without_success() -> None:
    # the daily 03:00 crontab of the migrations: a period of a day
    backup = PeriodicTask.objects.select_related("crontab").get(name=BACKUP_JOB)
    assert backup.crontab is not None and crontab_period_seconds(backup.crontab) == 86400

    periodic_job_succeeded(name=BACKUP_JOB, task=backup.task, at=timezone.now() - timedelta(hours=47))
    periodic_jobs_check()
    assert open_alert(PERIODIC_JOB_SILENT, BACKUP_JOB) is None

    periodic_job_succeeded(name=BACKUP_JOB, task=backup.task, at=timezone.now() - timedelta(hours=49))
    periodic_jobs_check()
    alert = open_alert(PERIODIC_JOB_SILENT, BACKUP_JOB)
    assert alert is not None and "monitoring.backup_hub_database" in alert.message


def test_a_crontab_s_period_is_its_longest_gap() -> None:
    def period(**fields: str) -> float:
        return crontab_period_seconds(CrontabSchedule(**{"minute": "0", "hour": "*", **fields}))

    assert period() == 3600
    assert period(hour="3,15") == 12 * 3600
    assert period(hour="3", day_of_week="1") == 7 * 86400
    assert period(hour="3", day_of_month="1") == 31 * 86400


@pytest.mark.django_db
@override_settings(PROVIDER_RATE_LIMITS={"hetzner": (10, 60.0, 10), "cloudflare": (1200, 300.0, 200)})
def test_a_bucket_above_80_percent_of_its_quota_opens_an_alert(broker: redis.Redis) -> None:
    def reset() -> None:
        keys = list(broker.scan_iter(match="ratelimit:hetzner:*"))
        if keys:
            broker.delete(*keys)

    reset()
    bucket = provider_bucket("hetzner")
    for _ in range(8):
        bucket.take(max_wait=1)
    provider_quota_check()
    assert open_alert(PROVIDER_QUOTA_HIGH, "hetzner") is None

    bucket.take(max_wait=1)
    provider_quota_check()
    alert = open_alert(PROVIDER_QUOTA_HIGH, "hetzner")
    assert alert is not None and "90%" in alert.message
    assert 0.85 < scrape().value("hub_provider_quota_used_ratio", provider="hetzner") <= 0.9

    reset()
    provider_quota_check()
    assert open_alert(PROVIDER_QUOTA_HIGH, "hetzner") is None


@pytest.mark.django_db
def test_the_first_attempt_s_outcome_is_kept_after_a_retry_and_fulfilment_time_is_measured(
    broker: redis.Redis,
) -> None:
    before = scrape()
    order = Order.objects.create(domain="first-attempt.example.com", status=OrderStatus.PROVISIONING)
    Order.objects.filter(pk=order.pk).update(created_at=timezone.now() - timedelta(minutes=12))
    order.refresh_from_db()

    order_set_status(order, OrderStatus.ROLLED_BACK, reason="ssh refused")
    order_set_status(order, OrderStatus.PAYMENT_CONFIRMED, reason="retry")
    order_set_status(order, OrderStatus.FULFILLED)

    order.refresh_from_db()
    assert order.first_attempt_succeeded is False
    after = scrape()
    assert (
        after.value("hub_orders_first_attempt", outcome="failed")
        == before.value("hub_orders_first_attempt", outcome="failed") + 1
    )
    count = "hub_order_payment_to_fulfilled_seconds_count"
    assert after.value(count) == before.value(count) + 1
    # 12 minutes: in the 900 s bucket, not in the 600 s one
    bucket = "hub_order_payment_to_fulfilled_seconds_bucket"
    assert after.value(bucket, le="900.0") == before.value(bucket, le="900.0") + 1
    assert after.value(bucket, le="600.0") == before.value(bucket, le="600.0")


@pytest.mark.django_db
def test_an_order_fulfilled_at_its_first_attempt_counts_as_a_success() -> None:
    order = Order.objects.create(domain="first-ok.example.com", status=OrderStatus.PROVISIONING)

    order_set_status(order, OrderStatus.FULFILLED)

    order.refresh_from_db()
    assert order.first_attempt_succeeded is True
    assert scrape().value("hub_order_first_attempt_success_ratio") > 0
