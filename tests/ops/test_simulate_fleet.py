"""simulate_fleet makes a fleet in bulk, fast, with keys that work."""

from __future__ import annotations

import time

import pytest
from django.core.management import call_command

from tenants.models import AgentCredential, Tenant, TenantStatus
from tests.tenants.conftest import HEARTBEAT

pytestmark = pytest.mark.django_db


def test_simulate_fleet_makes_1000_active_tenants_with_working_keys_quickly(api, tmp_path):
    keys_file = tmp_path / "keys.txt"

    started = time.monotonic()
    call_command("simulate_fleet", tenants=1000, keys_file=str(keys_file))
    elapsed = time.monotonic() - started

    lines = [line.split() for line in keys_file.read_text().splitlines()]
    assert len(lines) == 1000
    assert elapsed < 10, f"1,000 tenants took {elapsed:.1f}s"
    assert keys_file.stat().st_mode & 0o777 == 0o600
    assert Tenant.objects.filter(status=TenantStatus.ACTIVE, server__isnull=False).count() == 1000
    assert AgentCredential.objects.count() == 1000
    for _, api_key in (lines[0], lines[-1]):
        response = api.post("/api/v1/agent/heartbeat", HEARTBEAT, format="json", HTTP_AUTHORIZATION=f"Bearer {api_key}")
        assert response.status_code == 200
    assert {int(tenant_id) for tenant_id, _ in lines} == set(Tenant.objects.values_list("pk", flat=True))


def test_simulate_fleet_twice_gives_distinct_domains(capsys):
    call_command("simulate_fleet", tenants=3)
    call_command("simulate_fleet", tenants=3, internal=1)

    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 6
    assert Tenant.objects.count() == 6
    assert Tenant.objects.filter(is_internal=True).count() == 1
