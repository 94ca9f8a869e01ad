#!/usr/bin/env bash
# `make demo`: the whole story on this machine, on loopback. Starts the sandbox (the
# Hetzner, Cloudflare and Stripe emulators and three sandbox hosts), then the Hub: web
# (scripts/web.sh), workers (provisioning on threads, the other queues on processes), beat
# and Flower. Then it tells the story (manage.py demo_story): three paid checkouts
# arrive as signed Stripe webhooks, each order is provisioned over SSH with a progress
# bar, the agents heartbeat, a staged rollout goes across the new tenants. It prints
# the admin URL with a login and the Flower URL, and runs until Ctrl-C, which stops
# everything this script started and nothing else.
#
# The demo has a database (DEMO_DB, default hub_demo), a Redis database (DEMO_REDIS_DB,
# default 2) and a state directory (DEMO_DIR, default var/demo) of its own, made afresh
# on every run, so it never touches development data.
# DEMO_EXIT=1 stops everything once the story is told and exits with its outcome (CI).
# DEMO_PORT (8000) and DEMO_FLOWER_PORT (5555) move the web and Flower.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
PORT="${DEMO_PORT:-8000}"
FLOWER_PORT="${DEMO_FLOWER_PORT:-5555}"
HOSTS="${DEMO_HOSTS:-3}"
RUN_DIR="${DEMO_DIR:-$ROOT/var/demo}"
DEMO_DB="${DEMO_DB:-hub_demo}"
DEMO_REDIS_DB="${DEMO_REDIS_DB:-2}"

say() { printf '\033[1;32m[demo]\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31m[demo]\033[0m %s\n' "$*" >&2; exit 1; }

[[ "$DEMO_DB" =~ ^[a-z0-9_]*demo[a-z0-9_]*$ ]] || fail "DEMO_DB must name a demo database (it is dropped on every run): $DEMO_DB"
[[ "$DEMO_REDIS_DB" =~ ^[0-9]+$ ]] || fail "DEMO_REDIS_DB must be a Redis database number"
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$PORT" "$FLOWER_PORT"; do
  port_free "$p" || fail "port $p is taken; set DEMO_PORT / DEMO_FLOWER_PORT"
done

# --- where the demo keeps its state: its own database, Redis database and directory ---
env_file_value() {
  if [[ -f .env ]]; then sed -n "s/^$1=//p" .env | tail -1; fi
}
base_db="${DATABASE_URL:-$(env_file_value DATABASE_URL)}"
base_db="${base_db:-postgres://postgres:postgres@127.0.0.1:5432/hub}"
base_redis="${CELERY_BROKER_URL:-$(env_file_value CELERY_BROKER_URL)}"
base_redis="${base_redis:-redis://127.0.0.1:6379/0}"
export DJANGO_SETTINGS_MODULE=hub.settings
export DATABASE_URL="${base_db%/*}/$DEMO_DB"
export CELERY_BROKER_URL="${base_redis%/*}/$DEMO_REDIS_DB"
export REDIS_URL="$CELERY_BROKER_URL" RATE_LIMIT_REDIS_URL="$CELERY_BROKER_URL"
export HUB_PUBLIC_URL="http://127.0.0.1:$PORT"
# Fast enough to watch: short retries and waits, heartbeats every 3 s, no warm-pool
# purchases (the three sandbox hosts are the pool).
export PROVISIONING_RETRY_BASE_DELAY=1 PROVISIONING_SCRIPT_ATTEMPTS=3 HCLOUD_POLL_INTERVAL=0.2
export PROVISIONING_SSH_WAIT_SECONDS=60 PROVISIONING_AGENT_WAIT_SECONDS=90 PROVISIONING_MANUAL_POLL_SECONDS=120
export AGENT_HEARTBEAT_INTERVAL=3 ROLLOUT_HEARTBEAT_STALE_INTERVALS=5
export POOL_TARGET_EU_BUILD=0 POOL_TARGET_US_BUILD=0
export EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend EMAIL_FILE_PATH="$RUN_DIR/mail"

pids=()
stopping=0
cleanup() {
  (( stopping )) && return
  stopping=1
  trap '' INT TERM
  say "stopping everything the demo started"
  # Each process leads its own process group (setsid): the group takes its children along.
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  if [[ -d "$RUN_DIR/sandbox" ]]; then
    "$PY" manage.py sandbox down --state-dir "$RUN_DIR/sandbox" >>"$RUN_DIR/sandbox.log" 2>&1 || true
  fi
  say "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() {  # name, command...
  local name="$1"; shift
  setsid "$@" >"$RUN_DIR/$name.log" 2>&1 &
  pids+=("$!")
  say "started $name (pid $!, log ${RUN_DIR#"$ROOT"/}/$name.log)"
}

free_port() { "$PY" -c 'from sandbox.control import free_port; print(free_port())'; }

# A leftover sandbox from an interrupted run goes before its directory does.
if [[ -d "$RUN_DIR/sandbox" ]]; then
  "$PY" manage.py sandbox down --state-dir "$RUN_DIR/sandbox" >/dev/null 2>&1 || true
