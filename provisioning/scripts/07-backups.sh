# Step 7: backups with restic (Debian's package). The nightly job (cron, 02:00) dumps
# each tool's database through its own service (pg_dump, mysqldump), takes the tools'
# other volumes and stack files as they are, and puts them in one encrypted,
# deduplicated snapshot in the tenant's off-site repository (SFTP over SSH), keeping 7
# daily and 4 weekly snapshots; backup-status.json says what happened, for the agent to
# report. `restore` brings a snapshot back. The repository's settings come from the Hub
# in this script's environment (HUB_BACKUP_*) and are written root-only to
# /etc/hub/backup; a pool server being prepared has none and gets the job alone.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq restic cron jq
install -d -m 0755 "$ROOT/opt/hub/bin"
install -d -m 0700 "$ROOT/var/backups/hub" "$ROOT/etc/hub/backup"

write_file /opt/hub/bin/hub-restic 0755 <<'SCRIPT'
#!/usr/bin/env bash
# restic on this server's off-site repository, with the settings in /etc/hub/backup
# (root only): `hub-restic snapshots`, `hub-restic check`, ...
set -euo pipefail
ROOT="${HOST_ROOT:-}"
conf="$ROOT/etc/hub/backup/restic.env"
if [[ ! -r "$conf" ]]; then
  echo "hub-restic: no off-site repository is configured ($conf)" >&2
  exit 3
fi
set -a
# shellcheck disable=SC1090 # written by the Hub's setup (07-backups.sh)
. "$conf"
set +a
exec restic --cache-dir "$ROOT/var/cache/restic" \
  -o sftp.command="ssh -F $HUB_BACKUP_SSH_CONFIG hub-backup -s sftp" "$@"
SCRIPT

write_file /opt/hub/bin/backup 0755 <<'SCRIPT'
#!/usr/bin/env bash
# The nightly backup. Each tool's database is dumped through its own service, with the
# credentials the service already has (none on this host's command lines); the dumps,
# the tools' other volumes and their stack files go into one restic snapshot off-site;
# then 7 daily and 4 weekly snapshots are kept. The databases' own volumes are not
# copied: a copy of a running database's files is not a backup, its dump is.
# Writes /var/backups/hub/backup-status.json; exits non-zero when anything failed.
set -uo pipefail
ROOT="${HOST_ROOT:-}"
BIN="$ROOT/opt/hub/bin"
STATE="$ROOT/var/backups/hub"
DUMPS="$STATE/dumps"
umask 077
started=$(date +%s)
mkdir -p "$STATE"
exec 9>"$STATE/.lock"
if ! flock -n 9; then
  echo "backup: another backup is running" >&2
  exit 1
fi
rm -rf "$DUMPS"
mkdir -p "$DUMPS"
databases='{}'
manifest="$(jq -n --arg root "$ROOT" '{root: $root, tools: {}}')"
paths=("$DUMPS")
failed=0

last_line() { tr -d '\r' < "$1" | grep -v '^[[:space:]]*$' | tail -n 1 | cut -c 1-300; }

# dump TOOL COMPOSE SERVICE: the database of SERVICE (postgres or mysql) to its file.
dump() {
  local tool="$1" compose="$2" service="$3" out err size
  out="$DUMPS/$tool/$service.sql"
  err="$DUMPS/$tool/$service.err"
  mkdir -p "$DUMPS/$tool"
  case "$service" in
    postgres)
      docker compose -f "$compose" exec -T postgres sh -c \
        'exec pg_dump -U "$POSTGRES_USER" -d "${POSTGRES_DB:-$POSTGRES_USER}" --clean --if-exists --no-owner' \
        > "$out" 2> "$err" ;;
    mysql)
      docker compose -f "$compose" exec -T mysql sh -c \
        'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" exec mysqldump -uroot --single-transaction --routines --triggers --databases "$MYSQL_DATABASE"' \
        > "$out" 2> "$err" ;;
  esac
  # shellcheck disable=SC2181 # the status of the dump just above, whichever ran
  if [[ $? -eq 0 && -s "$out" ]]; then
    size=$(( ($(stat -c %s "$out") + 524287) / 1048576 ))
    databases="$(jq --arg t "$tool" --argjson s "$size" '. + {($t): {status: "success", size_mb: $s}}' <<<"$databases")"
    manifest="$(jq --arg t "$tool" --arg s "$service" --arg f "${out#"$ROOT"}" \
      '.tools[$t].databases[$s] = $f' <<<"$manifest")"
  else
    databases="$(jq --arg t "$tool" --arg e "$(last_line "$err")" \
      '. + {($t): {status: "failed", error: (if $e == "" then "empty dump" else $e end)}}' <<<"$databases")"
    rm -f "$out"
    failed=1
  fi
  rm -f "$err"
}

