"""`/metrics`: the Hub in Prometheus text format, read from Postgres and the broker
at scrape time.

Nothing is counted in process memory: every family is computed by a set-based query
when Prometheus scrapes, so any web process of any host answers the same numbers
without prometheus_client's multiprocess mode, and a scrape costs the same dozen
queries however large the fleet. Each source is read on its own: a broker that is
down costs the queue lengths, not the scrape (`hub_metrics_source_up` says which).

Families (all prefixed `hub_`):
  step_duration_seconds{pipeline,step,kind}  histogram of the steps that finished in
                                              the last METRICS_WINDOW_HOURS (a window,
                                              not a counter: no rate(), use it as is)
  step_failures_total{pipeline,step,kind,outcome}  failed attempts (failed, lost)
  steps_failed{pipeline,step,kind}            steps failed for good, now
  jobs{pipeline,status}                       jobs by status
  queue_length{queue}, broker_unacked_messages  Celery queues in Redis
  tenant_heartbeat_age_seconds               histogram of now - last heartbeat over
                                              live tenants that ever sent one
  tenants{status}, tenants_without_heartbeat
  alerts_open{severity}, alerts_open_by_kind{severity,kind}
  servers{region,tier,status}, pool_target{region,tier}
  orders{status}
  rollouts{status}, rollout_updates{rollout,component,version,status},
  rollout_stage_position{rollout,component,version,status}
  metrics_source_up{source}, metrics_scrape_duration_seconds

The Hub watching itself (hub/selfwatch), counters kept in Redis by every process:
  http_requests_total{route,method,status}    requests answered, by resolved route
  http_request_duration_seconds{route,method} histogram of their durations (the Stripe
                                              webhook is route api/v1/billing/stripe/webhook)
  database_errors_total{error}                failed queries by exception class
  provider_requests_total{provider}           tokens taken from the provider's bucket
  provider_rate_limit_waits_total{provider}, provider_rate_limit_wait_seconds_total{provider},
  provider_rate_limit_timeouts_total{provider}  requests that waited for the bucket
  provider_rate_limited_total{provider}       429s the provider answered
  provider_quota_used_ratio{provider}         share of the quota used over the last period
and read from Postgres:
  periodic_job_last_success_timestamp_seconds{job,task}, periodic_job_period_seconds{job,task},
  periodic_job_silent{job,task}               every enabled beat job
  order_payment_to_fulfilled_seconds          histogram over the orders fulfilled in the window
  orders_first_attempt{outcome}               orders paid in the window whose first attempt ended
  order_first_attempt_success_ratio           succeeded / ended, of those
  stripe_webhook_handling_seconds             histogram, Stripe's POST to its handler's end,
                                              over the events received in the window
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, FloatField, Func, Q, Sum, Value
from django.db.models.fields import DateTimeField
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from billing.models import StripeEvent
from hub.integrations.ratelimit import provider_bucket
from hub.models import Alert, AlertSeverity, AlertStatus
from hub.pipeline.models import Job, JobStatus, Step, StepStatus
from hub.selfwatch import store as selfwatch_store
from hub.selfwatch.periodic import periodic_jobs
from provisioning.models import Order, OrderStatus, Region, Server, ServerStatus, Tier
from rollouts.models import ROLLOUT_ACTIVE_STATUSES, Rollout, RolloutStatus, TenantUpdate, UpdateStatus
from tenants.models import TENANT_LIVE_STATUSES, Tenant, TenantStatus

logger = logging.getLogger(__name__)

# kombu's Redis transport keeps priorities 3, 6 and 9 of a queue in keys of their own.
_KOMBU_PRIORITY_SEPARATOR = "\x06\x16"
_KOMBU_PRIORITY_STEPS = (3, 6, 9)


class _EpochSeconds(Func):
    template = "EXTRACT(EPOCH FROM %(expressions)s)::double precision"
    output_field = FloatField()


# The containment tests skip (cheaply) the rows with no failed attempt before any JSON
# is expanded.
_FAILED_ATTEMPTS_SQL = """
    SELECT job.pipeline, step.name, step.kind, attempt->>'outcome', count(*)
    FROM {step} AS step
    JOIN {job} AS job ON job.id = step.job_id
    CROSS JOIN LATERAL jsonb_array_elements(step.history) AS attempt
    WHERE (step.history @> '[{{"outcome": "failed"}}]' OR step.history @> '[{{"outcome": "lost"}}]')
      AND attempt->>'outcome' IN ('failed', 'lost')
    GROUP BY 1, 2, 3, 4
