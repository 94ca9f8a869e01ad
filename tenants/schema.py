"""OpenAPI extensions of the tenants app (loaded by TenantsConfig.ready): the agent's
Bearer API key, and strict serializers that refuse unknown fields."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension


class AgentKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.http.AgentKeyAuthentication"
    match_subclasses = True
    name = "agentApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The agent's API key from agent/register: `Authorization: Bearer hak_...`",
        }


class StrictSerializerScheme(OpenApiSerializerExtension):
    """A StrictSerializer refuses unknown fields; the schema says so."""

    target_class = "tenants.serializers.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        schema["additionalProperties"] = False
        return schema
