"""Keeping the heartbeat history to its retention: the partitions ahead are made and
the ones past retention dropped whole (tenants.services.history), so no statement
scans or deletes rows of the live tables."""

from __future__ import annotations

from typing import Any

from tenants.services.history import heartbeat_history_maintain


def heartbeat_history_prune() -> dict[str, Any]:
    done = heartbeat_history_maintain()
    return {
        "created": len(done.created),
        "dropped": done.dropped,
        "skipped": done.skipped,
        "longest_statement_ms": round(done.longest_statement_ms, 1),
    }
