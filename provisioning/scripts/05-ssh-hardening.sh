# Step 5: SSH: keys only, no passwords; validated before the reload.
set -euo pipefail
write_file /etc/ssh/sshd_config.d/10-hub.conf 0644 <<'CONF'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
MaxAuthTries 3
X11Forwarding no
CONF
# Validated and applied on every run, so a run that failed half-way is completed.
sshd -t
systemctl reload ssh
log "ssh hardened"
