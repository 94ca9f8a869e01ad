# Deprovisioning: stop and remove everything a tenant had on the server (its tool
# stacks with their volumes, the AI stack, the agent with its keys, the nginx sites,
# the certificates and the backups), so the server can be prepared for the next one.
# Idempotent: a second run finds nothing left and succeeds.
set -euo pipefail
require HUB_DOMAIN

if [[ -f "$ROOT/etc/systemd/system/hub-agent.service" ]]; then
  systemctl disable --now hub-agent || true
  rm -f "$ROOT/etc/systemd/system/hub-agent.service"
  systemctl daemon-reload
  log "agent stopped"
fi
for stack in "$ROOT"/opt/hub/tools/*/compose.yml "$ROOT/opt/hub/ai/compose.yml"; do
  [[ -f "$stack" ]] || continue
  docker compose -f "$stack" down -v
  log "removed stack $(basename "$(dirname "$stack")")"
done
# The tenant's backup repository settings (its password and key) go too; the off-site
# repository itself is left to the Hub.
rm -rf "$ROOT/opt/hub" "$ROOT/etc/hub-agent" "$ROOT/var/lib/hub-agent" "$ROOT/var/backups/hub" \
  "$ROOT/etc/hub/backup" "$ROOT/var/cache/restic"
rm -f "$ROOT/etc/nginx/sites-enabled/"*"$HUB_DOMAIN"* "$ROOT/etc/nginx/sites-available/"*"$HUB_DOMAIN"*
rm -rf "$ROOT/etc/letsencrypt/live/$HUB_DOMAIN" "$ROOT/etc/letsencrypt/archive/$HUB_DOMAIN" \
  "$ROOT/etc/letsencrypt/renewal/$HUB_DOMAIN.conf" "$ROOT/etc/hub/certbot"
if [[ -d "$ROOT/etc/nginx" ]]; then
  systemctl reload nginx || true
fi
log "wiped $HUB_DOMAIN"
