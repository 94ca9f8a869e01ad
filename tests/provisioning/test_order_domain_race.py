"""Two paid orders for one domain, placed at the same moment (two billing workers
handling two checkouts): only one takes the domain."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from provisioning.models import Order, OrderStatus
from provisioning.services.orders import order_create
from tests.conftest import wait_for, waiting_on_a_lock

pytestmark = pytest.mark.django_db(transaction=True)


def _place(source_event_id: str) -> Order:
    return order_create(plan="build", region="eu", domain="race.example.com", tools=[], source_event_id=source_event_id)


def test_two_orders_for_one_domain_at_once_only_one_takes_it() -> None:
    first_created, first_may_commit = threading.Event(), threading.Event()
    second_pid: list[int] = []
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with transaction.atomic():
                _place("evt_race_1")
                first_created.set()
                assert first_may_commit.wait(timeout=30)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            first_created.set()
            connection.close()

    def second() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                second_pid.append(cursor.fetchone()[0])
            _place("evt_race_2")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    first_thread, second_thread = threading.Thread(target=first), threading.Thread(target=second)
    first_thread.start()
    assert first_created.wait(timeout=30)
    # when the second order is placed while the first is not committed yet
    second_thread.start()
    wait_for(
        lambda: not second_thread.is_alive() or (second_pid and waiting_on_a_lock(second_pid[0])),
        timeout=30,
        message="the second order to be placed or to wait for the first",
    )
    first_may_commit.set()
    first_thread.join(timeout=30)
    second_thread.join(timeout=30)

    assert not errors, errors
    statuses = sorted(Order.objects.filter(domain="race.example.com").values_list("status", flat=True))
    assert statuses == sorted([OrderStatus.PAYMENT_CONFIRMED, OrderStatus.FAILED])
    refused = Order.objects.get(domain="race.example.com", status=OrderStatus.FAILED)
    assert refused.source_event_id == "evt_race_2"
    assert "already taken" in refused.failure_reason
