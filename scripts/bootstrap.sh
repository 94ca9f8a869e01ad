#!/usr/bin/env bash
# Brings a machine from nothing to ready: OS packages, the virtualenv with the pinned
# requirements, PostgreSQL and Redis reachable, the database created and migrated.
# Idempotent: on a machine that has everything it only checks.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Settings may come from .env; the environment wins.
if [[ -f .env ]]; then
  while IFS='=' read -r key value; do
    [[ -z "$key" || "$key" == \#* ]] && continue
    # A quoted value (KEY="a b") is read without its quotes, as django-environ reads it.
    if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then value="${BASH_REMATCH[1]}"; fi
    [[ -z "${!key:-}" ]] && export "$key=$value"
  done < .env
fi
export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/hub}"
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0}"

log() { printf '\033[1;34m[bootstrap]\033[0m %s\n' "$*" >&2; }

need_pkgs=()
command -v psql >/dev/null || need_pkgs+=(postgresql postgresql-client)
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v redis-cli >/dev/null || need_pkgs+=(redis-tools)
[[ -x /usr/sbin/sshd ]] || need_pkgs+=(openssh-server)
command -v ssh-keygen >/dev/null || need_pkgs+=(openssh-client)
command -v shellcheck >/dev/null || need_pkgs+=(shellcheck)
command -v curl >/dev/null || need_pkgs+=(curl)
# Sandbox hosts run the real restic and jq (backups) and gpg (apt keys); the sandbox's
# backup target reads its users through nss_wrapper.
command -v restic >/dev/null || need_pkgs+=(restic)
command -v jq >/dev/null || need_pkgs+=(jq)
command -v gpg >/dev/null || need_pkgs+=(gpg)
[[ -e /usr/lib/x86_64-linux-gnu/libnss_wrapper.so ]] || need_pkgs+=(libnss-wrapper)
# The agent runs under the system python on a (sandbox) server: it needs requests.
/usr/bin/python3 -c "import requests" 2>/dev/null || need_pkgs+=(python3-requests)
# The sandbox's docker stand-in loads compose files as Compose does: YAML, then the
# Compose schema (it runs under the system python, without the virtualenv).
/usr/bin/python3 -c "import yaml" 2>/dev/null || need_pkgs+=(python3-yaml)
/usr/bin/python3 -c "import jsonschema" 2>/dev/null || need_pkgs+=(python3-jsonschema)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_pkgs+=(python3-venv)
command -v pg_isready >/dev/null || need_pkgs+=(postgresql-client)
# The browser tests (tests/ui, playwright) drive Debian's Chromium, not a downloaded one.
[[ -x /usr/bin/chromium ]] || need_pkgs+=(chromium)
# `make bench` drives the heartbeat load with wrk (a Python generator stands in without it).
command -v wrk >/dev/null || need_pkgs+=(wrk)
if (( ${#need_pkgs[@]} )); then
  if [[ $(id -u) -ne 0 ]]; then
    log "missing OS packages: ${need_pkgs[*]} (run as root or install them)"; exit 1
  fi
  log "installing OS packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# The virtualenv, reinstalled only when a requirements file changed.
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.requirements-stamp
want="$(cat requirements/*.txt | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  log "installing pinned requirements"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements/dev.txt
  echo "$want" > "$stamp"
fi

# PostgreSQL: use the one that answers; otherwise start the local cluster.
pg_host_port() { .venv/bin/python - <<'PY'
import os, urllib.parse as u
p = u.urlparse(os.environ["DATABASE_URL"])
print(p.hostname or "127.0.0.1", p.port or 5432, p.path.lstrip("/") or "hub")
PY
}
read -r PGH PGP PGDB < <(pg_host_port)
if ! pg_isready -q -h "$PGH" -p "$PGP"; then
  log "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null && [[ -n "$(ls /etc/postgresql 2>/dev/null)" ]]; then
    ver="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -1)"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -q -h "$PGH" -p "$PGP" && break; sleep 1; done
  pg_isready -q -h "$PGH" -p "$PGP" || { log "PostgreSQL does not answer on $PGH:$PGP"; exit 1; }
fi
# A fresh Debian cluster wants a password over TCP: give the local superuser the one
# the default DATABASE_URL carries (only on this machine's own cluster, as root).
if ! psql "$DATABASE_URL" -Atc 'select 1' >/dev/null 2>&1 && ! psql "${DATABASE_URL%/*}/postgres" -Atc 'select 1' >/dev/null 2>&1; then
  if [[ "$PGH" == 127.0.0.1 || "$PGH" == localhost ]] && [[ $(id -u) -eq 0 ]]; then
    log "setting the local postgres role's password for TCP logins"
    runuser -u postgres -- psql -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
  fi
fi
if ! psql "${DATABASE_URL%/*}/postgres" -Atc "select 1 from pg_database where datname='$PGDB'" | grep -q 1; then
  log "creating database $PGDB"
  psql "${DATABASE_URL%/*}/postgres" -qc "CREATE DATABASE \"$PGDB\""
fi

# Redis: use the one that answers; otherwise start a local one that keeps nothing on disk.
if ! redis-cli -u "$CELERY_BROKER_URL" ping >/dev/null 2>&1; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/hub-redis.log"
  for _ in $(seq 1 20); do redis-cli -u "$CELERY_BROKER_URL" ping >/dev/null 2>&1 && break; sleep 0.5; done
  redis-cli -u "$CELERY_BROKER_URL" ping >/dev/null
fi

if [[ "${BOOTSTRAP_SKIP_MIGRATE:-0}" != 1 ]]; then
  log "migrating"
  .venv/bin/python manage.py migrate --noinput -v0
fi
log "ready"
