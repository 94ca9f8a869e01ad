"""The restore drill: a backup is only as good as its last restore. A random sample of
tenants (RESTORE_DRILL_SAMPLE) has its latest off-site backup restored by the Hub itself
into a scratch directory, straight from the repository on the backup target (the
tenant's server is not involved: the drill proves the backup is there for the day the
server is gone). For each: `restic check` (structure, and RESTORE_DRILL_CHECK_SUBSET of
the data read back), `restic restore --verify` of the latest snapshot (every restored
file read back against the repository), then the manifest the nightly job wrote must be
there, and every database dump it lists present and not empty. A drill that fails opens
a HARD `restore_drill_failed` alert naming the tenant and the backup; one that passes
resolves it. The scratch directory is removed after each tenant, pass or fail."""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from hub.alerts.services import alert_raise, alert_resolve
from hub.models import AlertSeverity
from monitoring.models import RestoreDrill, RestoreDrillOutcome
from tenants.models import BackupRepository, TenantStatus

logger = logging.getLogger(__name__)

ALERT_KIND = "restore_drill_failed"
MANIFEST = Path("var/backups/hub/dumps/manifest.json")


class DrillFailed(Exception):
    pass


@dataclass
class Restic:
    """restic against one tenant's repository, as the Hub (its key and password live
    only in files of the scratch directory, mode 0600, never on a command line)."""

    env: dict[str, str]
    sftp_command: str
    timeout: float

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["restic", "-o", f"sftp.command={self.sftp_command}", *args],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DrillFailed(f"restic {args[0]}: {exc}") from exc

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()][-5:]
            raise DrillFailed(f"restic {args[0]} exited {done.returncode}: {' | '.join(lines)[-1500:]}")
        return done.stdout


def _write_private(path: Path, content: str) -> Path:
    path.touch(mode=0o600)
    path.write_text(content if content.endswith("\n") else content + "\n")
    return path


@contextmanager
def restic_for(repository: BackupRepository, scratch: Path) -> Iterator[Restic]:
    """restic on the tenant's repository, reached over SFTP with the tenant's own key
    and only the backup target's recorded host key trusted."""
    url = urlsplit(repository.url)
    host, port = url.hostname or settings.BACKUP_TARGET_HOST, url.port or settings.BACKUP_TARGET_PORT
    keys = scratch / "keys"
    keys.mkdir(mode=0o700)
    key = _write_private(keys / "id_ed25519", repository.ssh_private_key)
    known_host = f"[{host}]:{port}" if port != 22 else host
    known = _write_private(keys / "known_hosts", f"{known_host} {settings.BACKUP_TARGET_HOST_KEY}")
    password = _write_private(keys / "password", repository.password)
    ssh = [
        "ssh",
        "-i",
        str(key),
        "-p",
        str(port),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=15",
        f"{repository.account}@{host}",
        "-s",
        "sftp",
    ]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(scratch),
        "RESTIC_REPOSITORY": repository.url,
        "RESTIC_PASSWORD_FILE": str(password),
        "RESTIC_CACHE_DIR": str(scratch / "cache"),
    }
    try:
        yield Restic(env=env, sftp_command=shlex.join(ssh), timeout=settings.RESTORE_DRILL_TIMEOUT)
    finally:
        shutil.rmtree(keys, ignore_errors=True)


@dataclass
class DrillResult:
    backup_id: str = ""
    backup_time: datetime | None = None
    files_restored: int = 0


def _latest_snapshot(restic: Restic, result: DrillResult) -> str:
    try:
        snapshots = json.loads(restic.ok("snapshots", "--json") or "[]")
    except json.JSONDecodeError as exc:
        raise DrillFailed(f"restic snapshots: unreadable answer: {exc}") from exc
    if not snapshots:
        raise DrillFailed("the repository holds no backup")
    latest = max(snapshots, key=lambda s: s["time"])
    result.backup_id = str(latest["id"])
    result.backup_time = parse_datetime(latest["time"].replace("Z", "+00:00"))
    return result.backup_id


def _check_restored(target: Path, result: DrillResult) -> None:
    manifests = list(target.rglob(str(MANIFEST)))
    if not manifests:
        raise DrillFailed(f"the restored backup has no {MANIFEST}")
    root = manifests[0].parents[len(MANIFEST.parts) - 1]
    manifest = json.loads(manifests[0].read_text())
    missing = []
    for tool, entry in (manifest.get("tools") or {}).items():
        for service, dump in (entry.get("databases") or {}).items():
            path = root / str(dump).lstrip("/")
            if not path.is_file() or path.stat().st_size == 0:
                missing.append(f"{tool}/{service}")
    if missing:
        raise DrillFailed(f"database dumps missing or empty after the restore: {', '.join(missing)}")
    result.files_restored = sum(1 for p in target.rglob("*") if p.is_file())


def restore_drill_one(*, repository: BackupRepository) -> RestoreDrill:
    """Restore the tenant's latest backup into a fresh scratch directory and check it."""
    started = timezone.now()
    base = Path(settings.RESTORE_DRILL_SCRATCH_DIR)
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = Path(tempfile.mkdtemp(prefix=f"tenant-{repository.tenant_id}-", dir=base))
    result = DrillResult()
    error = ""
    try:
        with restic_for(repository, scratch) as restic:
            snapshot_id = _latest_snapshot(restic, result)
            restic.ok("check", f"--read-data-subset={settings.RESTORE_DRILL_CHECK_SUBSET}")
            target = scratch / "restore"
            restic.ok("restore", snapshot_id, "--target", str(target), "--verify")
            _check_restored(target, result)
    except DrillFailed as exc:
        error = str(exc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    drill = RestoreDrill.objects.create(
        tenant_id=repository.tenant_id,
        backup_id=result.backup_id,
        backup_time=result.backup_time,
        outcome=RestoreDrillOutcome.FAILED if error else RestoreDrillOutcome.PASSED,
        files_restored=result.files_restored,
        error=error[:4000],
        started_at=started,
        finished_at=timezone.now(),
    )
    if error:
        backup = f"backup {result.backup_id[:8]}" if result.backup_id else "no backup"
        when = f" of {result.backup_time:%Y-%m-%d %H:%M} UTC" if result.backup_time else ""
        domain = repository.tenant.domain
        logger.error("restore drill of %s (%s%s) failed: %s", domain, backup, when, error)
        alert_raise(
            subject_type="tenant",
            subject_id=repository.tenant_id,
            kind=ALERT_KIND,
            severity=AlertSeverity.HARD,
            message=f"restore drill of tenant {repository.tenant_id} ({domain}), {backup}{when}, failed: {error}",
        )
    else:
        alert_resolve(subject_type="tenant", subject_id=repository.tenant_id, kind=ALERT_KIND)
    return drill


def restore_drills_run(*, sample: int | None = None) -> dict[str, Any]:
    """The weekly drill over a random sample of tenants with an off-site repository."""
    size = settings.RESTORE_DRILL_SAMPLE if sample is None else sample
    repositories = list(
        BackupRepository.objects.filter(
            authorized_at__isnull=False, tenant__status__in=[TenantStatus.ACTIVE, TenantStatus.SUSPENDED]
        )
        .select_related("tenant")
        .order_by("?")[:size]
    )
    drills = [restore_drill_one(repository=repository) for repository in repositories]
    return {
        "drilled": len(drills),
        "failed": [d.tenant_id for d in drills if d.outcome == RestoreDrillOutcome.FAILED],
    }
