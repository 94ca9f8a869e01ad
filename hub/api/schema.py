"""The OpenAPI schema's rules for every app: the errors each endpoint can answer, and
strict input serializers documented as refusing unknown fields."""

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework.authentication import SessionAuthentication, TokenAuthentication

from hub.api.errors import ApiErrorSerializer


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


class StrictSerializerScheme(OpenApiSerializerExtension):
    """A StrictSerializer refuses unknown fields; the schema says so, in every app."""

    target_class = "hub.api.fields.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        schema["additionalProperties"] = False
        return schema
