# Step 6: a certificate for the domain and its wildcard from Let's Encrypt, by DNS-01,
# renewed by certbot's timer. No DNS credential comes to this server: certbot's hooks
# ask the Hub, with the agent's API key, to put and remove the _acme-challenge TXT
# value, and the Hub writes it in the domain's zone. So the agent must have registered.
set -euo pipefail
require HUB_DOMAIN HUB_ADMIN_EMAIL
export DEBIAN_FRONTEND=noninteractive
agent_conf="$ROOT/etc/hub-agent/agent.conf"
if [[ ! -f "$agent_conf" ]]; then
  echo "no agent configuration at $agent_conf: DNS-01 asks the Hub with the agent's key" >&2
  exit 2
fi
apt-get install -y -qq certbot curl python3

hooks=/etc/hub/certbot
write_file "$hooks/hook.conf" 0600 <<CONF
AGENT_CONF=$agent_conf
CONF
write_file "$hooks/dns-01-hook" 0755 <<'HOOK'
#!/bin/bash
# certbot's DNS-01 hook: "put" (--manual-auth-hook) asks the Hub to add
# CERTBOT_VALIDATION at _acme-challenge.CERTBOT_DOMAIN and returns once the Hub sees
# it; "remove" (--manual-cleanup-hook) asks it to delete that value. This server holds
# no DNS credential: the agent's API key says which tenant asks, and the Hub allows
# only names under that tenant's domain.
set -euo pipefail
# Putting the value is worth minutes of retries (certbot fails without it); removing it
# is worth a few: a value left behind is harmless and removed with the tenant's records.
case "${1:-}" in
  put) method=POST retries=5 patience=240 ;;
  remove) method=DELETE retries=2 patience=30 ;;
  *) echo "usage: $0 put|remove" >&2; exit 2 ;;
esac
domain=${CERTBOT_DOMAIN:?certbot sets CERTBOT_DOMAIN}
value=${CERTBOT_VALIDATION:?certbot sets CERTBOT_VALIDATION}
if [[ ! $domain =~ ^[A-Za-z0-9.*-]+$ || ! $value =~ ^[A-Za-z0-9_-]+$ ]]; then
  echo "dns-01-hook: unexpected CERTBOT_DOMAIN or CERTBOT_VALIDATION" >&2
  exit 2
fi
# shellcheck source=/dev/null
. "${0%/*}/hook.conf"
# The Hub's address and the key file, from the agent's own configuration.
{ read -r hub_url; read -r key_file; } < <(python3 -c '
import json, os, sys
config = json.load(open(sys.argv[1]))
print(config["hub_url"].rstrip("/"))
print(config.get("api_key_file") or os.path.join(config.get("state_dir") or "/var/lib/hub-agent", "api_key"))
' "$AGENT_CONF")
key=$(<"$key_file")
# The key goes in a header read from a pipe, never on a command line.
curl --silent --show-error --fail-with-body \
  --connect-timeout 10 --max-time 60 --retry "$retries" --retry-delay 3 --retry-max-time "$patience" --retry-connrefused \
  -X "$method" -H 'Content-Type: application/json' \
  -H @<(printf 'Authorization: Bearer %s\n' "$key") \
  --data "{\"domain\": \"$domain\", \"validation\": \"$value\"}" \
  "$hub_url/api/v1/agent/acme-challenge"
echo
HOOK

if [[ ! -f "$ROOT/etc/letsencrypt/live/$HUB_DOMAIN/fullchain.pem" ]]; then
  certbot certonly --non-interactive --agree-tos --no-eff-email -m "$HUB_ADMIN_EMAIL" \
    --manual --preferred-challenges dns \
    --manual-auth-hook "$ROOT$hooks/dns-01-hook put" \
    --manual-cleanup-hook "$ROOT$hooks/dns-01-hook remove" \
    --cert-name "$HUB_DOMAIN" -d "$HUB_DOMAIN" -d "*.$HUB_DOMAIN"
fi
write_file /etc/letsencrypt/renewal-hooks/deploy/reload-nginx 0755 <<'HOOK'
#!/bin/sh
systemctl reload nginx
HOOK
# certbot's package ships the timer: `certbot -q renew` twice a day, which renews
# through the same hooks when under 30 days are left.
systemctl enable --now certbot.timer
log "tls ready"
