"""`python manage.py demo_story`: the story `make demo` tells, against the running Hub.

1. the sandbox hosts (SANDBOX_HOSTS) join the warm pool as contract servers;
2. one order per host arrives as Stripe would send it: a signed
   `checkout.session.completed` POSTed to the Hub's webhook over HTTP;
3. each order's job is followed step by step (a progress bar per order) to FULFILLED;
4. the agents the orders handed the servers to heartbeat, and their metrics land;
5. a release of one component rolls out across those tenants in small stages with
   short soaks, followed stage by stage to COMPLETED.

It only places work and watches the database: the web, the workers and beat do the
rest, as they would in production. Exits non-zero with the reason when a step of the
story fails or takes too long."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.db import transaction
from django.utils import timezone

from hub.audit import audit_record
from hub.pipeline.models import Job, JobStatus, StepKind, StepStatus
from provisioning.models import Order, OrderStatus, Server, ServerProvider, ServerStatus
from rollouts.models import RolloutStage, RolloutStatus, TenantUpdate, UpdateStatus
from rollouts.services import StageSpec, release_get_or_create, rollout_create, rollout_start
from sandbox import stripe_events
from tenants.models import Tenant

ACTOR = "make demo"
WEBHOOK_PATH = "/api/v1/billing/stripe/webhook"
CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli", "stark")
PLAN, REGION, TOOLS = "build", "eu", "nextcloud,ghost"
STEP_DONE = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
ORDER_BAD_ENDS = (OrderStatus.FAILED, OrderStatus.ROLLED_BACK, OrderStatus.CANCELLED)
ROLLOUT_BAD_ENDS = (RolloutStatus.HALTED, RolloutStatus.ROLLING_BACK, RolloutStatus.ROLLED_BACK, RolloutStatus.ABORTED)
BAR_WIDTH = 16
POLL_SECONDS = 0.5


class StoryFailed(CommandError):
    """A chapter of the story did not end as it should; the message says why."""


class Board:
    """Lines that are redrawn in place on a terminal; elsewhere (a log, CI) a line is
    printed each time it changes."""

    def __init__(self, out: OutputWrapper, *, live: bool) -> None:
        self.out, self.live = out, live
        self.lines: list[str] = []

    def show(self, lines: list[str]) -> None:
        if lines == self.lines:
            return
        if self.live:
            # A line that wraps would throw the redraw off by a row.
            width = max(20, shutil.get_terminal_size().columns - 1)
            up = f"\033[{len(self.lines)}F" if self.lines else ""
            self.out.write(up + "".join(f"\r\033[2K{line[:width]}\n" for line in lines), ending="")
        else:
            for index, line in enumerate(lines):
                if index >= len(self.lines) or self.lines[index] != line:
                    self.out.write(line)
        self.out.flush()
        self.lines = list(lines)


def bar(done: int, total: int) -> str:
    filled = BAR_WIDTH * done // total if total else 0
    return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]"


def wait_until(what: str, check: Callable[[], Any], *, timeout: float, interval: float = POLL_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise StoryFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Placed:
    domain: str
    event_id: str
    order_id: int | None = None

    @property
    def name(self) -> str:
        return self.domain.split(".", 1)[0]


class Command(BaseCommand):
    help = "Tell the demo's story against the running Hub: pool, orders, heartbeats, rollout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--hub-url", default=None, help="the running Hub (default: HUB_PUBLIC_URL)")
        parser.add_argument("--hosts", default=None, help="addr:port,... to pool (default: SANDBOX_HOSTS)")
        parser.add_argument("--orders", type=int, default=None, help="orders to place (default: one per host)")
        parser.add_argument("--heartbeats", type=int, default=2, help="heartbeats to show from each agent")
        parser.add_argument("--order-timeout", type=float, default=300.0)
        parser.add_argument("--rollout-timeout", type=float, default=180.0)
        parser.add_argument("--soak-seconds", type=int, default=3)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self.tell(options)
        except KeyboardInterrupt:
            # Ctrl-C: scripts/demo.sh stops everything on this exit status.
            self.say("\ninterrupted")
            raise SystemExit(130) from None

    def tell(self, options: dict[str, Any]) -> None:
        self.live = sys.stdout.isatty() and os.environ.get("TERM", "") != "dumb"
        hub_url = (options["hub_url"] or settings.HUB_PUBLIC_URL).rstrip("/")
        endpoints = [h for h in (options["hosts"] or os.environ.get("SANDBOX_HOSTS", "")).split(",") if h.strip()]
        if not endpoints:
            raise CommandError("no sandbox hosts: pass --hosts or set SANDBOX_HOSTS (manage.py sandbox env)")
        count = options["orders"] or len(endpoints)
        if count > len(CUSTOMERS):
            raise CommandError(f"at most {len(CUSTOMERS)} orders")
        zone = os.environ.get("CLOUDFLARE_ZONE_NAME") or getattr(settings, "CLOUDFLARE_ZONE_NAME", "hub-sandbox.test")
        started = time.monotonic()

        self.chapter(f"1. the warm pool: {len(endpoints)} sandbox hosts join as contract servers")
        for server in self.pool_servers(endpoints):
            self.say(f"   server #{server.pk} {server.name} {server.ipv4}:{server.ssh_port} {server.status}")

        self.chapter(f"2. {count} checkout(s) paid: signed checkout.session.completed to {hub_url}{WEBHOOK_PATH}")
        placed = [self.checkout(hub_url, f"{name}.{zone}") for name in CUSTOMERS[:count]]

        self.chapter("3. provisioning: each order's job, step by step")
        orders = self.follow_orders(placed, timeout=options["order_timeout"])

        tenant_ids = [order.tenant_id for order in orders if order.tenant_id]
        self.chapter("4. the agents on the new servers heartbeat")
        self.follow_heartbeats(tenant_ids, per_agent=options["heartbeats"])

        self.chapter("5. a staged rollout across the sandbox tenants")
        self.follow_rollout(tenant_ids, soak=options["soak_seconds"], timeout=options["rollout_timeout"])

        self.say(self.style.SUCCESS(f"the story is told in {time.monotonic() - started:.0f}s"))

    # --- output ---------------------------------------------------------------------

    def say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def chapter(self, title: str) -> None:
        self.say("")
        self.say(self.style.MIGRATE_HEADING(title))

    # --- 1. the pool ----------------------------------------------------------------

    def pool_servers(self, endpoints: list[str]) -> list[Server]:
        """Each host as an AVAILABLE contract server, once (a second run finds it)."""
        servers = []
        for endpoint in endpoints:
            addr, _, port = endpoint.strip().partition(":")
            with transaction.atomic():
                server, created = (
                    Server.objects.exclude(status=ServerStatus.DELETED)
                    .select_for_update()
                    .get_or_create(
                        ipv4=addr,
                        ssh_port=int(port or 22),
                        defaults={
                            "provider": ServerProvider.NETCUP,
                            "region": REGION,
                            "tier": PLAN,
                            "name": f"netcup-{addr}",
                            "status": ServerStatus.AVAILABLE,
                        },
                    )
                )
                if created:
                    audit_record(
                        actor=ACTOR,
                        action="server.register",
                        object_type="server",
                        object_id=server.pk,
                        new=ServerStatus.AVAILABLE,
                        reason="a sandbox host, ready as it is",
                    )
            servers.append(server)
        return servers

    # --- 2. the checkout ------------------------------------------------------------

    def checkout(self, hub_url: str, domain: str) -> Placed:
        name = domain.split(".", 1)[0]
        event = stripe_events.checkout_session_completed(
            plan=PLAN, region=REGION, domain=domain, tools=TOOLS, email=f"owner@{domain}"
        )
        try:
            response = stripe_events.deliver(f"{hub_url}{WEBHOOK_PATH}", event, settings.STRIPE_WEBHOOK_SECRET)
        except requests.RequestException as exc:
            raise StoryFailed(f"the Hub's webhook did not answer: {exc}") from exc
        if response.status_code != 200:
            raise StoryFailed(f"the webhook answered {response.status_code}: {response.text[:300]}")
        self.say(f"   {name}: {event['id']} ({PLAN}, {REGION}, {TOOLS}) -> HTTP {response.status_code}")
        return Placed(domain=domain, event_id=event["id"])

    # --- 3. provisioning ------------------------------------------------------------

    def follow_orders(self, placed: list[Placed], *, timeout: float) -> list[Order]:
        board = Board(self.stdout, live=self.live)
        deadline = time.monotonic() + timeout
        width = max(len(p.name) for p in placed)
        while True:
            lines, orders = [], []
            for item in placed:
                order = self.order_of(item)
                lines.append(self.order_line(item, order, width))
                if order is not None:
                    orders.append(order)
            board.show(lines)
            # The order turns FULFILLED inside its last step, a moment before that step is
            # recorded: the story waits for the job to end, so the board shows every step done.
            done = len(orders) == len(placed) and all(
                o.status == OrderStatus.FULFILLED and o.job is not None and o.job.status == JobStatus.SUCCEEDED
                for o in orders
            )
            failed = [o for o in orders if o.status in ORDER_BAD_ENDS]
            if failed:
                raise StoryFailed(
                    "; ".join(f"order {o.pk} ({o.domain}) ended {o.status}: {o.failure_reason}" for o in failed)
                )
            if done:
                return orders
            if time.monotonic() > deadline:
                raise StoryFailed(f"the orders were not FULFILLED within {timeout:.0f}s: " + " | ".join(lines))
            time.sleep(POLL_SECONDS)

    def order_of(self, item: Placed) -> Order | None:
        queryset = Order.objects.select_related("job")
        if item.order_id is not None:
            return queryset.get(pk=item.order_id)
        order = queryset.filter(source_event_id=item.event_id).first()
        if order is not None:
            item.order_id = order.pk
        return order

    def order_line(self, item: Placed, order: Order | None, width: int) -> str:
        label = item.name.ljust(width)
        if order is None:
            return f"   {label} {bar(0, 1)}  webhook received, the billing worker makes the order"
        job: Job | None = order.job
        if job is None:
            return f"   {label} {bar(0, 1)}  order #{order.pk} {order.status}"
        steps = list(job.steps.filter(kind=StepKind.ACTION).order_by("position").values("name", "status", "attempts"))
        total = len(steps)
        done = sum(1 for s in steps if s["status"] in STEP_DONE)
        current = next((s for s in steps if s["status"] not in STEP_DONE), None)
        if order.status == OrderStatus.FULFILLED or current is None:
            what = "all steps done"
        else:
            retry = f", attempt {current['attempts']}" if current["attempts"] > 1 else ""
            what = f"{current['name']} ({current['status'].lower()}{retry})"
        if job.status in (JobStatus.COMPENSATING, JobStatus.ROLLED_BACK, JobStatus.FAILED):
            what = f"job {job.status.lower()}"
        return f"   {label} {bar(done, total)} {done:>2}/{total}  {order.status:<12}  {what}"

    # --- 4. heartbeats --------------------------------------------------------------

    def follow_heartbeats(self, tenant_ids: list[int], *, per_agent: int) -> None:
        tenants = {t.pk: t for t in Tenant.objects.filter(pk__in=tenant_ids)}
        interval = max(t.heartbeat_interval for t in tenants.values())
        self.say(f"   each agent reports every {interval}s; the Hub writes the reports to Postgres in bulk")
        last: dict[int, datetime | None] = {pk: t.last_heartbeat_at for pk, t in tenants.items()}
        seen = dict.fromkeys(tenants, 0)

        def arrived() -> bool:
            for tenant in Tenant.objects.filter(pk__in=tenant_ids).order_by("pk"):
                if tenant.last_heartbeat_at and tenant.last_heartbeat_at != last[tenant.pk]:
                    last[tenant.pk] = tenant.last_heartbeat_at
                    seen[tenant.pk] += 1
                    if seen[tenant.pk] <= per_agent:
                        self.say(self.heartbeat_line(tenant))
            return min(seen.values()) >= per_agent

        wait_until(f"{per_agent} heartbeats from every agent", arrived, timeout=max(60.0, interval * 10 * per_agent))

    def heartbeat_line(self, tenant: Tenant) -> str:
        at = timezone.localtime(tenant.last_heartbeat_at).strftime("%H:%M:%S") if tenant.last_heartbeat_at else "-"
        return (
            f"   heartbeat {tenant.domain} at {at}: disk {tenant.disk_percent or 0:.0f}%, "
            f"memory {tenant.memory_percent or 0:.0f}%, load {tenant.load or 0:.2f}, "
            f"{len(tenant.containers)} containers, agent {tenant.versions.get('agent', '?')}"
        )

    # --- 5. the rollout -------------------------------------------------------------

    def follow_rollout(self, tenant_ids: list[int], *, soak: int, timeout: float) -> None:
        tenants = list(Tenant.objects.filter(pk__in=tenant_ids))
        common = set.intersection(*(set(t.versions) for t in tenants)) - {"agent"}
        if not common:
            raise StoryFailed(f"the tenants report no common component to update: {[t.versions for t in tenants]}")
        component = sorted(common)[0]
        current = tenants[0].versions[component]
        version = f"{current}-demo.1"
        digest = hashlib.sha256(f"{component}:{version}".encode()).hexdigest()
        release = release_get_or_create(
            component=component,
            version=version,
            image=f"ghcr.io/hub-demo/{component}:{version}@sha256:{digest}",
            notes="the demo's release",
            actor=ACTOR,
        )
        stages = [
            StageSpec(name="canary", percent=33, soak_seconds=soak),
            StageSpec(name="early", percent=66, soak_seconds=soak),
            StageSpec(name="everyone", percent=100, soak_seconds=0),
        ]
        rollout = rollout_create(release_id=release.pk, actor=ACTOR, stages=stages, min_finished=1, min_failures=1)
        rollout = rollout_start(rollout_id=rollout.pk, actor=ACTOR)
        self.say(
            f"   rollout #{rollout.pk}: {component} {current} -> {version} over {rollout.population} tenants, "
            f"stages {', '.join(s.name for s in stages)} (soak {soak}s)"
        )
        board = Board(self.stdout, live=self.live)
        deadline = time.monotonic() + timeout
        while True:
            rollout.refresh_from_db()
            lines = [
                self.stage_line(stage) for stage in RolloutStage.objects.filter(rollout=rollout).order_by("position")
            ]
            lines.append(f"   rollout #{rollout.pk} {rollout.status}")
            board.show(lines)
            if rollout.status == RolloutStatus.COMPLETED:
                return
            if rollout.status in ROLLOUT_BAD_ENDS:
                raise StoryFailed(f"rollout #{rollout.pk} is {rollout.status}: {rollout.status_reason}")
            if time.monotonic() > deadline:
                raise StoryFailed(f"rollout #{rollout.pk} did not complete within {timeout:.0f}s: " + " | ".join(lines))
            time.sleep(POLL_SECONDS)

    def stage_line(self, stage: RolloutStage) -> str:
        statuses = list(TenantUpdate.objects.filter(stage=stage).values_list("status", flat=True))
        total = stage.planned_size if stage.planned_size is not None else len(statuses)
        done = sum(1 for s in statuses if s == UpdateStatus.SUCCEEDED)
        failed = sum(1 for s in statuses if s == UpdateStatus.FAILED)
        extra = f", {failed} failed" if failed else ""
        gate = f"  gate {stage.gate}" if stage.gate else ""
        return f"   stage {stage.name:<9} {bar(done, total)} {done}/{total} updated{extra}  {stage.status}{gate}"
