"""The ids a log line is about (order, job, step, tenant, rollout), bound for a block
of code and attached to every record logged inside it, in any logger.

    with bind(job_id=claim.job_id, step_id=claim.step_id):
        ...  # every log line here carries job_id and step_id

The ids live in a context variable, so threads (the provisioning worker's threads
pool) and nested blocks each see their own; an inner `bind` adds to the outer ids
and the outer ones come back when it ends."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

# The ids a record may carry, in the order a JSON line shows them.
CONTEXT_KEYS = ("order_id", "job_id", "step_id", "tenant_id", "server_id", "rollout_id")

# A job's subject, as apps start jobs (`job_start(subject_type="order", ...)`), to the id it is.
SUBJECT_KEYS = {"order": "order_id", "tenant": "tenant_id", "server": "server_id", "rollout": "rollout_id"}

_EMPTY: Mapping[str, str] = MappingProxyType({})
_ids: ContextVar[Mapping[str, str]] = ContextVar("hub_log_context", default=_EMPTY)


@contextmanager
def bind(**ids: object) -> Iterator[None]:
    """Attach these ids to every record logged inside the block; None values are
    left out, unknown names are refused (a typo would silently lose the id)."""
    unknown = set(ids) - set(CONTEXT_KEYS)
    if unknown:
        raise ValueError(f"unknown log context keys: {sorted(unknown)}")
    merged = {**_ids.get(), **{key: str(value) for key, value in ids.items() if value not in (None, "")}}
    token = _ids.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _ids.reset(token)


def current() -> Mapping[str, str]:
    """The ids bound here, read-only."""
    return _ids.get()


def subject_ids(subject_type: str, subject_id: object) -> dict[str, str]:
    """The context id a job's subject stands for: ("order", 42) -> {"order_id": "42"}."""
    key = SUBJECT_KEYS.get(subject_type)
    if key is None or subject_id in (None, ""):
        return {}
    return {key: str(subject_id)}


class ContextFilter(logging.Filter):
    """Copies the bound ids onto the record (as attributes named like the ids), so a
    formatter, or a handler in another thread, finds them on the record itself. An id
    the caller passed in `extra` wins over the bound one."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _ids.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True
