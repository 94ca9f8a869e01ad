"""Billing's HTTP endpoints: the Stripe webhook inbox and the public checkout."""

from __future__ import annotations

import logging

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from billing.checkout import OrderRequestInvalid, checkout_session_start
from billing.integrations import stripe as stripe_api
from billing.services.events import stripe_event_receive
from hub.api.errors import ApiErrorSerializer

logger = logging.getLogger(__name__)


class StripeWebhookApi(APIView):
    """Stripe's deliveries. Only the signature authenticates them (no session, no
    token, no CSRF); a verified event is stored and answered at once, and handled by
    a worker. A duplicate delivery is answered 200 too, so Stripe stops sending it."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer("StripeWebhookReceived", {"received": serializers.BooleanField()}),
            400: inline_serializer("StripeWebhookRejected", {"error": serializers.CharField()}),
        },
    )
    def post(self, request: Request) -> Response:
        limit = settings.BILLING_WEBHOOK_MAX_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            return Response({"error": "payload_too_large"}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        payload = request.body
        if len(payload) > limit:
            return Response({"error": "payload_too_large"}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        try:
            event = stripe_api.webhook_event_verify(
                payload=payload,
                sig_header=request.META.get("HTTP_STRIPE_SIGNATURE"),
                secret=settings.STRIPE_WEBHOOK_SECRET,
            )
        except stripe_api.WebhookSignatureInvalid as exc:
            logger.warning("stripe webhook refused: %s", exc)
            return Response({"error": "invalid_signature"}, status=status.HTTP_400_BAD_REQUEST)
        row, stored = stripe_event_receive(event=event)
        if not stored:
            logger.info("stripe event %s delivered again (%s)", row.stripe_event_id, row.status)
        return Response({"received": True})


class CheckoutRateThrottle(AnonRateThrottle):
    scope = "billing_checkout"

    def get_rate(self) -> str:
        return settings.BILLING_CHECKOUT_RATE


class CheckoutInputSerializer(serializers.Serializer):
    plan = serializers.CharField(max_length=32)
    region = serializers.CharField(max_length=16)
    domain = serializers.CharField(max_length=253)
    tools = serializers.ListField(child=serializers.CharField(max_length=64), max_length=64, required=False)
    email = serializers.EmailField(required=False, allow_blank=True)

    def to_internal_value(self, data):
        # The website sends tools as in the session metadata: comma-separated.
        if hasattr(data, "get") and isinstance(data.get("tools"), str):
            data = {**data, "tools": [t for t in data["tools"].split(",") if t.strip()]}
        return super().to_internal_value(data)


class CheckoutOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    url = serializers.URLField()


class CheckoutStartApi(APIView):
    """Public: check the order and return the URL of a Stripe Checkout Session that
    carries it. Provisioning starts when Stripe reports the payment (webhook)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [CheckoutRateThrottle]

    @extend_schema(
        request=CheckoutInputSerializer,
        responses={201: CheckoutOutputSerializer, 502: ApiErrorSerializer, 503: ApiErrorSerializer},
    )
    def post(self, request: Request) -> Response:
        data = CheckoutInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            started = checkout_session_start(
                plan=values["plan"],
                region=values["region"],
                domain=values["domain"],
                tools=values.get("tools", []),
                customer_email=values.get("email", ""),
                request_key=request.META.get("HTTP_IDEMPOTENCY_KEY", "")[:200],
            )
        except OrderRequestInvalid as exc:
            raise serializers.ValidationError({"order": exc.errors}) from exc
        except stripe_api.StripeRejected as exc:
            logger.error("checkout refused by Stripe: %s", exc)
            return Response(
                {"error": "payment_provider_refused", "detail": "The payment provider refused the checkout."},
                status=status.HTTP_502_BAD_GATEWAY,
            )
        except stripe_api.StripeUnavailable as exc:
            logger.warning("checkout: Stripe unavailable: %s", exc)
            return Response(
                {"error": "payment_provider_unavailable", "detail": "The payment provider is unavailable; try again."},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response(
            CheckoutOutputSerializer({"id": started.session_id, "url": started.url}).data,
            status=status.HTTP_201_CREATED,
        )
