"""Halts that freeze, the retry of failed updates, stage deadlines, and the admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from rollouts.models import GateOutcome, OnHalt, Release, RolloutStatus, StageStatus, TenantUpdate, UpdateStatus
from rollouts.services import rollout_evaluate, rollout_retry, rollout_start, updates_sync_outcomes
from tenants.models import Tenant
from tests.rollouts.conftest import COMPONENT, NEW

pytestmark = pytest.mark.django_db


def test_a_frozen_halt_keeps_tenants_and_retry_resends_the_failed_updates(
    make_fleet, make_rollout, on_commit, evaluate
):
    # given internal tenants whose update fails (a bad dependency on the servers)
    fleet = make_fleet(30, internal=4)
    internal = [a.tenant_id for a in fleet.agents[:4]]
    for agent in fleet.agents[:3]:
        agent.fail_updates_to.add(NEW)
    rollout = make_rollout(on_halt=OnHalt.FREEZE)
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")

    # when they answer and the stage is judged
    fleet.round()
    evaluate()

    # then the rollout halts and stays put: no rollback commands, tenants as they are
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.HALTED
    failed = TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.FAILED)
    assert set(failed.values_list("tenant_id", flat=True)) == set(internal[:3])
    first_failed = failed.first()
    assert first_failed is not None
    assert "health check" in first_failed.error
    assert not TenantUpdate.objects.filter(rollout=rollout, rollback_command__isnull=False).exists()

    # when the cause is fixed and staff retry, the failed updates go out again
    for agent in fleet.agents[:3]:
        agent.fail_updates_to.clear()
    on_commit(rollout_retry, rollout_id=rollout.pk, actor="staff")
    for _ in range(6):
        fleet.round()
        evaluate()
        rollout.refresh_from_db()
        if rollout.status == RolloutStatus.COMPLETED:
            break

    # then the rollout completes with every tenant on the new version
    assert rollout.status == RolloutStatus.COMPLETED, rollout.status_reason
    assert {u.attempts for u in TenantUpdate.objects.filter(tenant_id__in=internal[:3])} == {2}
    assert {v[COMPONENT] for v in Tenant.objects.values_list("versions", flat=True)} == {NEW}


def test_a_stage_that_makes_no_progress_past_its_deadline_halts(make_fleet, make_rollout, on_commit):
    # given a first stage whose agents never answer
    fleet = make_fleet(10, internal=2)
    for agent in fleet.agents[:2]:
        agent.silent = True
    rollout = make_rollout(on_halt=OnHalt.FREEZE, stage_deadline_seconds=600)
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    fleet.round()

    # when it is judged past its deadline
    result = on_commit(rollout_evaluate, rollout_id=rollout.pk, now=timezone.now() + timedelta(seconds=601))

    # then it halts
    assert result.outcome == GateOutcome.FAIL and "deadline" in result.reason
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.HALTED


def test_waiting_for_a_promote_past_the_deadline_halts(make_fleet, make_rollout, on_commit):
    fleet = make_fleet(10, internal=2)
    rollout = make_rollout(auto_advance=False, on_halt=OnHalt.FREEZE, stage_deadline_seconds=600)
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    fleet.round()
    updates_sync_outcomes()
    assert on_commit(rollout_evaluate, rollout_id=rollout.pk).outcome == GateOutcome.PASS
    assert rollout.stages.get(position=0).status == StageStatus.AWAITING_PROMOTE
    fleet.round()

    later = timezone.now() + timedelta(seconds=601)
    fleet_fresh = Tenant.objects.update(last_heartbeat_at=later)
    result = on_commit(rollout_evaluate, rollout_id=rollout.pk, now=later)

    assert fleet_fresh == 10
    assert result.outcome == GateOutcome.FAIL and "promote" in result.reason
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.HALTED


def test_the_admin_shows_progress_counts_and_failing_tenants(make_fleet, make_rollout, on_commit, evaluate):
    fleet = make_fleet(20, internal=4)
    for agent in fleet.agents[:3]:
        agent.fail_updates_to.add(NEW)
    rollout = make_rollout(on_halt=OnHalt.FREEZE)
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    fleet.round()
    evaluate()
    admin = get_user_model().objects.create_superuser("root", "root@example.test", "x")
    client = Client()
    client.force_login(admin)

    page = client.get(f"/admin/rollouts/rollout/{rollout.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "failed 3" in html and "succeeded 1" in html
    assert "health check of openclaw 1.1.0 failed" in html
    assert client.get("/admin/rollouts/rollout/").status_code == 200
    assert client.get("/admin/rollouts/tenantupdate/").status_code == 200
    assert client.get("/admin/rollouts/release/").status_code == 200

    response = client.post(
        "/admin/rollouts/rollout/", {"action": "retry", "_selected_action": [rollout.pk]}, follow=True
    )
    assert response.status_code == 200
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.RUNNING


def test_staff_add_a_release_in_the_admin_only_pinned_by_digest():
    admin = get_user_model().objects.create_superuser("root", "root@example.test", "x")
    client = Client()
    client.force_login(admin)
    form = {"component": "policy", "version": "7", "image": "registry.test/policy:7", "notes": ""}

    refused = client.post("/admin/rollouts/release/add/", form)
    pinned = client.post("/admin/rollouts/release/add/", {**form, "image": f"registry.test/policy:7@sha256:{'e' * 64}"})

    assert refused.status_code == 200 and "pinned by digest" in refused.content.decode()
    assert pinned.status_code == 302
    assert Release.objects.get(component="policy").created_by == "staff:root"
