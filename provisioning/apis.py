from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from provisioning.models import Order, Server
from provisioning.selectors import orders_with_steps
from provisioning.serializers import (
    OrderInputSerializer,
    OrderOutputSerializer,
    ServerInputSerializer,
    ServerOutputSerializer,
)
from provisioning.services.orders import order_cancel, order_create, order_retry
from provisioning.services.pool import server_register


class OrderListCreateApi(generics.ListAPIView):
    serializer_class = OrderOutputSerializer

    def get_queryset(self) -> QuerySet[Order]:
        queryset = orders_with_steps()
        wanted = self.request.query_params.get("status")
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
            if value:
                queryset = queryset.filter(**{field: value})
        return queryset

    @extend_schema(request=ServerInputSerializer, responses={201: ServerOutputSerializer})
    def post(self, request: Request) -> Response:
        payload = ServerInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        server = server_register(**payload.validated_data, actor=request.user.get_username())
        return Response(ServerOutputSerializer(server).data, status=status.HTTP_201_CREATED)
