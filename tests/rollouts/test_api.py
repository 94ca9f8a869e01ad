"""The staff API: CI starts a rollout with one POST; strict input; illegal moves are
409 with a clear error; a second active rollout of a component is refused."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from rollouts.models import Release, Rollout, RolloutStatus
from tenants.models import Command
from tests.rollouts.conftest import NEW_IMAGE

pytestmark = pytest.mark.django_db

CI_BODY = {
    "component": "openclaw",
    "version": "1.1.0",
    "image": NEW_IMAGE,
    "notes": "upstream bump",
    "stages": [
        {"internal": True, "soak_seconds": 0},
        {"percent": 5, "soak_seconds": 60},
        {"percent": 25, "soak_seconds": 30},
        {"percent": 100, "soak_seconds": 0},
    ],
    "on_halt": "FREEZE",
    "start": True,
}


def test_ci_starts_a_rollout_with_one_post(make_fleet, staff_api, on_commit):
    make_fleet(20, internal=2)

    response = on_commit(lambda: staff_api.post("/api/v1/rollouts/", CI_BODY, format="json"))

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "RUNNING"
    assert body["release"]["image"] == NEW_IMAGE
    assert [s["soak_seconds"] for s in body["stages"]] == [0, 60, 30, 0]
    assert body["stages"][0]["counts"] == {"SENT": 2}
    assert Command.objects.filter(type="update").count() == 2
    listed = staff_api.get("/api/v1/rollouts/?status=RUNNING").json()
    assert [r["id"] for r in listed["results"]] == [body["id"]]
    assert staff_api.get("/api/v1/releases/?component=openclaw").json()["count"] == 1


def test_a_second_active_rollout_of_a_component_is_refused(make_fleet, staff_api, on_commit):
    make_fleet(10, internal=1)
    first = on_commit(lambda: staff_api.post("/api/v1/rollouts/", CI_BODY, format="json"))
    assert first.status_code == 201

    body = {**CI_BODY, "version": "1.2.0", "image": NEW_IMAGE.replace("b" * 64, "d" * 64)}
    second = staff_api.post("/api/v1/rollouts/", body, format="json")

    assert second.status_code == 409
    assert second.json()["error"] == "rollout_active"
    assert f"already has an active rollout: #{first.json()['id']}" in second.json()["detail"]
    assert Rollout.objects.count() == 1  # all or nothing: the refused one is not kept as a draft
    assert not Release.objects.filter(version="1.2.0").exists()


def test_dry_run_answers_the_plan_and_keeps_nothing(make_fleet, staff_api):
    make_fleet(40, internal=2)
    body = {key: value for key, value in CI_BODY.items() if key != "start"} | {"dry_run": True}

    response = staff_api.post("/api/v1/rollouts/", body, format="json")

    assert response.status_code == 200, response.content
    assert [s["size"] for s in response.json()["stages"]] == [2, 2, 8, 28]
    assert not Rollout.objects.exists() and not Release.objects.exists() and not Command.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {**CI_BODY, "surprise": 1},
        {**CI_BODY, "image": "registry.test/openclaw:1.1.0"},
        {**CI_BODY, "stages": [{"percent": 50, "soak_seconds": 0}]},
        {**CI_BODY, "stages": [{"percent": 100, "soak_seconds": "0"}]},
        {**CI_BODY, "failure_rate": 2},
        {**CI_BODY, "release": 1},
        {"start": True},
    ],
)
def test_bad_input_is_400_and_changes_nothing(staff_api, body):
    response = staff_api.post("/api/v1/rollouts/", body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid"
    assert not Rollout.objects.exists()


def test_illegal_moves_are_409(make_rollout, staff_api):
    rollout = make_rollout()

    response = staff_api.post(f"/api/v1/rollouts/{rollout.pk}/resume/", {}, format="json")

    assert response.status_code == 409
    assert response.json() == {
        "error": "illegal_move",
        "detail": f"rollout #{rollout.pk} is DRAFT; it cannot be resumed",
    }
    assert staff_api.post("/api/v1/rollouts/999999/pause/", {}, format="json").status_code == 404
    assert staff_api.post(f"/api/v1/rollouts/{rollout.pk}/abort/", {"why": "x"}, format="json").status_code == 400


def test_staff_operate_a_rollout_through_the_api(make_fleet, make_rollout, staff_api, on_commit, evaluate):
    fleet = make_fleet(20, internal=2)
    rollout = make_rollout(auto_advance=False)
    url = f"/api/v1/rollouts/{rollout.pk}"
    assert on_commit(lambda: staff_api.post(f"{url}/start/", {}, format="json")).status_code == 200
    fleet.round()
    evaluate()
    detail = staff_api.get(f"{url}/").json()
    assert detail["stages"][0]["status"] == "AWAITING_PROMOTE"

    promoted = on_commit(lambda: staff_api.post(f"{url}/promote/", {"reason": "looks good"}, format="json"))
    assert promoted.status_code == 200
    assert promoted.json()["current_position"] == 1
    assert staff_api.post(f"{url}/pause/", {}, format="json").json()["status"] == "PAUSED"
    assert on_commit(lambda: staff_api.post(f"{url}/resume/", {}, format="json")).json()["status"] == "RUNNING"
    fleet.round()
    rolled = on_commit(lambda: staff_api.post(f"{url}/rollback/", {}, format="json"))
    assert rolled.json()["status"] == "ROLLING_BACK"
    fleet.round()
    evaluate()
    assert staff_api.get(f"{url}/").json()["status"] == RolloutStatus.ROLLED_BACK
    updates = staff_api.get(f"{url}/updates/?status=ROLLED_BACK").json()
    assert updates["count"] == 3


def test_the_api_is_for_staff_only(make_rollout):
    rollout = make_rollout()
    anonymous = APIClient()

    assert anonymous.get("/api/v1/rollouts/").status_code in (401, 403)
    assert anonymous.post(f"/api/v1/rollouts/{rollout.pk}/start/", {}, format="json").status_code in (401, 403)
    assert anonymous.post("/api/v1/releases/", {}, format="json").status_code in (401, 403)
