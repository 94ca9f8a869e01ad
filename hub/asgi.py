"""The web process's application (scripts/web.sh: gunicorn's ASGI worker). The event
streams are async views that wait on Redis without holding a thread; every other view
is Django's usual synchronous code, run in a thread per request."""

import os
import warnings

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
# WhiteNoise answers the admin's static files with a file iterator, which Django reads
# in a thread under ASGI and warns about on every file; they are small, and that is fine.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous iterators")
application = get_asgi_application()
