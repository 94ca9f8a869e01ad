"""Running things on a server: SSH with the host key recorded on first contact and
verified ever after (a mismatch refuses and raises a HARD alert), scripts from
provisioning/scripts/ uploaded and run with their output streamed to the step log.
The worker process keeps a verified connection per server between steps (see
`ssh.ConnectionCache`): a provisioning's probe and its ten scripts share one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path

import paramiko
from django.conf import settings
from django.utils import timezone

from hub.alerts.services import alert_raise
from hub.models import AlertSeverity
from hub.pipeline.spec import PermanentStepError
from provisioning.integrations import ssh
from provisioning.models import Server

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "scripts"


@lru_cache(maxsize=4)
def _hub_key(path: str, mtime: float) -> paramiko.PKey:
    return ssh.load_private_key(Path(path).read_text())


def hub_private_key() -> paramiko.PKey:
    path = Path(settings.HUB_SSH_PRIVATE_KEY_PATH)
    return _hub_key(str(path), path.stat().st_mtime)


def hub_public_key() -> str:
    key = hub_private_key()
    return f"{key.get_name()} {key.get_base64()} hub"


def _key_for(server: Server) -> paramiko.PKey:
    return ssh.load_private_key(server.root_key) if server.root_key else hub_private_key()


def _record_host_key(server_id: int) -> Callable[[str], None]:
    def record(presented: str) -> None:
        # Only the first contact records; a concurrent first contact keeps the first key.
        Server.objects.filter(pk=server_id, host_key="").update(host_key=presented, host_key_recorded_at=timezone.now())

    return record


# One per worker process, shared by its threads.
_connections = ssh.ConnectionCache()


def run_on_server(
    server: Server,
    *,
    name: str,
    script: str,
    env: Mapping[str, str],
    log: Callable[[str], None],
    timeout: float | None = None,
) -> list[str]:
    target = ssh.Target(server.ipv4, server.ssh_port)
    try:
        while True:
            with _connections.connect(
                target,
                private_key=_key_for(server),
                known_host_key=server.host_key or None,
                on_first_contact=_record_host_key(server.pk),
                timeout=settings.PROVISIONING_SSH_CONNECT_TIMEOUT,
            ) as connection:
                try:
                    return ssh.run_script(
                        connection.client,
                        name=name,
                        script=script,
                        env=env,
                        timeout=timeout or settings.PROVISIONING_SCRIPT_TIMEOUT,
                        on_line=log,
                        session_timeout=settings.PROVISIONING_SSH_CONNECT_TIMEOUT,
                    )
                except ssh.SessionNotOpened:
                    if not connection.reused or connection.alive():
                        raise
            # The kept connection died while idle (the host closed it) before the
            # script started: connect afresh. A host that stops answering still
            # fails after one timeout, as on a new connection.
    except ssh.HostKeyMismatch as exc:
        alert_raise(
            subject_type="server",
            subject_id=server.pk,
            kind="ssh_host_key_mismatch",
            severity=AlertSeverity.HARD,
            message=str(exc),
        )
        raise


def run_on_backup_target(
    *, name: str, script: str, env: Mapping[str, str], log: Callable[[str], None], timeout: float = 120
) -> list[str]:
    """Run a script as BACKUP_TARGET_USER on the off-site backup target, whose host key
    is a setting: verified on every connection, never trusted on first contact."""
    if not settings.BACKUP_TARGET_HOST_KEY:
        raise PermanentStepError("BACKUP_TARGET_HOST_KEY is not set: the backup target cannot be verified")
    key_path = settings.BACKUP_TARGET_SSH_KEY_PATH
    key = _hub_key(key_path, Path(key_path).stat().st_mtime) if key_path else hub_private_key()
    target = ssh.Target(settings.BACKUP_TARGET_HOST, settings.BACKUP_TARGET_PORT, settings.BACKUP_TARGET_USER)
    with _connections.connect(
        target,
        private_key=key,
        known_host_key=settings.BACKUP_TARGET_HOST_KEY,
        timeout=settings.PROVISIONING_SSH_CONNECT_TIMEOUT,
    ) as connection:
        return ssh.run_script(
            connection.client,
            name=name,
            script=script,
            env=env,
            timeout=timeout,
            on_line=log,
            session_timeout=settings.PROVISIONING_SSH_CONNECT_TIMEOUT,
        )


def probe(server: Server, *, log: Callable[[str], None]) -> None:
    """Connect once (recording the host key on first contact) and run `true`."""
    run_on_server(server, name="probe", script="true\n", env={}, log=log, timeout=30)


def step_script(name: str) -> str:
    """A step script (or another script of provisioning/scripts/, such as
    backup-target) with the shared helpers in front of it."""
    return (SCRIPTS_DIR / "lib.sh").read_text() + "\n" + (SCRIPTS_DIR / f"{name}.sh").read_text()


def script_names() -> list[str]:
    return sorted(p.stem for p in SCRIPTS_DIR.glob("[0-9][0-9]-*.sh"))
