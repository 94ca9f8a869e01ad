"""Request latency and status per resolved route, aggregated in the process and
flushed to Redis (hub.selfwatch.store) every METRICS_FLUSH_SECONDS by whichever
request comes after that time, in one pipeline, and at a normal interpreter exit (a
killed process loses at most that many seconds of samples: metrics, not records)."""

from __future__ import annotations

import atexit
import bisect
import threading
import time
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from hub.middleware import SyncAndAsyncMiddleware
from hub.selfwatch import store

UNMATCHED = "unmatched"


class RequestStats:
    """Counts per (route, method, status), and per (route, method) a histogram of
    durations (one count per bucket, not cumulative; the last is +Inf) and their sum."""

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = sorted(bounds)
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, str, int], int] = defaultdict(int)
        self.buckets: dict[tuple[str, str], list[int]] = {}
        self.sums: dict[tuple[str, str], float] = defaultdict(float)
        self.flushed_at = time.monotonic()

    def add(self, route: str, method: str, status: int, seconds: float) -> None:
        index = bisect.bisect_left(self.bounds, seconds)
        with self.lock:
            self.counts[(route, method, status)] += 1
            buckets = self.buckets.get((route, method))
            if buckets is None:
                buckets = self.buckets[(route, method)] = [0] * (len(self.bounds) + 1)
            buckets[index] += 1
            self.sums[(route, method)] += seconds

    def due(self, every: float) -> bool:
        return time.monotonic() - self.flushed_at >= every

    def flush(self) -> None:
        with self.lock:
            counts, buckets, sums = self.counts, self.buckets, self.sums
            self.counts, self.buckets, self.sums = defaultdict(int), {}, defaultdict(float)
            self.flushed_at = time.monotonic()
        if not counts:
            return
        labels = [*(repr(bound) for bound in self.bounds), "+Inf"]
        sep = store.SEP
        pipe = store.client().pipeline(transaction=False)
        for (route, method, status), count in counts.items():
            pipe.hincrby(store.HTTP_KEY, f"n{sep}{route}{sep}{method}{sep}{status}", count)
        for (route, method), per_bucket in buckets.items():
            for label, count in zip(labels, per_bucket, strict=True):
                if count:
                    pipe.hincrby(store.HTTP_KEY, f"b{sep}{route}{sep}{method}{sep}{label}", count)
            pipe.hincrbyfloat(store.HTTP_KEY, f"s{sep}{route}{sep}{method}", sums[(route, method)])
        try:
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - a metric never fails a request
            store.complain(f"{sum(counts.values())} request samples", exc)


_stats: RequestStats | None = None
_stats_lock = threading.Lock()


def request_stats() -> RequestStats:
    global _stats
    if _stats is None:
        with _stats_lock:
            if _stats is None:
                _stats = RequestStats(list(settings.METRICS_REQUEST_DURATION_BUCKETS))
                atexit.register(_stats.flush)
    return _stats


class RequestMetricsMiddleware(SyncAndAsyncMiddleware):
    """The outermost middleware: times the whole answer, labels it with the route
    pattern that resolved (`api/v1/orders/<int:pk>/`, never the raw path, so the
    number of series stays bounded) or `unmatched`."""

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        started = time.perf_counter()
        response = self.get_response(request)
        self._record(request, response, time.perf_counter() - started)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = await self.get_response(request)
        self._record(request, response, time.perf_counter() - started)
        return response

    def _record(self, request: HttpRequest, response: HttpResponse, elapsed: float) -> None:
        match = request.resolver_match
        route = (match.route or match.view_name) if match is not None else UNMATCHED
        stats = request_stats()
        stats.add(route, request.method or "", response.status_code, elapsed)
        if stats.due(settings.METRICS_FLUSH_SECONDS):
            stats.flush()
