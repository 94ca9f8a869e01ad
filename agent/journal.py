"""Which commands this server has accepted, run and finished, kept on disk (fsynced)
so a command re-delivered by the Hub, even after a restart, is never run twice.

States: accepted (written before the command is queued), running (written before it
starts), done (with its result). After a crash, an accepted command is still run once;
a running one is not run again but reported as failed, because nobody knows how far
it got.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.outbox import utc_now_iso
from agent.storage import ensure_dir, read_json, write_json

ACCEPTED = "accepted"
RUNNING = "running"
DONE = "done"

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class Entry:
    id: str
    type: str
    payload: dict[str, Any]
    state: str
    result: dict[str, Any] | None


class Journal:
    def __init__(self, directory: Path, *, retention_days: int = 90) -> None:
        self.dir = ensure_dir(directory)
        self.retention_seconds = retention_days * 86400
        self.lock = threading.Lock()

    def _file(self, command_id: str) -> Path:
        name = command_id if _SAFE_ID.match(command_id) and not command_id.startswith(".") else None
        return self.dir / f"{name or 'h-' + hashlib.sha256(command_id.encode()).hexdigest()}.json"

    def get(self, command_id: str) -> Entry | None:
        record = read_json(self._file(command_id))
        if not isinstance(record, dict):
            return None
        return Entry(record["id"], record["type"], record.get("payload") or {}, record["state"], record.get("result"))

    def _write(self, command_id: str, **changes: Any) -> None:
        with self.lock:
            path = self._file(command_id)
            record = read_json(path) or {}
            record.update(changes)
            record["updated_at"] = utc_now_iso()
            write_json(path, record)

    def accept(self, command_id: str, command_type: str, payload: dict[str, Any]) -> None:
        self._write(command_id, id=command_id, type=command_type, payload=payload, state=ACCEPTED)

    def mark_running(self, command_id: str) -> None:
        self._write(command_id, state=RUNNING)

    def finish(self, command_id: str, result: dict[str, Any]) -> None:
        self._write(command_id, state=DONE, result=result)

    def entries(self) -> list[Entry]:
        out = []
        for path in sorted(self.dir.glob("*.json")):
            record = read_json(path)
            if isinstance(record, dict) and "id" in record:
                out.append(
                    Entry(
                        record["id"], record["type"], record.get("payload") or {}, record["state"], record.get("result")
                    )
                )
        return out

    def prune(self, now: float | None = None) -> int:
        """Forget finished commands older than the retention; the Hub stops re-delivering
        a command long before that."""
        cutoff = (now if now is not None else time.time()) - self.retention_seconds
        removed = 0
        for path in self.dir.glob("*.json"):
            record = read_json(path)
            if isinstance(record, dict) and record.get("state") == DONE and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
