"""The agent API (Bearer API key) and the staff fleet view. Thin: validate, call a
service or a selector, serialize."""

from __future__ import annotations

import uuid
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.generics import get_object_or_404
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hub.api.errors import ApiErrorSerializer
from tenants import selectors, services
from tenants.http import (
    INVALID_KEY_MESSAGE,
    AgentKeyAuthentication,
    AgentRateThrottle,
    BoundedJSONParser,
    IsAgent,
    JSONOnlyNegotiation,
    RegistrationRateThrottle,
    RegistrationRefusedError,
    ServiceUnavailable,
)
from tenants.keycache import AgentIdentity
from tenants.models import Tenant
from tenants.serializers import (
    BackupReportInputSerializer,
    BackupReportOutputSerializer,
    CommandOutputSerializer,
    CommandQueueInputSerializer,
    CommandResultInputSerializer,
    HeartbeatInputSerializer,
    HeartbeatOutputSerializer,
    HistoryOutputSerializer,
    HistoryQuerySerializer,
    KeyRotateOutputSerializer,
    KeysRevokeOutputSerializer,
    RegisterInputSerializer,
    RegisterOutputSerializer,
    RegistrationTokenInputSerializer,
    RegistrationTokenOutputSerializer,
    TenantOutputSerializer,
    UsageReportInputSerializer,
    UsageReportOutputSerializer,
)

ERROR = OpenApiResponse(response=ApiErrorSerializer, description="`error` is a code; `detail` says what is wrong.")
AGENT_ERRORS = {400: ERROR, 401: ERROR, 413: ERROR, 415: ERROR, 429: ERROR}
COMMAND_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="the command's id")
TENANT_ID = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="the tenant's id")


class AgentApi(APIView):
    authentication_classes = [AgentKeyAuthentication]
    permission_classes = [IsAgent]
    throttle_classes = [AgentRateThrottle]
    parser_classes = [BoundedJSONParser]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONOnlyNegotiation

    def identity(self, request: Request) -> AgentIdentity:
        assert isinstance(request.auth, AgentIdentity)
        return request.auth


