# Step 4: firewall: deny by default, SSH and web open.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq ufw
ufw default deny incoming
ufw default allow outgoing
ufw allow 22/tcp
ufw allow 80/tcp
ufw allow 443/tcp
ufw --force enable
ufw status verbose
log "firewall ready"
