# Step 6: a wildcard certificate for the domain, renewed by certbot's timer.
set -euo pipefail
require HUB_DOMAIN HUB_ADMIN_EMAIL
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq certbot
if [[ ! -f "$ROOT/etc/letsencrypt/live/$HUB_DOMAIN/fullchain.pem" ]]; then
  certbot certonly --non-interactive --agree-tos -m "$HUB_ADMIN_EMAIL" \
    --preferred-challenges dns --manual-auth-hook /etc/hub/dns-auth-hook \
    -d "$HUB_DOMAIN" -d "*.$HUB_DOMAIN"
fi
write_file /etc/letsencrypt/renewal-hooks/deploy/reload-nginx 0755 <<'HOOK'
#!/bin/sh
systemctl reload nginx
HOOK
systemctl enable --now certbot.timer
log "tls ready"