for compose in "$ROOT"/opt/hub/tools/*/compose.yml; do
  [[ -f "$compose" ]] || continue
  dir="${compose%/compose.yml}"
  tool="${dir##*/}"
  paths+=("$dir")
  manifest="$(jq --arg t "$tool" --arg d "${dir#"$ROOT"}" '.tools[$t] = {stack: $d, databases: {}, volumes: {}}' <<<"$manifest")"
  dumped=()
  for service in $(docker compose -f "$compose" config --services); do
    case "$service" in
      postgres | mysql) dump "$tool" "$compose" "$service"; dumped+=("$service-data") ;;
    esac
  done
  for volume in $(docker volume ls -q --filter "label=com.docker.compose.project=$tool"); do
    key="${volume#"${tool}_"}"
    [[ " ${dumped[*]} " == *" $key "* ]] && continue
    data="$ROOT/var/lib/docker/volumes/$volume/_data"
    [[ -d "$data" ]] || continue
    paths+=("$data")
    manifest="$(jq --arg t "$tool" --arg v "$volume" --arg p "${data#"$ROOT"}" '.tools[$t].volumes[$v] = $p' <<<"$manifest")"
  done
done
printf '%s\n' "$manifest" > "$DUMPS/manifest.json"

remote='{"status": "skipped"}'
if [[ -r "$ROOT/etc/hub/backup/restic.env" ]]; then
  # shellcheck disable=SC1091 # written by the Hub's setup (07-backups.sh)
  host="$(. "$ROOT/etc/hub/backup/restic.env" && printf '%s' "$HUB_BACKUP_HOSTNAME")"
  snapshot() {
    "$BIN/hub-restic" backup --json --host "$host" --tag hub-nightly "${paths[@]}" \
      > "$STATE/restic.out" 2> "$STATE/restic.err"
  }
  # The first backup makes the repository (only when the target says there is none).
  if snapshot || { grep -q "Is there a repository at the following location" "$STATE/restic.err" \
      && "$BIN/hub-restic" init > /dev/null 2> "$STATE/restic.err" && snapshot; }; then
    added="$(grep '"message_type":"summary"' "$STATE/restic.out" | jq -s 'last | .data_added // 0')"
    uploaded="$(jq -n --argjson b "${added:-0}" '($b / 1048576 * 10 | round) / 10')"
    if "$BIN/hub-restic" forget --host "$host" --group-by host --keep-daily 7 --keep-weekly 4 --prune \
        > "$STATE/forget.out" 2> "$STATE/forget.err"; then
      remote="$(jq -n --argjson u "$uploaded" '{status: "success", uploaded_mb: $u}')"
    else
      remote="$(jq -n --arg e "uploaded, but keeping 7 daily and 4 weekly failed: $(last_line "$STATE/forget.err")" \
        '{status: "failed", error: $e}')"
      failed=1
    fi
  else
    remote="$(jq -n --arg e "$(last_line "$STATE/restic.err")" '{status: "failed", error: $e}')"
    failed=1
  fi
  rm -f "$STATE/restic.out" "$STATE/restic.err" "$STATE/forget.out" "$STATE/forget.err"
fi

status="$STATE/backup-status.json"
jq -n --arg last_run "$(date -u +%FT%TZ)" --argjson duration "$(( $(date +%s) - started ))" \
  --argjson databases "$databases" --argjson remote "$remote" \
  '{last_run: $last_run, duration_seconds: $duration, databases: $databases, remote_sync: $remote}' > "$status.tmp"
chmod 0644 "$status.tmp"
mv -f "$status.tmp" "$status"
exit "$failed"
SCRIPT

write_file /opt/hub/bin/restore 0755 <<'SCRIPT'
#!/usr/bin/env bash
# restore [--snapshot ID|latest] [TOOL ...]: bring tools back from a snapshot of the
# off-site repository (default: the latest; every tool in it unless named). For each
# tool: its stack files if they are missing, its volumes put back as they were in the
# snapshot, its databases reloaded through their own services (psql, mysql) from the
# dumps, then the whole stack started. A database keeps the tables the dump does not
# know; every table the dump has is replaced.
set -euo pipefail
ROOT="${HOST_ROOT:-}"
BIN="$ROOT/opt/hub/bin"
snapshot=latest
tools=()
while (( $# )); do
  case "$1" in
    --snapshot) snapshot="${2:?--snapshot needs an ID or latest}"; shift 2 ;;
    --snapshot=*) snapshot="${1#*=}"; shift ;;
    -h | --help) sed -n '2,7s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) echo "restore: unknown option $1" >&2; exit 2 ;;
    *) tools+=("$1"); shift ;;
  esac
