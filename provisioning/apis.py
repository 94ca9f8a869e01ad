from collections.abc import Callable
from typing import Any, TypeVar

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hub.db.filters import matches_no_row
from hub.errors import NotFound
from hub.pipeline.models import Job
from hub.pipeline.selectors import jobs_with_steps
from provisioning.integrations.cloudflare import CloudflareRefused, DnsProviderError
from provisioning.models import Order, Server, TenantMove
from provisioning.selectors import orders_with_steps
from provisioning.serializers import (
    AcmeChallengeInputSerializer,
    AcmeChallengeOutputSerializer,
    AcmeChallengeRemovedSerializer,
    OrderInputSerializer,
    OrderOutputSerializer,
    ServerInputSerializer,
    ServerOutputSerializer,
    TenantBackupInputSerializer,
    TenantJobOutputSerializer,
    TenantMigrateInputSerializer,
    TenantRecoverInputSerializer,
)
from provisioning.services.acme import (
    ChallengeForbidden,
    acme_challenge_put,
    acme_challenge_remove,
)
from provisioning.services.moves import backup_now_start, tenant_migrate_start, tenant_recover_start
from provisioning.services.orders import order_cancel, order_create, order_retry
from provisioning.services.pool import server_register
from tenants.apis import AGENT_ERRORS, ERROR, AgentApi
from tenants.http import ServiceUnavailable

T = TypeVar("T")


class OrderListCreateApi(generics.ListAPIView):
    serializer_class = OrderOutputSerializer

    def get_queryset(self) -> QuerySet[Order]:
        queryset = orders_with_steps()
        wanted = self.request.query_params.get("status")
        if matches_no_row(wanted):
            return queryset.none()
        return queryset.filter(status=wanted) if wanted else queryset

    @extend_schema(request=OrderInputSerializer, responses={201: OrderOutputSerializer})
    def post(self, request: Request) -> Response:
        payload = OrderInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        order = order_create(**payload.validated_data, actor=request.user.get_username())
        return Response(
            OrderOutputSerializer(orders_with_steps().get(pk=order.pk)).data, status=status.HTTP_201_CREATED
        )


class OrderDetailApi(generics.RetrieveAPIView):
    serializer_class = OrderOutputSerializer

    def get_queryset(self) -> QuerySet[Order]:
        return orders_with_steps()


class OrderRetryApi(APIView):
    @extend_schema(request=None, responses=OrderOutputSerializer)
    def post(self, request: Request, pk: int) -> Response:
        order_retry(order_id=pk, actor=request.user.get_username())
        return Response(OrderOutputSerializer(orders_with_steps().get(pk=pk)).data)


class OrderCancelApi(APIView):
    @extend_schema(request=None, responses=OrderOutputSerializer)
    def post(self, request: Request, pk: int) -> Response:
        order_cancel(order_id=pk, actor=request.user.get_username())
        return Response(OrderOutputSerializer(orders_with_steps().get(pk=pk)).data)


class ServerListCreateApi(generics.ListAPIView):
    serializer_class = ServerOutputSerializer

    def get_queryset(self) -> QuerySet[Server]:
        queryset = Server.objects.order_by("id")
        for field in ("status", "region", "tier", "provider"):
            value = self.request.query_params.get(field)
            if matches_no_row(value):
                return queryset.none()
            if value:
                queryset = queryset.filter(**{field: value})
        return queryset

    @extend_schema(request=ServerInputSerializer, responses={201: ServerOutputSerializer})
    def post(self, request: Request) -> Response:
        payload = ServerInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        server = server_register(**payload.validated_data, actor=request.user.get_username())
        return Response(ServerOutputSerializer(server).data, status=status.HTTP_201_CREATED)


# --- the agent's DNS-01 hook ----------------------------------------------------------


class DnsProviderRefusedError(exceptions.APIException):
    status_code = 502
    default_detail = "The DNS provider refused the record."
    default_code = "dns_provider_refused"


CHALLENGE_ERRORS = {
    **AGENT_ERRORS,
    403: OpenApiResponse(response=ERROR.response, description="the name is not under this tenant's domain"),
    409: OpenApiResponse(response=ERROR.response, description="the tenant's domain is in no zone of the account"),
    502: ERROR,
    503: ERROR,
}


