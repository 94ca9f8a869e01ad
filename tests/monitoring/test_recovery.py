"""Recovery rehearsed against the sandbox: the restore drill restores a tenant's latest
off-site backup (a real restic repository on the real SFTP backup target) and notices a
corrupted one; the Hub restored from its own backup reaches a tenant and reads its
secrets."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.test import override_settings
from pyrage import x25519

from hub.models import Alert, AlertStatus
from monitoring.models import HubBackupStatus, RestoreDrill, RestoreDrillOutcome
from monitoring.services.backup import BackupError, hub_backup_run, hub_keys_restore, hub_keys_write
from monitoring.services.restore_drill import restic_for, restore_drills_run
from provisioning.models import Server, ServerProvider, ServerStatus
from provisioning.services.backups import backup_target_authorize
from provisioning.services.remote import run_on_server
from sandbox.control import Sandbox, free_port
from tenants.models import BackupRepository, Tenant
from tenants.services import backup_repository_ensure
from tests import conftest
from tests.factories import healthy_fleet
from tests.monitoring.test_hub_backup import admin_conn

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = Sandbox(
        state_dir=tmp_path_factory.mktemp("sandbox"),
        hosts_count=1,
        ssh_port=free_port(),
        hetzner_port=free_port(),
        cloudflare_port=free_port(),
        action_seconds=0.1,
    ).up()
    yield box
    box.down()


@pytest.fixture
def target(sandbox: Sandbox, tmp_path: Path) -> Iterator[Sandbox]:
    env = sandbox.env
    with override_settings(
        BACKUP_TARGET_HOST=env["BACKUP_TARGET_HOST"],
        BACKUP_TARGET_PORT=int(env["BACKUP_TARGET_PORT"]),
        BACKUP_TARGET_USER="root",
        BACKUP_TARGET_BASE_PATH=env["BACKUP_TARGET_BASE_PATH"],
        BACKUP_TARGET_HOST_KEY=env["BACKUP_TARGET_HOST_KEY"],
        HUB_SSH_PRIVATE_KEY_PATH=env["HUB_SSH_PRIVATE_KEY_PATH"],
        RESTORE_DRILL_SCRATCH_DIR=str(tmp_path / "scratch"),
    ):
        yield sandbox


def server_tree(root: Path) -> list[Path]:
    """What a tenant server's nightly job puts in a snapshot: the dumps with their
    manifest, a tool's volume, its stack files."""
    dumps = root / "var/backups/hub/dumps"
    (dumps / "nextcloud").mkdir(parents=True)
    (dumps / "nextcloud/postgres.sql").write_text("CREATE TABLE files (id integer);\n")
    volume = root / "var/lib/docker/volumes/nextcloud_nextcloud-data/_data"
    volume.mkdir(parents=True)
    (volume / "photo.jpg").write_bytes(os.urandom(256 * 1024))
    stack = root / "opt/hub/tools/nextcloud"
    stack.mkdir(parents=True)
    (stack / "compose.yml").write_text("name: nextcloud\n")
    manifest = {
        "root": str(root),
        "tools": {
            "nextcloud": {
                "stack": "/opt/hub/tools/nextcloud",
                "databases": {"postgres": "/var/backups/hub/dumps/nextcloud/postgres.sql"},
                "volumes": {"nextcloud_nextcloud-data": "/var/lib/docker/volumes/nextcloud_nextcloud-data/_data"},
            }
        },
    }
    (dumps / "manifest.json").write_text(json.dumps(manifest))
    return [dumps, volume, stack]


