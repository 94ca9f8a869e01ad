"""How the Hub's bearer secrets look: the scheme tags in front of agent API keys
(`hak_`) and registration tokens (`hrt_`). The logging redaction (hub.logjson) knows
them by these tags; tenants.secrets makes and hashes them."""

API_KEY_SCHEME = "hak"
REGISTRATION_TOKEN_SCHEME = "hrt"  # noqa: S105 - a scheme tag, not a secret
