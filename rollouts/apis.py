"""The staff API of releases and rollouts (staff token or admin session). Thin:
validate, call a service or a selector, serialize."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from rollouts import selectors, services
from rollouts.models import Rollout, TenantUpdate
from rollouts.serializers import (
    ReasonInputSerializer,
    ReleaseInputSerializer,
    ReleaseOutputSerializer,
    RolloutDetailOutputSerializer,
    RolloutInputSerializer,
    RolloutOutputSerializer,
    RolloutPlanOutputSerializer,
    TenantUpdateOutputSerializer,
)

ERROR = OpenApiResponse(
    response={
        "type": "object",
        "properties": {"error": {"type": "string"}, "detail": {}},
        "required": ["error", "detail"],
    }
)


def _actor(request: Request) -> str:
    return f"staff:{request.user.get_username()}"


def _detail(rollout_id: int) -> dict[str, Any]:
    rollout = get_object_or_404(selectors.rollout_list(), pk=rollout_id)
    context = {
        "counts": selectors.status_counts(rollout_id=rollout.pk),
        "failing": list(selectors.failing_updates(rollout_id=rollout.pk)),
    }
    return RolloutDetailOutputSerializer(rollout, context=context).data


# --- Releases ------------------------------------------------------------------------


class ReleaseListApi(generics.ListAPIView):
    serializer_class = ReleaseOutputSerializer

    def get_queryset(self):
        return selectors.release_list(filters={"component": self.request.query_params.get("component")})

    @extend_schema(
        tags=["rollouts"],
        parameters=[OpenApiParameter("component", OpenApiTypes.STR)],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=["rollouts"],
        request=ReleaseInputSerializer,
        responses={201: ReleaseOutputSerializer, 400: ERROR, 409: ERROR},
    )
    def post(self, request: Request) -> Response:
        data = ReleaseInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        release = services.release_create(**data.validated_data, actor=_actor(request))
        return Response(ReleaseOutputSerializer(release).data, status=status.HTTP_201_CREATED)


class ReleaseDetailApi(generics.RetrieveAPIView):
    serializer_class = ReleaseOutputSerializer
    queryset = selectors.release_list()

    @extend_schema(tags=["rollouts"])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


# --- Rollouts ------------------------------------------------------------------------


class RolloutListApi(generics.ListAPIView):
    serializer_class = RolloutOutputSerializer

    def get_queryset(self):
        params = self.request.query_params
        return selectors.rollout_list(filters={"status": params.get("status"), "component": params.get("component")})

    @extend_schema(
        tags=["rollouts"],
        parameters=[OpenApiParameter("status", OpenApiTypes.STR), OpenApiParameter("component", OpenApiTypes.STR)],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=["rollouts"],
        request=RolloutInputSerializer,
        responses={
            201: RolloutDetailOutputSerializer,
            200: RolloutPlanOutputSerializer,
            400: ERROR,
            404: ERROR,
            409: ERROR,
        },
        description="Create a rollout (DRAFT; `start: true` starts it at once). `dry_run: true` answers the "
        "plan (which tenants fall into which stage) and keeps nothing.",
    )
    def post(self, request: Request) -> Response:
        data = RolloutInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        actor = _actor(request)
        release_id = data.validated_data.get("release")
        if release_id is not None:
            get_object_or_404(selectors.release_list(), pk=release_id)
        if data.validated_data["dry_run"]:
            preview = services.rollout_preview(
                release_spec=data.release_spec(), release_id=release_id, actor=actor, **data.service_options()
            )
            answer = {
                "rollout": None,
                "component": preview.rollout.component,
                "target_version": preview.rollout.target_version,
                "dry_run": True,
                "stages": preview.plan,
            }
            return Response(RolloutPlanOutputSerializer(answer).data)
        rollout = services.rollout_submit(
            release_spec=data.release_spec(),
            release_id=release_id,
            start=data.validated_data["start"],
            actor=actor,
            **data.service_options(),
        )
        return Response(_detail(rollout.pk), status=status.HTTP_201_CREATED)


class RolloutDetailApi(APIView):
    @extend_schema(tags=["rollouts"], responses={200: RolloutDetailOutputSerializer, 404: ERROR})
    def get(self, request: Request, pk: int) -> Response:
        return Response(_detail(pk))


class RolloutPlanApi(APIView):
    @extend_schema(
        tags=["rollouts"],
        responses={200: RolloutPlanOutputSerializer, 404: ERROR},
        description="Which tenants fall into which stage: dispatched stages as sent, the rest as they would be now.",
    )
    def get(self, request: Request, pk: int) -> Response:
        rollout = get_object_or_404(Rollout, pk=pk)
        answer = {
            "rollout": rollout.pk,
            "component": rollout.component,
            "target_version": rollout.target_version,
            "dry_run": True,
            "stages": selectors.rollout_plan(rollout=rollout, now=timezone.now()),
        }
        return Response(RolloutPlanOutputSerializer(answer).data)


class RolloutUpdateListApi(generics.ListAPIView):
    serializer_class = TenantUpdateOutputSerializer

    def get_queryset(self):
        rollout = get_object_or_404(Rollout, pk=self.kwargs["pk"])
        queryset = TenantUpdate.objects.filter(rollout=rollout).select_related("stage").order_by("id")
        params = self.request.query_params
        if params.get("status"):
            queryset = queryset.filter(status=params["status"])
        if params.get("stage"):
            queryset = (
                queryset.filter(stage__position=params["stage"]) if params["stage"].isdigit() else queryset.none()
            )
        return queryset

    @extend_schema(
        tags=["rollouts"],
        parameters=[OpenApiParameter("status", OpenApiTypes.STR), OpenApiParameter("stage", OpenApiTypes.INT)],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class RolloutActionApi(APIView):
    """POST rollouts/{id}/<action>/ with an optional {"reason"}; 409 when the rollout's
    status does not allow the action."""

    service: Callable[..., Rollout]

    @extend_schema(
        tags=["rollouts"],
        request=ReasonInputSerializer,
        responses={200: RolloutDetailOutputSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, pk: int) -> Response:
        data = ReasonInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        get_object_or_404(Rollout, pk=pk)
        type(self).service(rollout_id=pk, actor=_actor(request), reason=data.validated_data["reason"])
        return Response(_detail(pk))


class RolloutStartApi(RolloutActionApi):
    service = staticmethod(services.rollout_start)


class RolloutPauseApi(RolloutActionApi):
    service = staticmethod(services.rollout_pause)


class RolloutResumeApi(RolloutActionApi):
    service = staticmethod(services.rollout_resume)


class RolloutPromoteApi(RolloutActionApi):
    service = staticmethod(services.rollout_promote)


class RolloutAbortApi(RolloutActionApi):
    service = staticmethod(services.rollout_abort)


class RolloutRollbackApi(RolloutActionApi):
    service = staticmethod(services.rollout_rollback)


class RolloutRetryApi(RolloutActionApi):
    service = staticmethod(services.rollout_retry)
