"""Keeping the heartbeat history to its retention: the partitions ahead are made, the
5-minute days past their retention condensed into hours, and the partitions past
retention dropped whole (tenants.services.history), so no statement scans or deletes
rows of the live tables."""

from __future__ import annotations

from typing import Any

from tenants.services.history import heartbeat_history_maintain


def heartbeat_history_prune() -> dict[str, Any]:
    done = heartbeat_history_maintain()
    return {
        "created": len(done.created),
        "dropped": done.dropped,
        "condensed": done.condensed,
        "condensed_hours": done.condensed_hours,
        "longest_condense_ms": round(done.longest_condense_ms, 1),
        "skipped": done.skipped,
        "longest_statement_ms": round(done.longest_statement_ms, 1),
    }