done
umask 077
work="$ROOT/var/backups/hub/restore.$$"
trap 'rm -rf "$work"' EXIT
# One pass over the repository (each restic run opens it again: its key, its index, an
# SFTP session): the whole snapshot into a work directory beside the data, from where
# each piece is moved into place (a rename on the same filesystem, no second copy).
rm -rf "$work"
mkdir -p "$work"
said="$("$BIN/hub-restic" restore "$snapshot" --target "$work" 2>&1)" || {
  echo "restore: snapshot $snapshot: ${said##*$'\n'}" >&2
  exit 1
}
# "restoring <Snapshot 1a2b3c4d of [paths] at TIME by user@host> to DIR"
id="$(sed -n 's/^restoring <Snapshot \([0-9a-f]*\) .*/\1/p' <<<"$said" | head -n 1)"
echo "restoring from snapshot ${id:-$snapshot} ($(sed -n 's/^restoring <Snapshot [0-9a-f]* of .* at \(.*\) by .*/\1/p' <<<"$said" | head -n 1))"
# The snapshot's paths carry the root of the server that made it (a sandbox host's, or /).
found="$(find "$work" -path '*/var/backups/hub/dumps/manifest.json' -print -quit)"
if [[ -z "$found" ]]; then
  echo "restore: snapshot ${id:-$snapshot} holds no manifest of a Hub backup" >&2
  exit 1
fi
dumps="${found#"$work"}"
dumps="${dumps%/manifest.json}"
from="${dumps%/var/backups/hub/dumps}"
manifest="$(cat "$found")"
if (( ${#tools[@]} == 0 )); then
  mapfile -t tools < <(jq -r '.tools | keys[]' <<<"$manifest")
fi
echo "restoring ${tools[*]}"

# take PATH DESTINATION: PATH (a directory in the snapshot) becomes DESTINATION's content.
take() {
  mkdir -p "$2"
  find "$2" -mindepth 1 -delete
  if [[ -d "$work$1" ]]; then
    find "$work$1" -mindepth 1 -maxdepth 1 -exec mv -t "$2" {} +
  fi
}

for tool in "${tools[@]}"; do
  entry="$(jq -c --arg t "$tool" '.tools[$t] // empty' <<<"$manifest")"
  if [[ -z "$entry" ]]; then
    echo "restore: $tool is not in snapshot ${id:0:8}" >&2
    exit 1
  fi
  stack="$(jq -r '.stack' <<<"$entry")"
  compose="$ROOT$stack/compose.yml"
  if [[ ! -f "$compose" ]]; then
    take "$from$stack" "$ROOT$stack"
    echo "$tool: stack files restored"
  fi
  # Nothing may write while its data is replaced; the containers and volumes that are
  # gone are created again.
  docker compose -f "$compose" stop
  docker compose -f "$compose" up --no-start
  while IFS=$'\t' read -r volume path; do
    [[ -n "$volume" ]] || continue
    take "$from$path" "$ROOT$path"
    echo "$tool: volume $volume restored"
  done < <(jq -r '.volumes | to_entries[] | [.key, .value] | @tsv' <<<"$entry")
  while IFS=$'\t' read -r service file; do
    [[ -n "$service" ]] || continue
    docker compose -f "$compose" up -d "$service"
    # shellcheck disable=SC2016 # expanded by the shell in the container, with its credentials
    case "$service" in
      # Ready means listening on TCP: the images' first-start server listens only on
      # the socket, and is restarted once the database is initialised.
      postgres)
        ready='pg_isready -h 127.0.0.1 -U "$POSTGRES_USER"'
        load='exec psql -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "${POSTGRES_DB:-$POSTGRES_USER}"' ;;
      mysql)
        ready='MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mysqladmin -h 127.0.0.1 -uroot ping'
        load='MYSQL_PWD="$MYSQL_ROOT_PASSWORD" exec mysql -uroot' ;;
      *) echo "restore: no way to load a $service dump" >&2; exit 1 ;;
    esac
    for _ in $(seq 1 240); do
      if docker compose -f "$compose" exec -T "$service" sh -c "$ready" >/dev/null 2>&1; then
        break
      fi
      sleep 0.5
    done
    docker compose -f "$compose" exec -T "$service" sh -c "$load" < "$work$from$file" >/dev/null
    echo "$tool: $service database reloaded"
  done < <(jq -r '.databases | to_entries[] | [.key, .value] | @tsv' <<<"$entry")
  docker compose -f "$compose" up -d
  echo "$tool: restored"
