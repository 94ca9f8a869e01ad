"""The one module that talks to Stripe (through the official `stripe` library).

Every call goes to `STRIPE_API_BASE` (the sandbox emulator in tests and demos) with a
bounded timeout and the library's own network retries, which send an idempotency key
with every POST. Callers get plain dicts and one error type, never a library object."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any

import stripe
from django.conf import settings

# The library logs every request at INFO; keep its warnings and errors only.
logging.getLogger("stripe").setLevel(logging.WARNING)


class StripeUnavailable(Exception):
    """Stripe (or the network to it) failed; the call may be retried."""


class StripeRejected(Exception):
    """Stripe refused the request (4xx): retrying the same request will not help."""


class WebhookSignatureInvalid(Exception):
    """The delivery is not signed with our secret, is too old, or was changed."""


@lru_cache(maxsize=4)
def _client(api_key: str, api_base: str, timeout: float, retries: int) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        max_network_retries=retries,
        http_client=stripe.RequestsClient(timeout=timeout),
    )


def client() -> stripe.StripeClient:
    return _client(
        settings.STRIPE_SECRET_KEY,
        settings.STRIPE_API_BASE,
        float(settings.STRIPE_TIMEOUT_SECONDS),
        int(settings.STRIPE_MAX_NETWORK_RETRIES),
    )


def _call(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        result = fn(*args, **kwargs)
    except (stripe.InvalidRequestError, stripe.CardError, stripe.IdempotencyError) as exc:
        raise StripeRejected(f"{type(exc).__name__}: {exc.user_message or exc}") from exc
    except stripe.AuthenticationError as exc:
        # Never echo the message: Stripe's includes part of the key.
        raise StripeRejected("Stripe rejected the API key") from exc
    except stripe.StripeError as exc:
        raise StripeUnavailable(f"{type(exc).__name__}: {exc.user_message or 'Stripe unavailable'}") from exc
    return result.to_dict()


def checkout_session_create(
    *,
    price_id: str,
    metadata: dict[str, str],
    success_url: str,
    cancel_url: str,
    customer_email: str | None,
    idempotency_key: str,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "mode": "subscription",
        "line_items": [{"price": price_id, "quantity": 1}],
        "metadata": metadata,
        # The subscription carries the plan too, so its own events name it.
        "subscription_data": {"metadata": metadata},
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    if customer_email:
        params["customer_email"] = customer_email
    return _call(
        client().v1.checkout.sessions.create,
        params=params,
        options={"idempotency_key": idempotency_key},
    )


def meter_event_create(
    *, event_name: str, stripe_customer_id: str, value: int, identifier: str, timestamp: int
) -> dict[str, Any]:
    """One meter event; Stripe counts an identifier once, so resending is harmless."""
    return _call(
        client().v1.billing.meter_events.create,
        params={
            "event_name": event_name,
            "payload": {"stripe_customer_id": stripe_customer_id, "value": str(value)},
            "identifier": identifier,
            "timestamp": timestamp,
        },
        options={"idempotency_key": f"meter-{identifier}"},
    )


def webhook_event_verify(*, payload: bytes, sig_header: str | None, secret: str) -> dict[str, Any]:
    """The event as a plain dict, if the Stripe-Signature header proves that Stripe
    sent exactly this body within the library's default tolerance (300 s)."""
    try:
        stripe.Webhook.construct_event(payload, sig_header or "", secret)
    except stripe.SignatureVerificationError as exc:
        raise WebhookSignatureInvalid("signature verification failed") from exc
    except ValueError as exc:
        raise WebhookSignatureInvalid("payload is not a Stripe event") from exc
    event = json.loads(payload)
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise WebhookSignatureInvalid("payload is not a Stripe event")
    return event
