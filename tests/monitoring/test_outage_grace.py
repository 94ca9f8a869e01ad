"""A Hub outage never produces an alert storm about the fleet: after the Hub was away
longer than 3 heartbeat intervals, every tenant gets a fresh grace period."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from hub.models import Alert, AlertStatus
from monitoring.models import HubPresence
from monitoring.services.checks import check_execute
from tenants.models import Tenant
from tests.factories import healthy_fleet

pytestmark = pytest.mark.django_db


def stale_alerts() -> set[int]:
    return {
        int(s)
        for s in Alert.objects.filter(kind="heartbeat_stale", status=AlertStatus.OPEN).values_list(
            "subject_id", flat=True
        )
    }


def test_no_staleness_alert_for_tenants_that_resume_within_the_grace_after_a_hub_outage() -> None:
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        # given a healthy fleet and a Hub that was looking at it
        tenants = healthy_fleet(20, last_heartbeat_at=start, heartbeat_interval=60)
        check_execute(name="heartbeats")
        assert stale_alerts() == set()

        # when the Hub (web and beat) is down for 10 minutes: no heartbeat gets in,
        # no check runs; then it comes back
        clock.shift(timedelta(minutes=10))
        check_execute(name="heartbeats")

        # then nobody is called stale, though every last heartbeat is 10 minutes old
        assert stale_alerts() == set()
        assert HubPresence.objects.get().resumed_at == timezone.now()

        # and the tenants that resume heartbeating within the grace are never called stale
        resumed, silent = tenants[:15], tenants[15:]
        for step in range(6):  # 3 minutes of checks every 30 s
            clock.shift(timedelta(seconds=30))
            Tenant.objects.filter(pk__in=[t.pk for t in resumed]).update(last_heartbeat_at=timezone.now())
            check_execute(name="heartbeats")
            assert stale_alerts() == set(), f"alert after {step}"

        # while those that stay silent past the grace (which began when heartbeats got
        # through again, 30 s after the Hub's return) are
        clock.shift(timedelta(seconds=60))
        Tenant.objects.filter(pk__in=[t.pk for t in resumed]).update(last_heartbeat_at=timezone.now())
        check_execute(name="heartbeats")
        assert stale_alerts() == {t.pk for t in silent}


def test_fleet_wide_silence_is_a_hub_alert_not_a_storm() -> None:
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        tenants = healthy_fleet(10, last_heartbeat_at=start)
        check_execute(name="heartbeats")

        # the web is down: beat keeps checking every 30 s, no heartbeat arrives
        for _ in range(20):
            clock.shift(timedelta(seconds=30))
            check_execute(name="heartbeats")
        assert stale_alerts() == set()
        silent = Alert.objects.get(kind="heartbeat_intake_silent", status=AlertStatus.OPEN)
        assert silent.subject_type == "hub"

        # the web is back and heartbeats arrive again (all but one tenant)
        clock.shift(timedelta(seconds=30))
        Tenant.objects.filter(pk__in=[t.pk for t in tenants[1:]]).update(last_heartbeat_at=timezone.now())
        check_execute(name="heartbeats")
        assert stale_alerts() == set()
        assert not Alert.objects.filter(kind="heartbeat_intake_silent", status=AlertStatus.OPEN).exists()

        # the one that never came back is stale once its grace has run out
        for _ in range(7):
            clock.shift(timedelta(seconds=30))
            Tenant.objects.filter(pk__in=[t.pk for t in tenants[1:]]).update(last_heartbeat_at=timezone.now())
            check_execute(name="heartbeats")
        assert stale_alerts() == {tenants[0].pk}
