"""The provisioning pipelines: an order from payment to a running tenant, a new pool
server from PREPARING to AVAILABLE, a tenant's deprovisioning, its backup now, and its
move to another server (recovery of a lost server, migration of a living one)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings

from hub.pipeline.registry import register
from hub.pipeline.spec import Pipeline, RetryPolicy, StepAction, StepCompensation, StepSpec
from hub.pipeline.wakes import AGENT_REGISTERED, wake_on
from provisioning.integrations.cloudflare import DnsProviderError
from provisioning.integrations.hetzner import ProviderError
from provisioning.integrations.ssh import ScriptFailed, SshError
from provisioning.pipeline_names import (
    BACKUP_TENANT,
    DEPROVISION_TENANT,
    MIGRATE_TENANT,
    PREPARE_SERVER,
    PROVISION_ORDER,
    RECOVER_TENANT,
)
from provisioning.pipelines import backup, deprovision, moves, order, prepare
from provisioning.services import dns
from provisioning.services.moves import move_job_finished
from provisioning.services.orders import order_job_finished

SETUP_SCRIPTS = (
    "01-system",
    "02-docker",
    "03-nginx",
    "04-firewall",
    "05-ssh-hardening",
    "06-tls",
    "07-backups",
    "08-hardening",
    "09-tools",
)
# The agent is handed the server after the base system (01-05) and before the steps
# that act as the tenant: certbot's DNS-01 hook asks the Hub with the agent's key, the
# backups go to the tenant's own repository.
BEFORE_AGENT = SETUP_SCRIPTS[:5]
AFTER_AGENT = SETUP_SCRIPTS[5:]
BASE_SCRIPTS = SETUP_SCRIPTS[:-1]


def _retry(max_attempts: int) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=max_attempts,
        base_delay=settings.PROVISIONING_RETRY_BASE_DELAY,
        max_delay=300,
        retry_on=(ProviderError, DnsProviderError, SshError, ScriptFailed, ConnectionError, TimeoutError, OSError),
    )


def _undo_retry() -> RetryPolicy:
    # Undoing must try hard and on any error: giving up leaves a server or DNS
    # records behind, and the order FAILED with a HARD alert for staff.
    return RetryPolicy(
        max_attempts=settings.PROVISIONING_COMPENSATION_ATTEMPTS,
        base_delay=settings.PROVISIONING_RETRY_BASE_DELAY,
        max_delay=300,
    )


def _undoable_step(name: str, action: StepAction, compensate: StepCompensation, **options: Any) -> StepSpec:
    """A step whose effect comes in parts: its undo also runs after it failed half way,
    and retries for `PROVISIONING_COMPENSATION_ATTEMPTS`."""
    return StepSpec(
        name=name,
        action=action,
        compensate=compensate,
        compensate_if_failed=True,
        compensation_retry=_undo_retry(),
        **options,
    )


def _script_step(name: str) -> StepSpec:
    return StepSpec(
        name=f"setup_{name}",
        action=order.run_setup_script(name),
        retry=_retry(settings.PROVISIONING_SCRIPT_ATTEMPTS),
        timeout=settings.PROVISIONING_SCRIPT_TIMEOUT + 60,
    )


register(
    Pipeline(
        name=PROVISION_ORDER,
        queue="provisioning",
        deadline=timedelta(seconds=settings.PROVISIONING_DEADLINE_SECONDS),
        on_finish=order_job_finished,
        steps=(
            # Before a server is taken: an order that cannot be installed takes nothing.
            StepSpec(name="pin_releases", action=order.pin_releases, retry=_retry(3)),
            _undoable_step(
                "allocate_server", order.allocate_server, order.release_server, retry=_retry(5), timeout=900
            ),
            StepSpec(name="wait_server_ready", action=order.wait_server_ready, retry=_retry(5), timeout=900),
            _undoable_step("create_dns", dns.create_dns, dns.delete_dns, retry=_retry(5)),
            *(_script_step(name) for name in BEFORE_AGENT),
            _undoable_step(
                "agent_handover",
                order.agent_handover,
                order.revoke_agent,
                retry=_retry(settings.PROVISIONING_SCRIPT_ATTEMPTS),
                timeout=settings.PROVISIONING_SCRIPT_TIMEOUT,
            ),
            StepSpec(name="wait_agent_registered", action=order.wait_agent_registered, retry=_retry(3)),
            *(_script_step(name) for name in AFTER_AGENT),
            StepSpec(name="fulfil", action=order.fulfil, retry=_retry(5)),
        ),
    )
)
wake_on(AGENT_REGISTERED, step_name="wait_agent_registered", waiting_jobs=order.jobs_waiting_for_agent)

register(
    Pipeline(
        name=PREPARE_SERVER,
        queue="provisioning",
        on_finish=prepare.preparation_finished,
        steps=(
            StepSpec(name="probe", action=prepare.probe_server, retry=_retry(5)),
            *(
                StepSpec(
                    name=f"setup_{name}",
                    action=prepare.run_base_script(name),
                    retry=_retry(settings.PROVISIONING_SCRIPT_ATTEMPTS),
                    timeout=settings.PROVISIONING_SCRIPT_TIMEOUT + 60,
                )
                for name in BASE_SCRIPTS
            ),
            StepSpec(name="make_available", action=prepare.make_available),
        ),
    )
)

register(
    Pipeline(
        name=DEPROVISION_TENANT,
        queue="provisioning",
        steps=(
            StepSpec(name="remove_dns", action=deprovision.remove_dns, retry=_retry(5)),
            StepSpec(
                name="wipe_server",
                action=deprovision.wipe_server,
                retry=_retry(settings.PROVISIONING_SCRIPT_ATTEMPTS),
                timeout=settings.PROVISIONING_SCRIPT_TIMEOUT + 60,
            ),
            StepSpec(name="release_server", action=deprovision.release_server, retry=_retry(5), timeout=900),
            StepSpec(name="finish", action=deprovision.finish, retry=_retry(5)),
        ),
    )
)

register(
    Pipeline(
        name=BACKUP_TENANT,
        queue="provisioning",
        steps=(
            StepSpec(
                name="run_backup",
                action=backup.run_backup,
                retry=_retry(settings.PROVISIONING_SCRIPT_ATTEMPTS),
                timeout=settings.PROVISIONING_SCRIPT_TIMEOUT + 60,
            ),
            StepSpec(name="wait_report", action=backup.wait_report, retry=_retry(3)),
        ),
    )
)


def _move_script_step(name: str) -> StepSpec:
    return StepSpec(
        name=f"setup_{name}",
        action=moves.run_setup_script(name),
        retry=_retry(settings.PROVISIONING_SCRIPT_ATTEMPTS),
        timeout=settings.PROVISIONING_SCRIPT_TIMEOUT + 60,
    )


def _move_steps(*, migrate: bool) -> tuple[StepSpec, ...]:
    """Recovery and migration: the same steps, a migration with maintenance and a
    final backup of the living source before the target's agent comes."""
    script_timeout = settings.PROVISIONING_SCRIPT_TIMEOUT + 60
    before_switch = (
        StepSpec(name="pin_releases", action=moves.pin_releases, retry=_retry(3)),
        _undoable_step("take_server", moves.take_server, moves.release_target, retry=_retry(5), timeout=900),
        StepSpec(name="wait_server_ready", action=moves.wait_server_ready, retry=_retry(5), timeout=900),
        *(_move_script_step(name) for name in BEFORE_AGENT),
        *(
            (
                _undoable_step("enter_maintenance", moves.enter_maintenance, moves.leave_maintenance, retry=_retry(3)),
                StepSpec(
                    name="final_backup",
                    action=moves.final_backup,
                    retry=_retry(settings.PROVISIONING_SCRIPT_ATTEMPTS),
                    timeout=script_timeout,
                ),
            )
            if migrate
            else ()
        ),
        _undoable_step(
            "agent_handover",
            moves.agent_handover,
            moves.revoke_target_agent,
            retry=_retry(settings.PROVISIONING_SCRIPT_ATTEMPTS),
            timeout=settings.PROVISIONING_SCRIPT_TIMEOUT,
        ),
        StepSpec(name="wait_agent_registered", action=moves.wait_agent_registered, retry=_retry(3)),
        *(_move_script_step(name) for name in ("06-tls", "07-backups", "08-hardening")),
        StepSpec(
            name="restore",
            action=moves.restore,
            retry=_retry(settings.PROVISIONING_SCRIPT_ATTEMPTS),
            timeout=script_timeout,
        ),
        _move_script_step("09-tools"),
    )
    after_switch = (
        _undoable_step("switch", moves.switch, moves.point_dns_back, retry=_retry(5)),
        # Past the switch the tenant lives on the target: these retry long, never undo.
        StepSpec(name="wait_target_heartbeat", action=moves.wait_target_heartbeat, retry=_undo_retry()),
        StepSpec(name="release_source", action=moves.release_source, retry=_undo_retry(), timeout=script_timeout),
        StepSpec(name="finish", action=moves.finish, retry=_undo_retry()),
    )
    return before_switch + after_switch


for _name, _migrate in ((RECOVER_TENANT, False), (MIGRATE_TENANT, True)):
    register(
        Pipeline(
            name=_name,
            queue="provisioning",
            deadline=timedelta(seconds=settings.MOVE_DEADLINE_SECONDS),
            on_finish=move_job_finished,
            steps=_move_steps(migrate=_migrate),
        )
    )
