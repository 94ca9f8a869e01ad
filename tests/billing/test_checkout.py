"""POST /api/v1/orders/checkout/ (public): the order is checked, then a Checkout Session
is created in the Stripe emulator with the order in its metadata."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from billing.models import StripeEvent
from sandbox import stripe_events
from tests.billing.conftest import StripeSandbox, assert_order_refused

pytestmark = pytest.mark.django_db

URL = "/api/v1/orders/checkout/"


def order(**overrides: Any) -> dict[str, Any]:
    return {
        "plan": "build",
        "region": "eu",
        "domain": "new-shop.example.com",
        "tools": ["nextcloud", "ghost"],
        "email": "buyer@example.com",
        **overrides,
    }


def test_a_valid_order_gets_a_checkout_session_url(client: Client, stripe_sandbox: StripeSandbox) -> None:
    response = client.post(URL, order(), content_type="application/json")

    assert response.status_code == 201, response.content
    body = response.json()
    (session,) = stripe_sandbox.checkout_sessions()
    assert body == {"id": session["id"], "url": session["url"]}
    assert session["url"].startswith(stripe_sandbox.base_url)
    assert session["mode"] == "subscription"
    assert session["customer_email"] == "buyer@example.com"
    assert session["metadata"] == {
        "plan": "build",
        "region": "eu",
        "domain": "new-shop.example.com",
        "tools": "nextcloud,ghost",
    }
    calls = [r for r in stripe_sandbox.control("GET", "requests")["requests"] if r["path"] == "/v1/checkout/sessions"]
    assert calls[0]["params"]["line_items"] == [{"price": "price_hub_build", "quantity": "1"}]
    assert calls[0]["params"]["subscription_data"] == {"metadata": session["metadata"]}


def test_tools_may_come_comma_separated_like_the_website_sends_them(
    client: Client, stripe_sandbox: StripeSandbox
) -> None:
    response = client.post(URL, order(tools="nextcloud, ghost"), content_type="application/json")

    assert response.status_code == 201
    assert stripe_sandbox.checkout_sessions()[0]["metadata"]["tools"] == "nextcloud,ghost"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"plan": "mega"}, "unknown plan"),
        ({"region": "asia"}, "unknown region"),
        ({"domain": "not a domain"}, "not a valid domain"),
        ({"domain": "UPPER..example.com"}, "not a valid domain"),
        ({"tools": ["nextcloud", "photoshop"]}, "unknown tools"),
        ({"tools": ["ghost", "ghost"]}, "listed twice"),
        ({"plan": "lite", "tools": ["odoo", "chatwoot", "nextcloud"]}, "MB of RAM"),
    ],
)
def test_an_invalid_order_gets_400_and_no_session(
    client: Client,
    stripe_sandbox: StripeSandbox,
    overrides: dict[str, Any],
    fragment: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from provisioning import catalog

    # Every tool of the registry fits the smallest tier; a smaller one shows the check.
    monkeypatch.setitem(catalog.PLANS, "lite", dataclasses.replace(catalog.PLANS["lite"], ram_mb=2048))

    response = client.post(URL, order(**overrides), content_type="application/json")

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid"
    assert fragment in " ".join(body["detail"]["order"])
    assert stripe_sandbox.checkout_sessions() == []


def test_missing_fields_get_400(client: Client, stripe_sandbox: StripeSandbox) -> None:
    response = client.post(URL, {"plan": "build"}, content_type="application/json")

    assert response.status_code == 400
    assert set(response.json()["detail"]) == {"region", "domain"}


def test_stripe_down_gets_503_and_says_so(client: Client, stripe_sandbox: StripeSandbox) -> None:
    stripe_sandbox.control("POST", "faults", {"path": "/v1/checkout/sessions", "status": 500, "times": 1})

    response = client.post(URL, order(), content_type="application/json")

    assert response.status_code == 503
    assert response.json()["error"] == "payment_provider_unavailable"


def test_a_taken_domain_is_refused() -> None:
    pytest.importorskip("provisioning.services.orders")
    from billing.checkout import OrderRequestInvalid, checkout_session_start
    from tenants.models import Tenant, TenantStatus

    Tenant.objects.create(domain="taken.example.com", status=TenantStatus.ACTIVE)

    with pytest.raises(OrderRequestInvalid, match="already taken"):
        checkout_session_start(plan="build", region="eu", domain="taken.example.com", tools=["ghost"])


def test_paid_tools_that_do_not_fit_the_tier_fail_the_order_and_alert_staff(
    deliver_and_process: Callable[..., StripeEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkout API refuses such an order, but Stripe's metadata can still carry one
    (an edited session, a catalog changed since): provisioning refuses it too. Every
    real combination of the registry fits the smallest tier, so the tier is shrunk,
    which only this process sees: handled here, not by the worker."""
    pytest.importorskip("provisioning.services.orders")
    from provisioning import catalog

    monkeypatch.setitem(catalog.PLANS, "lite", dataclasses.replace(catalog.PLANS["lite"], ram_mb=2048))
    event = stripe_events.checkout_session_completed(
        plan="lite", domain="too-small.example.com", tools="odoo,chatwoot,nextcloud"
    )

    row = deliver_and_process(event)

    assert_order_refused(row, ["tools need 3840 MB of RAM with the platform; the lite plan has 2048 MB"])
