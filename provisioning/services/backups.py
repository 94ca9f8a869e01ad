"""Off-site backups: each tenant's restic repository on the backup target (an account
there that can only reach its own directory, authorised over SSH by the Hub), and the
settings 07-backups.sh writes onto the tenant's server. The repository's password and
the tenant's SSH key travel only in that script's environment (never on a command line,
never in a log), from their encrypted columns."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings

from provisioning.services import remote
from tenants.models import BackupRepository
from tenants.services import backup_repository_ensure, backup_repository_mark_authorized


def backup_target_configured() -> bool:
    return bool(settings.BACKUP_TARGET_HOST)


def backup_target_authorize(repository: BackupRepository, *, log: Callable[[str], None]) -> None:
    """Make (or confirm) the tenant's account on the target with its public key."""
    env = {
        "HUB_BACKUP_ACCOUNT": repository.account,
        "HUB_BACKUP_PUBLIC_KEY": repository.ssh_public_key,
        "HUB_BACKUP_BASE": settings.BACKUP_TARGET_BASE_PATH,
    }
    remote.run_on_backup_target(name="backup-target", script=remote.step_script("backup-target"), env=env, log=log)
    backup_repository_mark_authorized(repository_id=repository.pk)


def backup_script_env(*, tenant_id: int, log: Callable[[str], None]) -> dict[str, str]:
    """What 07-backups.sh needs to write the tenant's repository settings: the
    repository made (once) and authorised on the target (every time: idempotent)."""
    if not backup_target_configured():
        log("no backup target configured (BACKUP_TARGET_HOST): this server gets no off-site backups")
        return {}
    repository = backup_repository_ensure(
        tenant_id=tenant_id, host=settings.BACKUP_TARGET_HOST, port=settings.BACKUP_TARGET_PORT, actor="provisioning"
    )
    backup_target_authorize(repository, log=log)
    log(f"off-site repository {repository.url}")
    return {
        "HUB_BACKUP_REPOSITORY": repository.url,
        "HUB_BACKUP_PASSWORD": repository.password,
        "HUB_BACKUP_SSH_KEY": repository.ssh_private_key,
        "HUB_BACKUP_SSH_HOST": settings.BACKUP_TARGET_HOST,
        "HUB_BACKUP_SSH_PORT": str(settings.BACKUP_TARGET_PORT),
        "HUB_BACKUP_SSH_USER": repository.account,
        "HUB_BACKUP_HOST_KEY": settings.BACKUP_TARGET_HOST_KEY,
    }
