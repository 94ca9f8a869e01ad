"""Stripe webhook deliveries for tests and demos: realistic event payloads and the
`Stripe-Signature` header Stripe would send with them (t=<unix>,v1=<HMAC-SHA256 of
"<t>.<body>" under the endpoint secret>), so the Hub's verification runs unchanged."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import requests

API_VERSION = "2025-09-30.clover"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def sign(body: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + body
    signature = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


def signed_delivery(event: dict[str, Any], secret: str, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one delivery of `event`, signed now (or at `timestamp`)."""
    body = json.dumps(event, separators=(",", ":")).encode()
    stamp = int(time.time()) if timestamp is None else int(timestamp)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign(body, secret, stamp),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }
    return body, headers


def deliver(url: str, event: dict[str, Any], secret: str, *, timeout: float = 10.0) -> requests.Response:
    """POST one signed delivery, as Stripe would (used by the demo and the emulator)."""
    body, headers = signed_delivery(event, secret)
    return requests.post(url, data=body, headers=headers, timeout=timeout)


def event(
    event_type: str, obj: dict[str, Any], *, created: int | None = None, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()) if created is None else int(created),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def subscription_object(
    *,
    subscription_id: str,
    customer_id: str,
    status: str = "active",
    plan: str = "build",
    price_id: str | None = None,
    period_start: int | None = None,
    period_end: int | None = None,
    cancel_at_period_end: bool = False,
    canceled_at: int | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A subscription as Stripe's current API shapes it (the period on the items)."""
    start = int(time.time()) if period_start is None else period_start
    end = start + 30 * 86400 if period_end is None else period_end
    price = price_id or f"price_hub_{plan}"
    return {
        "id": subscription_id,
        "object": "subscription",
        "customer": customer_id,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": canceled_at,
        "ended_at": canceled_at if status == "canceled" else None,
        "created": start,
        "start_date": start,
        "collection_method": "charge_automatically",
        "currency": "eur",
        "livemode": False,
        "metadata": metadata if metadata is not None else {"plan": plan},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{subscription_id[4:]}",
                    "object": "subscription_item",
                    "current_period_start": start,
                    "current_period_end": end,
                    "quantity": 1,
                    "price": {
                        "id": price,
                        "object": "price",
                        "lookup_key": plan,
                        "recurring": {"interval": "month", "interval_count": 1},
                    },
                }
            ],
            "has_more": False,
        },
    }


def checkout_session_completed(
    *,
    plan: str = "build",
    region: str = "eu",
    domain: str = "example.com",
    tools: str | list[str] = "nextcloud,ghost",
    email: str = "customer@example.com",
    customer_id: str | None = None,
    subscription_id: str | None = None,
    session_id: str | None = None,
    payment_status: str = "paid",
    created: int | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    tools_value = ",".join(tools) if isinstance(tools, list) else tools
    session = {
        "id": session_id or new_id("cs_test"),
        "object": "checkout.session",
        "mode": "subscription",
        "status": "complete",
        "payment_status": payment_status,
        "customer": customer_id or new_id("cus"),
        "customer_email": None,
        "customer_details": {"email": email, "name": None, "address": None},
        "subscription": subscription_id or new_id("sub"),
        "metadata": {"plan": plan, "region": region, "domain": domain, "tools": tools_value},
        "amount_total": 1450,
        "currency": "eur",
        "livemode": False,
        "url": None,
    }
    return event("checkout.session.completed", session, created=created, event_id=event_id)


def _invoice(
    *, subscription_id: str, customer_id: str, status: str, attempt_count: int, billing_reason: str, created: int
) -> dict[str, Any]:
    return {
        "id": new_id("in"),
        "object": "invoice",
        "customer": customer_id,
        "status": status,
        "attempt_count": attempt_count,
        "billing_reason": billing_reason,
        "amount_due": 1450,
        "currency": "eur",
        "created": created,
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": subscription_id, "metadata": {}},
        },
        "livemode": False,
    }


def invoice_paid(
    *,
    subscription_id: str,
    customer_id: str,
    billing_reason: str = "subscription_cycle",
    created: int | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    stamp = int(time.time()) if created is None else created
    obj = _invoice(
        subscription_id=subscription_id,
        customer_id=customer_id,
        status="paid",
        attempt_count=1,
        billing_reason=billing_reason,
        created=stamp,
    )
    return event("invoice.paid", obj, created=stamp, event_id=event_id)


def invoice_payment_failed(
    *,
    subscription_id: str,
    customer_id: str,
    attempt_count: int = 1,
    billing_reason: str = "subscription_cycle",
    created: int | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    stamp = int(time.time()) if created is None else created
    obj = _invoice(
        subscription_id=subscription_id,
        customer_id=customer_id,
        status="open",
        attempt_count=attempt_count,
        billing_reason=billing_reason,
        created=stamp,
    )
    return event("invoice.payment_failed", obj, created=stamp, event_id=event_id)


def subscription_updated(
    *, created: int | None = None, event_id: str | None = None, **subscription: Any
) -> dict[str, Any]:
    obj = subscription_object(**subscription)
    return event("customer.subscription.updated", obj, created=created, event_id=event_id)


def subscription_created(
    *, created: int | None = None, event_id: str | None = None, **subscription: Any
) -> dict[str, Any]:
    obj = subscription_object(**subscription)
    return event("customer.subscription.created", obj, created=created, event_id=event_id)


def subscription_deleted(
    *, created: int | None = None, event_id: str | None = None, **subscription: Any
) -> dict[str, Any]:
    stamp = int(time.time()) if created is None else created
    subscription.setdefault("status", "canceled")
    subscription.setdefault("canceled_at", stamp)
    obj = subscription_object(**subscription)
    return event("customer.subscription.deleted", obj, created=stamp, event_id=event_id)
