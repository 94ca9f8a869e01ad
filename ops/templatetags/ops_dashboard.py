"""`{% ops_dashboard as dashboard %}`: the operator's dashboard data for the admin index."""

from __future__ import annotations

from typing import Any

from django import template

from ops.dashboard import dashboard_context

register = template.Library()


@register.simple_tag(takes_context=True)
def ops_dashboard(context: template.Context) -> dict[str, Any] | None:
    request = context.get("request")
    if request is None or not getattr(request.user, "is_staff", False):
        return None
    return dashboard_context()
