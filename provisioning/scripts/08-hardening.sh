# Step 8: kernel and service limits for a host full of containers; log rotation.
set -euo pipefail
write_file /etc/sysctl.d/90-hub.conf 0644 <<'CONF'
vm.swappiness = 10
fs.inotify.max_user_watches = 524288
net.core.somaxconn = 4096
CONF
sysctl --system >/dev/null
write_file /etc/logrotate.d/hub 0644 <<'CONF'
/var/log/hub-*.log {
  weekly
  rotate 4
  compress
  missingok
}
CONF
systemctl enable --now fail2ban
log "hardening done"
