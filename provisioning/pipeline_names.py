"""The names of provisioning's pipelines: what a Job row's `pipeline` says, and what
services start. Outside the pipelines package, so naming one never loads its steps."""

PROVISION_ORDER = "provision_order"
PREPARE_SERVER = "prepare_server"
DEPROVISION_TENANT = "deprovision_tenant"
BACKUP_TENANT = "backup_tenant"
RECOVER_TENANT = "recover_tenant"
MIGRATE_TENANT = "migrate_tenant"
MOVE_PIPELINES = (RECOVER_TENANT, MIGRATE_TENANT)
