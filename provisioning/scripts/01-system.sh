# Step 1: base system: hostname, time, packages, unattended upgrades, Hub directories.
set -euo pipefail
require HUB_DOMAIN
log "system setup for $HUB_DOMAIN"
write_file /etc/hostname 0644 <<<"${HUB_DOMAIN//./-}"
hostnamectl set-hostname "${HUB_DOMAIN//./-}"
timedatectl set-timezone UTC
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq ca-certificates curl gnupg jq unattended-upgrades fail2ban logrotate
write_file /etc/apt/apt.conf.d/20auto-upgrades 0644 <<'CONF'
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
CONF
mkdir -p "$ROOT/opt/hub/tools" "$ROOT/opt/hub/ai" "$ROOT/var/backups/hub" "$ROOT/etc/hub"
log "system ready"
