from django.urls import path

from ops import metrics

urlpatterns = [
    path("metrics", metrics.metrics_view, name="metrics"),
]
