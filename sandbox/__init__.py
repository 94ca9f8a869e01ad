"""The provisioning sandbox: Hetzner Cloud and Cloudflare DNS emulators and sandbox
VPS hosts (real sshd on loopback addresses with stand-ins for system commands).
Plain Python; see sandbox/README.md and `python manage.py sandbox`."""
