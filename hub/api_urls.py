"""The /api/v1/ routes of every app, in one place so the contract reads at a glance."""

from django.urls import URLPattern, URLResolver, include, path

from hub.freeze_apis import FleetFreezeApi

# The tenants' routes first: the agents' heartbeats are most of the Hub's requests, and
# Django tries the patterns in order.
urlpatterns: list[URLPattern | URLResolver] = [
    path("", include("tenants.urls")),
    path("", include("hub.pipeline.urls")),
    path("", include("hub.alerts.urls")),
    path("fleet/freeze/", FleetFreezeApi.as_view(), name="fleet-freeze"),
    path("", include("billing.urls")),
    path("", include("provisioning.urls")),
    path("", include("rollouts.urls")),
]
