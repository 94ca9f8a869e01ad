"""Cross-cutting API pieces: the error shape every endpoint answers with, and the
schema class that documents the errors every endpoint can answer."""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.openapi import AutoSchema
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from hub.errors import DomainError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error is JSON with an `error` code and a `detail`; domain errors from the
    services become 409 (a legal request the current state refuses), never a 500."""
    if isinstance(exc, DomainError):
        return Response({"error": exc.code, "detail": str(exc)}, status=status.HTTP_409_CONFLICT)
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


class HubAutoSchema(AutoSchema):
    """Documents the errors that the views do not name themselves but the framework
    answers: 400/415 for a body, 401/403 for a staff credential, 404 for an id or a
    page number, 409 for a domain error on a write, 429 for a throttle."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        codes: set[int] = set()
        if self.method in ("POST", "PUT", "PATCH"):
            codes.add(409)
            if self.get_request_serializer() is not None:
                codes |= {400, 415}
        authenticators = tuple(type(a) for a in self.view.get_authenticators())
        if any(issubclass(a, TokenAuthentication | SessionAuthentication) for a in authenticators):
            codes |= {401, 403}
        if "{" in self.path or (self._is_list_view() and self._get_paginator()):
            codes.add(404)
        if self.view.get_throttles():
            codes.add(429)
        for code in sorted(codes):
            responses.setdefault(str(code), self._get_response_for_code(ApiErrorSerializer, str(code)))
        return responses
