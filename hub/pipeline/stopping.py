"""Whether this worker was told to shut down, as seen from any of its processes.

A worker runs on the steps its records claim (claim-next-in-record) only while it is
not shutting down: on a deploy's warm shutdown it ends the step it is running and hands
the next one to the broker, for the next worker. Celery tells only its main process
(the `worker_shutting_down` signal), while a prefork worker runs steps in child
processes forked from it: the flag lives in one byte of memory the main process maps,
shared, before it forks its pool, so every child reads what the main process writes."""

from __future__ import annotations

import mmap

_flag = mmap.mmap(-1, 1, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)


def mark_stopping() -> None:
    _flag[0] = 1


def worker_stopping() -> bool:
    return _flag[0] == 1
