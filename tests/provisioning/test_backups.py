"""Backups that restore, against the sandbox: a provisioned tenant's databases and
volumes go into its encrypted restic repository on the off-site target (a real SFTP
server reached over real SSH), come back after they were wiped, and the Hub's secrets
for it stay encrypted and out of every log. Each account on the target reaches its own
directory only."""

from __future__ import annotations

import base64
import io
import json
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import paramiko
import pytest
from django.db import connection
from django.test import override_settings

from hub.pipeline.models import Step
from provisioning.integrations import ssh as seam
from provisioning.models import OrderStatus
from provisioning.services import remote
from provisioning.services.backups import backup_script_env, backup_target_authorize
from sandbox.control import Sandbox, SandboxHost, free_port
from tenants.models import BackupRepository, Tenant
from tenants.services import backup_repository_ensure
from tests.conftest import WorkerProcess
from tests.provisioning.conftest import pool_server
from tests.provisioning.test_provisioning import ZONE, place, wait_order
from tests.sandbox.stacks import write_stack

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = Sandbox(
        state_dir=tmp_path_factory.mktemp("sandbox"),
        hosts_count=4,
        ssh_port=free_port(),
        hetzner_port=free_port(),
        cloudflare_port=free_port(),
        action_seconds=0.2,
    ).up()
    yield box
    box.down()


def shell(host: SandboxHost, sandbox: Sandbox, script: str, *, timeout: float = 240) -> tuple[int, str]:
    """Run a bash script as root in a session on the host; its exit code and output."""
    key = seam.load_private_key(Path(sandbox.env["HUB_SSH_PRIVATE_KEY_PATH"]).read_text())
    lines: list[str] = []
    with seam.connect(seam.Target(host.addr, host.port), private_key=key, known_host_key=None) as client:
        try:
            seam.run_script(client, name="test", script=script, env={}, timeout=timeout, on_line=lines.append)
        except seam.ScriptFailed as exc:
            return exc.exit_code, "\n".join(lines)
    return 0, "\n".join(lines)


def target_log(sandbox: Sandbox) -> str:
    return (sandbox.backup_target.root.parent / "sshd.log").read_text(errors="replace")


def columns_holding(needle: str) -> list[str]:
    """Every text column of the database whose raw value contains the needle."""
    from psycopg import sql

    found = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'jsonb', 'json')"
        )
        for table, column in cursor.fetchall():
            query = sql.SQL("SELECT 1 FROM {} WHERE strpos({}::text, %s) > 0 LIMIT 1").format(
                sql.Identifier(table), sql.Identifier(column)
            )
            cursor.execute(query, [needle])
            if cursor.fetchone():
                found.append(f"{table}.{column}")
    return found


def key_material(private_key: str) -> str:
    """The base64 body of an OpenSSH private key (what a leak would show)."""
    return "".join(line for line in private_key.splitlines() if not line.startswith("-----"))


STACKS_WITH_DATA = """
set -euo pipefail
nextcloud="$HOST_ROOT/opt/hub/tools/nextcloud/compose.yml"
ghost="$HOST_ROOT/opt/hub/tools/ghost/compose.yml"
docker compose -f "$nextcloud" up -d >/dev/null
docker compose -f "$ghost" up -d >/dev/null
docker compose -f "$nextcloud" exec -T postgres sh -c 'exec psql -U "$POSTGRES_USER" -v ON_ERROR_STOP=1' <<'SQL'
CREATE TABLE files (id integer, name text);
INSERT INTO files VALUES (1, 'written before the backup');
SQL
docker compose -f "$ghost" exec -T mysql sh -c 'MYSQL_PWD="$MYSQL_PASSWORD" exec mysql -u"$MYSQL_USER" ghost' <<'SQL'
CREATE TABLE posts (id int NOT NULL, title text, PRIMARY KEY (id));
INSERT INTO posts VALUES (7, 'a post from before the backup');
SQL
printf 'a photo\\n' > "$HOST_ROOT/var/lib/docker/volumes/nextcloud_nextcloud-data/_data/photo.jpg"
"""

WIPE = """
set -euo pipefail
for tool in nextcloud ghost; do
  docker compose -f "$HOST_ROOT/opt/hub/tools/$tool/compose.yml" down -v
done
test ! -e "$HOST_ROOT/var/lib/docker/volumes/nextcloud_nextcloud-data"
docker compose -f "$HOST_ROOT/opt/hub/tools/nextcloud/compose.yml" up -d >/dev/null
if docker compose -f "$HOST_ROOT/opt/hub/tools/nextcloud/compose.yml" exec -T postgres \\
    psql -U nextcloud -c 'SELECT * FROM files'; then
  exit 9
fi
"""

