"""The /api/v1/ routes of every app, in one place so the contract reads at a glance."""

from django.urls import URLPattern, URLResolver, include, path

from hub.freeze_apis import FleetFreezeApi

urlpatterns: list[URLPattern | URLResolver] = [
    path("", include("hub.pipeline.urls")),
    path("", include("hub.alerts.urls")),
    path("fleet/freeze/", FleetFreezeApi.as_view(), name="fleet-freeze"),
    path("", include("tenants.urls")),
    path("", include("billing.urls")),
    path("", include("provisioning.urls")),
    path("", include("rollouts.urls")),
]
