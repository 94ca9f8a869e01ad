"""The Cloudflare DNS emulator through plain `requests`, as the Hub's client talks to it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from sandbox.control import Sandbox


class Cloudflare:
    def __init__(self, sandbox: Sandbox) -> None:
        self.base = sandbox.env["CLOUDFLARE_API_BASE"]
        self.zone_id = sandbox.env["CLOUDFLARE_ZONE_ID"]
        self.zone_name = sandbox.env["CLOUDFLARE_ZONE_NAME"]
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {sandbox.env['CLOUDFLARE_API_TOKEN']}"

    def records_url(self, record_id: str = "") -> str:
        return f"{self.base}/zones/{self.zone_id}/dns_records" + (f"/{record_id}" if record_id else "")

    def create(self, **record: Any) -> requests.Response:
        return self.session.post(self.records_url(), json=record, timeout=5)

    def list(self, **params: Any) -> requests.Response:
        return self.session.get(self.records_url(), params=params, timeout=5)

    def batch(self, **operations: Any) -> requests.Response:
        return self.session.post(self.records_url("batch"), json=operations, timeout=5)


@pytest.fixture
def cloudflare(sandbox: Sandbox) -> Cloudflare:
    return Cloudflare(sandbox)


@pytest.fixture
def domain(cloudflare: Cloudflare) -> str:
    return f"t{uuid.uuid4().hex[:8]}.{cloudflare.zone_name}"


def test_create_list_filter_and_delete_records(cloudflare: Cloudflare, domain: str) -> None:
    # when the Hub points a tenant's root and wildcard at its server
    root = cloudflare.create(type="A", name=domain, content="127.0.0.5", ttl=300, proxied=False)
    wildcard = cloudflare.create(type="A", name=f"*.{domain}", content="127.0.0.5", ttl=1)
    assert root.status_code == 200
    body = root.json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    record = body["result"]
    assert (record["type"], record["name"], record["content"], record["ttl"]) == ("A", domain, "127.0.0.5", 300)
    assert record["zone_id"] == cloudflare.zone_id and len(record["id"]) == 32

    # then the read calls show them, filtered the way Cloudflare filters
    listed = cloudflare.list(name=domain, type="A").json()
    assert [r["id"] for r in listed["result"]] == [record["id"]]
    assert listed["result_info"] == {"page": 1, "per_page": 100, "count": 1, "total_count": 1, "total_pages": 1}
    by_suffix = cloudflare.list(**{"name.endswith": domain, "content": "127.0.0.5"}).json()
    assert sorted(r["name"] for r in by_suffix["result"]) == sorted([domain, f"*.{domain}"])
    paged = cloudflare.list(**{"name.endswith": domain, "per_page": 1, "page": 2}).json()
    assert paged["result_info"]["total_pages"] == 2 and paged["result_info"]["count"] == 1

    # and an update and a delete take effect
    wildcard_id = wildcard.json()["result"]["id"]
    patched = cloudflare.session.patch(cloudflare.records_url(wildcard_id), json={"content": "127.0.0.6"}, timeout=5)
    assert patched.json()["result"]["content"] == "127.0.0.6"
    deleted = cloudflare.session.delete(cloudflare.records_url(record["id"]), timeout=5)
    assert deleted.json() == {"success": True, "errors": [], "messages": [], "result": {"id": record["id"]}}
    gone = cloudflare.session.get(cloudflare.records_url(record["id"]), timeout=5)
    assert gone.status_code == 404
    assert gone.json()["errors"] == [{"code": 81044, "message": "Record does not exist."}]


def test_a_batch_runs_deletes_puts_then_posts_in_one_transaction(cloudflare: Cloudflare, domain: str) -> None:
    stale = cloudflare.create(type="A", name=domain, content="127.0.0.7", ttl=300).json()["result"]
    extra = cloudflare.create(type="A", name=domain, content="127.0.0.8", ttl=300).json()["result"]

    done = cloudflare.batch(
        deletes=[{"id": extra["id"]}],
        puts=[{"id": stale["id"], "type": "A", "name": domain, "content": "127.0.0.5", "ttl": 300}],
        # the post of the address the put is about to give the root is refused only if
        # the put had not run first: the order is deletes, patches, puts, posts
        posts=[{"type": "A", "name": f"*.{domain}", "content": "127.0.0.5", "ttl": 300}],
    )

    assert done.status_code == 200, done.text
    result = done.json()["result"]
    assert [r["id"] for r in result["deletes"]] == [extra["id"]]
    assert [(r["id"], r["content"]) for r in result["puts"]] == [(stale["id"], "127.0.0.5")]
    assert [r["name"] for r in result["posts"]] == [f"*.{domain}"] and result["patches"] == []
    listed = cloudflare.list(**{"name.endswith": domain, "type": "A"}).json()["result"]
    assert sorted((r["name"], r["content"]) for r in listed) == [(f"*.{domain}", "127.0.0.5"), (domain, "127.0.0.5")]


def test_a_batch_with_one_refused_operation_changes_nothing(cloudflare: Cloudflare, domain: str) -> None:
    kept = cloudflare.create(type="A", name=domain, content="127.0.0.5", ttl=300).json()["result"]

    refused = cloudflare.batch(
        deletes=[{"id": kept["id"]}],
        posts=[
            {"type": "A", "name": f"*.{domain}", "content": "127.0.0.6", "ttl": 300},
            {"type": "A", "name": f"www.{domain}", "content": "not-an-address", "ttl": 300},
        ],
    )

    assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == 9005
    listed = cloudflare.list(**{"name.endswith": domain}).json()["result"]
    assert [r["id"] for r in listed] == [kept["id"]], "neither the delete nor the first post happened"
    gone = cloudflare.batch(deletes=[{"id": "0" * 32}])
    assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == 81044
    too_many = cloudflare.batch(posts=[{"type": "TXT", "name": domain, "content": f"v{i}"} for i in range(201)])
    assert too_many.status_code == 400 and too_many.json()["success"] is False
    assert cloudflare.batch(posts={"type": "A"}).status_code == 400
    assert len(cloudflare.list(**{"name.endswith": domain}).json()["result"]) == 1


def test_identical_record_is_refused_with_cloudflares_code(cloudflare: Cloudflare, domain: str) -> None:
    assert cloudflare.create(type="A", name=domain, content="127.0.0.7").status_code == 200
    duplicate = cloudflare.create(type="A", name=domain, content="127.0.0.7")
    assert duplicate.status_code == 400
    assert duplicate.json() == {
        "success": False,
        "errors": [{"code": 81058, "message": "An identical record already exists."}],
        "messages": [],
        "result": None,
    }
    # A second A record with other content is a legitimate round-robin entry.
    assert cloudflare.create(type="A", name=domain, content="127.0.0.8").status_code == 200


def test_bad_input_and_bad_credentials(cloudflare: Cloudflare, sandbox: Sandbox, domain: str) -> None:
    invalid = cloudflare.create(type="A", name=domain, content="not-an-ip")
    assert invalid.status_code == 400
    assert invalid.json()["errors"][0]["code"] == 9005

    anonymous = requests.get(cloudflare.records_url(), timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json()["success"] is False
    assert anonymous.json()["errors"][0]["code"] == 10000

    unknown_zone = cloudflare.session.get(f"{cloudflare.base}/zones/{'0' * 32}/dns_records", timeout=5)
    assert unknown_zone.status_code == 404


def test_faults_and_rate_limit(cloudflare: Cloudflare, sandbox: Sandbox, domain: str) -> None:
    sandbox.cloudflare_fault(status=429, count=1, method="POST", retry_after=3)
    limited = cloudflare.create(type="A", name=domain, content="127.0.0.9")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"
    assert limited.json()["success"] is False
    assert cloudflare.create(type="A", name=domain, content="127.0.0.9").status_code == 200

    sandbox.cloudflare_fault(status=500, count=1, method="GET")
    failed = cloudflare.list(name=domain)
    assert failed.status_code == 500 and failed.json()["success"] is False
    assert cloudflare.list(name=domain).json()["result_info"]["count"] == 1

    sandbox.set_rate_limit("cloudflare", capacity=1, refill_per_second=0.2)
    try:
        statuses = [cloudflare.list().status_code for _ in range(2)]
        assert statuses == [200, 429]
    finally:
        sandbox.set_rate_limit("cloudflare", capacity=1200, refill_per_second=4.0)
    assert "Ratelimit" in cloudflare.list().headers


# --- zones ------------------------------------------------------------------------------


def test_a_zone_added_through_the_api_starts_pending_with_two_nameservers(
    cloudflare: Cloudflare, sandbox: Sandbox
) -> None:
    name = f"z{uuid.uuid4().hex[:8]}.example"

    created = cloudflare.session.post(
        f"{cloudflare.base}/zones",
        json={"name": name, "account": {"id": sandbox.env["CLOUDFLARE_ACCOUNT_ID"]}, "type": "full"},
        timeout=5,
    )

    assert created.status_code == 200, created.text
    zone = created.json()["result"]
    assert (zone["name"], zone["status"], zone["type"], zone["activated_on"]) == (name, "pending", "full", None)
    assert len(zone["name_servers"]) == 2 and all(ns.endswith(".ns.cloudflare.com") for ns in zone["name_servers"])
    assert zone["account"]["id"] == sandbox.env["CLOUDFLARE_ACCOUNT_ID"]
    # found by its exact name, and by status
    by_name = cloudflare.session.get(f"{cloudflare.base}/zones", params={"name": name}, timeout=5).json()
    assert [z["id"] for z in by_name["result"]] == [zone["id"]]
    assert (
        cloudflare.session.get(f"{cloudflare.base}/zones", params={"name": "x" + name}, timeout=5).json()["result"]
        == []
    )
    pending = cloudflare.session.get(f"{cloudflare.base}/zones", params={"status": "pending"}, timeout=5).json()
    assert zone["id"] in [z["id"] for z in pending["result"]]

    # when the customer delegates the nameservers (the sandbox plays them)
    delegated = sandbox.delegate_zone(name)

    # then the zone is active, as the API shows it
    assert delegated["status"] == "active"
    read = cloudflare.session.get(f"{cloudflare.base}/zones/{zone['id']}", timeout=5).json()["result"]
    assert read["status"] == "active" and read["activated_on"] is not None
    assert read["name_servers"] == zone["name_servers"]


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("hub-sandbox.test", 400, 1061),  # the zone exists
        ("shop.hub-sandbox.test", 400, 1116),  # a subdomain of a zone in the account
        ("example", 400, 1099),  # a bare TLD
        ("deep.sub.example", 400, 1099),  # not a registered domain
        ("bad_label.example", 400, 1099),
    ],
)
def test_a_zone_cloudflare_would_refuse_is_refused_with_its_code(
    cloudflare: Cloudflare, sandbox: Sandbox, name: str, status: int, code: int
) -> None:
    response = cloudflare.session.post(
        f"{cloudflare.base}/zones",
        json={"name": name, "account": {"id": sandbox.env["CLOUDFLARE_ACCOUNT_ID"]}},
        timeout=5,
    )

    assert response.status_code == status
    assert response.json()["success"] is False and response.json()["errors"][0]["code"] == code


def test_a_zone_needs_the_right_account(cloudflare: Cloudflare) -> None:
    name = f"z{uuid.uuid4().hex[:8]}.example"
    missing = cloudflare.session.post(f"{cloudflare.base}/zones", json={"name": name}, timeout=5)
    other = cloudflare.session.post(
        f"{cloudflare.base}/zones", json={"name": name, "account": {"id": "f" * 32}}, timeout=5
    )

    assert missing.status_code == 400 and other.status_code == 403
    assert other.json()["errors"][0]["code"] == 9109
    assert cloudflare.session.get(f"{cloudflare.base}/zones", params={"name": name}, timeout=5).json()["result"] == []


def test_records_are_refused_in_a_zone_that_no_longer_exists(cloudflare: Cloudflare, sandbox: Sandbox) -> None:
    zone = sandbox.add_zone(f"z{uuid.uuid4().hex[:8]}.example")
    records = f"{cloudflare.base}/zones/{zone['id']}/dns_records"
    assert cloudflare.session.post(
        records, json={"type": "A", "name": zone["name"], "content": "127.0.0.5"}, timeout=5
    ).ok

    deleted = cloudflare.session.delete(f"{cloudflare.base}/zones/{zone['id']}", timeout=5)

    assert deleted.json()["result"] == {"id": zone["id"]}
    refused = cloudflare.session.post(
        records, json={"type": "A", "name": zone["name"], "content": "127.0.0.5"}, timeout=5
    )
    assert refused.status_code == 404 and refused.json()["errors"][0]["code"] == 7003
    assert cloudflare.session.get(f"{cloudflare.base}/zones/{zone['id']}", timeout=5).status_code == 404


def test_the_public_resolver_answers_only_for_delegated_zones(cloudflare: Cloudflare, sandbox: Sandbox) -> None:
    zone = sandbox.add_zone(f"z{uuid.uuid4().hex[:8]}.example", status="pending")
    name = zone["name"]
    records = f"{cloudflare.base}/zones/{zone['id']}/dns_records"
    for record in (
        {"type": "A", "name": name, "content": "127.0.0.5"},
        {"type": "A", "name": f"*.{name}", "content": "127.0.0.5"},
        {"type": "TXT", "name": f"_acme-challenge.{name}", "content": "one"},
        {"type": "TXT", "name": f"_acme-challenge.{name}", "content": "two"},
    ):
        assert cloudflare.session.post(records, json=record, timeout=5).ok

    # a pending zone is not served to the Internet yet
    assert sandbox.resolve(name, "A") == []

    sandbox.delegate_zone(zone["id"])

    assert sandbox.resolve(name, "A") == ["127.0.0.5"]
    assert sandbox.resolve(f"files.{name}", "A") == ["127.0.0.5"], "the wildcard answers for a tool's subdomain"
    assert sorted(sandbox.resolve(f"_acme-challenge.{name}", "TXT")) == ["one", "two"]
    assert sorted(sandbox.resolve(name, "NS")) == sorted(zone["name_servers"])
    # the resolver needs no token
    raw = requests.get(
        f"{sandbox.cloudflare_url}/__sandbox/resolve",
        params={"name": f"_acme-challenge.{name}", "type": "TXT"},
        timeout=5,
    ).json()
    assert raw["Status"] == 0 and {a["data"] for a in raw["Answer"]} == {'"one"', '"two"'}
