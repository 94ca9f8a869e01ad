"""What each command type needs in its payload (shared by the API, the admin and the
services, so a malformed command never reaches an agent)."""

from __future__ import annotations

import re
from typing import Any

from tenants.models import CommandType

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+:-]{0,127}$")


def command_payload_errors(*, type: str, payload: Any) -> list[str]:
    if type not in CommandType.values:
        return [f"unknown command type {type!r}"]
    if not isinstance(payload, dict):
        return ["payload must be a JSON object"]
    errors = []
    if type == CommandType.UPDATE:
        if not isinstance(payload.get("component"), str) or not NAME_RE.match(payload["component"]):
            errors.append("update needs a 'component' name")
        if not isinstance(payload.get("version"), str) or not VERSION_RE.match(payload["version"]):
            errors.append("update needs a 'version'")
    elif type == CommandType.RESTART and "component" in payload:
        component = payload["component"]
        if not isinstance(component, str) or not NAME_RE.match(component):
            errors.append("restart's 'component' must be a component name")
    elif type == CommandType.MAINTENANCE and not isinstance(payload.get("enter"), bool):
        errors.append("maintenance needs 'enter': true (stop writing) or false (serve again)")
    return errors
