"""Two paid orders for one domain, placed at the same moment (two billing workers
handling two checkouts): only one takes the domain."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from provisioning.models import Order, OrderStatus
from provisioning.services.orders import order_create

pytestmark = pytest.mark.django_db(transaction=True)


def _place(source_event_id: str) -> Order:
    return order_create(plan="build", region="eu", domain="race.example.com", tools=[], source_event_id=source_event_id)


def test_two_orders_for_one_domain_at_once_only_one_takes_it() -> None:
    first_created, results = threading.Event(), {}

    def first() -> None:
        try:
            with transaction.atomic():
                results["first"] = _place("evt_race_1")
                first_created.set()
                # the second order is placed while this one is not committed yet
                second_thread.join(timeout=1.5)
        finally:
            first_created.set()
            connection.close()

    def second() -> None:
        try:
            first_created.wait(timeout=10)
            results["second"] = _place("evt_race_2")
        finally:
            connection.close()

    second_thread = threading.Thread(target=second)
    first_thread = threading.Thread(target=first)
    first_thread.start()
    second_thread.start()
    first_thread.join(timeout=30)
    second_thread.join(timeout=30)

    statuses = sorted(Order.objects.filter(domain="race.example.com").values_list("status", flat=True))
    assert statuses == sorted([OrderStatus.PAYMENT_CONFIRMED, OrderStatus.FAILED])
    refused = Order.objects.get(domain="race.example.com", status=OrderStatus.FAILED)
    assert refused.source_event_id == "evt_race_2"
    assert "already taken" in refused.failure_reason
