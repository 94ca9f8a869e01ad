"""HTTP to the Hub: every call has a timeout and none raises; a failure comes back as a
Reply that says whether trying again later makes sense."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from agent import __version__

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1/"


@dataclass(frozen=True)
class Reply:
    status: int | None  # None: no HTTP answer at all (refused, timed out, reset)
    data: Any = None
    error: str = ""
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """Worth sending again later: transport errors, 5xx, 401 (a key being rotated),
        408 and 429. Any other 4xx would be refused again, so it is not."""
        return self.status is None or self.status >= 500 or self.status in (401, 408, 429)

    def describe(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else f"no answer ({self.error})"


class HubClient:
    def __init__(self, hub_url: str, *, connect_timeout: float, read_timeout: float) -> None:
        self.base = hub_url.rstrip("/") + API_PREFIX
        self.timeout = (connect_timeout, read_timeout)
        self.api_key = ""
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"hub-agent/{__version__}"

    def post(self, path: str, body: dict[str, Any], *, auth: bool = True) -> Reply:
        headers = {"Authorization": f"Bearer {self.api_key}"} if auth and self.api_key else {}
        try:
            response = self.session.post(self.base + path, json=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            # The exception text never carries the headers, so the key cannot leak here.
            return Reply(status=None, error=type(exc).__name__)
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        return Reply(status=response.status_code, data=data, retry_after=_retry_after(response))


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class Backoff:
    """Exponential backoff with jitter: each failure doubles the ceiling up to `cap`; the
    wait is drawn from the upper half of it so a fleet that lost the Hub at the same
    moment does not come back at the same moment."""

    def __init__(self, *, base: float, cap: float, rand: Callable[[], float] = random.random) -> None:
        self.base = base
        self.cap = cap
        self.rand = rand
        self.failures = 0

    def failure(self, retry_after: float | None = None) -> float:
        self.failures += 1
        ceiling = min(self.cap, self.base * 2 ** min(self.failures - 1, 32))
        delay: float = ceiling * (0.5 + self.rand() / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap))
        return delay

    def success(self) -> None:
        self.failures = 0
