"""Fault injection and rate limiting shared by the emulators, and the faults file the
stand-ins on a sandbox host consult."""

from __future__ import annotations

import fcntl
import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class TokenBucket:
    """A token bucket: `capacity` requests at once, refilled at `refill_per_second`."""

    def __init__(self, *, capacity: int, refill_per_second: float) -> None:
        self._lock = threading.Lock()
        self.configure(capacity=capacity, refill_per_second=refill_per_second)

    def configure(self, *, capacity: int, refill_per_second: float) -> None:
        with self._lock:
            self.capacity = capacity
            self.refill_per_second = refill_per_second
            self._tokens = float(capacity)
            self._updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.refill_per_second)
        self._updated = now

    def take(self) -> tuple[bool, int]:
        """Take one token; return whether one was available and how many remain."""
        with self._lock:
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                return True, int(self._tokens)
            return False, 0

    def seconds_until(self, tokens: float) -> float:
        """Seconds until the bucket holds `tokens` tokens (0 when it already does)."""
        with self._lock:
            self._refill()
            missing = min(tokens, self.capacity) - self._tokens
            if missing <= 0:
                return 0.0
            if self.refill_per_second <= 0:
                return math.inf
            return missing / self.refill_per_second


@dataclass
class HttpFault:
    """Answer the next `count` matching requests with `status` instead of serving them."""

    status: int
    count: int
    method: str | None = None
    path: str | None = None
    retry_after: int = 1
    code: str | None = None
    message: str | None = None
    delay: float = 0.0
    # Serve the request, then close the connection without answering: the caller
    # never learns that it worked (a lost answer).
    drop_answer: bool = False

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return not self.path or path.startswith(self.path)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HttpFault:
        status = int(data.get("status", 500))
        if not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        count = int(data.get("count", 1))
        if count < 1:
            raise ValueError("count must be at least 1")
        return cls(
            status=status,
            count=count,
            method=data.get("method") or None,
            path=data.get("path") or None,
            retry_after=int(data.get("retry_after", 1)),
            code=data.get("code"),
            message=data.get("message"),
            delay=float(data.get("delay", 0.0)),
            drop_answer=bool(data.get("drop_answer", False)),
        )


@dataclass
class FaultPlan:
    """The HTTP faults queued on one emulator, consumed in order of registration."""

    faults: list[HttpFault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, fault: HttpFault) -> None:
        with self._lock:
            self.faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def take(self, method: str, path: str) -> HttpFault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "status": f.status,
                    "count": f.count,
                    "method": f.method,
                    "path": f.path,
                    "retry_after": f.retry_after,
                    "drop_answer": f.drop_answer,
                }
                for f in self.faults
            ]


def host_faults_path(host_root: Path) -> Path:
    return host_root / "etc" / "sandbox" / "faults.json"


def host_fault_set(host_root: Path, *, command: str, times: int, kind: str = "fail") -> None:
    """Make the stand-in call whose command line starts with `command` fail the next
    `times` times (kind "fail"), or sleep `times` seconds first (kind "sleep")."""
    path = host_faults_path(host_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        raw = handle.read()
        data: dict[str, dict[str, int]] = json.loads(raw) if raw.strip() else {}
        data.setdefault(kind, {})[command] = times
        handle.seek(0)
        handle.truncate()
        json.dump(data, handle, indent=2)


def host_faults_clear(host_root: Path) -> None:
    host_faults_path(host_root).unlink(missing_ok=True)
