"""The error shape every endpoint answers with: `{"error": code, "detail": ...}`."""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from hub.errors import DomainError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error is JSON with an `error` code and a `detail`; domain errors from the
    services answer with their own status (409 for a legal request the current state
    refuses, 404 for an object that does not exist), never a 500."""
    if isinstance(exc, DomainError):
        return Response({"error": exc.code, "detail": str(exc)}, status=exc.http_status)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=exc.messages)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"error": "invalid", "detail": response.data}
    elif isinstance(exc, Http404 | exceptions.NotFound):
        response.data = {"error": "not_found", "detail": "Not found."}
    elif isinstance(exc, exceptions.APIException):
        response.data = {"error": exc.default_code, "detail": response.data.get("detail", response.data)}
    return response


class ApiErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="a code")
    detail = serializers.JSONField(help_text="what is wrong")
