"""The fleet freeze (hub.freeze): one switch, in the API and the admin, audited, shown
on the dashboard; while it is on no rollout dispatches (undelivered updates are taken
back, nothing advances, nothing starts) and the unfreeze resumes where it stopped."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.authtoken.models import Token

from hub.freeze import fleet_freeze_set, fleet_frozen
from hub.models import AuditEvent, FleetFreeze
from rollouts.models import RolloutStatus, TenantUpdate, UpdateStatus
from rollouts.services import rollout_pause, rollout_start
from rollouts.tasks import evaluate as evaluate_task
from tests.conftest import wait_for

URL = "/api/v1/fleet/freeze/"


@pytest.fixture
def staff_user() -> Any:
    return get_user_model().objects.create_superuser("freeze-staff", password="x", email="s@example.com")


@pytest.fixture
def staff_client(staff_user: Any) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff_user).key}")


def sent_update_count(rollout_id: int) -> int:
    return TenantUpdate.objects.filter(rollout_id=rollout_id, status=UpdateStatus.SENT).count()


@pytest.mark.django_db
def test_the_api_freezes_and_unfreezes_with_an_audit_row_each(staff_client: Client) -> None:
    frozen = staff_client.post(URL, {"reason": "incident 42"}, content_type="application/json")
    state = staff_client.get(URL)
    unfrozen = staff_client.delete(URL)

    assert frozen.status_code == 200 and frozen.json()["frozen"] is True
    assert state.json() == {**frozen.json()}
    assert state.json()["reason"] == "incident 42" and state.json()["changed_by"] == "freeze-staff"
    assert unfrozen.status_code == 200 and unfrozen.json()["frozen"] is False
    assert not fleet_frozen()
    actions = list(AuditEvent.objects.filter(object_type="fleet").order_by("id").values_list("action", "actor"))
    assert actions == [("fleet.freeze", "freeze-staff"), ("fleet.unfreeze", "freeze-staff")]


@pytest.mark.django_db
def test_freezing_needs_a_reason_and_a_staff_credential(staff_client: Client) -> None:
    customer = get_user_model().objects.create_user("not-staff", password="x")
    not_staff = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=customer).key}")

    no_reason = staff_client.post(URL, {}, content_type="application/json")
    refused = not_staff.post(URL, {"reason": "x"}, content_type="application/json")
    anonymous = Client().delete(URL)

    assert no_reason.status_code == 400 and no_reason.json()["error"] == "invalid"
    assert refused.status_code == 403 and anonymous.status_code == 401
    assert not fleet_frozen() and not AuditEvent.objects.filter(object_type="fleet").exists()


@pytest.mark.django_db
def test_the_admin_switch_flips_it_with_an_audit_row_and_the_dashboard_shows_it(staff_user: Any) -> None:
    client = Client()
    client.force_login(staff_user)

    off = client.get("/admin/").content.decode()
    posted = client.post("/admin/hub/fleetfreeze/add/", {"frozen": "on", "reason": "bad release out there"})
    dashboard = client.get("/admin/").content.decode()

    assert posted.status_code == 302
    assert fleet_frozen()
    assert AuditEvent.objects.filter(
        action="fleet.freeze", actor="freeze-staff", reason="bad release out there"
    ).exists()
    assert AuditEvent.objects.filter(object_type="fleet").count() == 1  # no second row from the admin's log
    section = re.search(r'<section id="dash-freeze".*?</section>', dashboard, re.S)
    assert section and 'data-frozen="true"' in section.group(0) and "bad release out there" in section.group(0)

    assert 'data-frozen="false"' in off and "/admin/hub/fleetfreeze/" in off
    client.post(f"/admin/hub/fleetfreeze/{FleetFreeze.objects.get().pk}/change/", {"reason": ""})

    assert not fleet_frozen()
    assert 'data-frozen="false"' in client.get("/admin/").content.decode()
    assert AuditEvent.objects.filter(action="fleet.unfreeze", actor="freeze-staff").count() == 1


@pytest.mark.django_db
def test_while_frozen_a_rollout_neither_starts_nor_resumes_and_says_why(make_fleet, make_rollout, on_commit) -> None:
    make_fleet(6, internal=1)
    waiting = make_rollout()
    fleet_freeze_set(frozen=True, actor="ops", reason="incident")

    user = get_user_model().objects.create_user("ops", password="x", is_staff=True)
    api = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    response = api.post(f"/api/v1/rollouts/{waiting.pk}/start/", {}, content_type="application/json")

    assert response.status_code == 409 and response.json()["error"] == "fleet_frozen"
    assert "incident" in response.json()["detail"]
    waiting.refresh_from_db()
    assert waiting.status != RolloutStatus.RUNNING and not TenantUpdate.objects.filter(rollout=waiting).exists()

    fleet_freeze_set(frozen=False, actor="ops")
    on_commit(rollout_start, rollout_id=waiting.pk, actor="test")
    on_commit(rollout_pause, rollout_id=waiting.pk, actor="test")
    fleet_freeze_set(frozen=True, actor="ops", reason="incident")
    resumed = api.post(f"/api/v1/rollouts/{waiting.pk}/resume/", {}, content_type="application/json")

    assert resumed.status_code == 409 and resumed.json()["error"] == "fleet_frozen"


@pytest.mark.django_db
def test_a_frozen_rollout_does_not_advance_when_its_stage_is_done(make_fleet, make_rollout, on_commit, evaluate):
    # given a running rollout whose internal stage is done
    fleet = make_fleet(10, internal=2)
    rollout = make_rollout()
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    assert fleet.round() == 2

    # when the fleet is frozen and the gate runs
    on_commit(fleet_freeze_set, frozen=True, actor="ops", reason="incident")
    evaluate()
    evaluate()

    # then the next stage is not dispatched
    rollout.refresh_from_db()
    assert rollout.current_position == 0
    assert TenantUpdate.objects.filter(rollout=rollout).count() == 2
    assert fleet.round() == 0

    # and after the unfreeze it is
    on_commit(fleet_freeze_set, frozen=False, actor="ops")
    evaluate()
    rollout.refresh_from_db()
    assert rollout.current_position == 1
    assert fleet.round() == 1


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_freeze_stops_a_running_rollout_s_dispatch_and_unfreeze_resumes_it(
    celery_worker, broker: redis.Redis, make_fleet, make_rollout
) -> None:
    def evaluate_on_the_worker() -> None:
        evaluate_task.delay()
        wait_for(
            lambda: broker.llen("rollouts") == 0 and broker.hlen("unacked") == 0,
            timeout=20,
            message="the worker to run rollouts.evaluate",
        )

    # given a started rollout whose internal updates no agent has picked up yet
    fleet = make_fleet(12, internal=2)
    rollout = make_rollout()
    rollout_start(rollout_id=rollout.pk, actor="test")
    assert sent_update_count(rollout.pk) == 2

    # when the fleet is frozen
    fleet_freeze_set(frozen=True, actor="ops", reason="incident")

    # then the undelivered updates are taken back, and no round of agents and the
    # worker's gate sends or advances anything
    assert sent_update_count(rollout.pk) == 0
    for _ in range(2):
        assert fleet.round() == 0
        evaluate_on_the_worker()
    rollout.refresh_from_db()
    assert (rollout.status, rollout.current_position) == (RolloutStatus.RUNNING, 0)
    assert all(agent.executed == [] for agent in fleet.agents)

    # when it is unfrozen, the rollout goes on to its end
    fleet_freeze_set(frozen=False, actor="ops")

    def completed() -> bool:
        fleet.round()
        evaluate_on_the_worker()
        rollout.refresh_from_db()
        return rollout.status == RolloutStatus.COMPLETED

    wait_for(completed, timeout=40, interval=0.2, message="the rollout to complete after the unfreeze")
    assert TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.SUCCEEDED).count() == 12
    assert FleetFreeze.objects.get().frozen is False
    # What the last rounds queued runs out before the tables are emptied under the worker.
    wait_for(
        lambda: broker.llen("rollouts") == 0 and broker.hlen("unacked") == 0,
        timeout=20,
        message="the worker to finish what the rollout queued",
    )
