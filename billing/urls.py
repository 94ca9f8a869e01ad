from django.urls import path

from billing import apis

urlpatterns = [
    path("billing/stripe/webhook", apis.StripeWebhookApi.as_view(), name="billing-stripe-webhook"),
    path("orders/checkout/", apis.CheckoutStartApi.as_view(), name="billing-checkout"),
]
