#!/bin/bash
# The ForceCommand of every sandbox host session: start in the host's own home (sshd
# itself starts in the real /root, where relative paths would land on this machine),
# then run what the client asked for exactly as sshd would have.
cd "$HOME" || exit 1
case "${SSH_ORIGINAL_COMMAND-}" in
    "") exec /bin/bash -i ;;
    /usr/lib/openssh/sftp-server) exec /usr/lib/openssh/sftp-server -d "$HOME" ;;
    *) exec /bin/bash -c "$SSH_ORIGINAL_COMMAND" ;;
esac
