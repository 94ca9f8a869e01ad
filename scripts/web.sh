#!/usr/bin/env bash
# The web process, the one way it starts (make demo, the compose image, the tests and
# the benches): the admin's static files collected into STATIC_ROOT (collectstatic copies
# only what changed), then gunicorn with its own ASGI worker serving hub.asgi, which
# answers the API, the admin (static files through WhiteNoise) and the event streams.
# An open event stream is a coroutine waiting on Redis, not a thread, so idle streams
# cost next to nothing; every other request goes to Django's WSGI handler in a pool of
# WEB_THREADS threads (hub/asgi.py).
#
#   bash scripts/web.sh --bind 127.0.0.1:8000 [other gunicorn options]
#
# Environment: WEB_BIND (the address when --bind is not given; 127.0.0.1:8000),
# WEB_CONCURRENCY (worker processes; 2), WEB_WORKER_CONNECTIONS (open connections per
# process, streams included; 1000), WEB_GRACEFUL_TIMEOUT (seconds a stopping worker
# waits for its requests; 10), WEB_COLLECTSTATIC (0 skips it: an image that collected
# at build time), WEB_CONTROL_SOCKET (gunicorn's control socket; none unless set, so
# # several web processes can run side by side), WEB_THREADS (threads per process for
# everything but the streams; 8), each keeping its database connection.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3 || command -v python)"; fi

bind="${WEB_BIND:-127.0.0.1:8000}"
passthrough=()
while (( $# )); do
  case "$1" in
    --bind|-b) [[ $# -ge 2 ]] || { echo "web.sh: $1 needs ADDR:PORT" >&2; exit 2; }; bind="$2"; shift 2 ;;
    --bind=*) bind="${1#--bind=}"; shift ;;
    *) passthrough+=("$1"); shift ;;
  esac
done

control=(--no-control-socket)
if [[ -n "${WEB_CONTROL_SOCKET:-}" ]]; then control=(--control-socket "$WEB_CONTROL_SOCKET"); fi

if [[ "${WEB_COLLECTSTATIC:-1}" != 0 ]]; then
  "$PY" manage.py collectstatic --noinput -v0
fi

exec "$PY" -m gunicorn hub.asgi:application \
  --worker-class asgi \
  --bind "$bind" \
  --workers "${WEB_CONCURRENCY:-2}" \
  --worker-connections "${WEB_WORKER_CONNECTIONS:-1000}" \
  --graceful-timeout "${WEB_GRACEFUL_TIMEOUT:-10}" \
  "${control[@]}" \
  "${passthrough[@]}"
