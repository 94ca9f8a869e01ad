"""What a step's action sees: the job's context, its attempt, and a log to write to."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone


@dataclass
class StepContext:
    job_id: int
    step_id: int
    step_name: str
    pipeline: str
    attempt: int
    subject_type: str
    subject_id: str
    context: dict[str, Any]
    # For a compensation step: the name of the step it undoes.
    compensating: str | None = None
    _log_lines: list[str] = field(default_factory=list, repr=False)
    _log_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    lease_lost: threading.Event = field(default_factory=threading.Event, repr=False)

    def log(self, message: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S.%f")[:-3]
        with self._log_lock:
            self._log_lines.append(f"{stamp} {message}\n")

    def put_back_log(self, chunk: str) -> None:
        """Lines taken but not written: they go before any logged since."""
        with self._log_lock:
            self._log_lines.insert(0, chunk)

    def take_log(self) -> str:
        with self._log_lock:
            chunk = "".join(self._log_lines)
            self._log_lines.clear()
        return chunk
