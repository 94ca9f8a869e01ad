# Step 7: the nightly backup job (02:00): dumps every tool database, keeps 7 daily and
# 4 weekly copies, syncs off-site when configured, and writes backup-status.json,
# which the agent reports to the Hub.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq cron
mkdir -p "$ROOT/opt/hub/bin" "$ROOT/var/backups/hub"
write_file /etc/cron.d/hub-backup 0644 <<'CRON'
0 2 * * * root /opt/hub/bin/backup >> /var/log/hub-backup.log 2>&1
CRON
write_file /opt/hub/bin/backup 0755 <<'SCRIPT'
#!/usr/bin/env bash
set -uo pipefail
BASE="${HOST_ROOT:-}/var/backups/hub"
day="$(date -u +%F)"
target="$BASE/daily/$day"
mkdir -p "$target" "$BASE/weekly"
started="$(date +%s)"
databases=""
for compose in "${HOST_ROOT:-}"/opt/hub/tools/*/compose.yml; do
  [[ -f "$compose" ]] || continue
  tool="$(basename "$(dirname "$compose")")"
  if docker compose -f "$compose" exec -T db pg_dumpall -U postgres > "$target/$tool.sql" 2> "$target/$tool.err"; then
    size=$(( $(stat -c %s "$target/$tool.sql") / 1048576 ))
    entry="\"$tool\": {\"status\": \"success\", \"size_mb\": $size}"
  else
    error="$(tr -d '"\\' < "$target/$tool.err" | head -c 200)"
    entry="\"$tool\": {\"status\": \"failed\", \"error\": \"$error\"}"
  fi
  rm -f "$target/$tool.err"
  databases="${databases:+$databases, }$entry"
done
# Sundays' copies are the weekly ones; keep 7 daily and 4 weekly.
if [[ "$(date -u +%u)" == 7 ]]; then cp -a "$target" "$BASE/weekly/$day"; fi
find "$BASE/daily" -mindepth 1 -maxdepth 1 -type d | sort | head -n -7 | xargs -r rm -rf
find "$BASE/weekly" -mindepth 1 -maxdepth 1 -type d | sort | head -n -4 | xargs -r rm -rf
remote='{"status": "skipped"}'
if [[ -f "${HOST_ROOT:-}/etc/hub/backup-remote" ]]; then
  if rsync -a "$BASE/" "$(cat "${HOST_ROOT:-}/etc/hub/backup-remote")"; then
    remote="{\"status\": \"success\", \"uploaded_mb\": $(( $(du -sm "$target" | cut -f1) ))}"
  else
    remote='{"status": "failed"}'
  fi
fi
duration=$(( $(date +%s) - started ))
status="$BASE/backup-status.json"
printf '{"last_run": "%s", "duration_seconds": %s, "databases": {%s}, "remote_sync": %s}\n' \
  "$(date -u +%FT%TZ)" "$duration" "$databases" "$remote" > "$status.tmp"
mv -f "$status.tmp" "$status"
SCRIPT
systemctl enable --now cron
log "backups scheduled"
