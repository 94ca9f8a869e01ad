"""The billing admin pages open for staff and show no secret."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from billing.models import StripeEvent
from sandbox import stripe_events as se
from tests.billing.conftest import FakeTenancy

pytestmark = pytest.mark.django_db

PAGES = ["customer", "subscription", "stripeevent", "notice", "stafftask", "usageperiod", "meterreport"]


def test_billing_admin_pages_open_and_show_no_secret(
    client: Client, deliver_and_process: Callable[..., StripeEvent], fake_tenancy: FakeTenancy
) -> None:
    row = deliver_and_process(se.checkout_session_completed(domain="admin.example.com"))
    admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw-for-tests")
    client.force_login(admin)

    pages = [f"/admin/billing/{name}/" for name in PAGES] + [f"/admin/billing/stripeevent/{row.pk}/change/"]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        body = response.content.decode()
        assert settings.STRIPE_WEBHOOK_SECRET not in body
        assert settings.STRIPE_SECRET_KEY not in body
