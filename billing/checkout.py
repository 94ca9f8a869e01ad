"""Starting a purchase: the order request is checked against provisioning's catalog
(plan, region, domain free, tools fit the tier), then a Stripe Checkout Session is
created with the order in its metadata, as the website's own sessions carry it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from django.conf import settings

from billing import ports
from billing.integrations import stripe as stripe_api
from hub.errors import DomainError


class OrderRequestInvalid(DomainError):
    code = "invalid"

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class CheckoutStarted:
    session_id: str
    url: str


def checkout_session_start(
    *, plan: str, region: str, domain: str, tools: list[str], customer_email: str = "", request_key: str = ""
) -> CheckoutStarted:
    """Validate the order and create its Checkout Session. The same request (same
    order, same client key) within Stripe's idempotency window gets the same session."""
    domain = domain.strip().lower().rstrip(".")
    tools = [t.strip() for t in tools if t and t.strip()]
    errors = ports.order_request_errors(plan=plan, region=region, domain=domain, tools=tools)
    if errors:
        raise OrderRequestInvalid(errors)
    metadata = {"plan": plan, "region": region, "domain": domain, "tools": ",".join(tools)}
    fingerprint = hashlib.sha256(
        json.dumps({**metadata, "email": customer_email, "key": request_key}, sort_keys=True).encode()
    ).hexdigest()
    session = stripe_api.checkout_session_create(
        price_id=settings.STRIPE_PRICE_IDS[plan],
        metadata=metadata,
        success_url=settings.BILLING_CHECKOUT_SUCCESS_URL,
        cancel_url=settings.BILLING_CHECKOUT_CANCEL_URL,
        customer_email=customer_email or None,
        idempotency_key=f"hub-checkout-{fingerprint}",
    )
    return CheckoutStarted(session_id=session["id"], url=session["url"])
