"""GET /api/v1/alerts/ (staff): the open alerts and the recently resolved ones."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response

from hub.alerts.models import Alert
from hub.alerts.selectors import alerts_open_and_recent
from hub.alerts.serializers import AlertOutputSerializer, AlertQuerySerializer
from hub.api.errors import ApiErrorSerializer


class AlertListApi(generics.ListAPIView):
    serializer_class = AlertOutputSerializer

    @extend_schema(
        tags=["alerts"],
        parameters=[AlertQuerySerializer],
        responses={200: AlertOutputSerializer(many=True), 400: ApiErrorSerializer},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Alert]:
        query = AlertQuerySerializer(data=self.request.query_params.dict())
        query.is_valid(raise_exception=True)
        filters = {k: v for k, v in query.validated_data.items() if k not in ("page", "resolved_within_hours")}
        return alerts_open_and_recent(resolved_since=query.resolved_since(), **filters)
