"""Benchmark 5: concurrent provisioning. Real orders against the sandbox: pool servers
that are real sshd hosts on 127.0.0.x whose provisioning scripts each wait about a
second in a stand-in (`host.slow`), the Cloudflare emulator for DNS, the Hub under
gunicorn for the deployed agents to register with, and one provisioning worker. First
one order alone, then N at once, on the threads pool (production's choice) and on
prefork at its default concurrency (one process per core); side by side, the N-order
wall time over the one-order wall time."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from bench.common import (
    VAR,
    Process,
    Result,
    bench_env,
    free_port,
    fresh_database,
    process_tree,
    start_gunicorn,
    start_worker,
    wait_for,
)

GOAL_FACTOR = 1.3
ZONE = "hub-sandbox.test"
# Stand-in calls, about one per provisioning script, that wait SCRIPT_SECONDS first, as
# real package installs and image pulls make a script wait on the network.
SCRIPT_SECONDS = 1
SLOW_CALLS = (
    "hostnamectl",  # 01-system
    "systemctl enable --now docker",  # 02-docker
    "apt-get install -y -qq nginx",  # 03-nginx
    "ufw --force",  # 04-firewall
    "sshd -t",  # 05-ssh-hardening
    "certbot certonly",  # 06-tls
    "systemctl enable --now cron",  # 07-backups
    "sysctl",  # 08-hardening
    # 09-tools (one tool) and 10-agent (the AI stack) pull images; `docker compose
    # version`, `config` and `exec` do not wait on the network.
    "docker compose ... up",
)
# The retries and waits of tests/provisioning: nothing here is meant to fail.
FAST = {
    "PROVISIONING_RETRY_BASE_DELAY": "0.3",
    "PROVISIONING_SCRIPT_ATTEMPTS": "2",
    "PROVISIONING_AGENT_WAIT_SECONDS": "120",
    "PROVISIONING_SSH_WAIT_SECONDS": "60",
    "HCLOUD_POLL_INTERVAL": "0.2",
    "AGENT_HEARTBEAT_INTERVAL": "5",
    "AGENT_THROTTLE_RATE": "100000/minute",
    "AGENT_REGISTER_THROTTLE_RATE": "100000/minute",
}
TERMINAL = ("FULFILLED", "ROLLED_BACK", "FAILED", "CANCELLED")


@dataclass
class Batch:
    orders: int
    wall_seconds: float
    order_seconds: list[float]
    fulfilled: int
    failures: list[str]
    script_seconds: float
    # CPU per order: the worker's, and the sandbox hosts' SSH sessions' (sshd, bash, the
    # scripts and their stand-ins, reaped by each host's sshd); handshakes per order.
    worker_cpu: float = 0.0
    session_cpu: float = 0.0
    agent_cpu: float = 0.0
    handshakes: float = 0.0
    web_cpu: float = 0.0
    # Cloudflare calls per order, and the seconds the Hub's bucket made them wait in all.
    cloudflare_calls: float = 0.0
    cloudflare_wait_seconds: float = 0.0
    # Each step's share of an order's wall time (from the previous step's end to its
    # own, so waits in the queue and for retries count), median over the orders.
    step_seconds: dict[str, float] = field(default_factory=dict)
    # Orders whose `wait_agent_registered` was woken by the agent's registration.
    woken: int = 0


@dataclass
class Meters:
    """What a batch cost, read from /proc and the hosts' sshd logs before and after."""

    worker_pid: int
    web_pid: int
    hosts: list[Any]

    def read(self) -> tuple[float, float, float, int, float, float, float]:
        from hub.integrations.ratelimit import provider_bucket

        cloudflare = provider_bucket("cloudflare").stats()
        return (
            sum(_cpu_seconds(pid, children=False) for pid in process_tree(self.worker_pid)),
            # A kept connection's sshd is still alive: its CPU is its own, not yet its parent's.
            sum(_cpu_seconds(pid, children=True) for host in self.hosts for pid in process_tree(_listener_pid(host))),
            # The deployed agents (detached from the sessions that started them) with the
            # docker stand-in calls of their heartbeats.
            sum(_cpu_seconds(pid, children=True) for pid in _agent_pids(self.hosts)),
            sum(
                (host.root.parent / "sshd.log").read_text().count("Accepted publickey")
                for host in self.hosts
                if (host.root.parent / "sshd.log").exists()
            ),
            sum(_cpu_seconds(pid, children=False) for pid in process_tree(self.web_pid)),
            cloudflare["taken"],
            cloudflare["wait_seconds"],
        )


