"""What a new tenant gets: the release of its component's last COMPLETED rollout, else
the release staff marked as the component's default; one default per component."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from hub.errors import DomainError
from rollouts.models import Release, RolloutStatus
from rollouts.selectors import current_releases
from rollouts.services import release_create, release_mark_default, rollout_create

pytestmark = pytest.mark.django_db


def image(name: str, fill: str) -> str:
    return f"registry.example.test/{name}@sha256:" + fill * 64


def completed(release: Release, *, minutes_ago: int = 0, status: str = RolloutStatus.COMPLETED) -> None:
    rollout = rollout_create(release_id=release.pk, actor="ci")
    finished = timezone.now() - timedelta(minutes=minutes_ago)
    type(rollout).objects.filter(pk=rollout.pk).update(status=status, finished_at=finished)


def test_the_default_release_until_a_rollout_completes_then_the_rollout_s() -> None:
    v1 = release_create(component="ghost", version="5.1", image=image("ghost", "a"), is_default=True, actor="staff")
    v2 = release_create(component="ghost", version="5.2", image=image("ghost", "b"), actor="ci")
    assert current_releases(["ghost"]) == {"ghost": v1}

    completed(v2)

    assert current_releases(["ghost"]) == {"ghost": v2}


def test_the_last_completed_rollout_wins_and_aborted_or_rolled_back_ones_count_for_nothing() -> None:
    older = release_create(component="nextcloud", version="29.0.1", image=image("nc", "a"), actor="ci")
    newer = release_create(component="nextcloud", version="29.0.2", image=image("nc", "b"), actor="ci")
    failed = release_create(component="nextcloud", version="29.0.3", image=image("nc", "c"), actor="ci")
    completed(newer, minutes_ago=5)
    completed(older, minutes_ago=60)
    completed(failed, minutes_ago=1, status=RolloutStatus.ROLLED_BACK)

    assert current_releases(["nextcloud"])["nextcloud"] == newer


def test_a_component_with_neither_is_absent_and_the_answer_costs_two_queries(django_assert_num_queries) -> None:
    for n, name in enumerate(["postgres", "mysql", "redis", "openclaw"]):
        release = release_create(component=name, version="1", image=image(name, "abcd"[n]), is_default=True, actor="s")
        completed(release)
    release_create(component="ghost", version="5", image=image("ghost", "e"), is_default=True, actor="staff")

    with django_assert_num_queries(2):
        current = current_releases(["postgres", "mysql", "redis", "openclaw", "ghost", "bookstack"])

    assert set(current) == {"postgres", "mysql", "redis", "openclaw", "ghost"}
    assert current["postgres"].image == image("postgres", "a")


def test_marking_a_default_replaces_the_previous_one_and_the_database_allows_one() -> None:
    first = release_create(component="redis", version="7.2", image=image("redis", "a"), is_default=True, actor="s")
    second = release_create(component="redis", version="7.4", image=image("redis", "b"), actor="s")

    release_mark_default(release_id=second.pk, actor="staff:ops")

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.is_default, second.is_default) == (False, True)
    with pytest.raises(IntegrityError), transaction.atomic():
        Release.objects.filter(pk=first.pk).update(is_default=True)
    with pytest.raises(DomainError):
        release_mark_default(release_id=999_999, actor="staff:ops")


def test_the_api_creates_a_default_release() -> None:
    release_create(component="umami", version="2.12", image=image("umami", "a"), is_default=True, actor="s")
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("ci", password="x", is_staff=True))

    response = client.post(
        "/api/v1/releases/",
        {"component": "umami", "version": "2.13", "image": image("umami", "b"), "is_default": True},
        format="json",
    )

    assert response.status_code == 201, response.content
    assert response.json()["is_default"] is True
    assert current_releases(["umami"])["umami"].version == "2.13"
    assert Release.objects.filter(component="umami", is_default=True).count() == 1
    refused = client.post(
        "/api/v1/releases/",
        {"component": "umami", "version": "2.14", "image": image("umami", "c"), "is_default": "yes"},
        format="json",
    )
    assert refused.status_code == 400


def test_staff_mark_a_default_in_the_admin() -> None:
    release = release_create(component="odoo", version="17.0", image=image("odoo", "a"), actor="ci")
    staff = get_user_model().objects.create_superuser("staff", "staff@example.com", "pw-for-tests")
    client = Client()
    client.force_login(staff)

    response = client.post(
        "/admin/rollouts/release/", {"action": "mark_default", "_selected_action": [str(release.pk)]}, follow=True
    )

    assert response.status_code == 200
    release.refresh_from_db()
    assert release.is_default
    added = client.post(
        "/admin/rollouts/release/add/",
        {"component": "odoo", "version": "17.1", "image": image("odoo", "b"), "notes": "", "make_default": "on"},
    )
    assert added.status_code == 302, added.content[:2000]
    assert current_releases(["odoo"])["odoo"].version == "17.1"
