"""Container healthchecks of the Hub image (compose/docker-compose.yml).

    python compose/healthcheck.py http://127.0.0.1:8000/healthz   # 200 within 5 s
    python compose/healthcheck.py --beat                          # broker and database answer

The HTTP form sends a Host the web accepts (the first of DJANGO_ALLOWED_HOSTS) and
`X-Forwarded-Proto: https`, as nginx does, so production's HTTPS redirect and host
check answer 200 and not 301/400. Beat serves nothing to ask: it is healthy when it can
reach what it needs to do its one job, the broker it publishes to and the database
that holds its schedule. Exit 0 is healthy, anything else is not."""

from __future__ import annotations

import os
import sys
import urllib.request


def _host() -> str:
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(","):
        host = host.strip().lstrip(".")
        if host and "*" not in host:
            return host
    return "localhost"


def check_http(url: str) -> None:
    request = urllib.request.Request(url, headers={"Host": _host(), "X-Forwarded-Proto": "https"})  # noqa: S310 - a fixed local URL
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        if response.status != 200:
            raise SystemExit(f"{url} answered {response.status}")


def check_beat() -> None:
    import psycopg
    import redis

    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"], socket_timeout=5, socket_connect_timeout=5).ping()
    with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5) as connection:
        connection.execute("SELECT 1")


def main(argv: list[str]) -> None:
    if argv == ["--beat"]:
        check_beat()
    elif len(argv) == 1 and argv[0].startswith("http://127.0.0.1:"):
        check_http(argv[0])
    else:
        raise SystemExit("usage: healthcheck.py http://127.0.0.1:PORT/PATH | --beat")


if __name__ == "__main__":
    main(sys.argv[1:])