READ_BACK = """
set -euo pipefail
docker compose -f "$HOST_ROOT/opt/hub/tools/nextcloud/compose.yml" exec -T postgres \\
  psql -U nextcloud -At -c 'SELECT id, name FROM files'
docker compose -f "$HOST_ROOT/opt/hub/tools/ghost/compose.yml" exec -T mysql \\
  sh -c 'MYSQL_PWD="$MYSQL_PASSWORD" exec mysql -u"$MYSQL_USER" -N ghost -e "SELECT * FROM posts"'
cat "$HOST_ROOT/var/lib/docker/volumes/nextcloud_nextcloud-data/_data/photo.jpg"
"""


def test_a_tenant_is_backed_up_off_site_and_restored_after_its_data_was_wiped(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess
) -> None:
    (host,) = fresh_hosts(1)
    pool_server(host)
    order = wait_order(place("acme-backup"), (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED))
    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    repository = BackupRepository.objects.get(tenant__domain=f"acme-backup.{ZONE}")
    assert repository.authorized_at is not None
    backup_dir = host.root / "etc" / "hub" / "backup"
    assert stat.S_IMODE(backup_dir.stat().st_mode) == 0o700
    for name in ("password", "id_ed25519", "known_hosts", "ssh_config", "restic.env"):
        assert stat.S_IMODE((backup_dir / name).stat().st_mode) == 0o600, name
    assert (backup_dir / "password").read_text() == repository.password + "\n"

    # given the two tools provisioning set up (09-tools), with data: a row in each
    # database, a file in a volume
    code, out = shell(host, sandbox, STACKS_WITH_DATA)
    assert code == 0, out

    # when the nightly backup runs
    sessions_before = target_log(sandbox).count(f"Accepted publickey for {repository.account} ")
    code, out = shell(host, sandbox, '"$HOST_ROOT/opt/hub/bin/backup"')

    assert code == 0, out
    status = json.loads((host.root / "var/backups/hub/backup-status.json").read_text())
    assert list(status) == ["last_run", "duration_seconds", "databases", "remote_sync"]
    # Each dump is a few hundred bytes: 0 MB, as FACTS.md counts them.
    assert status["databases"] == {
        "ghost": {"status": "success", "size_mb": 0},
        "nextcloud": {"status": "success", "size_mb": 0},
    }
    assert status["remote_sync"]["status"] == "success" and status["remote_sync"]["uploaded_mb"] >= 0
    assert target_log(sandbox).count(f"Accepted publickey for {repository.account} ") > sessions_before
    repo = sandbox.backup_target.root / "srv/hub-backups" / repository.account / "repo"
    stored = b"".join(p.read_bytes() for p in repo.rglob("*") if p.is_file())
    assert (repo / "config").exists()
    assert b"written before the backup" not in stored and b"a photo" not in stored, "the repository is encrypted"

    # when everything of both tools is wiped, then restored from the off-site repository
    code, out = shell(host, sandbox, WIPE)
    assert code == 0, out
    sessions_before = target_log(sandbox).count(f"Accepted publickey for {repository.account} ")
    code, restored = shell(host, sandbox, '"$HOST_ROOT/opt/hub/bin/restore"')

    assert code == 0, restored
    code, out = shell(host, sandbox, READ_BACK)
    assert code == 0, out
    assert out.splitlines() == ["1|written before the backup", "7\ta post from before the backup", "a photo"]
    assert target_log(sandbox).count(f"Accepted publickey for {repository.account} ") > sessions_before

    # and no secret of the repository reached a log or the database in the clear
    secrets = {"password": repository.password, "ssh key": key_material(repository.ssh_private_key)}
    assert order.job_id is not None
    step_logs = "\n".join(Step.objects.filter(job_id=order.job_id).values_list("log", flat=True))
    worker_log = provisioning_worker.log_path.read_text(errors="replace")
    assert "off-site repository sftp://" in step_logs
    assert {name: value in step_logs or value in worker_log for name, value in secrets.items()} == {
        "password": False,
        "ssh key": False,
    }
    assert {name: columns_holding(value) for name, value in secrets.items()} == {"password": [], "ssh key": []}
    with connection.cursor() as cursor:
        cursor.execute("SELECT password, ssh_private_key FROM tenants_backuprepository WHERE id = %s", [repository.pk])
        raw = cursor.fetchone()
    assert all(value.startswith("fernet:") for value in raw)


