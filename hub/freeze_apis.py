"""`/api/v1/fleet/freeze/` (staff): GET the switch, POST to freeze (with a reason),
DELETE to unfreeze. DESIGN.md names no URL for it; this one is ours."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hub.api.fields import StrictSerializer
from hub.freeze import fleet_freeze_set, fleet_freeze_state
from hub.models import FleetFreeze


class FreezeInputSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=2000, help_text="why: shown on the dashboard and in the audit")


class FreezeOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = FleetFreeze
        fields = ["frozen", "reason", "changed_by", "changed_at"]
        read_only_fields = fields


class FleetFreezeApi(APIView):
    @extend_schema(tags=["fleet"], responses=FreezeOutputSerializer)
    def get(self, request: Request) -> Response:
        return Response(FreezeOutputSerializer(fleet_freeze_state()).data)

    @extend_schema(tags=["fleet"], request=FreezeInputSerializer, responses=FreezeOutputSerializer)
    def post(self, request: Request) -> Response:
        payload = FreezeInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        row = fleet_freeze_set(frozen=True, actor=request.user.get_username(), reason=payload.validated_data["reason"])
        return Response(FreezeOutputSerializer(row).data)

    @extend_schema(tags=["fleet"], request=None, responses={200: FreezeOutputSerializer})
    def delete(self, request: Request) -> Response:
        row = fleet_freeze_set(frozen=False, actor=request.user.get_username(), reason="unfrozen")
        return Response(FreezeOutputSerializer(row).data)