class AgentRegisterApi(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    throttle_classes = [RegistrationRateThrottle]
    parser_classes = [BoundedJSONParser]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONOnlyNegotiation

    @extend_schema(
        tags=["agent"],
        auth=[],
        request=RegisterInputSerializer,
        responses={201: RegisterOutputSerializer, 400: ERROR, 403: ERROR, 413: ERROR, 415: ERROR, 429: ERROR},
    )
    def post(self, request: Request) -> Response:
        data = RegisterInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            tenant, api_key = services.agent_register(
                token=data.validated_data["registration_token"],
                hostname=data.validated_data["hostname"],
                agent_version=data.validated_data["agent_version"],
            )
        except services.RegistrationRefused as exc:
            raise RegistrationRefusedError from exc
        answer = {"tenant_id": tenant.pk, "api_key": api_key, "heartbeat_interval": tenant.heartbeat_interval}
        return Response(RegisterOutputSerializer(answer).data, status=status.HTTP_201_CREATED)


class AgentHeartbeatApi(AgentApi):
    uses_key_cache = True
    # Counted against the tenant's rate inside the heartbeat's own Redis round trip.
    throttle_classes: list[type] = []

    @extend_schema(
        tags=["agent"],
        request=HeartbeatInputSerializer,
        responses={200: HeartbeatOutputSerializer, 503: ERROR, **AGENT_ERRORS},
    )
    def post(self, request: Request) -> Response:
        metrics = HeartbeatInputSerializer.validated(request.data)
        try:
            reply = services.heartbeat_ingest(
                identity=self.identity(request), metrics=metrics, received_at=timezone.now()
            )
        except services.AgentAuthError as exc:
            raise exceptions.AuthenticationFailed(INVALID_KEY_MESSAGE) from exc
        except services.HeartbeatThrottled as exc:
            raise exceptions.Throttled(wait=exc.retry_after) from exc
        except services.HeartbeatUnavailable as exc:
            raise ServiceUnavailable from exc
        if not reply.commands:
            # Nearly every heartbeat's answer, the JSON the serializer would give, without its pass.
            return Response({"heartbeat_interval": reply.heartbeat_interval, "commands": []})
        return Response(HeartbeatOutputSerializer(reply).data)


class AgentBackupReportApi(AgentApi):
    @extend_schema(
        tags=["agent"],
        request=BackupReportInputSerializer,
        responses={201: BackupReportOutputSerializer, 200: BackupReportOutputSerializer, **AGENT_ERRORS},
    )
    def post(self, request: Request) -> Response:
        data = BackupReportInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        report, created = services.backup_report_ingest(
            tenant_id=self.identity(request).tenant_id, **data.validated_data
        )
        return Response(
            BackupReportOutputSerializer(report).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class AgentUsageReportApi(AgentApi):
    @extend_schema(
        tags=["agent"],
        request=UsageReportInputSerializer,
        responses={201: UsageReportOutputSerializer, 200: UsageReportOutputSerializer, **AGENT_ERRORS},
    )
    def post(self, request: Request) -> Response:
        data = UsageReportInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        report, created = services.usage_report_ingest(
            tenant_id=self.identity(request).tenant_id, **data.validated_data
        )
        return Response(
            UsageReportOutputSerializer(report).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class AgentCommandResultApi(AgentApi):
    @extend_schema(
        tags=["agent"],
        parameters=[COMMAND_ID],
        request=CommandResultInputSerializer,
        responses={200: CommandOutputSerializer, 404: ERROR, 409: ERROR, **AGENT_ERRORS},
    )
    def post(self, request: Request, pk: str) -> Response:
        data = CommandResultInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            command, _ = services.command_record_result(
                tenant_id=self.identity(request).tenant_id, command_id=uuid.UUID(pk), **data.validated_data
            )
        except (ValueError, services.CommandNotFound) as exc:
            raise exceptions.NotFound from exc
        return Response(CommandOutputSerializer(command).data)


class AgentKeyRotateApi(AgentApi):
    @extend_schema(
        tags=["agent"],
        request=None,
        responses={201: KeyRotateOutputSerializer, **AGENT_ERRORS},
        description="A new API key; the agent's current keys keep working for AGENT_KEY_ROTATION_OVERLAP seconds.",
    )
    def post(self, request: Request) -> Response:
        identity = self.identity(request)
        rotation = services.agent_key_rotate(tenant_id=identity.tenant_id, actor=f"agent:{identity.tenant_id}")
        answer = {"api_key": rotation.api_key, "old_keys_expire_at": rotation.old_keys_expire_at}
        return Response(KeyRotateOutputSerializer(answer).data, status=status.HTTP_201_CREATED)


# --- Staff ---------------------------------------------------------------------------


class TenantListApi(generics.ListAPIView):
    serializer_class = TenantOutputSerializer

    @extend_schema(
        tags=["tenants"],
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, description="exact status"),
            OpenApiParameter("region", OpenApiTypes.STR, description="eu or us"),
            OpenApiParameter("domain", OpenApiTypes.STR, description="part of the domain"),
        ],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        params = self.request.query_params
        return selectors.tenant_list(filters={k: params.get(k) for k in ("status", "region", "domain")})


class TenantDetailApi(generics.RetrieveAPIView):
    serializer_class = TenantOutputSerializer

    @extend_schema(tags=["tenants"], parameters=[TENANT_ID])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        return selectors.tenant_list()


class TenantCommandListApi(generics.ListAPIView):
    serializer_class = CommandOutputSerializer
    parser_classes = [BoundedJSONParser]

    @extend_schema(tags=["tenants"], parameters=[TENANT_ID])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        get_object_or_404(Tenant.objects.all(), pk=self.kwargs["pk"])
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        return selectors.command_list(tenant_id=self.kwargs["pk"])

    @extend_schema(
        tags=["tenants"],
        parameters=[TENANT_ID],
        request=CommandQueueInputSerializer,
        responses={201: CommandOutputSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, pk: str) -> Response:
        tenant = get_object_or_404(Tenant.objects.all(), pk=pk)
        data = CommandQueueInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        command = services.command_queue(tenant_id=tenant.pk, actor=request.user.get_username(), **data.validated_data)
        return Response(CommandOutputSerializer(command).data, status=status.HTTP_201_CREATED)


class TenantHistoryApi(APIView):
    @extend_schema(
        tags=["tenants"],
        parameters=[
            TENANT_ID,
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="from (default: 24 hours before until)"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="to (default: now)"),
        ],
        responses={200: HistoryOutputSerializer, 400: ERROR, 404: ERROR},
    )
    def get(self, request: Request, pk: str) -> Response:
        """The tenant's heartbeat history: 5-minute buckets for the last
        HEARTBEAT_ROLLUP_RETENTION_DAYS, hours before that."""
        tenant = get_object_or_404(Tenant.objects.all(), pk=pk)
        query = HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        span = query.validated_data
        points = selectors.heartbeat_history(tenant_id=tenant.pk, since=span["since"], until=span["until"])
        return Response(
            HistoryOutputSerializer(
                {"tenant": tenant.pk, "since": span["since"], "until": span["until"], "points": points}
            ).data
        )


class TenantRegistrationTokenApi(APIView):
    parser_classes = [BoundedJSONParser]

    @extend_schema(
        tags=["tenants"],
        parameters=[TENANT_ID],
        request=RegistrationTokenInputSerializer,
        responses={201: RegistrationTokenOutputSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
        description="A one-time registration token for the tenant's agent; shown once.",
    )
    def post(self, request: Request, pk: str) -> Response:
        tenant = get_object_or_404(Tenant.objects.all(), pk=pk)
        data = RegistrationTokenInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, plaintext = services.registration_token_issue(
            tenant_id=tenant.pk, actor=request.user.get_username(), ttl_seconds=data.validated_data.get("ttl_seconds")
        )
        answer = {"registration_token": plaintext, "expires_at": token.expires_at}
        return Response(RegistrationTokenOutputSerializer(answer).data, status=status.HTTP_201_CREATED)


class TenantKeysRevokeApi(APIView):
    @extend_schema(
        tags=["tenants"], parameters=[TENANT_ID], request=None, responses={200: KeysRevokeOutputSerializer, 404: ERROR}
    )
    def post(self, request: Request, pk: str) -> Response:
        tenant = get_object_or_404(Tenant.objects.all(), pk=pk)
        revoked = services.agent_key_revoke(tenant_id=tenant.pk, actor=request.user.get_username(), reason="staff API")
        return Response(KeysRevokeOutputSerializer({"revoked": revoked}).data)
