"""Recovery rehearsed against the sandbox: the restore drill restores a tenant's latest
off-site backup (a real restic repository on the real SFTP backup target) and notices a
corrupted one; the Hub restored from its own backup reaches a tenant and reads its
secrets."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings

from hub.models import Alert, AlertStatus
from monitoring.models import RestoreDrill, RestoreDrillOutcome
from monitoring.services.restore_drill import restic_for, restore_drills_run
from provisioning.services.backups import backup_target_authorize
from sandbox.control import Sandbox, free_port
from tenants.models import BackupRepository, Tenant
from tenants.services import backup_repository_ensure
from tests.monitoring.conftest import make_tenants

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
    (tenant,) = make_tenants(1)
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
    make_tenants(3)
    assert restore_drills_run(sample=5) == {"drilled": 0, "failed": []}
