"""The web process's application (scripts/web.sh: gunicorn's ASGI worker).

Two doors behind one port. The event streams are async views: an open stream is a
coroutine waiting on Redis, not a thread, so Django's ASGI handler serves them. Every
other request (the API, the admin, the agents' heartbeats) goes to Django's WSGI
handler through a2wsgi, in a pool of WEB_THREADS threads each with its own persistent
database connection. Django's ASGI handler would run all that synchronous code in one
thread per process (thread-sensitive sync_to_async) and measured at a quarter of the
heartbeat throughput of the same code under WSGI."""

import os
import re
import warnings
from typing import Any

from a2wsgi import WSGIMiddleware
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
# WhiteNoise answers the admin's static files with a file iterator, which Django reads
# in a thread under ASGI and warns about on every file; they are small, and that is fine.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous iterators")

# The routes of ops/urls.py that stream (DESIGN.md: the event streams).
STREAM_PATH = re.compile(r"^/api/v1/(events|orders/\d+/events)/?$")

streams = get_asgi_application()
synchronous = WSGIMiddleware(get_wsgi_application(), workers=int(os.environ.get("WEB_THREADS", "8")))  # type: ignore[arg-type]


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and not STREAM_PATH.match(scope["path"]):
        await synchronous(scope, receive, send)  # type: ignore[arg-type]
    else:
        await streams(scope, receive, send)