def test_with_the_target_unreachable_the_backup_reports_the_failed_upload(
    sandbox: Sandbox, fresh_hosts: Any, hub_settings: dict[str, str]
) -> None:
    host = prepared_tenant_host(sandbox, fresh_hosts, "acme-offline")
    write_stack(host.root, "umami", "postgres")
    code, out = shell(host, sandbox, 'docker compose -f "$HOST_ROOT/opt/hub/tools/umami/compose.yml" up -d')
    assert code == 0, out

    sandbox.backup_target.freeze()
    try:
        code, out = shell(host, sandbox, '"$HOST_ROOT/opt/hub/bin/backup"')
    finally:
        sandbox.backup_target.thaw()

    assert code == 1
    status = json.loads((host.root / "var/backups/hub/backup-status.json").read_text())
    assert status["databases"] == {"umami": {"status": "success", "size_mb": 0}}
    assert status["remote_sync"]["status"] == "failed"
    assert status["remote_sync"]["error"], "the failure says why"
    assert set(status["remote_sync"]) == {"status", "error"}


def test_retention_keeps_seven_daily_and_four_weekly_snapshots(
    sandbox: Sandbox, fresh_hosts: Any, hub_settings: dict[str, str]
) -> None:
    host = prepared_tenant_host(sandbox, fresh_hosts, "acme-retention")
    # given nightly snapshots back-dated over 40 days: every night of the last nine, then
    # every third, so that most weeks hold two or three (the weekly rule keeps one)
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in [*range(1, 10), *range(12, 41, 3)]]
    backdate = "\n".join(
        f'"$HOST_ROOT/opt/hub/bin/hub-restic" backup -q --host acme-retention.{ZONE} --tag hub-nightly '
        f'--time "{day.isoformat()} 02:00:00" "$HOST_ROOT/etc/hostname"'
        for day in sorted(days)
    )
    code, out = shell(host, sandbox, "set -euo pipefail\n" + first_backup() + backdate)
    assert code == 0, out

    # when tonight's backup runs and applies the policy
    code, out = shell(host, sandbox, '"$HOST_ROOT/opt/hub/bin/backup"')
    assert code == 0, out
    code, out = shell(host, sandbox, '"$HOST_ROOT/opt/hub/bin/hub-restic" snapshots --json')
    assert code == 0, out

    kept = sorted({datetime.fromisoformat(s["time"]).date() for s in json.loads(out)}, reverse=True)
    dates = sorted([*days, today], reverse=True)
    daily = dates[:7]
    weeks: list[tuple[int, int]] = []
    weekly: list[date] = []
    for day in dates:
        week = day.isocalendar()[:2]
        if week not in weeks:
            weeks.append(week)
            weekly.append(day)
    assert kept == sorted(set(daily) | set(weekly[:4]), reverse=True)
    assert len(kept) < len(dates)


def first_backup() -> str:
    """Make the repository the way the nightly job makes it (nothing else made it yet)."""
    return '"$HOST_ROOT/opt/hub/bin/backup" >/dev/null\n'


def prepared_tenant_host(sandbox: Sandbox, fresh_hosts: Any, name: str) -> SandboxHost:
    """A host with the base setup and the tenant's backups configured, the way the
    provisioning's 07 step does it (the Hub's own services, run by the test)."""
    (host,) = fresh_hosts(1)
    server = pool_server(host)
    domain = f"{name}.{ZONE}"
    tenant = Tenant.objects.create(domain=domain, server=server)
    env = {"HUB_DOMAIN": domain, "HUB_ADMIN_EMAIL": "ops@example.com"}
    lines: list[str] = []
    for script in ("01-system", "02-docker"):
        remote.run_on_server(server, name=script, script=remote.step_script(script), env=env, log=lines.append)
    env.update(backup_script_env(tenant_id=tenant.pk, log=lines.append))
    remote.run_on_server(server, name="07-backups", script=remote.step_script("07-backups"), env=env, log=lines.append)
    # A retry (the step runs again) finds everything in place and rewrites nothing.
    again: list[str] = []
    remote.run_on_server(server, name="07-backups", script=remote.step_script("07-backups"), env=env, log=again.append)
    assert [line for line in again if " wrote " in line] == []
    return host