def backed_up_tenant(sandbox: Sandbox, tmp_path: Path, name: str) -> tuple[Tenant, BackupRepository]:
    """A tenant whose repository is made on the target the way provisioning makes it,
    holding one nightly snapshot as the tenant's server would write it (restic over SFTP
    with the tenant's own key)."""
    (tenant,) = healthy_fleet(1)
    Tenant.objects.filter(pk=tenant.pk).update(domain=f"{name}.example.com")
    tenant.refresh_from_db()
    env = sandbox.env
    repository = backup_repository_ensure(
        tenant_id=tenant.pk, host=env["BACKUP_TARGET_HOST"], port=int(env["BACKUP_TARGET_PORT"]), actor="test"
    )
    backup_target_authorize(repository, log=lambda line: None)
    repository.refresh_from_db()
    server = tmp_path / f"server-{name}"
    paths = server_tree(server)
    work = tmp_path / f"restic-{name}"
    work.mkdir()
    with restic_for(repository, work) as restic:
        restic.ok("init")
        restic.ok("backup", "--host", tenant.domain, "--tag", "hub-nightly", *map(str, paths))
    return tenant, repository


def repository_dir(sandbox: Sandbox, repository: BackupRepository) -> Path:
    return sandbox.backup_target.root / "srv/hub-backups" / repository.account / "repo"


