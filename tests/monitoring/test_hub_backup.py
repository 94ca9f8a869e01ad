"""The Hub database backup: rotation as a pure function over dates, and a real
pg_dump of the test database restored into a new database where the data is found."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings

from hub.models import Alert, AlertSeverity, AlertStatus
from monitoring.models import HubBackup, HubBackupStatus
from monitoring.services.backup import Retention, backup_file_name, backups_rotate, backups_to_keep, hub_backup_run
from tenants.models import Tenant
from tests.factories import healthy_fleet

DEFAULT = Retention(daily=14, weekly=8, monthly=3)


def daily(days: int, *, end: datetime) -> list[datetime]:
    return [end - timedelta(days=i) for i in range(days)]


def test_rotation_keeps_14_daily_8_weekly_3_monthly() -> None:
    end = datetime(2026, 6, 30, 3, 0, tzinfo=UTC)  # a Tuesday
    stamps = daily(200, end=end)

    keep = backups_to_keep(stamps, retention=DEFAULT)

    days = sorted(keep, reverse=True)
    # the last 14 days
    assert days[:14] == stamps[:14]
    # then the newest backup of each of the 8 most recent ISO weeks
    weeks = {tuple(d.isocalendar())[:2] for d in keep}
    assert {tuple(d.isocalendar())[:2] for d in stamps[:14]} <= weeks
    newest_per_week: dict[tuple[int, ...], datetime] = {}
    for stamp in stamps:
        newest_per_week.setdefault(tuple(stamp.isocalendar())[:2], stamp)
    assert set(list(newest_per_week.values())[:8]) <= keep
    # and the newest of each of the 3 most recent months
    assert {
        datetime(2026, 6, 30, 3, tzinfo=UTC),
        datetime(2026, 5, 31, 3, tzinfo=UTC),
        datetime(2026, 4, 30, 3, tzinfo=UTC),
    } <= keep
    assert datetime(2026, 3, 31, 3, tzinfo=UTC) not in keep
    assert min(keep) >= datetime(2026, 4, 30, 3, tzinfo=UTC)
    assert len(keep) == len(
        set(days[:14])
        | set(list(newest_per_week.values())[:8])
        | {
            datetime(2026, 6, 30, 3, tzinfo=UTC),
            datetime(2026, 5, 31, 3, tzinfo=UTC),
            datetime(2026, 4, 30, 3, tzinfo=UTC),
        }
    )


def test_rotation_with_gaps_and_several_backups_a_day() -> None:
    end = datetime(2026, 6, 30, 3, 0, tzinfo=UTC)
    stamps = [end, end - timedelta(hours=1), end - timedelta(days=10), end - timedelta(days=70)]
    keep = backups_to_keep(stamps, retention=Retention(daily=2, weekly=1, monthly=3))
    # the newest of today, the day 10 days ago (2 days that have backups), the 70-day-old
    # one as the newest of its month; the earlier backup of today is superseded
    assert keep == {end, end - timedelta(days=10), end - timedelta(days=70)}


@pytest.mark.django_db
def test_rotation_of_files_removes_only_what_is_not_kept(tmp_path: Path) -> None:
    end = datetime(2026, 6, 30, 3, 0, tzinfo=UTC)
    for stamp in daily(40, end=end):
        (tmp_path / backup_file_name(stamp)).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a backup")

    removed = backups_rotate(directory=tmp_path, retention=Retention(daily=3, weekly=2, monthly=2))

    left = sorted(p.name for p in tmp_path.iterdir())
    assert "notes.txt" in left
    assert len(left) - 1 == 40 - len(removed)
    assert backup_file_name(end) in left and backup_file_name(end - timedelta(days=30)) in left


def admin_conn(dbname: str) -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(
        host=db.get("HOST") or "127.0.0.1",
        port=db.get("PORT") or 5432,
        user=db.get("USER") or "postgres",
        password=db.get("PASSWORD") or None,
        dbname=dbname,
        autocommit=True,
    )


@pytest.mark.django_db(transaction=True)
def test_backup_and_restore_against_the_real_postgres(tmp_path: Path) -> None:
    # given data in the Hub database
    (tenant,) = healthy_fleet(1)
    marker = f"restore-{uuid.uuid4().hex[:8]}.example"
    Tenant.objects.filter(pk=tenant.pk).update(domain=marker)
    backup_dir = tmp_path / "backups"
    target = f"hub_restore_test_{uuid.uuid4().hex[:10]}"
    upload_log = tmp_path / "uploaded.txt"

    with override_settings(
        HUB_BACKUP_DIR=str(backup_dir), HUB_BACKUP_UPLOAD_COMMAND=f"sh -c 'echo \"$0\" >> {upload_log}'"
    ):
        # when it is backed up
        backup = hub_backup_run()

    # then the dump is there, recorded and uploaded
    assert backup.status == HubBackupStatus.SUCCEEDED, backup.error
    path = Path(backup.path)
    assert path.is_file() and path.stat().st_size == backup.size_bytes > 0
    assert path.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    assert oct(path.stat().st_mode)[-3:] == "600"
    assert backup.uploaded and upload_log.read_text().strip() == str(path)

    # and restoring it into a new database finds the data
    try:
        call_command("hub_restore", str(path), "--database", target)
        with admin_conn(target) as conn:
            row = conn.execute("SELECT id FROM tenants_tenant WHERE domain = %s", [marker]).fetchone()
        assert row == (tenant.pk,)
    finally:
        with admin_conn("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')


@pytest.mark.django_db
def test_restore_refuses_an_existing_or_the_live_database(tmp_path: Path) -> None:
    dump = tmp_path / "x.dump"
    dump.write_bytes(b"PGDMP")
    with pytest.raises(CommandError, match="using"):
        call_command("hub_restore", str(dump), "--database", connection.settings_dict["NAME"])
    with pytest.raises(CommandError, match="already exists"):
        call_command("hub_restore", str(dump), "--database", "postgres")
    with pytest.raises(CommandError, match="plain database name"):
        call_command("hub_restore", str(dump), "--database", "x; DROP TABLE y")


@pytest.mark.django_db
def test_a_failed_backup_is_recorded_and_raises_a_hard_alert_resolved_by_the_next_good_one(tmp_path: Path) -> None:
    with override_settings(HUB_BACKUP_DIR=str(tmp_path), HUB_BACKUP_UPLOAD_COMMAND="false"):
        failed = hub_backup_run()
    assert failed.status == HubBackupStatus.FAILED and "false exited 1" in failed.error
    alert = Alert.objects.get(kind="hub_backup_failed", status=AlertStatus.OPEN)
    assert alert.severity == AlertSeverity.HARD

    with override_settings(HUB_BACKUP_DIR=str(tmp_path), HUB_BACKUP_UPLOAD_COMMAND=""):
        good = hub_backup_run(now=failed.started_at + timedelta(seconds=1))
    assert good.status == HubBackupStatus.SUCCEEDED
    assert not Alert.objects.filter(kind="hub_backup_failed", status=AlertStatus.OPEN).exists()
    assert HubBackup.objects.count() == 2
