from django.urls import path

from ops import metrics, streams

urlpatterns = [
    path("metrics", metrics.metrics_view, name="metrics"),
    # The event streams (server-sent events) live with the operator's views; the rest of
    # /api/v1/ is in hub/api_urls.py.
    path("api/v1/events", streams.all_events, name="events"),
    path("api/v1/orders/<int:pk>/events", streams.order_events, name="order-events"),
]