class AgentAcmeChallengeApi(AgentApi):
    """certbot's --manual-auth-hook and --manual-cleanup-hook on a tenant's server ask
    here for the `_acme-challenge` TXT record: the server holds no DNS credential."""

    def _call(self, request: Request, service: Callable[..., T], data: dict[str, str]) -> T:
        try:
            return service(tenant_id=self.identity(request).tenant_id, **data)
        except ChallengeForbidden as exc:
            raise exceptions.PermissionDenied(str(exc)) from exc
        except DnsProviderError as exc:
            raise ServiceUnavailable from exc
        except CloudflareRefused as exc:
            raise DnsProviderRefusedError(str(exc)) from exc

    @extend_schema(
        tags=["agent"],
        request=AcmeChallengeInputSerializer,
        responses={201: AcmeChallengeOutputSerializer, **CHALLENGE_ERRORS},
        description="Put the DNS-01 value at _acme-challenge.<domain> (beside any other); answers once it is visible.",
    )
    def post(self, request: Request) -> Response:
        payload = AcmeChallengeInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        challenge = self._call(request, acme_challenge_put, payload.validated_data)
        return Response(AcmeChallengeOutputSerializer(challenge).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        tags=["agent"],
        request=AcmeChallengeInputSerializer,
        responses={200: AcmeChallengeRemovedSerializer, **CHALLENGE_ERRORS},
        description="Remove this DNS-01 value from _acme-challenge.<domain>; other values stay.",
    )
    def delete(self, request: Request) -> Response:
        payload = AcmeChallengeInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        removed = self._call(request, acme_challenge_remove, payload.validated_data)
        name = f"_acme-challenge.{payload.validated_data['domain'].rstrip('.').removeprefix('*.')}"
        return Response(AcmeChallengeRemovedSerializer({"name": name, "removed": removed}).data)


# --- a tenant's backup now, recovery and migration ------------------------------------


def _tenant_id(pk: str) -> int:
    """Ids are matched as strings (a malformed one gets the API's JSON 404)."""
    if not pk.isdigit() or len(pk) > 18:
        raise NotFound(f"tenant {pk[:40]!r} does not exist")
    return int(pk)


def _tenant_job(tenant_id: int, job: Job, move: TenantMove | None) -> dict[str, Any]:
    job = jobs_with_steps().get(pk=job.pk)
    return TenantJobOutputSerializer(
        {"tenant": tenant_id, "job": job, "move": move.pk if move else None, "kind": job.pipeline}
    ).data


class TenantBackupApi(APIView):
    @extend_schema(request=TenantBackupInputSerializer, responses={202: TenantJobOutputSerializer})
    def post(self, request: Request, pk: str) -> Response:
        TenantBackupInputSerializer(data=request.data).is_valid(raise_exception=True)
        tenant_id = _tenant_id(pk)
        job = backup_now_start(tenant_id=tenant_id, actor=request.user.get_username())
        return Response(_tenant_job(tenant_id, job, None), status=status.HTTP_202_ACCEPTED)


class TenantRecoverApi(APIView):
    @extend_schema(request=TenantRecoverInputSerializer, responses={202: TenantJobOutputSerializer})
    def post(self, request: Request, pk: str) -> Response:
        payload = TenantRecoverInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        tenant_id = _tenant_id(pk)
        move = tenant_recover_start(tenant_id=tenant_id, actor=request.user.get_username(), **payload.validated_data)
        assert move.job is not None  # started with the move
        return Response(_tenant_job(tenant_id, move.job, move), status=status.HTTP_202_ACCEPTED)


class TenantMigrateApi(APIView):
    @extend_schema(request=TenantMigrateInputSerializer, responses={202: TenantJobOutputSerializer})
    def post(self, request: Request, pk: str) -> Response:
        payload = TenantMigrateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        tenant_id = _tenant_id(pk)
        move = tenant_migrate_start(
            tenant_id=tenant_id,
            actor=request.user.get_username(),
            server_id=data.get("server"),
            provider=data.get("provider", ""),
        )
        assert move.job is not None  # started with the move
        return Response(_tenant_job(tenant_id, move.job, move), status=status.HTTP_202_ACCEPTED)
