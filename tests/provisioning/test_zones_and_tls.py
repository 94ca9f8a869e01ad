"""A customer's domain in its own Cloudflare zone, and its certificate by DNS-01 with no
Cloudflare credential on the server: real worker, Postgres, Redis, sshd hosts, the
Cloudflare emulator as a real HTTP server, the Hub on loopback for the hooks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from hub.models import Alert, CustomerNotice
from hub.pipeline.models import Job
from provisioning.integrations import cloudflare
from provisioning.models import Order, OrderStatus, Server, ServerStatus
from provisioning.pipelines.order import script_env
from provisioning.services.dns import WAITING_FOR_NAMESERVERS
from provisioning.services.orders import order_create
from sandbox.control import Sandbox
from tenants.models import Tenant, TenantStatus
from tests.conftest import WorkerProcess, job_of, wait_for
from tests.provisioning.conftest import dns_records, pool_server
from tests.sandbox.helpers import ssh_connect, ssh_run

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED)
# Nameservers looked for every half second, given up after 15 s (72 h in production);
# one zone that allows no wildcard record.
NO_WILDCARD = "acme-nowild.example"
ZONE_SETTINGS: dict[str, Any] = {
    "DNS_NAMESERVER_CHECK_SECONDS": 0.5,
    "DNS_NAMESERVER_DEADLINE_SECONDS": 15,
    "DNS_NO_WILDCARD_ZONES": [NO_WILDCARD],
}


@pytest.fixture(scope="module")
def hub_settings(hub_settings: dict[str, str]) -> Iterator[dict[str, str]]:
    as_env = {key: ",".join(v) if isinstance(v, list) else str(v) for key, v in ZONE_SETTINGS.items()}
    with override_settings(**ZONE_SETTINGS):
        yield {**hub_settings, **as_env}


def place(domain: str, **kwargs: Any) -> Order:
    defaults: dict[str, Any] = {
        "plan": "build",
        "region": "eu",
        "tools": ["nextcloud", "ghost"],
        "customer_email": f"owner@{domain}",
    }
    return order_create(domain=domain, **{**defaults, **kwargs})


def wait_order(order: Order, statuses: tuple[str, ...], *, timeout: float = 120) -> Order:
    def reached() -> Order | None:
        order.refresh_from_db()
        return order if order.status in statuses else None

    try:
        return wait_for(reached, timeout=timeout, interval=0.25, message=f"order {order.pk} to reach {statuses}")
    except AssertionError:
        steps = [(s.name, s.status, s.attempts, s.error[:200]) for s in job_of(order).steps.order_by("position")]
        raise AssertionError(f"order {order.pk} is {order.status}; steps: {steps}") from None


def zone_named(sandbox: Sandbox, name: str) -> dict[str, Any] | None:
    return next((zone for zone in sandbox.zones() if zone["name"] == name), None)


def mails(mail_dir: Path, text: str) -> list[str]:
    return [body for body in (p.read_text() for p in sorted(mail_dir.iterdir())) if text in body]


def call_kind(path: str) -> str:
    """`/client/v4/zones/<id>/dns_records/<id>` -> `dns_records/<id>`."""
    parts = path.removeprefix("/client/v4/").split("/")
    kind = "/".join(parts[2:]) if len(parts) > 2 else parts[0]
    return "dns_records/<id>" if kind.startswith("dns_records/") and kind != "dns_records/batch" else kind


def staff_client() -> Client:
    user = get_user_model().objects.filter(username="zones-staff").first() or get_user_model().objects.create_superuser(
        "zones-staff", "staff@example.com", "pw-for-tests"
    )
    client = Client()
    client.force_login(user)
    return client


# --- DNS in the customer's zone ---------------------------------------------------------


def test_the_zone_of_a_domain_is_the_longest_suffix_in_the_account_looked_up_by_name(
    sandbox: Sandbox, hub_settings: dict[str, str]
) -> None:
    from provisioning.integrations import cloudflare

    sandbox.add_zone("acme-zones.example")
    sub = sandbox.add_zone("eu.acme-zones.example")  # a subdomain zone of its own (Enterprise)
    cloudflare.zone_cache_clear()
    sandbox.clear_requests()

    found = cloudflare.zone_for_domain("shop.eu.acme-zones.example")
    again = cloudflare.zone_for_domain("shop.eu.acme-zones.example")

    assert found == again and found is not None and (found.id, found.name) == (sub["id"], "eu.acme-zones.example")
    asked = [r["query"]["name"] for r in sandbox.requests("cloudflare") if r["path"] == "/client/v4/zones"]
    assert asked == ["shop.eu.acme-zones.example", "eu.acme-zones.example"], "longest first, then cached"
    assert cloudflare.zone_for_domain("acme-zones.example").name == "acme-zones.example"  # type: ignore[union-attr]
    assert cloudflare.zone_for_domain("nowhere.example") is None
    asked = [r["query"]["name"] for r in sandbox.requests("cloudflare") if r["path"] == "/client/v4/zones"]
    assert "example" not in asked, "never the bare TLD"
    assert cloudflare.zone_candidates("a.b.example") == ["a.b.example", "b.example"]


def test_a_domain_in_its_own_active_zone_gets_its_records_there_and_nowhere_else(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess
) -> None:
    (host,) = fresh_hosts(1)
    pool_server(host)
    zone = sandbox.add_zone("acme-bar.example")

    order = wait_order(place("acme-bar.example"), TERMINAL)

    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    records = {(r["type"], r["name"], r["content"]) for r in dns_records(sandbox, zone_id=zone["id"])}
    assert {("A", "acme-bar.example", host.addr), ("A", "*.acme-bar.example", host.addr)} <= records
    assert not [r for r in records if r[0] == "TXT"], "the DNS-01 values were cleaned up"
    assert not [r for r in dns_records(sandbox) if "acme-bar.example" in r["name"]], "nothing in the Hub's zone"
    # the order says where they are
    answer = staff_client().get(f"/api/v1/orders/{order.pk}/").json()
    assert (answer["dns_zone_name"], answer["dns_zone_id"]) == ("acme-bar.example", zone["id"])
    assert answer["waiting_reason"] == "" and order.dns_zone_created is False


def test_a_zone_that_allows_no_wildcard_gets_one_record_per_tool_subdomain(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess
) -> None:
    (host,) = fresh_hosts(1)
    pool_server(host)
    zone = sandbox.add_zone(NO_WILDCARD)

    order = wait_order(place(NO_WILDCARD, tools=["nextcloud", "ghost", "uptime_kuma"]), TERMINAL)

    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    records = sorted(r["name"] for r in dns_records(sandbox, zone_id=zone["id"]) if r["type"] == "A")
    assert records == sorted([NO_WILDCARD, f"files.{NO_WILDCARD}", f"blog.{NO_WILDCARD}", f"status.{NO_WILDCARD}"])
    assert sandbox.resolve(f"files.{NO_WILDCARD}", "A") == [host.addr]


def test_a_domain_in_no_zone_waits_for_the_customers_nameservers_then_goes_on(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess, mail_dir: Path
) -> None:
    (host,) = fresh_hosts(1)
    pool_server(host)
    assert zone_named(sandbox, "acme-new.example") is None

    # when an order comes for a domain the account has no zone for
    order = place("acme-new.example")

    # then the Hub adds the zone and the order waits in DNS_PENDING, saying why
    wait_for(
        lambda: Order.objects.filter(pk=order.pk, waiting_reason=WAITING_FOR_NAMESERVERS).exists(),
        timeout=90,
        interval=0.1,
        message="the order waiting for the nameservers",
    )
    zone = zone_named(sandbox, "acme-new.example")
    assert zone is not None and zone["status"] == "pending" and len(zone["name_servers"]) == 2
    order.refresh_from_db()
    assert order.status == OrderStatus.DNS_PENDING and order.dns_zone_created is True
    answer = staff_client().get(f"/api/v1/orders/{order.pk}/").json()
    assert answer["status"] == "DNS_PENDING" and answer["waiting_reason"] == WAITING_FOR_NAMESERVERS
    assert answer["dns_nameservers"] == zone["name_servers"]
    # the customer is told which two nameservers, once
    notice = wait_for(lambda: mails(mail_dir, "point acme-new.example to Cloudflare"), timeout=20)
    assert len(notice) == 1 and all(ns in notice[0] for ns in zone["name_servers"])
    # the operator sees it on the dashboard, linked to the order
    dashboard = staff_client().get("/admin/").content.decode()
    assert f'data-waiting-order="{order.pk}"' in dashboard
    assert f"/admin/provisioning/order/{order.pk}/change/" in dashboard

    # waiting on the customer is not the job's time: its deadline moves on
    def deadline() -> datetime:
        deadline_at = Job.objects.get(pk=job_of(order).pk).deadline_at
        assert deadline_at is not None
        return deadline_at

    first_deadline = deadline()
    wait_for(lambda: deadline() > first_deadline, timeout=10)

    # when the customer delegates the domain to them
    sandbox.delegate_zone("acme-new.example")

    # then the order goes on to FULFILLED, its records in its new zone
    order = wait_order(order, TERMINAL)
    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    assert order.waiting_reason == "" and order.waiting_since is None
    names = {(r["type"], r["name"], r["content"]) for r in dns_records(sandbox, zone_id=zone["id"])}
    assert {("A", "acme-new.example", host.addr), ("A", "*.acme-new.example", host.addr)} <= names
    assert len(mails(mail_dir, "point acme-new.example to Cloudflare")) == 1, "the notice went once"
    assert Tenant.objects.get(domain="acme-new.example").status == TenantStatus.ACTIVE


def test_an_order_whose_nameservers_never_come_rolls_back_and_leaves_nothing(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess, mail_dir: Path
) -> None:
    (host,) = fresh_hosts(1)
    server = pool_server(host)

    order = wait_order(place("acme-late.example"), TERMINAL, timeout=150)

    assert order.status == OrderStatus.ROLLED_BACK
    assert "was not delegated to Cloudflare's nameservers" in order.failure_reason
    assert order.waiting_reason == ""
    # the zone the Hub added for it is gone, and with it every record
    assert zone_named(sandbox, "acme-late.example") is None
    assert not [r for r in dns_records(sandbox) if "acme-late.example" in r["name"]]
    # the customer is told, staff are alerted, the untouched server is back in the pool
    assert wait_for(lambda: mails(mail_dir, "Your order for acme-late.example was cancelled"), timeout=20)
    alert = Alert.objects.get(subject_type="order", subject_id=str(order.pk), kind="dns_nameservers_not_delegated")
    assert "acme-late.example" in alert.message
    assert Server.objects.get(pk=server.pk).status == ServerStatus.AVAILABLE
    # told once, by the nameserver notice: the rollback's own notice is not sent on top
    assert Alert.objects.filter(subject_type="order", subject_id=str(order.pk), kind="order_rolled_back").exists()
    assert not CustomerNotice.objects.filter(subject_type="order", subject_id=str(order.pk)).exists()


# --- certificates by DNS-01, no credential on the server --------------------------------


def certbot_log(host: Any) -> list[dict[str, Any]]:
    import json

    path = host.root / "var" / "log" / "sandbox" / "certbot.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def files_under(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def test_the_certificate_comes_by_dns_01_through_the_hub_and_no_credential_reaches_the_server(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess, live_server: Any
) -> None:
    (host,) = fresh_hosts(1)
    pool_server(host)
    zone = sandbox.add_zone("acme-tls.example")
    cloudflare.zone_cache_clear()
    sandbox.clear_requests()

    order = wait_order(place("acme-tls.example"), TERMINAL)

    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    # while the auth hook had returned, the CA saw both values in the customer's zone
    looked = [e for e in certbot_log(host) if e["event"] == "validation"]
    assert [e["name"] for e in looked] == ["_acme-challenge.acme-tls.example"] * 2
    assert all(e["expected"] in e["seen"] for e in looked)
    calls = sandbox.requests("cloudflare")
    writes = [r for r in calls if r["method"] in ("POST", "PUT", "PATCH", "DELETE")]
    in_zone = [r for r in writes if r["path"].startswith(f"/client/v4/zones/{zone['id']}/")]
    assert len(in_zone) == len(writes) == 5, "2 A in one batch, 2 TXT written, 2 TXT removed, all in the zone"
    # Every call counts against the account's 1,200 per 5 minutes: the zone is looked up
    # once for the worker and the web process together, the A records read once before
    # the batch, nothing read back (the writes' answers are the records), a TXT value
    # removed by its id.
    kinds = Counter((r["method"], call_kind(r["path"])) for r in calls)
    assert kinds == {
        ("GET", "zones"): 1,
        ("GET", "dns_records"): 1,  # the A records, before the batch
        ("POST", "dns_records/batch"): 1,
        ("POST", "dns_records"): 2,
        ("DELETE", "dns_records/<id>"): 2,
    }, kinds
    # after the cleanup they are gone
    assert not [r for r in dns_records(sandbox, zone_id=zone["id"]) if r["type"] == "TXT"]
    assert sandbox.resolve("_acme-challenge.acme-tls.example", "TXT") == []
    # the certificate is on the host
    live = host.root / "etc" / "letsencrypt" / "live" / "acme-tls.example"
    assert (live / "fullchain.pem").exists() and (live / "privkey.pem").exists()
    # no Cloudflare credential in the scripts' environment, the hooks' or anywhere on the host
    token = sandbox.env["CLOUDFLARE_API_TOKEN"]
    assert not [key for key, value in script_env(order).items() if token in value or "CLOUDFLARE" in key]
    hook_envs = [e["env"] for e in certbot_log(host) if e["event"] == "hook"]
    assert len(hook_envs) == 4 and all(e["CERTBOT_DOMAIN"] == "acme-tls.example" for e in hook_envs)
    assert not [key for env in hook_envs for key, value in env.items() if token in value or "CLOUDFLARE" in key]
    leaking = [path for path in files_under(host.root) if token.encode() in path.read_bytes()]
    assert leaking == [] and len(list(files_under(host.root))) > 10


def test_a_hook_may_ask_only_for_its_own_tenants_names(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess, live_server: Any
) -> None:
    (host,) = fresh_hosts(1)
    pool_server(host)
    zone = sandbox.add_zone("acme-own.example")
    other = sandbox.add_zone("acme-other.example")
    Tenant.objects.create(domain="acme-other.example", status=TenantStatus.ACTIVE)
    order = wait_order(place("acme-own.example"), TERMINAL)
    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    key = (host.root / "var" / "lib" / "hub-agent" / "api_key").read_text().strip()
    url = f"{live_server.url}/api/v1/agent/acme-challenge"
    headers = {"Authorization": f"Bearer {key}"}

    def ask(method: str, domain: str, validation: str = "v" * 43) -> requests.Response:
        body = {"domain": domain, "validation": validation}
        return requests.request(method, url, json=body, headers=headers, timeout=30)

    # another tenant's name, or a name outside any tenant's, is refused
    for domain in ("acme-other.example", "*.acme-other.example", "acme-own.example.acme-other.example"):
        refused = ask("POST", domain)
        assert refused.status_code == 403 and refused.json()["error"] == "permission_denied", refused.text
    assert dns_records(sandbox, zone_id=other["id"]) == []
    # bad input gets a 4xx that says what is wrong
    bad = ask("POST", "acme-own.example", validation="not base64url!")
    assert bad.status_code == 400 and "validation" in bad.json()["detail"]
    # its own names are answered once visible, and removal takes only that value
    assert ask("POST", "acme-own.example", "a" * 43).status_code == 201
    put = ask("POST", "*.acme-own.example", "b" * 43)
    assert put.status_code == 201 and put.json() == {
        "name": "_acme-challenge.acme-own.example",
        "value": "b" * 43,
        "zone": "acme-own.example",
    }
    removed = ask("DELETE", "acme-own.example", "a" * 43)
    assert removed.status_code == 200 and removed.json()["removed"] == 1
    txt = [r["content"] for r in dns_records(sandbox, zone_id=zone["id"]) if r["type"] == "TXT"]
    assert txt == ["b" * 43]
    assert ask("DELETE", "acme-own.example", "b" * 43).json()["removed"] == 1


def test_certbot_renew_renews_a_certificate_near_expiry_through_the_hub(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess, live_server: Any
) -> None:
    (host,) = fresh_hosts(1)
    pool_server(host)
    sandbox.add_zone("acme-renew.example")
    order = wait_order(place("acme-renew.example"), TERMINAL)
    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    cert = host.root / "etc" / "letsencrypt" / "live" / "acme-renew.example" / "cert.pem"
    ssh = ssh_connect(sandbox, host.addr, host.port)
    try:
        # given the certificate has 10 days left (renewed once with a short life)
        code, _, err = ssh_run(ssh, "SANDBOX_CERT_DAYS=10 certbot renew --force-renewal -q")
        assert code == 0, err
        assert not expires_after(cert, days=11) and expires_after(cert, days=9)
        runs = len([e for e in certbot_log(host) if e["event"] == "hook"])
        reloads = len(host.calls("systemctl"))

        # when certbot.timer runs
        code, out, err = ssh_run(ssh, "certbot renew")
    finally:
        ssh.close()

    # then it renewed through the same hooks (the Hub wrote and removed the values)
    assert code == 0, err
    assert "Congratulations, all renewals succeeded" in out
    hooks = [e for e in certbot_log(host) if e["event"] == "hook"][runs:]
    assert [e["hook"] for e in hooks] == ["auth", "auth", "cleanup", "cleanup", "deploy"]
    assert expires_after(cert, days=89)
    assert any(c["args"] == ["reload", "nginx"] for c in host.calls("systemctl")[reloads:]), "nginx reloaded"
    assert sandbox.resolve("_acme-challenge.acme-renew.example", "TXT") == []


def expires_after(cert: Path, *, days: int) -> bool:
    import subprocess

    checked = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-checkend", str(days * 86400)], capture_output=True, timeout=10
    )
    return checked.returncode == 0
