"""A base for the Hub's own middleware, which Django must be able to run both ways: the
event streams are served by Django's ASGI handler (hub/asgi.py), and a sync-only
middleware there would turn a stream's async body into a sync one."""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction


class SyncAndAsyncMiddleware:
    """Subclasses answer in `__call__` (sync) and `__acall__` (async); `__call__` first
    hands an async request on with `if self.async_mode: return self.__acall__(request)`."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        raise NotImplementedError
