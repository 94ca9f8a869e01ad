"""The Hub's own backup: `pg_dump -Fc` of its database into HUB_BACKUP_DIR and, beside
each dump, the Hub's keys (its SSH private key, the key to every tenant server, and
FIELD_ENCRYPTION_KEY, needed to read every stored secret) in an age-encrypted bundle
(`hub-<stamp>.keys.age`) made for HUB_BACKUP_RECIPIENT, a public key: the identity that
decrypts it is kept apart from the Hub, so a copy of the backups alone opens nothing.
An optional upload command copies both off the server; rotation (14 daily, 8 weekly, 3
monthly by default); a HubBackup row per run and a HARD alert while it fails.
`hub_restore` (management command) puts a dump back into a new database and the keys
into a new directory."""

from __future__ import annotations

import hashlib
import json
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

import pyrage
from django.conf import settings
from django.db import connections
from django.utils import timezone
from pyrage import x25519

from hub.alerts.services import alert_raise, alert_resolve
from hub.models import AlertSeverity
from monitoring.models import HubBackup, HubBackupStatus
from provisioning.services.remote import run_on_server
from tenants.models import BackupRepository, Tenant

logger = logging.getLogger(__name__)

FILE_RE = re.compile(r"^hub-(\d{8}T\d{6}Z)\.dump$")
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
ALERT = {"subject_type": "hub", "subject_id": "database", "kind": "hub_backup_failed"}
KEYS_ALERT = {"subject_type": "hub", "subject_id": "keys", "kind": "hub_keys_not_backed_up"}
KEYS_SUFFIX = ".keys.age"
# The key files the bundle holds, by the setting that names them.
KEY_FILE_SETTINGS = ("HUB_SSH_PRIVATE_KEY_PATH", "BACKUP_TARGET_SSH_KEY_PATH")


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


def keys_file_for(dump: Path) -> Path:
    return dump.with_name(dump.name.removesuffix(".dump") + KEYS_SUFFIX)


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
        keys_file_for(path).unlink(missing_ok=True)
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
        if settings.HUB_BACKUP_RECIPIENT:
            backup.keys_path = str(hub_keys_write(keys_file_for(path), recipient=settings.HUB_BACKUP_RECIPIENT))
        if settings.HUB_BACKUP_UPLOAD_COMMAND:
            for made in filter(None, [backup.path, backup.keys_path]):
                _run([*shlex.split(settings.HUB_BACKUP_UPLOAD_COMMAND), made])
            backup.uploaded = True
        backup.status = HubBackupStatus.SUCCEEDED
    except (BackupError, OSError) as exc:
        partial.unlink(missing_ok=True)
        keys_file_for(path).with_name(keys_file_for(path).name + ".partial").unlink(missing_ok=True)
        backup.status = HubBackupStatus.FAILED
        backup.error = str(exc)[:4000]
    backup.finished_at = timezone.now()
    backup.save(
        update_fields=["path", "keys_path", "size_bytes", "sha256", "uploaded", "status", "error", "finished_at"]
    )
    if backup.status == HubBackupStatus.FAILED:
        logger.error("hub backup failed: %s", backup.error)
        alert_raise(**ALERT, severity=AlertSeverity.HARD, message=f"the Hub database backup failed: {backup.error}")
        return backup
    removed = backups_rotate(directory=directory, retention=Retention.from_settings())
    alert_resolve(**ALERT)
    if backup.keys_path:
        alert_resolve(**KEYS_ALERT)
    else:
        alert_raise(
            **KEYS_ALERT,
            severity=AlertSeverity.MEDIUM,
            message=(
                "HUB_BACKUP_RECIPIENT is not set: the Hub's SSH key and FIELD_ENCRYPTION_KEY are in no backup, "
                "and a restored database could neither reach a tenant nor read a stored secret"
            ),
        )
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


# --- the Hub's keys -----------------------------------------------------------------


def hub_keys_bundle() -> bytes:
    """The Hub's keys as JSON: the field keys (all of them, newest first: older rows may
    still be encrypted with an older one) and the key files the settings name."""
    files = {}
    for setting in KEY_FILE_SETTINGS:
        value = getattr(settings, setting, "")
        if not value:
            continue
        key_path = Path(value)
        if not key_path.is_file():
            raise BackupError(f"{setting} names {key_path}, which is not a file: the key would be in no backup")
        files[setting] = {"name": key_path.name, "content": key_path.read_text()}
    bundle = {"version": 1, "field_encryption_keys": list(settings.FIELD_ENCRYPTION_KEYS), "files": files}
    return json.dumps(bundle).encode()


