"""gunicorn in the Hub image: behind nginx on the compose network, logging like every
other Hub process (settings.LOGGING: JSON lines, secrets redacted)."""

from __future__ import annotations

import os

bind = "0.0.0.0:8000"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
# scripts/web.sh starts it with the ASGI worker (hub.asgi); this file adds the rest.
worker_class = "asgi"
worker_connections = int(os.environ.get("WEB_WORKER_CONNECTIONS", "1000"))
timeout = 30
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then, staggered, so a slow leak never becomes an outage.
max_requests = 5000
max_requests_jitter = 500
# `gunicornc` (runtime control) finds the master here; the user's home is read-only.
control_socket = os.environ.get("WEB_CONTROL_SOCKET", "/tmp/gunicorn.ctl")
# nginx is the only client; it sets X-Forwarded-For and X-Forwarded-Proto.
forwarded_allow_ips = "*"
# nginx writes the access log; gunicorn's error log goes through the Hub's formatter.
accesslog = None
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "hub.logcontext.ContextFilter"},
        "redact": {"()": "hub.logjson.RedactSecretsFilter"},
    },
    "formatters": {
        "json": {"()": "hub.logjson.JsonFormatter"},
        "plain": {"()": "hub.logjson.PlainFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": os.environ.get("LOG_FORMAT", "json"),
            "filters": ["context", "redact"],
        }
    },
    "loggers": {
        "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
