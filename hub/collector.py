"""Pausing Python's cyclic garbage collector around bulk work.

A fleet check at 100,000 tenants builds a few hundred thousand small objects (rows,
tuples, messages) that all live until it ends. Each allocation burst makes the
collector walk every object still alive, again and again, for nothing: reference
counting frees them anyway. Paused, a storm's check spends about half the Python time
(bench/RESULTS.md, fleet checks). The pause is process-wide; overlapping pauses (the
worker's threads) keep it until the last one ends, and a collector that was already
off stays off."""

from __future__ import annotations

import gc
import threading
from contextlib import ContextDecorator
from typing import Any

_lock = threading.Lock()
_pausers = 0
_resume = False


class collector_paused(ContextDecorator):  # noqa: N801 - used as a decorator, named like one
    def __enter__(self) -> collector_paused:
        global _pausers, _resume
        with _lock:
            if _pausers == 0:
                _resume = gc.isenabled()
                gc.disable()
            _pausers += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        global _pausers
        with _lock:
            _pausers -= 1
            if _pausers == 0 and _resume:
                gc.enable()