def test_a_drill_restores_the_latest_backup_and_checks_it(target: Sandbox, tmp_path: Path) -> None:
    tenant, _ = backed_up_tenant(target, tmp_path, "drill-good")

    summary = restore_drills_run(sample=5)

    assert summary == {"drilled": 1, "failed": []}
    drill = RestoreDrill.objects.get(tenant=tenant)
    assert drill.outcome == RestoreDrillOutcome.PASSED, drill.error
    assert len(drill.backup_id) == 64 and drill.backup_time is not None
    assert drill.files_restored >= 4  # the manifest, the dump, the photo, the compose file
    assert not Alert.objects.filter(kind="restore_drill_failed").exists()
    # nothing of the restore, the key or the password is left in the scratch area
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_drill_over_a_corrupted_backup_raises_its_alert(target: Sandbox, tmp_path: Path) -> None:
    tenant, repository = backed_up_tenant(target, tmp_path, "drill-corrupt")
    packs = sorted(repository_dir(target, repository).glob("data/*/*"), key=lambda p: p.stat().st_size)
    largest = packs[-1]
    data = bytearray(largest.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    largest.write_bytes(bytes(data))

    summary = restore_drills_run(sample=5)

    assert summary == {"drilled": 1, "failed": [tenant.pk]}
    drill = RestoreDrill.objects.get(tenant=tenant)
    assert drill.outcome == RestoreDrillOutcome.FAILED and drill.error
    assert drill.error.startswith(("restic check", "restic restore")), drill.error
    alert = Alert.objects.get(kind="restore_drill_failed", subject_id=str(tenant.pk))
    assert alert.status == AlertStatus.OPEN and alert.severity == "HARD"
    assert tenant.domain in alert.message and drill.backup_id[:8] in alert.message
    assert repository.password not in alert.message + drill.error


def test_only_tenants_with_a_repository_are_drilled(target: Sandbox, tmp_path: Path) -> None:
    healthy_fleet(3)
    assert restore_drills_run(sample=5) == {"drilled": 0, "failed": []}


# --- the Hub's own recovery -------------------------------------------------------------


def verify_restored_hub(database: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`hub_verify_restore` in a process of its own, on the restored database with the
    given keys only (nothing of this test process's settings)."""
    base = conftest.test_database_url().rsplit("/", 1)[0]
    return subprocess.run(
        [sys.executable, "manage.py", "hub_verify_restore", "--tenants", "1"],
        cwd=conftest.ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "hub.settings_test", "DATABASE_URL": f"{base}/{database}", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_hub_restored_from_its_backup_reaches_a_tenant_and_reads_its_secrets(
    target: Sandbox, tmp_path: Path
) -> None:
    # given a Hub with field keys of its own, a tenant on a real sshd host it has reached
    # (host key recorded), a secret stored for the tenant, and the backup recipient set
    field_key = Fernet.generate_key().decode()
    identity = x25519.Identity.generate()
    host = target.hosts[0]
    database = f"hub_rehearsal_{uuid.uuid4().hex[:10]}"
    with override_settings(
        FIELD_ENCRYPTION_KEYS=[field_key],
        HUB_BACKUP_RECIPIENT=str(identity.to_public()),
        HUB_BACKUP_DIR=str(tmp_path / "backups"),
        HUB_BACKUP_UPLOAD_COMMAND="",
    ):
        server = Server.objects.create(
            provider=ServerProvider.NETCUP,
            region="eu",
            ipv4=host.addr,
            ssh_port=host.port,
            name=f"netcup-{host.addr}",
            status=ServerStatus.ALLOCATED,
        )
        (tenant,) = healthy_fleet(1, server=server)
        repository = backup_repository_ensure(
            tenant_id=tenant.pk, host=target.env["BACKUP_TARGET_HOST"], port=1, actor="test"
        )
        run_on_server(server, name="first-contact", script="true\n", env={}, log=lambda line: None)
        server.refresh_from_db()
        assert server.host_key
        secrets = "\n".join([repository.password, repository.ssh_private_key]).encode()
        backup = hub_backup_run()

    # the keys are beside the dump, encrypted: nothing of them readable without the identity
    assert backup.status == HubBackupStatus.SUCCEEDED, backup.error
    keys = Path(backup.keys_path)
    assert keys.name.endswith(".keys.age") and stat.S_IMODE(keys.stat().st_mode) == 0o600
    sealed = keys.read_bytes()
    hub_key_body = Path(target.env["HUB_SSH_PRIVATE_KEY_PATH"]).read_text().splitlines()[1]
    assert field_key.encode() not in sealed and hub_key_body.encode() not in sealed
    assert not Alert.objects.filter(kind="hub_keys_not_backed_up", status=AlertStatus.OPEN).exists()
    identity_file = tmp_path / "kept-apart" / "hub-backup.identity"
    identity_file.parent.mkdir()
    identity_file.write_text(f"# the Hub's backup identity\n{identity}\n")

    try:
        # when the database and the keys are restored into a fresh database and directory
        restored_dir = tmp_path / "restored-keys"
        call_command(
            "hub_restore",
            backup.path,
            "--database",
            database,
            "--keys",
            str(keys),
            "--identity",
            str(identity_file),
            "--keys-dir",
            str(restored_dir),
        )
        restored = dict(line.split("=", 1) for line in (restored_dir / "hub-keys.env").read_text().splitlines() if line)
        assert restored["FIELD_ENCRYPTION_KEY"] == field_key
        assert Path(restored["HUB_SSH_PRIVATE_KEY_PATH"]).parent == restored_dir
        assert stat.S_IMODE(restored_dir.stat().st_mode) == 0o700

        # then a Hub on them reaches the tenant over SSH and decrypts its secrets
        done = verify_restored_hub(database, restored)
        assert done.returncode == 0, done.stdout + done.stderr
        (line,) = done.stdout.splitlines()
        result = json.loads(line)
        assert result["tenant"] == tenant.pk and result["ssh"] is True and result["secrets"] == 2
        assert result["secrets_fingerprint"] == hashlib.sha256(secrets).hexdigest()[:12]

        # and without the restored field keys the same database reads nothing
        done = verify_restored_hub(database, {**restored, "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode()})
        assert done.returncode != 0
        assert json.loads(done.stdout.splitlines()[0])["secrets_readable"] is False
    finally:
        with admin_conn("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_keys_restore_refuses_a_wrong_identity(tmp_path: Path) -> None:
    identity, stranger = x25519.Identity.generate(), x25519.Identity.generate()
    with override_settings(HUB_SSH_PRIVATE_KEY_PATH=str(_key_file(tmp_path))):
        sealed = hub_keys_write(tmp_path / "hub.keys.age", recipient=str(identity.to_public()))
    wrong = tmp_path / "wrong.identity"
    wrong.write_text(f"{stranger}\n")
    with pytest.raises(BackupError, match="cannot be decrypted"):
        hub_keys_restore(path=sealed, identity_path=wrong, directory=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "hub_ssh_key"
    path.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n")
    return path