def hub_keys_write(path: Path, *, recipient: str) -> Path:
    """Write the bundle encrypted to `recipient` (age, X25519), readable by root only."""
    try:
        public = x25519.Recipient.from_str(recipient.strip())
    except Exception as exc:
        raise BackupError(f"HUB_BACKUP_RECIPIENT is not an age public key (age1...): {exc}") from exc
    partial = path.with_name(path.name + ".partial")
    partial.touch(mode=0o600)
    partial.write_bytes(pyrage.encrypt(hub_keys_bundle(), [public]))
    partial.replace(path)
    return path


@dataclass(frozen=True)
class RestoredKeys:
    directory: Path
    env_file: Path
    settings: dict[str, str]


def _identity(identity_path: Path) -> x25519.Identity:
    lines = [line.strip() for line in identity_path.read_text().splitlines()]
    secret = next((line for line in lines if line.startswith("AGE-SECRET-KEY-")), "")
    if not secret:
        raise BackupError(f"{identity_path} holds no age identity (AGE-SECRET-KEY-...)")
    return x25519.Identity.from_str(secret)


def hub_keys_restore(*, path: Path, identity_path: Path, directory: Path) -> RestoredKeys:
    """Decrypt a keys bundle with the identity kept apart and write the keys into a
    new directory (0700, files 0600), with `hub-keys.env` naming them as settings:
    HUB_SSH_PRIVATE_KEY_PATH (and BACKUP_TARGET_SSH_KEY_PATH) and FIELD_ENCRYPTION_KEY."""
    if directory.exists() and any(directory.iterdir()):
        raise BackupError(f"{directory} is not empty; restore the keys into a new directory")
    try:
        bundle = json.loads(pyrage.decrypt(path.read_bytes(), [_identity(identity_path)]))
    except OSError as exc:
        raise BackupError(str(exc)) from exc
    except Exception as exc:
        raise BackupError(f"{path} cannot be decrypted with {identity_path}: {exc}") from exc
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    values = {"FIELD_ENCRYPTION_KEY": ",".join(bundle["field_encryption_keys"])}
    for setting, entry in bundle["files"].items():
        key_file = directory / Path(entry["name"]).name
        key_file.touch(mode=0o600)
        key_file.write_text(entry["content"])
        values[setting] = str(key_file)
    env_file = directory / "hub-keys.env"
    env_file.touch(mode=0o600)
    env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return RestoredKeys(directory=directory, env_file=env_file, settings=values)


def hub_restore_verify(*, sample: int) -> list[dict[str, Any]]:
    """Per tenant with a server: an SSH session on it with the Hub's key (host key
    verified as recorded) and its stored secrets decrypted with the field keys."""
    results = []
    tenants = Tenant.objects.filter(server__isnull=False).select_related("server").order_by("-id")[:sample]
    for tenant in tenants:
        result: dict[str, Any] = {"tenant": tenant.pk, "domain": tenant.domain}
        try:
            assert tenant.server is not None
            lines = run_on_server(
                tenant.server, name="hub-verify", script="echo reached\n", env={}, log=lambda line: None, timeout=30
            )
            result["ssh"] = "reached" in lines
        except Exception as exc:  # noqa: BLE001 - every failure is the answer
            result["ssh"] = False
            result["ssh_error"] = f"{type(exc).__name__}: {exc}"[:300]
        try:
            repository = BackupRepository.objects.filter(tenant=tenant).first()
            secrets = [repository.password, repository.ssh_private_key] if repository else []
            if tenant.server is not None and tenant.server.root_key:
                secrets.append(tenant.server.root_key)
            result["secrets"] = len(secrets)
            result["secrets_readable"] = all(isinstance(value, str) and value for value in secrets)
            # A fingerprint, never the value: the operator compares it with the old Hub's.
            joined = "\n".join(secrets).encode()
            result["secrets_fingerprint"] = hashlib.sha256(joined).hexdigest()[:12] if secrets else ""
        except Exception as exc:  # noqa: BLE001 - a secret that cannot be decrypted
            result["secrets_readable"] = False
            result["secrets_error"] = type(exc).__name__
        result["ok"] = bool(result.get("ssh")) and bool(result.get("secrets_readable"))
        results.append(result)
    return results