done
SCRIPT

write_file /etc/cron.d/hub-backup 0644 <<'CRON'
0 2 * * * root /opt/hub/bin/backup >> /var/log/hub-backup.log 2>&1
CRON
systemctl enable --now cron

if [[ -z "${HUB_BACKUP_REPOSITORY:-}" ]]; then
  log "backups scheduled; no off-site repository for this server yet"
  exit 0
fi
require HUB_DOMAIN HUB_BACKUP_PASSWORD HUB_BACKUP_SSH_KEY HUB_BACKUP_SSH_HOST HUB_BACKUP_SSH_PORT \
  HUB_BACKUP_SSH_USER HUB_BACKUP_HOST_KEY
write_file /etc/hub/backup/password 0600 <<<"$HUB_BACKUP_PASSWORD"
write_file /etc/hub/backup/id_ed25519 0600 <<<"$HUB_BACKUP_SSH_KEY"
# Only the target's own key is trusted, under the alias restic's ssh connects to.
write_file /etc/hub/backup/known_hosts 0600 <<<"hub-backup $HUB_BACKUP_HOST_KEY"
write_file /etc/hub/backup/ssh_config 0600 <<CONF
Host hub-backup
    HostName $HUB_BACKUP_SSH_HOST
    Port $HUB_BACKUP_SSH_PORT
    User $HUB_BACKUP_SSH_USER
    IdentityFile $ROOT/etc/hub/backup/id_ed25519
    IdentitiesOnly yes
    HostKeyAlias hub-backup
    UserKnownHostsFile $ROOT/etc/hub/backup/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 15
    ServerAliveInterval 15
    ServerAliveCountMax 4
CONF
write_file /etc/hub/backup/restic.env 0600 <<CONF
RESTIC_REPOSITORY=$HUB_BACKUP_REPOSITORY
RESTIC_PASSWORD_FILE=$ROOT/etc/hub/backup/password
HUB_BACKUP_SSH_CONFIG=$ROOT/etc/hub/backup/ssh_config
HUB_BACKUP_HOSTNAME=$HUB_DOMAIN
CONF
# The target must let this server in now, not first at 02:00: one SFTP login (the
# repository itself is made by the first backup).
if ! sftp -F "$ROOT/etc/hub/backup/ssh_config" -b - hub-backup >/dev/null <<<'ls /'; then
  echo "the backup target $HUB_BACKUP_SSH_USER@$HUB_BACKUP_SSH_HOST does not let this server in" >&2
  exit 1
fi
log "backups scheduled to $HUB_BACKUP_SSH_USER@$HUB_BACKUP_SSH_HOST"
