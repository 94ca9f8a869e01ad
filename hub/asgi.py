"""The web process's application (scripts/web.sh: gunicorn's ASGI worker). The event
streams are async views that wait on Redis without holding a thread; every other view
is Django's usual synchronous code, run in a thread per request."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
application = get_asgi_application()
