"""Every write of the tenants app, one module per concern:

- lifecycle: the tenant's creation and every move of its status (TENANT_TRANSITIONS);
- agents: registration tokens, registration, API keys (rotation, revocation);
- heartbeats: the fast path through Redis and the bulk flush to Postgres;
- commands: queued for an agent, handed out, their results recorded;
- commands_bulk: the same for thousands of tenants at once (rollouts);
- reports: backup status and AI token usage;
- backups: the tenant's off-site backup repository."""

from tenants.services.agents import (
    AgentAuthError,
    KeyRotation,
    RegistrationRefused,
    agent_key_caches_repair,
    agent_key_revoke,
    agent_key_rotate,
    agent_register,
    registration_token_issue,
)
from tenants.services.backups import backup_account_name, backup_repository_ensure, backup_repository_mark_authorized
from tenants.services.commands import (
    CommandNotFound,
    SweepResult,
    agents_sweep,
    command_queue,
    command_record_result,
    commands_deliver,
    commands_expire,
    commands_reflag,
)
from tenants.services.heartbeats import (
    FlushResult,
    HeartbeatReply,
    HeartbeatThrottled,
    HeartbeatUnavailable,
    heartbeat_flush,
    heartbeat_ingest,
)
from tenants.services.lifecycle import tenant_create
from tenants.services.reports import backup_report_ingest, usage_report_ingest

__all__ = [
    "AgentAuthError",
    "CommandNotFound",
    "FlushResult",
    "HeartbeatReply",
    "HeartbeatThrottled",
    "HeartbeatUnavailable",
    "KeyRotation",
    "RegistrationRefused",
    "SweepResult",
    "agent_key_caches_repair",
    "agent_key_revoke",
    "agent_key_rotate",
    "agent_register",
    "agents_sweep",
    "backup_account_name",
    "backup_report_ingest",
    "backup_repository_ensure",
    "backup_repository_mark_authorized",
    "command_queue",
    "command_record_result",
    "commands_deliver",
    "commands_expire",
    "commands_reflag",
    "heartbeat_flush",
    "heartbeat_ingest",
    "registration_token_issue",
    "tenant_create",
    "usage_report_ingest",
]
