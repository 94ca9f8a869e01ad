# Step 2: Docker engine with the compose plugin, log rotation and live restore.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v docker >/dev/null 2>&1 || ! docker version >/dev/null 2>&1; then
  apt-get install -y -qq docker.io docker-compose-plugin
fi
write_file /etc/docker/daemon.json 0644 <<'CONF'
{
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "3"},
  "live-restore": true
}
CONF
if (( WROTE )); then
  systemctl restart docker
fi
systemctl enable --now docker
docker version
log "docker ready"