fi
rm -rf "$RUN_DIR/sandbox" "$RUN_DIR/mail"
rm -f "$RUN_DIR"/*.log "$RUN_DIR"/*.pid "$RUN_DIR/sandbox.env"
mkdir -p "$RUN_DIR/mail"

say "database $DEMO_DB and Redis database $DEMO_REDIS_DB, made afresh"
admin_db="${DATABASE_URL%/*}/postgres"
export PGOPTIONS="-c client_min_messages=warning"
psql "$admin_db" -qc "DROP DATABASE IF EXISTS \"$DEMO_DB\" WITH (FORCE)" >/dev/null
psql "$admin_db" -qc "CREATE DATABASE \"$DEMO_DB\"" >/dev/null
redis-cli -u "$CELERY_BROKER_URL" flushdb >/dev/null
"$PY" manage.py migrate --noinput -v0

# A staff login for the admin, made once and kept in var/ (never in the repository).
CRED="$ROOT/var/demo-login"
mkdir -p "${CRED%/*}"
if [[ ! -f "$CRED" ]]; then
  (umask 077; printf 'admin %s\n' "$("$PY" -c 'import secrets; print(secrets.token_urlsafe(12))')" > "$CRED")
fi
read -r ADMIN_USER ADMIN_PASSWORD < "$CRED"
ADMIN_USER="$ADMIN_USER" ADMIN_PASSWORD="$ADMIN_PASSWORD" "$PY" manage.py demo_setup

say "starting the sandbox: Hetzner and Cloudflare emulators and $HOSTS sandbox hosts"
"$PY" manage.py sandbox up --hosts "$HOSTS" --state-dir "$RUN_DIR/sandbox" --env-file "$RUN_DIR/sandbox.env" \
  --ssh-port 0 --hetzner-port 0 --cloudflare-port 0 --action-seconds 0.2 2>>"$RUN_DIR/sandbox.log" \
  || fail "the sandbox did not come up; see ${RUN_DIR#"$ROOT"/}/sandbox.log and sandbox/supervisor.log"
set -a
# shellcheck source=/dev/null
. "$RUN_DIR/sandbox.env"
set +a
say "sandbox hosts: $SANDBOX_HOSTS"
STRIPE_PORT="$(free_port)"
export STRIPE_API_BASE="http://127.0.0.1:$STRIPE_PORT"
start stripe "$PY" -m sandbox.stripe_emulator --port "$STRIPE_PORT"

CELERY=("$ROOT/.venv/bin/celery" -A hub)
# The web process as production runs it: gunicorn's ASGI worker, static files, event streams.
WEB_GRACEFUL_TIMEOUT=5 start web bash scripts/web.sh --bind "127.0.0.1:$PORT" --access-logfile -
# Provisioning waits on SSH most of the time: threads, as in production.
start worker-provisioning "${CELERY[@]}" worker -Q provisioning -P threads -c 6 -n "demo-provisioning@%h" -l INFO
start worker "${CELERY[@]}" worker -Q rollouts,monitoring,billing,default -c 2 -n "demo@%h" -l INFO
start beat "${CELERY[@]}" beat -l INFO --scheduler django_celery_beat.schedulers:DatabaseScheduler \
  --pidfile "$RUN_DIR/beat.pid"
start flower "${CELERY[@]}" flower --address=127.0.0.1 --port="$FLOWER_PORT"

ready=0
for _ in $(seq 1 180); do
  if curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && curl -fsS "http://127.0.0.1:$FLOWER_PORT/" >/dev/null 2>&1 \
     && curl -fsS "$STRIPE_API_BASE/__sandbox/health" >/dev/null 2>&1 \
     && grep -q "ready." "$RUN_DIR/worker.log" && grep -q "ready." "$RUN_DIR/worker-provisioning.log"; then
    ready=1; break
  fi
  sleep 0.5
done
(( ready )) || fail "the Hub did not come up; see ${RUN_DIR#"$ROOT"/}/*.log"
say "the Hub is up at $HUB_PUBLIC_URL"

story=0
"$PY" manage.py demo_story --hub-url "$HUB_PUBLIC_URL" --hosts "$SANDBOX_HOSTS" || story=$?
(( story == 130 )) && exit 130  # Ctrl-C during the story

cat <<MSG

  The Hub is up.
    admin   http://127.0.0.1:$PORT/admin/   login: $ADMIN_USER / $ADMIN_PASSWORD
    flower  http://127.0.0.1:$FLOWER_PORT/
    health  http://127.0.0.1:$PORT/readyz
  Logs in ${RUN_DIR#"$ROOT"/}/; the sandbox: SANDBOX_DIR=${RUN_DIR#"$ROOT"/}/sandbox manage.py sandbox status
  Ctrl-C stops everything this demo started.

MSG
say "up and told in ${SECONDS}s"
if (( story )); then
  say "the story did not end as it should (exit $story); the logs are in ${RUN_DIR#"$ROOT"/}/"
fi

if [[ "${DEMO_EXIT:-0}" == 1 ]]; then
  exit "$story"
fi
while true; do sleep 1; done
