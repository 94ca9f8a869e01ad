"""The tenant's off-site backup repository: its URL, password and SSH key (stored
encrypted), made once per tenant."""

from __future__ import annotations

import secrets

from django.db import transaction
from django.utils import timezone

from hub.audit import audit_record
from tenants.models import (
    BackupRepository,
    Tenant,
)


def backup_account_name(tenant_id: int) -> str:
    """The tenant's account on the backup target (a Unix user name: at most 32 characters)."""
    return f"tenant-{tenant_id}"


def _ssh_key_pair() -> tuple[str, str]:
    """A new ed25519 key pair: (OpenSSH private key, `ssh-ed25519 AAAA...` public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


@transaction.atomic
def backup_repository_ensure(*, tenant_id: int, host: str, port: int, actor: str) -> BackupRepository:
    """The tenant's repository, made once: an account on the backup target, a repository
    password and an SSH key of its own (none of them ever shown or logged)."""
    tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
    existing = BackupRepository.objects.filter(tenant=tenant).first()
    if existing is not None:
        return existing
    account = backup_account_name(tenant.pk)
    private, public = _ssh_key_pair()
    repository = BackupRepository.objects.create(
        tenant=tenant,
        url=f"sftp://{account}@{host}:{port}//repo",
        account=account,
        password=secrets.token_urlsafe(32),
        ssh_private_key=private,
        ssh_public_key=f"{public} {account}",
    )
    audit_record(
        actor=actor,
        action="backup_repository.create",
        object_type="tenant",
        object_id=tenant.pk,
        new={"url": repository.url, "account": account},
    )
    return repository


@transaction.atomic
def backup_repository_mark_authorized(*, repository_id: int) -> None:
    BackupRepository.objects.filter(pk=repository_id).update(authorized_at=timezone.now(), updated_at=timezone.now())