def new_repository(sandbox: Sandbox, tenant: Tenant) -> BackupRepository:
    target = sandbox.env
    return backup_repository_ensure(
        tenant_id=tenant.pk, host=target["BACKUP_TARGET_HOST"], port=int(target["BACKUP_TARGET_PORT"]), actor="test"
    )


def sftp_as(sandbox: Sandbox, repository: BackupRepository, *, username: str | None = None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    target = sandbox.env
    key_type, key_b64 = target["BACKUP_TARGET_HOST_KEY"].split()
    client.get_host_keys().add(
        f"[{target['BACKUP_TARGET_HOST']}]:{target['BACKUP_TARGET_PORT']}",
        key_type,
        paramiko.Ed25519Key(data=base64.b64decode(key_b64)),
    )
    client.connect(
        target["BACKUP_TARGET_HOST"],
        port=int(target["BACKUP_TARGET_PORT"]),
        username=username or repository.account,
        pkey=seam.load_private_key(repository.ssh_private_key),
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )
    return client


def test_a_tenants_key_reaches_its_own_directory_and_nothing_else(
    sandbox: Sandbox, hub_settings: dict[str, str]
) -> None:
    tenants = [Tenant.objects.create(domain=f"confined-{n}.{ZONE}") for n in (1, 2)]
    repositories = [
        backup_repository_ensure(
            tenant_id=t.pk,
            host=sandbox.env["BACKUP_TARGET_HOST"],
            port=int(sandbox.env["BACKUP_TARGET_PORT"]),
            actor="t",
        )
        for t in tenants
    ]
    for repository in repositories:
        backup_target_authorize(repository, log=lambda line: None)
    mine, theirs = repositories
    (sandbox.backup_target.root / "srv/hub-backups" / theirs.account / "repo" / "secret").write_text("theirs")

    client = sftp_as(sandbox, mine)
    try:
        sftp = client.open_sftp()
        top = sftp.listdir("/")
        above = sftp.listdir("/..")
        with pytest.raises(OSError):
            sftp.stat(f"/../{theirs.account}/repo/secret")
        with pytest.raises(OSError):
            sftp.stat("/srv/hub-backups")
        sftp.putfo(io.BytesIO(b"mine"), "/repo/mine")
        with pytest.raises(OSError):
            sftp.putfo(io.BytesIO(b"x"), "/planted")
        command_in, out, _ = client.exec_command("id; cat /etc/passwd", timeout=10)
        command_in.channel.shutdown_write()
        shell_output = out.read()
    finally:
        client.close()

    assert top == ["repo"] and above == ["repo"]
    assert b"uid=" not in shell_output and b"root:" not in shell_output, "no shell, only SFTP"
    assert (sandbox.backup_target.root / "srv/hub-backups" / mine.account / "repo" / "mine").read_bytes() == b"mine"
    with pytest.raises(paramiko.AuthenticationException):
        sftp_as(sandbox, mine, username=theirs.account).close()
    with pytest.raises(paramiko.AuthenticationException):
        sftp_as(sandbox, mine, username="root").close()


def test_a_backup_target_with_another_host_key_is_refused(sandbox: Sandbox, hub_settings: dict[str, str]) -> None:
    tenant = Tenant.objects.create(domain=f"impostor.{ZONE}")
    impostor_key = remote.hub_public_key().rsplit(" ", 1)[0]
    repository = backup_repository_ensure(
        tenant_id=tenant.pk,
        host=sandbox.env["BACKUP_TARGET_HOST"],
        port=int(sandbox.env["BACKUP_TARGET_PORT"]),
        actor="t",
    )

    with override_settings(BACKUP_TARGET_HOST_KEY=impostor_key), pytest.raises(seam.HostKeyMismatch):
        backup_target_authorize(repository, log=lambda line: None)

    assert BackupRepository.objects.get(pk=repository.pk).authorized_at is None


def test_the_backup_and_restore_scripts_are_shellcheck_clean(tmp_path: Path) -> None:
    script = remote.step_script("07-backups")
    for name in ("hub-restic", "backup", "restore"):
        body = script.split(f"write_file /opt/hub/bin/{name} 0755 <<'SCRIPT'\n", 1)[1].split("\nSCRIPT\n", 1)[0]
        path = tmp_path / name
        path.write_text(body + "\n")
        result = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"{name}: {result.stdout}"
    path = tmp_path / "backup-target.sh"
    path.write_text(remote.step_script("backup-target"))
    result = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
