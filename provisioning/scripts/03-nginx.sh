# Step 3: nginx as the front door for the domain and the tools' subdomains.
set -euo pipefail
require HUB_DOMAIN
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq nginx
mkdir -p "$ROOT/etc/nginx/sites-available" "$ROOT/etc/nginx/sites-enabled"
write_file "/etc/nginx/sites-available/$HUB_DOMAIN.conf" 0644 <<CONF
server {
    listen 80;
    listen [::]:80;
    server_name $HUB_DOMAIN *.$HUB_DOMAIN;
    location /.well-known/acme-challenge/ { root /var/www/letsencrypt; }
    location / { return 301 https://\$host\$request_uri; }
}
CONF
ln -sfn "../sites-available/$HUB_DOMAIN.conf" "$ROOT/etc/nginx/sites-enabled/$HUB_DOMAIN.conf"
# Applied on every run: a run that failed after writing must still apply it.
systemctl enable --now nginx
systemctl reload nginx
log "nginx ready"
