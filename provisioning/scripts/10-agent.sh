# Step 10: the AI stack and the agent. The agent gets a one-time registration token
# (readable by root only, and only while it has not registered: it removes the file
# once it has), is installed from the bundle the Hub uploaded, and started. The AI
# stack's compose file comes from the Hub, its images pinned from the order's releases.
set -euo pipefail
require HUB_DOMAIN HUB_URL HUB_REGISTRATION_TOKEN HUB_AGENT_BUNDLE_B64 HUB_AI_COMPOSE_B64
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq python3 python3-requests

install -d -m 0755 "$ROOT/opt/hub/agent"
base64 -d <<<"$HUB_AGENT_BUNDLE_B64" | tar -xz -C "$ROOT/opt/hub/agent"
install -d -m 0700 "$ROOT/etc/hub-agent" "$ROOT/var/lib/hub-agent"

# A token is only worth writing while the agent has not registered yet.
if [[ ! -s "$ROOT/var/lib/hub-agent/api_key" ]]; then
  (umask 077; printf '%s\n' "$HUB_REGISTRATION_TOKEN" > "$ROOT/etc/hub-agent/registration-token")
fi
write_file /etc/hub-agent/agent.conf 0600 <<CONF
{
  "hub_url": "$HUB_URL",
  "domain": "$HUB_DOMAIN",
  "host_root": "$ROOT",
  "state_dir": "$ROOT/var/lib/hub-agent",
  "registration_token_file": "$ROOT/etc/hub-agent/registration-token",
  "heartbeat_interval": ${HUB_HEARTBEAT_INTERVAL:-60}
}
CONF

ai_compose="$(base64 -d <<<"$HUB_AI_COMPOSE_B64")"
write_file /opt/hub/ai/compose.yml 0644 <<<"$ai_compose"
docker compose -f "$ROOT/opt/hub/ai/compose.yml" up -d

write_file /etc/systemd/system/hub-agent.service 0644 <<UNIT
[Unit]
Description=Hub agent
After=network-online.target docker.service
Wants=network-online.target

[Service]
Environment=HUB_AGENT_CONFIG=$ROOT/etc/hub-agent/agent.conf
Environment=HOST_ROOT=$ROOT
WorkingDirectory=$ROOT/opt/hub/agent
ExecStart=/usr/bin/python3 -m agent
Restart=always
RestartSec=5
NoNewPrivileges=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable hub-agent
# Started here, once: restart also picks up a new bundle or configuration on a re-run.
systemctl restart hub-agent
log "agent started"
