# Step 9: one Compose stack per tool the customer chose, each behind its subdomain.
set -euo pipefail
require HUB_DOMAIN
count=0
mkdir -p "$ROOT/etc/nginx/sites-available" "$ROOT/etc/nginx/sites-enabled"
# One line per tool: name, image, port, subdomain (tab-separated).
while IFS=$'\t' read -r tool image port subdomain; do
  [[ -n "$tool" ]] || continue
  dir="/opt/hub/tools/$tool"
  write_file "$dir/compose.yml" 0644 <<COMPOSE
name: $tool
services:
  $tool:
    image: $image
    restart: unless-stopped
    labels:
      hub.component: "$tool"
    ports:
      - "127.0.0.1:$port:$port"
COMPOSE
  docker compose -f "$ROOT$dir/compose.yml" up -d
  if [[ -n "$subdomain" ]]; then
    write_file "/etc/nginx/sites-available/$tool.$HUB_DOMAIN.conf" 0644 <<CONF
server {
    listen 443 ssl;
    server_name $subdomain.$HUB_DOMAIN;
    ssl_certificate /etc/letsencrypt/live/$HUB_DOMAIN/fullchain.pem;
    ssl_certificate_key /etc/letsencrypt/live/$HUB_DOMAIN/privkey.pem;
    location / { proxy_pass http://127.0.0.1:$port; proxy_set_header Host \$host; }
}
CONF
    ln -sfn "../sites-available/$tool.$HUB_DOMAIN.conf" "$ROOT/etc/nginx/sites-enabled/$tool.$HUB_DOMAIN.conf"
  fi
  count=$((count + 1))
done <<<"${HUB_TOOLS_TSV:-}"
systemctl reload nginx
log "$count tool stacks up"
