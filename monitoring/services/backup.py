"""The Hub's own database: `pg_dump -Fc` into HUB_BACKUP_DIR, an optional upload
command to copy it off the server, rotation (14 daily, 8 weekly, 3 monthly by
default), a HubBackup row per run and a HARD alert while it fails. `hub_restore`
(management command) puts a dump back into a new database."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone

from hub.alerts.services import alert_raise, alert_resolve
from hub.models import AlertSeverity
from monitoring.models import HubBackup, HubBackupStatus

logger = logging.getLogger(__name__)

FILE_RE = re.compile(r"^hub-(\d{8}T\d{6}Z)\.dump$")
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
ALERT = {"subject_type": "hub", "subject_id": "database", "kind": "hub_backup_failed"}


class BackupError(Exception):
    pass


@dataclass(frozen=True)
class Retention:
    daily: int
    weekly: int
    monthly: int

    @classmethod
    def from_settings(cls) -> Retention:
        return cls(
            daily=settings.HUB_BACKUP_KEEP_DAILY,
            weekly=settings.HUB_BACKUP_KEEP_WEEKLY,
            monthly=settings.HUB_BACKUP_KEEP_MONTHLY,
        )


def backups_to_keep(stamps: Iterable[datetime], *, retention: Retention) -> set[datetime]:
    """Grandfather-father-son: the newest backup of each of the last `daily` days that
    have one, of the last `weekly` ISO weeks and of the last `monthly` months."""
    newest_first = sorted(set(stamps), reverse=True)
    rules: list[tuple[int, Callable[[datetime], Hashable]]] = [
        (retention.daily, lambda d: d.date()),
        (retention.weekly, lambda d: tuple(d.isocalendar())[:2]),
        (retention.monthly, lambda d: (d.year, d.month)),
    ]
    keep: set[datetime] = set()
    for count, period_of in rules:
        periods: set[Hashable] = set()
        for stamp in newest_first:
            if len(periods) >= count:
                break
            period = period_of(stamp)
            if period not in periods:
                periods.add(period)
                keep.add(stamp)
    return keep


def backup_file_name(moment: datetime) -> str:
    return f"hub-{moment.astimezone(UTC).strftime(STAMP_FORMAT)}.dump"


def backup_files(directory: Path) -> dict[datetime, Path]:
    found = {}
    for path in directory.glob("hub-*.dump"):
        match = FILE_RE.match(path.name)
        if match:
            found[datetime.strptime(match.group(1), STAMP_FORMAT).replace(tzinfo=UTC)] = path
    return found


def pg_connection_args(alias: str = "default") -> tuple[list[str], dict[str, str]]:
    """Host/port/user arguments for the Postgres client tools, and the environment with
    PGPASSWORD (never on the command line, where `ps` would show it)."""
    db = connections[alias].settings_dict
    args = ["-h", str(db.get("HOST") or "127.0.0.1"), "-p", str(db.get("PORT") or 5432)]
    if db.get("USER"):
        args += ["-U", str(db["USER"])]
    env = {**os.environ}
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = str(db["PASSWORD"])
    return args, env


def _run(cmd: list[str], *, env: dict[str, str] | None = None) -> None:
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, timeout=settings.HUB_BACKUP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"{cmd[0]}: {exc}") from exc
    if done.returncode != 0:
        raise BackupError(f"{cmd[0]} exited {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def backups_rotate(*, directory: Path, retention: Retention) -> list[Path]:
    files = backup_files(directory)
    keep = backups_to_keep(files, retention=retention)
    removed = [path for stamp, path in files.items() if stamp not in keep]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        HubBackup.objects.filter(path__in=[str(p) for p in removed]).update(status=HubBackupStatus.PRUNED)
    return removed


def hub_backup_run(*, now: datetime | None = None) -> HubBackup:
    """Dump, upload, rotate; record the outcome and alert (HARD) on failure."""
    started = now or timezone.now()
    backup = HubBackup.objects.create(started_at=started)
    directory = Path(settings.HUB_BACKUP_DIR)
    path = directory / backup_file_name(started)
    partial = path.with_name(path.name + ".partial")
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        args, env = pg_connection_args()
        name = str(connections["default"].settings_dict["NAME"])
        _run(["pg_dump", "-Fc", "--no-owner", "--no-privileges", *args, "-f", str(partial), name], env=env)
        partial.chmod(0o600)
        partial.replace(path)
        backup.path = str(path)
        backup.size_bytes = path.stat().st_size
        backup.sha256 = _sha256(path)
        if settings.HUB_BACKUP_UPLOAD_COMMAND:
            _run([*shlex.split(settings.HUB_BACKUP_UPLOAD_COMMAND), str(path)])
            backup.uploaded = True
        backup.status = HubBackupStatus.SUCCEEDED
    except (BackupError, OSError) as exc:
        partial.unlink(missing_ok=True)
        backup.status = HubBackupStatus.FAILED
        backup.error = str(exc)[:4000]
    backup.finished_at = timezone.now()
    backup.save(update_fields=["path", "size_bytes", "sha256", "uploaded", "status", "error", "finished_at"])
    if backup.status == HubBackupStatus.FAILED:
        logger.error("hub backup failed: %s", backup.error)
        alert_raise(**ALERT, severity=AlertSeverity.HARD, message=f"the Hub database backup failed: {backup.error}")
        return backup
    removed = backups_rotate(directory=directory, retention=Retention.from_settings())
    alert_resolve(**ALERT)
    logger.info("hub backup %s (%d bytes); %d rotated out", path.name, backup.size_bytes, len(removed))
    return backup


def check_hub_backup() -> dict[str, Any]:
    backup = hub_backup_run()
    return {"status": backup.status, "path": backup.path, "size_bytes": backup.size_bytes, "error": backup.error}


DB_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def hub_restore(*, path: Path, database: str) -> None:
    """Create `database` (it must not exist, and must not be the Hub's own) and
    pg_restore the dump into it. A failed restore drops the half-made database."""
    if not DB_NAME_RE.match(database):
        raise BackupError(f"{database!r} is not a plain database name")
    if database == connections["default"].settings_dict["NAME"]:
        raise BackupError("refusing to restore over the database the Hub is using")
    if not path.is_file():
        raise BackupError(f"{path} is not a file")
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database])
        if cursor.fetchone():
            raise BackupError(f"database {database} already exists; restore into a new one")
        cursor.execute(f'CREATE DATABASE "{database}"')
    args, env = pg_connection_args()
    try:
        _run(
            ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", *args, "-d", database, str(path)],
            env=env,
        )
    except BackupError:
        with connections["default"].cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}"')
        raise
