"""Reports and command results waiting for the Hub, one file per item on disk.

Items are delivered in the order they were queued and deleted only after the Hub
answered 2xx (or 409: it already has it). A refused item (any other 4xx but 401, 408
and 429) is moved to the dead-letter directory instead of being retried forever.
A re-send must be harmless, since the answer to the first send may have been lost:
reports carry a `report_id` the Hub stores once, and a command has one result.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.client import Reply
from agent.storage import ensure_dir, read_json, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    seq: int
    kind: str
    path: str
    body: dict[str, Any]
    file: Path


@dataclass(frozen=True)
class FlushResult:
    delivered: int
    dead: int
    pending: int
    failure: Reply | None  # the reply that stopped the flush, if one did


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Outbox:
    def __init__(self, directory: Path, *, max_items: int = 5000) -> None:
        self.dir = ensure_dir(directory)
        self.dead_dir = ensure_dir(directory.parent / f"{directory.name}-dead")
        self.max_items = max_items
        self.lock = threading.Lock()
        self.next_seq = max((self._seq_of(p) for p in self._files()), default=0) + 1

    @staticmethod
    def _seq_of(path: Path) -> int:
        return int(path.name.split("-", 1)[0])

    def _files(self) -> list[Path]:
        return sorted(p for p in self.dir.glob("*.json") if p.name.split("-", 1)[0].isdigit())

    def put(self, kind: str, path: str, body: dict[str, Any]) -> int:
        """Queue one POST to the Hub; returns its place in the queue."""
        with self.lock:
            files = self._files()
            if len(files) >= self.max_items:
                self._drop_oldest_report(files)
            seq = self.next_seq
            self.next_seq += 1
            record = {"kind": kind, "path": path, "body": body, "queued_at": utc_now_iso()}
            write_json(self.dir / f"{seq:012d}-{kind}.json", record)
        return seq

    def _drop_oldest_report(self, files: list[Path]) -> None:
        # Results are what the Hub waits on; periodic reports are superseded by newer ones.
        for file in files:
            if not file.name.endswith("-result.json"):
                self._bury(file, "outbox full")
                return

    def items(self) -> list[Item]:
        out = []
        for file in self._files():
            record = read_json(file)
            if not isinstance(record, dict) or not isinstance(record.get("body"), dict):
                self._bury(file, "unreadable")
                continue
            out.append(Item(self._seq_of(file), record["kind"], record["path"], record["body"], file))
        return out

    def pending_paths(self) -> set[str]:
        return {item.path for item in self.items()}

    def __len__(self) -> int:
        return len(self._files())

    def dead_count(self) -> int:
        return len(list(self.dead_dir.glob("*.json")))

    def _bury(self, file: Path, reason: str, reply: Reply | None = None) -> None:
        record = read_json(file) or {}
        record["dead_reason"] = reason
        if reply is not None:
            record["reply"] = {"status": reply.status, "data": reply.data}
        write_json(self.dead_dir / file.name, record)
        file.unlink(missing_ok=True)
        log.warning("outbox: %s moved to dead letters (%s)", file.name, reason)

    def flush(self, send: Callable[[str, dict[str, Any]], Reply], *, limit: int = 100) -> FlushResult:
        """Deliver queued items in order until one fails in a way worth retrying."""
        delivered = dead = 0
        failure = None
        for item in self.items()[:limit]:
            reply = send(item.path, item.body)
            if reply.ok or reply.status == 409:
                item.file.unlink(missing_ok=True)
                delivered += 1
            elif reply.retryable:
                failure = reply
                break
            else:
                with self.lock:
                    self._bury(item.file, f"refused by the Hub ({reply.describe()})", reply)
                dead += 1
        return FlushResult(delivered, dead, len(self), failure)
