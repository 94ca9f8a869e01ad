# The off-site backup target (not a tenant server): one account per tenant that can do
# nothing but SFTP, locked into its own directory <base>/<account> by sshd's
# ChrootDirectory, with the tenant's public key as the only way in. Run by the Hub as
# root on the target; idempotent: a second run finds everything in place.
set -euo pipefail
require HUB_BACKUP_ACCOUNT HUB_BACKUP_PUBLIC_KEY HUB_BACKUP_BASE
group=hub-backup
base="$HUB_BACKUP_BASE"
account="$HUB_BACKUP_ACCOUNT"
groupadd -f "$group"
install -d -m 0755 "$ROOT/etc/ssh/sshd_config.d" "$ROOT/etc/ssh/hub-backup-keys"
# The keys live where only root can change them, not in the account's own directory.
write_file /etc/ssh/sshd_config.d/50-hub-backup.conf 0644 <<CONF
# Tenants' backup accounts (the Hub): SFTP only, each locked into $base/<account>.
Match Group $group
    ChrootDirectory $ROOT$base/%u
    AuthorizedKeysFile $ROOT/etc/ssh/hub-backup-keys/%u
    ForceCommand internal-sftp -u 0077
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    PermitTTY no
    AllowTcpForwarding no
    AllowAgentForwarding no
    AllowStreamLocalForwarding no
    PermitTunnel no
    X11Forwarding no
CONF
if (( WROTE )); then
  sshd -t
  systemctl reload ssh
fi
if ! id -u "$account" >/dev/null 2>&1; then
  useradd --system --gid "$group" --home-dir / --no-create-home --shell /usr/sbin/nologin "$account"
fi
# sshd chroots only into a directory that is root's and writable by nobody else; the
# repository inside it is the account's alone.
install -d -m 0755 "$ROOT$base" "$ROOT$base/$account"
install -d -m 0700 "$ROOT$base/$account/repo"
chown "$account:$group" "$ROOT$base/$account/repo"
write_file "/etc/ssh/hub-backup-keys/$account" 0644 <<<"restrict $HUB_BACKUP_PUBLIC_KEY"
log "backup account $account ready"