"""


def _cumulative_buckets(row: Mapping[str, Any], bounds: list[float]) -> list[tuple[str, float]]:
    buckets = [(floatToGoString(bound), row[f"le_{index}"]) for index, bound in enumerate(bounds)]
    buckets.append(("+Inf", row["count"]))
    return buckets


def _bucket_counts(bounds: list[float], condition: Callable[[float], Q]) -> dict[str, Count]:
    return {f"le_{index}": Count("id", filter=condition(bound)) for index, bound in enumerate(bounds)}


def _sorted_bounds(values: Iterable[float]) -> list[float]:
    return sorted({float(value) for value in values})


# --- sources: each yields its families, or raises and is reported as down ----------


def step_families(now: datetime) -> Iterator[Metric]:
    labels = ["pipeline", "step", "kind"]
    bounds = _sorted_bounds(settings.METRICS_STEP_DURATION_BUCKETS)
    since = now - timedelta(hours=settings.METRICS_WINDOW_HOURS)
    durations = HistogramMetricFamily(
        "hub_step_duration_seconds",
        f"Duration of the pipeline steps that finished in the last {settings.METRICS_WINDOW_HOURS} h "
        "(a sliding window: read it as is, not with rate()).",
        labels=labels,
    )
    rows = (
        Step.objects.filter(finished_at__gte=since, duration_seconds__isnull=False)
        .order_by()
        .values("job__pipeline", "name", "kind")
        .annotate(
            count=Count("id"),
            total=Sum("duration_seconds"),
            **_bucket_counts(bounds, lambda bound: Q(duration_seconds__lte=bound)),
        )
    )
    for row in rows:
        durations.add_metric(
            [row["job__pipeline"], row["name"], row["kind"].lower()],
            buckets=_cumulative_buckets(row, bounds),
            sum_value=row["total"] or 0.0,
        )
    yield durations

    # Failed attempts from the steps' append-only attempt history, so the counter only
    # grows (a retried job resets its step rows, never their history).
    failures = CounterMetricFamily(
        "hub_step_failures",
        "Failed step attempts: outcome=failed (the action raised) or lost (its worker died).",
        labels=[*labels, "outcome"],
    )
    with connection.cursor() as cursor:
        cursor.execute(_FAILED_ATTEMPTS_SQL.format(step=Step._meta.db_table, job=Job._meta.db_table))
        for pipeline, step, kind, outcome, count in cursor.fetchall():
            failures.add_metric([pipeline, step, kind.lower(), outcome], count)
    yield failures

    failed = GaugeMetricFamily(
        "hub_steps_failed", "Steps failed for good now (out of attempts, or not retryable).", labels=labels
    )
    failed_rows = (
        Step.objects.filter(status=StepStatus.FAILED)
        .order_by()
        .values("job__pipeline", "name", "kind")
        .annotate(count=Count("id"))
    )
    for failed_row in failed_rows:
        failed.add_metric(
            [failed_row["job__pipeline"], failed_row["name"], failed_row["kind"].lower()], failed_row["count"]
        )
    yield failed


def job_families(now: datetime) -> Iterator[Metric]:
    jobs = GaugeMetricFamily("hub_jobs", "Pipeline jobs by pipeline and status.", labels=["pipeline", "status"])
    counts: dict[str, dict[str, int]] = {}
    for row in Job.objects.order_by().values("pipeline", "status").annotate(count=Count("id")):
        counts.setdefault(row["pipeline"], {})[row["status"]] = row["count"]
    for pipeline, by_status in sorted(counts.items()):
        for status in JobStatus.values:
            jobs.add_metric([pipeline, status], by_status.get(status, 0))
    yield jobs


_broker_clients: dict[str, redis.Redis] = {}


def _broker() -> redis.Redis:
    url = settings.CELERY_BROKER_URL
    client = _broker_clients.get(url)
    if client is None:
        timeout = settings.METRICS_BROKER_TIMEOUT
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        _broker_clients[url] = client
    return client


def queue_families(now: datetime) -> Iterator[Metric]:
    if urlsplit(settings.CELERY_BROKER_URL).scheme not in ("redis", "rediss"):
        raise RuntimeError("queue lengths are read from a Redis broker only")
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")
    queues = list(settings.HUB_QUEUES)
    pipe = _broker().pipeline(transaction=False)
    for queue in queues:
        pipe.llen(f"{prefix}{queue}")
        for priority in _KOMBU_PRIORITY_STEPS:
            pipe.llen(f"{prefix}{queue}{_KOMBU_PRIORITY_SEPARATOR}{priority}")
    pipe.hlen(f"{prefix}unacked")
    answers = pipe.execute()
    lengths = GaugeMetricFamily("hub_queue_length", "Messages waiting in each Celery queue.", labels=["queue"])
    per_queue = 1 + len(_KOMBU_PRIORITY_STEPS)
    for index, queue in enumerate(queues):
        lengths.add_metric([queue], sum(answers[index * per_queue : (index + 1) * per_queue]))
    yield lengths
    yield GaugeMetricFamily(
        "hub_broker_unacked_messages",
        "Messages delivered to a worker and not yet acknowledged (running or reserved).",
        value=answers[-1],
    )


def tenant_families(now: datetime) -> Iterator[Metric]:
    bounds = _sorted_bounds(settings.METRICS_HEARTBEAT_AGE_BUCKETS)
    age = ExpressionWrapper(
        Value(now, output_field=DateTimeField()) - F("last_heartbeat_at"), output_field=DurationField()
    )
    heard = Q(last_heartbeat_at__isnull=False)
    row = Tenant.objects.filter(status__in=TENANT_LIVE_STATUSES).aggregate(
        live=Count("id"),
        count=Count("id", filter=heard),
        total=Sum(_EpochSeconds(age), filter=heard),
        **_bucket_counts(bounds, lambda bound: Q(last_heartbeat_at__gte=now - timedelta(seconds=bound))),
    )
    ages = HistogramMetricFamily(
        "hub_tenant_heartbeat_age_seconds",
        "Seconds since the last heartbeat, over the live tenants that have sent one.",
    )
    ages.add_metric([], buckets=_cumulative_buckets(row, bounds), sum_value=row["total"] or 0.0)
    yield ages
    yield GaugeMetricFamily(
        "hub_tenants_without_heartbeat",
        "Live tenants whose agent has never sent a heartbeat.",
        value=row["live"] - row["count"],
    )
    tenants = GaugeMetricFamily("hub_tenants", "Tenants by status.", labels=["status"])
    by_status = dict(Tenant.objects.order_by().values_list("status").annotate(count=Count("id")))
    for status in TenantStatus.values:
        tenants.add_metric([status], by_status.get(status, 0))
    yield tenants


def alert_families(now: datetime) -> Iterator[Metric]:
    rows = (
        Alert.objects.filter(status=AlertStatus.OPEN).order_by().values("severity", "kind").annotate(count=Count("id"))
    )
    by_severity = dict.fromkeys(AlertSeverity.values, 0)
    by_kind = GaugeMetricFamily(
        "hub_alerts_open_by_kind", "Open alerts by severity and kind.", labels=["severity", "kind"]
    )
    for row in rows:
        by_severity[row["severity"]] = by_severity.get(row["severity"], 0) + row["count"]
        by_kind.add_metric([row["severity"], row["kind"]], row["count"])
    open_alerts = GaugeMetricFamily("hub_alerts_open", "Open alerts by severity.", labels=["severity"])
    for severity, count in by_severity.items():
        open_alerts.add_metric([severity], count)
    yield open_alerts
    yield by_kind


def server_families(now: datetime) -> Iterator[Metric]:
    counts = {
        (row["region"], row["tier"], row["status"]): row["count"]
        for row in Server.objects.order_by().values("region", "tier", "status").annotate(count=Count("id"))
    }
    servers = GaugeMetricFamily(
        "hub_servers", "Servers by region, tier and pool status.", labels=["region", "tier", "status"]
    )
    known = {
        (region, tier, status) for region in Region.values for tier in Tier.values for status in ServerStatus.values
    }
    for region, tier, status in sorted(known | set(counts)):
        servers.add_metric([region, tier, status], counts.get((region, tier, status), 0))
    yield servers
    targets = GaugeMetricFamily(
        "hub_pool_target",
        "The warm pool's minimum of AVAILABLE servers per region and tier.",
        labels=["region", "tier"],
    )
    for (region, tier), target in sorted(settings.POOL_TARGETS.items()):
        targets.add_metric([region, tier], target)
    yield targets


def order_families(now: datetime) -> Iterator[Metric]:
    by_status = dict(Order.objects.order_by().values_list("status").annotate(count=Count("id")))
    orders = GaugeMetricFamily("hub_orders", "Orders by status.", labels=["status"])
    for status in OrderStatus.values:
        orders.add_metric([status], by_status.get(status, 0))
    yield orders


def rollout_families(now: datetime) -> Iterator[Metric]:
    by_status = dict(Rollout.objects.order_by().values_list("status").annotate(count=Count("id")))
    rollouts = GaugeMetricFamily("hub_rollouts", "Rollouts by status.", labels=["status"])
    for status in RolloutStatus.values:
        rollouts.add_metric([status], by_status.get(status, 0))
    yield rollouts

    # Per-rollout series only for the rollouts that are active or ended in the window,
    # so the number of series stays bounded however many rollouts ever ran.
    since = now - timedelta(hours=settings.METRICS_WINDOW_HOURS)
    shown = Q(status__in=ROLLOUT_ACTIVE_STATUSES) | Q(finished_at__gte=since)
    current = list(
        Rollout.objects.filter(shown)
        .order_by("id")
        .values("id", "component", "target_version", "status", "current_position")
    )
    update_counts = {
        (row["rollout_id"], row["status"]): row["count"]
        for row in TenantUpdate.objects.filter(rollout__in=Rollout.objects.filter(shown))
        .order_by()
        .values("rollout_id", "status")
        .annotate(count=Count("id"))
    }
    updates = GaugeMetricFamily(
        "hub_rollout_updates",
        "Per-tenant updates of the active and recently ended rollouts, by status.",
        labels=["rollout", "component", "version", "status"],
    )
    positions = GaugeMetricFamily(
        "hub_rollout_stage_position",
        "The stage (0 = first) the rollout is at, with the rollout's status.",
        labels=["rollout", "component", "version", "status"],
    )
    for rollout in current:
        names = [str(rollout["id"]), rollout["component"], rollout["target_version"]]
        for status in UpdateStatus.values:
            updates.add_metric([*names, status], update_counts.get((rollout["id"], status), 0))
        if rollout["current_position"] is not None:
            positions.add_metric([*names, rollout["status"]], rollout["current_position"])
    yield updates
    yield positions


def _histogram_from_counts(
    family: HistogramMetricFamily, labels: list[str], per_bound: Mapping[float, float], total: float
) -> None:
    """Cumulative buckets from per-bucket counts keyed by upper bound (inf last)."""
    running = 0.0
    buckets = []
    for bound in sorted(per_bound):
        running += per_bound[bound]
        buckets.append(("+Inf" if bound == float("inf") else floatToGoString(bound), running))
    if not buckets or buckets[-1][0] != "+Inf":
        buckets.append(("+Inf", running))
    family.add_metric(labels, buckets=buckets, sum_value=total)


def web_families(now: datetime) -> Iterator[Metric]:
    sep = selfwatch_store.SEP
    raw = selfwatch_store.read_hash(selfwatch_store.HTTP_KEY)
    requests = CounterMetricFamily(
        "hub_http_requests",
        "Requests answered, by resolved route, method and status.",
        labels=["route", "method", "status"],
    )
    buckets: dict[tuple[str, str], dict[float, float]] = {}
    sums: dict[tuple[str, str], float] = {}
    bounds = [float(bound) for bound in settings.METRICS_REQUEST_DURATION_BUCKETS] + [float("inf")]
    for field, value in sorted(raw.items()):
        kind, *labels = field.split(sep)
        if kind == "n" and len(labels) == 3:
            requests.add_metric(labels, float(value))
        elif kind == "b" and len(labels) == 3:
            per_bound = buckets.setdefault((labels[0], labels[1]), dict.fromkeys(bounds, 0.0))
            bound = float("inf") if labels[2] == "+Inf" else float(labels[2])
            per_bound[bound] = per_bound.get(bound, 0.0) + float(value)
        elif kind == "s" and len(labels) == 2:
            sums[(labels[0], labels[1])] = float(value)
    yield requests
    durations = HistogramMetricFamily(
        "hub_http_request_duration_seconds",
        "Time from the request reaching Django to its answer, by resolved route and method.",
        labels=["route", "method"],
    )
    for (route, method), per_bound in sorted(buckets.items()):
        _histogram_from_counts(durations, [route, method], per_bound, sums.get((route, method), 0.0))
    yield durations
    errors = CounterMetricFamily(
        "hub_database_errors",
        "Failed database queries in every Hub process, by exception class (IntegrityError includes "
        "conflicts the code expects and settles).",
        labels=["error"],
    )
    for error, count in sorted(selfwatch_store.read_hash(selfwatch_store.DB_ERRORS_KEY).items()):
        errors.add_metric([error], float(count))
    yield errors


def rate_limit_families(now: datetime) -> Iterator[Metric]:
    labels = ["provider"]
    taken = CounterMetricFamily("hub_provider_requests", "Tokens taken from the provider's bucket.", labels=labels)
    waits = CounterMetricFamily(
        "hub_provider_rate_limit_waits", "Requests that had to wait for the provider's bucket.", labels=labels
    )
    waited = CounterMetricFamily(
        "hub_provider_rate_limit_wait_seconds", "Seconds spent waiting for the provider's bucket.", labels=labels
    )
    timeouts = CounterMetricFamily(
        "hub_provider_rate_limit_timeouts", "Requests that gave up waiting for the bucket.", labels=labels
    )
    limited = CounterMetricFamily("hub_provider_rate_limited", "429 answers from the provider.", labels=labels)
    used = GaugeMetricFamily(
        "hub_provider_quota_used_ratio",
        "Share of the provider's quota used over the last quota period (RATE_LIMIT_ALERT_RATIO alerts).",
        labels=labels,
    )
    for provider in sorted(settings.PROVIDER_RATE_LIMITS):
        bucket = provider_bucket(provider)
        stats = bucket.stats()
        taken.add_metric([provider], stats["taken"])
        waits.add_metric([provider], stats["waits"])
        waited.add_metric([provider], stats["wait_seconds"])
        timeouts.add_metric([provider], stats["timeouts"])
        limited.add_metric([provider], stats["rate_limited"])
        used.add_metric([provider], bucket.quota_used())
    yield from (taken, waits, waited, timeouts, limited, used)


def periodic_job_families(now: datetime) -> Iterator[Metric]:
    labels = ["job", "task"]
    last = GaugeMetricFamily(
        "hub_periodic_job_last_success_timestamp_seconds",
        "When each periodic job last succeeded (absent: never since it is watched).",
        labels=labels,
    )
    period = GaugeMetricFamily(
        "hub_periodic_job_period_seconds", "Each periodic job's period, from the beat schedule.", labels=labels
    )
    silent = GaugeMetricFamily(
        "hub_periodic_job_silent",
        "1 when the job has not succeeded within PERIODIC_JOB_SILENT_PERIODS of its periods.",
        labels=labels,
    )
    for job in periodic_jobs():
        names = [job.name, job.task]
        if job.last_success_at is not None:
            last.add_metric(names, job.last_success_at.timestamp())
        period.add_metric(names, job.period_seconds)
        silent.add_metric(names, 1 if job.silent(now) else 0)
    yield from (last, period, silent)


def order_outcome_families(now: datetime) -> Iterator[Metric]:
    since = now - timedelta(hours=settings.METRICS_WINDOW_HOURS)
    bounds = _sorted_bounds(settings.METRICS_ORDER_FULFILMENT_BUCKETS)
    took = ExpressionWrapper(F("fulfilled_at") - F("created_at"), output_field=DurationField())
    seconds = _EpochSeconds(took)
    row = (
        Order.objects.filter(fulfilled_at__gte=since)
        .annotate(seconds=seconds)
        .aggregate(
            count=Count("id"),
            total=Sum("seconds"),
            **_bucket_counts(bounds, lambda bound: Q(seconds__lte=bound)),
        )
    )
    fulfilment = HistogramMetricFamily(
        "hub_order_payment_to_fulfilled_seconds",
        f"From payment to FULFILLED, over the orders fulfilled in the last {settings.METRICS_WINDOW_HOURS} h.",
    )
    fulfilment.add_metric([], buckets=_cumulative_buckets(row, bounds), sum_value=row["total"] or 0.0)
    yield fulfilment
    outcomes = dict(
        Order.objects.filter(created_at__gte=since, first_attempt_succeeded__isnull=False)
        .order_by()
        .values_list("first_attempt_succeeded")
        .annotate(count=Count("id"))
    )
    first = GaugeMetricFamily(
        "hub_orders_first_attempt",
        f"Orders paid in the last {settings.METRICS_WINDOW_HOURS} h whose first provisioning attempt ended, "
        "by how (a retry later does not change it).",
        labels=["outcome"],
    )
    first.add_metric(["succeeded"], outcomes.get(True, 0))
    first.add_metric(["failed"], outcomes.get(False, 0))
    yield first
    ended = outcomes.get(True, 0) + outcomes.get(False, 0)
    if ended:
        yield GaugeMetricFamily(
            "hub_order_first_attempt_success_ratio",
            "Share of those whose first attempt was FULFILLED (the goal: at least 0.9).",
            value=outcomes.get(True, 0) / ended,
        )


def webhook_families(now: datetime) -> Iterator[Metric]:
    since = now - timedelta(hours=settings.METRICS_WINDOW_HOURS)
    bounds = _sorted_bounds(settings.METRICS_WEBHOOK_HANDLING_BUCKETS)
    took = _EpochSeconds(ExpressionWrapper(F("finished_at") - F("received_at"), output_field=DurationField()))
    row = (
        StripeEvent.objects.filter(received_at__gte=since, finished_at__isnull=False)
        .annotate(seconds=took)
        .aggregate(
            count=Count("id"), total=Sum("seconds"), **_bucket_counts(bounds, lambda bound: Q(seconds__lte=bound))
        )
    )
    handling = HistogramMetricFamily(
        "hub_stripe_webhook_handling_seconds",
        f"From Stripe's webhook POST to its handler's end, over the events received in the last "
        f"{settings.METRICS_WINDOW_HOURS} h.",
    )
    handling.add_metric([], buckets=_cumulative_buckets(row, bounds), sum_value=row["total"] or 0.0)
    yield handling


SOURCES: tuple[tuple[str, Callable[[datetime], Iterator[Metric]]], ...] = (
    ("steps", step_families),
    ("jobs", job_families),
    ("broker", queue_families),
    ("tenants", tenant_families),
    ("alerts", alert_families),
    ("servers", server_families),
    ("orders", order_families),
    ("rollouts", rollout_families),
    ("web", web_families),
    ("rate_limits", rate_limit_families),
    ("periodic_jobs", periodic_job_families),
    ("order_outcomes", order_outcome_families),
    ("webhooks", webhook_families),
)


class HubCollector(Collector):
    """Reads every family from its source at collect time (see the module docstring)."""

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        now = timezone.now()
        up = GaugeMetricFamily(
            "hub_metrics_source_up", "1 when this scrape read the source, 0 when it failed.", labels=["source"]
        )
        for name, source in SOURCES:
            try:
                families = list(source(now))
            except Exception as exc:  # noqa: BLE001 - one failing source must not fail the scrape
                # One line, no traceback: a source that is down fails every scrape.
                logger.warning("metrics source %s failed: %s: %s", name, type(exc).__name__, exc)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from families
        yield up
        yield GaugeMetricFamily(
            "hub_metrics_scrape_duration_seconds",
            "How long this scrape took to read its sources.",
            value=time.monotonic() - started,
        )


registry = CollectorRegistry(auto_describe=False)
registry.register(HubCollector())


def _authorized(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The scrape endpoint; with METRICS_TOKEN set it needs `Authorization: Bearer <token>`."""
    if not _authorized(request):
        response = HttpResponse("unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    response = HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
