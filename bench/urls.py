"""The Hub's URLs and `GET /bench/trivial`: the cheapest DRF view there is, the
yardstick the heartbeat throughput is compared with in the same run."""

from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hub.urls import urlpatterns as hub_urlpatterns


class TrivialView(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    throttle_classes: list[type] = []

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


# First, so the yardstick pays for no other pattern tried before it.
urlpatterns = [path("bench/trivial", TrivialView.as_view(), name="bench-trivial"), *hub_urlpatterns]
