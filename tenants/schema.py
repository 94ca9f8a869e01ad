"""OpenAPI extensions of the tenants app (loaded by TenantsConfig.ready): the agent's
Bearer API key, (strict input is documented by hub.api.schema)."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


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