def _cpu_seconds(pid: int, *, children: bool) -> float:
    """User and system CPU of a process (and of the children it reaped), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    used = fields[11:15] if children else fields[11:13]
    return sum(int(x) for x in used) / os.sysconf("SC_CLK_TCK")


def _agent_pids(hosts: list[Any]) -> list[int]:
    roots = tuple(f"{host.root}/" for host in hosts)
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if cwd.startswith(roots) and cwd.endswith("/opt/hub/agent"):
                found.append(int(entry))
    return found


def _listener_pid(host: Any) -> int:
    import json

    return int(json.loads((host.root.parent / "host.json").read_text())["pid"])


def _place(count: int, label: str) -> list[int]:
    from provisioning.services.orders import order_create
    from sandbox.releases import seed_releases

    seed_releases(actor="bench")
    return [
        order_create(
            plan="build",
            region="eu",
            domain=f"{label}-{i}.{ZONE}",
            tools=["uptime_kuma"],
            customer_email=f"owner@{label}-{i}.{ZONE}",
            actor="bench",
        ).pk
        for i in range(count)
    ]


def _pool(hosts: list[Any]) -> None:
    from provisioning.models import Server, ServerProvider, ServerStatus

    Server.objects.bulk_create(
        [
            Server(
                provider=ServerProvider.NETCUP,
                region="eu",
                tier="build",
                ipv4=host.addr,
                ssh_port=host.port,
                status=ServerStatus.AVAILABLE,
                name=f"netcup-{host.addr}",
            )
            for host in hosts
        ]
    )


def _wait_orders(ids: list[int], started: float, timeout: float) -> dict[int, float]:
    from provisioning.models import Order

    done: dict[int, float] = {}

    def all_done() -> bool:
        pending = [i for i in ids if i not in done]
        for pk in Order.objects.filter(pk__in=pending, status__in=TERMINAL).values_list("pk", flat=True):
            done[pk] = time.monotonic() - started
        return len(done) == len(ids)

    wait_for(all_done, timeout=timeout, interval=0.1, message=f"{len(ids)} orders to end")
    return done


def _batch(count: int, label: str, timeout: float, meters: Meters) -> Batch:
    from django.db.models import Q

    from hub.pipeline.models import Step
    from provisioning.models import Order, OrderStatus

    before = meters.read()
    started = time.monotonic()
    ids = _place(count, label)
    done = _wait_orders(ids, started, timeout)
    wall = max(done.values())
    worker, sessions, agents, handshakes, web, calls, waited = (
        (after - earlier) / count for after, earlier in zip(meters.read(), before, strict=True)
    )
    orders = list(Order.objects.filter(pk__in=ids))
    failures = [f"{o.domain}: {o.status} {o.failure_reason[:200]}" for o in orders if o.status != OrderStatus.FULFILLED]
    scripts = Step.objects.filter(
        Q(name__startswith="setup_") | Q(name="agent_handover"), job__order__in=ids, finished_at__isnull=False
    )
    script_total = sum(
        (s.finished_at - s.started_at).total_seconds() for s in scripts if s.started_at and s.finished_at
    )
    woken = Step.objects.filter(
        name="wait_agent_registered", job__order__in=ids, history__contains=[{"outcome": "woken"}]
    ).count()
    return Batch(
        woken=woken,
        step_seconds=_step_shares(ids),
        orders=count,
        wall_seconds=wall,
        order_seconds=sorted(done.values()),
        fulfilled=len(orders) - len(failures),
        failures=failures,
        script_seconds=script_total / max(1, count),
        worker_cpu=worker,
        session_cpu=sessions,
        agent_cpu=agents,
        handshakes=handshakes,
        web_cpu=web,
        cloudflare_calls=calls,
        cloudflare_wait_seconds=waited * count,
    )


def _step_shares(order_ids: list[int]) -> dict[str, float]:
    from hub.pipeline.models import Job, Step

    shares: dict[str, list[float]] = {}
    for job in Job.objects.filter(order__in=order_ids):
        previous = job.created_at
        for step in Step.objects.filter(job=job, kind="ACTION", finished_at__isnull=False).order_by("position"):
            assert step.finished_at is not None
            shares.setdefault(step.name, []).append((step.finished_at - previous).total_seconds())
            previous = step.finished_at
    return {name: _median(values) for name, values in shares.items()}


def _where_it_grew(one: Batch, many: Batch, top: int = 6) -> str:
    """The steps whose share of an order grew most from one order alone to the batch."""
    grown = sorted(
        ((many.step_seconds.get(name, 0.0) - alone, name, alone) for name, alone in one.step_seconds.items()),
        reverse=True,
    )[:top]
    return "; ".join(f"{name} {alone:.2f} -> {alone + extra:.2f} s" for extra, name, alone in grown)


def _rss_mb(process: Process) -> float:
    """Resident memory of the worker and its pool children, in MB."""
    if process.proc is None:
        return 0.0
    total = 0
    for pid in process_tree(process.proc.pid):
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total / 2**20


def _configuration(
    *, pool: str, concurrency: int, orders: int, single: bool, wait_seconds: int, timeout: float
) -> tuple[Batch | None, Batch, float]:
    """One sandbox, one Hub, one worker: optionally one order alone, then `orders` at
    once. Returns (single, batch, worker RSS in MB at the end)."""
    from django.test import override_settings

    from sandbox.control import Sandbox

    hosts_needed = orders + (1 if single else 0)
    box = Sandbox(
        state_dir=VAR / f"sandbox-{pool}",
        hosts_count=hosts_needed,
        ssh_port=free_port(),
        hetzner_port=free_port(),
        cloudflare_port=free_port(),
        action_seconds=0.2,
        exit_with_parent=True,
    ).up(timeout=120)
    web: Process | None = None
    worker: Process | None = None
    try:
        hosts = list(box.hosts)
        for host in hosts if wait_seconds else ():
            for call in SLOW_CALLS:
                host.slow(call, wait_seconds)
        port = free_port()
        env = bench_env(
            **box.env,
            **FAST,
            HUB_PUBLIC_URL=f"http://127.0.0.1:{port}",
            EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
            EMAIL_FILE_PATH=str(VAR / "mail"),
        )
        typed = {k: v for k, v in box.env.items() if k != "HCLOUD_SSH_PORT"}
        with fresh_database(), override_settings(**typed, HUB_PUBLIC_URL=env["HUB_PUBLIC_URL"]):
            web = start_gunicorn(f"provisioning-web-{pool}", port=port, workers=1, threads=8, env=env)
            worker = start_worker(
                f"provisioning-{pool}",
                queues="provisioning,default",
                pool=pool,
                concurrency=concurrency,
                env=env,
                include="bench.pipelines",
            )
            assert worker.proc is not None and web.proc is not None
            web_pid = web.proc.pid
            one = None
            if single:
                _pool(hosts[:1])
                one = _batch(1, f"{pool}-one", timeout, Meters(worker.proc.pid, web_pid, hosts[:1]))
                hosts = hosts[1:]
            _pool(hosts[:orders])
            batch = _batch(orders, f"{pool}-many", timeout, Meters(worker.proc.pid, web_pid, hosts[:orders]))
            rss = _rss_mb(worker)
    finally:
        if worker is not None:
            worker.stop()
        if web is not None:
            web.stop()
        box.down()
    return one, batch, rss


def run(quick: bool) -> Result:
    # Quick mode (CI): two orders, no added waits, and no prefork run, to stay short.
    orders = 2 if quick else 30
    wait_seconds = 0 if quick else SCRIPT_SECONDS
    timeout = 120 if quick else 900
    prefork_concurrency = os.cpu_count() or 2
    waits = f"scripts wait {len(SLOW_CALLS) * wait_seconds} s in all in stand-ins" if wait_seconds else "no added waits"
    result = Result(f"concurrent provisioning: {orders} orders at once vs one alone, on sandbox hosts, {waits}")
    one, threads, threads_rss = _configuration(
        pool="threads", concurrency=orders, orders=orders, single=True, wait_seconds=wait_seconds, timeout=timeout
    )
    assert one is not None
    threads_factor = threads.wall_seconds / one.wall_seconds
    result.add("one order alone (threads)", f"{one.wall_seconds:.1f} s", "")
    result.add("  of which in its scripts", f"{one.script_seconds:.1f} s", "")
    _costs(result, one)
    result.add(
        f"{orders} orders at once, threads -c {orders}",
        f"{threads.wall_seconds:.1f} s (median order {_median(threads.order_seconds):.1f} s)",
        "",
    )
    result.add("  / one order", f"{threads_factor:.2f}x", f"<= {GOAL_FACTOR}x", threads_factor <= GOAL_FACTOR)
    result.add("  fulfilled", f"{threads.fulfilled} of {orders}", "all", threads.fulfilled == orders)
    result.add("  worker RSS", f"{threads_rss:.0f} MB", "")
    result.add("  script time per order", f"{threads.script_seconds:.1f} s", "")
    _costs(result, threads)
    failures = list(threads.failures)
    ratio = f"{orders} orders / one order = {threads_factor:.2f}x on threads -c {orders}"
    result.notes.append(
        f"median step shares, one order -> {orders} at once (most grown): {_where_it_grew(one, threads)}"
    )
    if not quick and os.environ.get("BENCH_PROVISIONING_PREFORK", "1") != "0":
        _, prefork, prefork_rss = _configuration(
            pool="prefork",
            concurrency=prefork_concurrency,
            orders=orders,
            single=False,
            wait_seconds=wait_seconds,
            timeout=timeout,
        )
        prefork_factor = prefork.wall_seconds / one.wall_seconds
        result.add(
            f"{orders} orders at once, prefork -c {prefork_concurrency}",
            f"{prefork.wall_seconds:.1f} s (median order {_median(prefork.order_seconds):.1f} s)",
            "",
        )
        result.add("  / one order", f"{prefork_factor:.2f}x", "")
        result.add("  fulfilled", f"{prefork.fulfilled} of {orders}", "all", prefork.fulfilled == orders)
        result.add("  worker RSS", f"{prefork_rss:.0f} MB", "")
        _costs(result, prefork)
        failures += prefork.failures
        ratio += (
            f", {prefork_factor:.2f}x on prefork -c {prefork_concurrency}; "
            f"prefork / threads wall time = {prefork.wall_seconds / threads.wall_seconds:.2f}x"
        )
    else:
        result.notes.append("no prefork run" + (" (quick mode)" if quick else " (BENCH_PROVISIONING_PREFORK=0)"))
    result.ratio = ratio
    result.notes.extend(f"failed: {failure}" for failure in failures[:5])
    result.notes.append("the Hub web, the worker, the sshd hosts and their scripts all share the same 2 cores")
    return result


def _costs(result: Result, batch: Batch) -> None:
    result.add(
        "  CPU per order",
        f"worker {batch.worker_cpu:.2f} s, host SSH sessions {batch.session_cpu:.2f} s, agent {batch.agent_cpu:.2f} s, "
        f"Hub web {batch.web_cpu:.2f} s",
        "",
    )
    result.add(
        "  Cloudflare calls per order",
        f"{batch.cloudflare_calls:.1f} (the Hub's bucket made them wait {batch.cloudflare_wait_seconds:.1f} s in all)",
        "",
    )
    result.add("  SSH handshakes per order", f"{batch.handshakes:.1f}", "")
    result.add("  agent registrations that woke their step", f"{batch.woken} of {batch.orders}", "")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")
