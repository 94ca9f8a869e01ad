"""Settings for the Hub. Every value an operator may tune comes from the environment
(django-environ); a `.env` file at the repository root is read when present."""

from pathlib import Path
from typing import Any

import environ
from kombu import Queue
from redis.connection import parse_url as parse_redis_url

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# Production refuses to start without its secrets; development gets a fixed,
# obviously-insecure key so `make demo` works on a fresh machine.
HUB_ENV = env.str("HUB_ENV", default="development")
IS_PRODUCTION = HUB_ENV == "production"
_DEV_SECRET = "insecure-development-key-do-not-use-in-production-0123456789"  # noqa: S105 - dev only
SECRET_KEY = env.str("DJANGO_SECRET_KEY") if IS_PRODUCTION else env.str("DJANGO_SECRET_KEY", default=_DEV_SECRET)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
HUB_PUBLIC_URL = env.str("HUB_PUBLIC_URL", default="http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_celery_beat",
    "hub",
    "provisioning",
    "tenants",
    "billing",
    "rollouts",
    "monitoring",
    "ops",
]

MIDDLEWARE = [
    "hub.selfwatch.web.RequestMetricsMiddleware",
    "hub.api.errors.ApiJsonErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The admin's static files, served by the web process itself (scripts/web.sh runs
    # collectstatic into STATIC_ROOT); nginx may serve them first in compose.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "hub.urls"
WSGI_APPLICATION = "hub.wsgi.application"
ASGI_APPLICATION = "hub.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "hub" / "templates", BASE_DIR / "ops" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/hub")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Postgres's JIT compiles any query its planner prices above jit_above_cost: a fleet
# check's 100,000-row select paid 100-200 ms of compiling for 300-500 ms of running,
# on every run. The Hub's queries are short; DATABASE_JIT=true gives JIT back.
if not env.bool("DATABASE_JIT", default=False):
    _db_options = DATABASES["default"].setdefault("OPTIONS", {})
    _db_options["options"] = f"{_db_options.get('options', '')} -c jit=off".strip()
# Parallel test runs (CI next to a developer's run) need their own test databases.
DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default="test_hub")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "hub.api.schema.HubAutoSchema",
    "EXCEPTION_HANDLER": "hub.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Hub API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Every status set gets its own name in the schema, not Status8a0Enum.
    "ENUM_NAME_OVERRIDES": {
        "TierEnum": "provisioning.models.Tier",
        "RegionEnum": "provisioning.models.Region",
        "OrderStatusEnum": "provisioning.models.OrderStatus",
        "ServerStatusEnum": "provisioning.models.ServerStatus",
        "JobStatusEnum": "hub.pipeline.models.JobStatus",
        "StepStatusEnum": "hub.pipeline.models.StepStatus",
        "TenantStatusEnum": "tenants.models.TenantStatus",
        "CommandStatusEnum": "tenants.models.CommandStatus",
        "RolloutStatusEnum": "rollouts.models.RolloutStatus",
        "StageStatusEnum": "rollouts.models.StageStatus",
        "UpdateStatusEnum": "rollouts.models.UpdateStatus",
        "BackupItemStatusEnum": ["success", "failed", "skipped"],
        "CommandOutcomeEnum": ["succeeded", "failed"],
    },
}

# --- Celery -----------------------------------------------------------------------
# Work must never be lost or done twice. The broker is only a doorbell: the step rows
# in Postgres are the truth, and the pipeline reaper re-rings the bell when a message
# is lost. The settings below make the broker as honest as it can be.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
# Ack after the task ran, and requeue when the child process died under it;
# without the second, a SIGKILLed child's message is acked and lost.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Cancelling the running tasks on a lost broker connection is set per pool when a
# worker starts (hub.workers.set_cancel_on_connection_loss): prefork can kill a child,
# the threads pool cannot stop a thread and answered it with NotImplementedError on the
# path that restarts the consumer. The step's lease in Postgres decides what runs again.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Reconnect with backoff, but not forever: a worker that cannot reach the broker for
# this many attempts exits non-zero and its supervisor starts it afresh.
CELERY_BROKER_CONNECTION_MAX_RETRIES = env.int("CELERY_BROKER_CONNECTION_MAX_RETRIES", default=30)
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=5.0)
# The Redis transport with an ack that a dead channel cannot turn into a crash of the
# consumer (hub/broker.py). The URL's scheme stays redis://.
CELERY_BROKER_TRANSPORT = "hub.broker:Transport"
# On a deploy's SIGTERM, wait this long for running tasks, then requeue them.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env.float("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", default=20.0)
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = True

# The longest a single step may run, and the longest countdown ever handed to the
# broker; retry waits longer than that are kept in the step row for the reaper.
PIPELINE_MAX_STEP_TIMEOUT = env.int("PIPELINE_MAX_STEP_TIMEOUT", default=1800)
PIPELINE_MAX_BROKER_COUNTDOWN = env.int("PIPELINE_MAX_BROKER_COUNTDOWN", default=300)
# Redis redelivers an unacked message after the visibility timeout: it must be longer
# than any step plus any countdown, or a slow step would be run twice by the broker.
CELERY_BROKER_VISIBILITY_TIMEOUT = env.int("CELERY_BROKER_VISIBILITY_TIMEOUT", default=3 * 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT,
    # A read that hangs on a half-open connection fails within socket_timeout; the
    # kernel's keepalive and redis-py's PING before a command idle for
    # health_check_interval find a dead peer (a Redis restarted or moved) before a
    # command is lost on it. Redis has no AMQP heartbeats: these are its equivalent.
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    "retry_on_timeout": True,
    "health_check_interval": 25,
}
CELERY_TASK_SOFT_TIME_LIMIT = PIPELINE_MAX_STEP_TIMEOUT + 60
CELERY_TASK_TIME_LIMIT = PIPELINE_MAX_STEP_TIMEOUT + 120

HUB_QUEUES = ("provisioning", "rollouts", "monitoring", "billing", "default")
CELERY_TASK_QUEUES = [Queue(name) for name in HUB_QUEUES]
CELERY_TASK_DEFAULT_QUEUE = "default"
# Every worker also consumes a queue of its own, <hostname>.dq2: the reaper's canary
# goes through it (hub/workers.py).
CELERY_WORKER_DIRECT = True
CELERY_TASK_ROUTES = {
    "provisioning.*": {"queue": "provisioning"},
    "rollouts.*": {"queue": "rollouts"},
    "monitoring.*": {"queue": "monitoring"},
    "tenants.*": {"queue": "monitoring"},
    "billing.*": {"queue": "billing"},
    "hub.pipeline.*": {"queue": "default"},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Celery's Django fixup closes every database connection before and after each task
# unless this is set: each task that touched Postgres opened a new connection (a new
# backend; about 10 ms, more under load), and CONN_MAX_AGE and CONN_HEALTH_CHECKS never
# applied to workers. Set this high, the fixup leaves connections alone and
# hub.celery closes the old or broken ones at each task's start and end, as Django
# does per request.
CELERY_DB_REUSE_MAX = 1_000_000

# --- Workers that cannot hang silently (hub/workers.py) -----------------------------
# A worker that has consumed nothing for this long while work waited in its queues
# (its own canary included) opens a HARD worker_stalled alert and exits with
# WORKER_STALL_EXIT_CODE, for its supervisor to start it again.
WORKER_STALL_SECONDS = env.float("WORKER_STALL_SECONDS", default=120.0)
# How long the stalled worker's warm shutdown may take before it exits anyway.
WORKER_STALL_EXIT_GRACE = env.float("WORKER_STALL_EXIT_GRACE", default=30.0)
WORKER_STALL_EXIT_CODE = 75  # EX_TEMPFAIL: start me again

# --- The step-pipeline engine ----------------------------------------------------
# A running step renews its lease this often; a step whose lease ran out belongs to
# a dead worker and is taken back by the reaper.
PIPELINE_LEASE_SECONDS = env.float("PIPELINE_LEASE_SECONDS", default=60.0)
# A step enqueued this long ago and never claimed had its message lost.
PIPELINE_MESSAGE_LOST_AFTER = env.float("PIPELINE_MESSAGE_LOST_AFTER", default=120.0)
PIPELINE_REAPER_INTERVAL = env.float("PIPELINE_REAPER_INTERVAL", default=15.0)
# The two statements every step runs are prepared once per connection (Postgres spent
# most of their time planning them). Off behind a pooler in transaction mode.
PIPELINE_PREPARED_STATEMENTS = env.bool("PIPELINE_PREPARED_STATEMENTS", default=True)
# The record of a step's success also claims the job's next step, and the worker runs
# it at once, without a message, for as long as its task has run less than this; past
# it the next step goes through the broker as usual, so one task never outlives its
# time limit (a step's timeout plus this stays under CELERY_TASK_SOFT_TIME_LIMIT) nor
# keeps a worker from the other jobs' steps for long. 0 sends every step through the broker.
PIPELINE_RUN_ON_SECONDS = env.float("PIPELINE_RUN_ON_SECONDS", default=30.0)
# Extra modules that declare pipelines (the test suite adds its own).
PIPELINE_MODULES = env.list("PIPELINE_MODULES", default=[])

# --- Logging -------------------------------------------------------------------------
# Every process (web, workers, beat) logs to stderr: one JSON object per line by default
# (LOG_FORMAT=json, for the log shipper), or LOG_FORMAT=plain for a person at a terminal.
# Both carry the ids bound with hub.logcontext.bind (job_id, step_id, order_id, ...) and
# pass the redaction filter first, so no secret reaches a log line (hub/logjson.py).
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
if LOG_FORMAT not in ("json", "plain"):
    raise ValueError(f"LOG_FORMAT must be json or plain, not {LOG_FORMAT!r}")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "hub.logcontext.ContextFilter"},
        "redact": {"()": "hub.logjson.RedactSecretsFilter"},
    },
    "formatters": {
        "json": {"()": "hub.logjson.JsonFormatter"},
        "plain": {"()": "hub.logjson.PlainFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context", "redact"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # Django's own loggers come with handlers of their own (plain text, some only with
    # DEBUG); here they only propagate to the root, so every line has one format.
    "loggers": {
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.server": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
    },
}

if IS_PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

# --- Provider rate limits and secrets at rest ---------------------------------------
# One bucket per provider shared by all workers: (requests, per seconds, burst).
RATE_LIMIT_REDIS_URL = env.str("RATE_LIMIT_REDIS_URL", default=CELERY_BROKER_URL)
PROVIDER_RATE_LIMITS = {
    "hetzner": (
        env.int("HETZNER_RATE_LIMIT", default=3600),
        env.float("HETZNER_RATE_PERIOD", default=3600.0),
        env.int("HETZNER_RATE_BURST", default=100),
    ),
    "cloudflare": (
        env.int("CLOUDFLARE_RATE_LIMIT", default=1200),
        env.float("CLOUDFLARE_RATE_PERIOD", default=300.0),
        env.int("CLOUDFLARE_RATE_BURST", default=200),
    ),
    # Netcup publishes no limit for its SCP webservice; this keeps the Hub polite.
    "netcup": (
        env.int("NETCUP_RATE_LIMIT", default=600),
        env.float("NETCUP_RATE_PERIOD", default=3600.0),
        env.int("NETCUP_RATE_BURST", default=30),
    ),
}
# A provider's 5xx is sent again PROVIDER_SERVER_ERROR_RETRIES times, waiting about
# PROVIDER_SERVER_ERROR_BACKOFF * 2**n seconds (equal jitter) before the n-th resend.
PROVIDER_SERVER_ERROR_RETRIES = env.int("PROVIDER_SERVER_ERROR_RETRIES", default=3)
PROVIDER_SERVER_ERROR_BACKOFF = env.float("PROVIDER_SERVER_ERROR_BACKOFF", default=1.0)
# Fernet keys, comma-separated, newest first: the first encrypts, all decrypt, so a
# key can be rotated in without re-encrypting everything at once.
_DEV_FIELD_KEY = "q0m2rZ2tq3yN3d2b8lq1Xq9v4o8Wm5k1s2a3b4c5d6E="
FIELD_ENCRYPTION_KEYS = (
    env.list("FIELD_ENCRYPTION_KEY") if IS_PRODUCTION else env.list("FIELD_ENCRYPTION_KEY", default=[_DEV_FIELD_KEY])
)

# --- Billing (Stripe) -----------------------------------------------------------------
# STRIPE_API_BASE points the real `stripe` library at the sandbox emulator in tests
# and demos; production leaves it at Stripe's own address.
_DEV_STRIPE_KEY = "sk_test_hub_development"
_DEV_STRIPE_WEBHOOK_SECRET = "whsec_hub_development"  # noqa: S105 - dev only
STRIPE_SECRET_KEY = (
    env.str("STRIPE_SECRET_KEY") if IS_PRODUCTION else env.str("STRIPE_SECRET_KEY", default=_DEV_STRIPE_KEY)
)
STRIPE_WEBHOOK_SECRET = (
    env.str("STRIPE_WEBHOOK_SECRET")
    if IS_PRODUCTION
    else env.str("STRIPE_WEBHOOK_SECRET", default=_DEV_STRIPE_WEBHOOK_SECRET)
)
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")
STRIPE_TIMEOUT_SECONDS = env.float("STRIPE_TIMEOUT_SECONDS", default=20.0)
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", default=2)
STRIPE_METER_EVENT_NAME = env.str("STRIPE_METER_EVENT_NAME", default="ai_tokens_overage")
STRIPE_PRICE_IDS = {
    "lite": env.str("STRIPE_PRICE_LITE", default="price_hub_lite"),
    "build": env.str("STRIPE_PRICE_BUILD", default="price_hub_build"),
    "scale": env.str("STRIPE_PRICE_SCALE", default="price_hub_scale"),
    "enterprise": env.str("STRIPE_PRICE_ENTERPRISE", default="price_hub_enterprise"),
}
BILLING_CHECKOUT_SUCCESS_URL = env.str(
    "BILLING_CHECKOUT_SUCCESS_URL", default=f"{HUB_PUBLIC_URL}/checkout/success?session_id={{CHECKOUT_SESSION_ID}}"
)
BILLING_CHECKOUT_CANCEL_URL = env.str("BILLING_CHECKOUT_CANCEL_URL", default=f"{HUB_PUBLIC_URL}/checkout/cancel")
BILLING_CHECKOUT_RATE = env.str("BILLING_CHECKOUT_RATE", default="30/min")
BILLING_WEBHOOK_MAX_BYTES = env.int("BILLING_WEBHOOK_MAX_BYTES", default=512 * 1024)
# Dunning: days a past-due subscription keeps running before the tenant is suspended,
# and days a cancelled tenant's data is kept before the server is wiped.
BILLING_GRACE_PERIOD_DAYS = env.int("BILLING_GRACE_PERIOD_DAYS", default=7)
BILLING_RETENTION_DAYS = env.int("BILLING_RETENTION_DAYS", default=30)
BILLING_DUNNING_INTERVAL = env.int("BILLING_DUNNING_INTERVAL", default=300)
# The webhook inbox: a failed handler is retried this often with backoff; an event
# received and never claimed this long ago had its message lost; a handler started
# this long ago belongs to a dead worker.
BILLING_EVENT_MAX_ATTEMPTS = env.int("BILLING_EVENT_MAX_ATTEMPTS", default=8)
BILLING_EVENT_LOST_AFTER = env.float("BILLING_EVENT_LOST_AFTER", default=60.0)
BILLING_EVENT_LEASE_SECONDS = env.float("BILLING_EVENT_LEASE_SECONDS", default=300.0)
BILLING_REQUEUE_INTERVAL = env.int("BILLING_REQUEUE_INTERVAL", default=60)
# AI tokens included per billing period, by tier (read by provisioning.catalog.token_pool);
# usage beyond is metered to Stripe.
PLAN_TOKEN_POOLS = {
    "lite": env.int("AI_TOKEN_POOL_LITE", default=2_000_000),
    "build": env.int("AI_TOKEN_POOL_BUILD", default=5_000_000),
    "scale": env.int("AI_TOKEN_POOL_SCALE", default=12_000_000),
    "enterprise": env.int("AI_TOKEN_POOL_ENTERPRISE", default=30_000_000),
}
BILLING_USAGE_THRESHOLDS = (80, 90, 100)
# Who gets billing's staff emails; empty: STAFF_EMAILS. (Mail itself: EMAIL_BACKEND,
# DEFAULT_FROM_EMAIL and EMAIL_FILE_PATH, set once below.)
BILLING_STAFF_EMAILS = env.list("BILLING_STAFF_EMAILS", default=[])
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=20)

# --- Providers and provisioning ------------------------------------------------------
HCLOUD_TOKEN = env.str("HCLOUD_TOKEN", default="")
HCLOUD_API_ENDPOINT = env.str("HCLOUD_API_ENDPOINT", default="https://api.hetzner.cloud/v1")
# Netcup's SCP webservice (SOAP): the snapshots of contract servers. The password is the
# webservice password set in the SCP, not the panel login's.
NETCUP_SCP_ENDPOINT = env.str("NETCUP_SCP_ENDPOINT", default="https://www.servercontrolpanel.de/WSEndUser")
NETCUP_SCP_LOGIN = env.str("NETCUP_SCP_LOGIN", default="")
NETCUP_SCP_PASSWORD = env.str("NETCUP_SCP_PASSWORD", default="")
HCLOUD_SSH_KEY_NAME = env.str("HCLOUD_SSH_KEY_NAME", default="hub")
# Servers bought on Hetzner listen on 22; the sandbox's hosts cannot all do that.
HCLOUD_SSH_PORT = env.int("HCLOUD_SSH_PORT", default=22)
HCLOUD_POLL_INTERVAL = env.float("HCLOUD_POLL_INTERVAL", default=1.0)
HCLOUD_POLL_MAX_RETRIES = env.int("HCLOUD_POLL_MAX_RETRIES", default=300)
CLOUDFLARE_API_TOKEN = env.str("CLOUDFLARE_API_TOKEN", default="")
CLOUDFLARE_API_BASE = env.str("CLOUDFLARE_API_BASE", default="https://api.cloudflare.com/client/v4")
# The zone of the Hub's own names. A customer's domain goes in its own zone of the
# account (CLOUDFLARE_ACCOUNT_ID): found by name, or added when it has none.
CLOUDFLARE_ZONE_ID = env.str("CLOUDFLARE_ZONE_ID", default="")
CLOUDFLARE_ACCOUNT_ID = env.str("CLOUDFLARE_ACCOUNT_ID", default="")
# How long a zone lookup by name is kept (per process).
CLOUDFLARE_ZONE_CACHE_SECONDS = env.float("CLOUDFLARE_ZONE_CACHE_SECONDS", default=60.0)
# Zones (by name) that allow no wildcard record: they get one A record per tool
# subdomain instead; "*" means every zone.
DNS_NO_WILDCARD_ZONES = env.list("DNS_NO_WILDCARD_ZONES", default=[])
# A domain in no zone of the account: the Hub adds its zone and waits for the customer
# to delegate the domain to Cloudflare's nameservers, looking again this often, for
# at most this long before the order is rolled back.
DNS_NAMESERVER_CHECK_SECONDS = env.float("DNS_NAMESERVER_CHECK_SECONDS", default=300.0)
DNS_NAMESERVER_DEADLINE_SECONDS = env.int("DNS_NAMESERVER_DEADLINE_SECONDS", default=72 * 3600)
# The Hub's own SSH identity, used on every server it sets up.
HUB_SSH_PRIVATE_KEY_PATH = env.str("HUB_SSH_PRIVATE_KEY_PATH", default=str(BASE_DIR / "var" / "hub_ssh_key"))
HUB_ADMIN_EMAIL = env.str("HUB_ADMIN_EMAIL", default="ops@example.com")
STAFF_EMAILS = env.list("STAFF_EMAILS", default=["ops@example.com"])
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Hub <hub@example.com>")
# The app download links the welcome email carries, as platform=url pairs
# (APP_DOWNLOAD_LINKS="iOS=https://...,Android=https://...").
APP_DOWNLOAD_LINKS = env.dict(
    "APP_DOWNLOAD_LINKS",
    default={
        "iOS": "https://apps.apple.com/app/hub-ai/id000000000",
        "Android": "https://play.google.com/store/apps/details?id=example.hub.ai",
        "Desktop": "https://example.com/download",
    },
)
# Tenant health reaches the customer (FACTS.md): HARD at once, MEDIUM once the check
# has failed this many times in a row; one notice per alert episode.
HEALTH_CUSTOMER_MEDIUM_AFTER = env.int("HEALTH_CUSTOMER_MEDIUM_AFTER", default=3)
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default=str(BASE_DIR / "var" / "mail"))
PROVISIONING_DEADLINE_SECONDS = env.int("PROVISIONING_DEADLINE_SECONDS", default=30 * 60)
PROVISIONING_SCRIPT_TIMEOUT = env.int("PROVISIONING_SCRIPT_TIMEOUT", default=900)
PROVISIONING_SSH_CONNECT_TIMEOUT = env.float("PROVISIONING_SSH_CONNECT_TIMEOUT", default=10.0)
# How long a bought server may take to answer SSH, and the agent to register.
PROVISIONING_SSH_WAIT_SECONDS = env.int("PROVISIONING_SSH_WAIT_SECONDS", default=600)
PROVISIONING_AGENT_WAIT_SECONDS = env.int("PROVISIONING_AGENT_WAIT_SECONDS", default=600)
# The agent's registration wakes the step waiting for it; it looks by itself this often
# only in case a wake was lost.
PROVISIONING_AGENT_POLL_SECONDS = env.float("PROVISIONING_AGENT_POLL_SECONDS", default=10.0)
# A MANUAL order waiting for staff looks again this often (the admin's assign wakes it at once).
PROVISIONING_MANUAL_POLL_SECONDS = env.int("PROVISIONING_MANUAL_POLL_SECONDS", default=300)
# Where a sandbox host's agent finds its code (the sandbox only; production ships an image).
AGENT_SOURCE_DIR = env.str("AGENT_SOURCE_DIR", default=str(BASE_DIR))
# The off-site backup target: an SSH server with the SFTP subsystem where every tenant
# gets an account locked into <base path>/<account> (tenants' restic repositories).
# The Hub logs in as BACKUP_TARGET_USER (root) to create those accounts; its host key
# (a known_hosts key, "ssh-ed25519 AAAA...") is verified, never trusted on first use.
# Without a host, tenants are set up without off-site backups.
BACKUP_TARGET_HOST = env.str("BACKUP_TARGET_HOST", default="")
BACKUP_TARGET_PORT = env.int("BACKUP_TARGET_PORT", default=22)
BACKUP_TARGET_USER = env.str("BACKUP_TARGET_USER", default="root")
BACKUP_TARGET_BASE_PATH = env.str("BACKUP_TARGET_BASE_PATH", default="/srv/hub-backups")
BACKUP_TARGET_HOST_KEY = env.str("BACKUP_TARGET_HOST_KEY", default="")
# The key the Hub logs in to the target with (default: HUB_SSH_PRIVATE_KEY_PATH).
BACKUP_TARGET_SSH_KEY_PATH = env.str("BACKUP_TARGET_SSH_KEY_PATH", default="")

# --- Tenants / agent API -----------------------------------------------------------
# Redis for the agent fast path: heartbeat buffer, command flags, key-cache generation,
# per-tenant rate counters. Nothing in it that Postgres cannot rebuild.
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/1")
AGENT_HEARTBEAT_INTERVAL = env.int("AGENT_HEARTBEAT_INTERVAL", default=60)

# --- Live events (hub/events.py, ops/streams.py) ----------------------------------------
# Every status move is appended to a bounded history (a Redis Stream) and published on a
# pub/sub channel after its commit; the event streams of the API replay the history for
# a client that reconnects with Last-Event-ID and follow the channel.
EVENTS_REDIS_URL = env.str("EVENTS_REDIS_URL", default=REDIS_URL)
EVENTS_STREAM = env.str("EVENTS_STREAM", default="hub:events")
# Pub/sub channels are server-wide, blind to the database a client selected: two Hubs
# sharing a Redis server on different databases would hear each other's events (and a
# neighbour's later ids would hide their own). The default channel names the database.
EVENTS_CHANNEL = env.str(
    "EVENTS_CHANNEL", default=f"{EVENTS_STREAM}@db{parse_redis_url(EVENTS_REDIS_URL).get('db') or 0}"
)
# Events kept for replay: of the whole operation, and of each order (kept a day after its last).
EVENTS_HISTORY_LENGTH = env.int("EVENTS_HISTORY_LENGTH", default=10_000)
EVENTS_SCOPE_HISTORY_LENGTH = env.int("EVENTS_SCOPE_HISTORY_LENGTH", default=1_000)
EVENTS_SCOPE_TTL_SECONDS = env.int("EVENTS_SCOPE_TTL_SECONDS", default=24 * 3600)
# A comment line this often keeps an idle stream open through proxies.
EVENTS_KEEPALIVE_SECONDS = env.float("EVENTS_KEEPALIVE_SECONDS", default=15.0)
# A stream ends after this long and the browser reconnects with Last-Event-ID, so no
# connection outlives a deploy or a credential by much.
EVENTS_STREAM_MAX_SECONDS = env.float("EVENTS_STREAM_MAX_SECONDS", default=600.0)
# Events waiting for one slow client; past that it is disconnected (it reconnects and replays).
EVENTS_CLIENT_BUFFER = env.int("EVENTS_CLIENT_BUFFER", default=1_000)
AGENT_REGISTRATION_TOKEN_TTL = env.int("AGENT_REGISTRATION_TOKEN_TTL", default=3600)
# After a rotation the old key keeps working this long.
AGENT_KEY_ROTATION_OVERLAP = env.int("AGENT_KEY_ROTATION_OVERLAP", default=3600)
# Per-process API-key cache: entries must outlive a heartbeat interval to be hit;
# revocation does not wait for them (see tenants/keycache.py).
AGENT_KEY_CACHE_SECONDS = env.float("AGENT_KEY_CACHE_SECONDS", default=600.0)
AGENT_KEY_CACHE_MAX_ENTRIES = env.int("AGENT_KEY_CACHE_MAX_ENTRIES", default=200_000)
AGENT_REQUEST_MAX_BYTES = env.int("AGENT_REQUEST_MAX_BYTES", default=64 * 1024)
AGENT_THROTTLE_RATE = env.str("AGENT_THROTTLE_RATE", default="120/minute")
AGENT_REGISTER_THROTTLE_RATE = env.str("AGENT_REGISTER_THROTTLE_RATE", default="30/minute")
# A delivered command unanswered this long is delivered again; unanswered past its TTL
# it expires.
COMMAND_REDELIVERY_TIMEOUT = env.float("COMMAND_REDELIVERY_TIMEOUT", default=300.0)
COMMAND_TTL = env.int("COMMAND_TTL", default=3600)
COMMANDS_PER_HEARTBEAT = env.int("COMMANDS_PER_HEARTBEAT", default=20)
# Rows per statement when the flush writes buffered heartbeats.
HEARTBEAT_FLUSH_CHUNK = env.int("HEARTBEAT_FLUSH_CHUNK", default=20_000)
PROVISIONING_RETRY_BASE_DELAY = env.float("PROVISIONING_RETRY_BASE_DELAY", default=10.0)
PROVISIONING_SCRIPT_ATTEMPTS = env.int("PROVISIONING_SCRIPT_ATTEMPTS", default=3)
# Attempts of each undo (release server, delete DNS, revoke agent) before a rollback
# gives up, the order goes FAILED and staff get a HARD alert (about 10 min at 10 s).
PROVISIONING_COMPENSATION_ATTEMPTS = env.int("PROVISIONING_COMPENSATION_ATTEMPTS", default=8)
# The one-time token the agent registers with (the issue: expires in 24 h).
PROVISIONING_REGISTRATION_TOKEN_TTL = env.int("PROVISIONING_REGISTRATION_TOKEN_TTL", default=24 * 3600)

# --- Tenant moves: backup now, recover, migrate, the monthly overflow check --------
# How long backup-now waits for the agent to report the run it made.
BACKUP_NOW_REPORT_WAIT_SECONDS = env.int("BACKUP_NOW_REPORT_WAIT_SECONDS", default=300)
# How long a move waits for the agent to answer its maintenance command, and for the
# first heartbeat from the target after the switch.
MOVE_COMMAND_WAIT_SECONDS = env.int("MOVE_COMMAND_WAIT_SECONDS", default=300)
MOVE_HEARTBEAT_WAIT_SECONDS = env.int("MOVE_HEARTBEAT_WAIT_SECONDS", default=600)
MOVE_DEADLINE_SECONDS = env.int("MOVE_DEADLINE_SECONDS", default=60 * 60)
# The monthly overflow check: at most this many migrations of Hetzner tenants to free
# Netcup servers running at once, started only in the region's night hours (local
# "start-end" hours, end excluded; "0-24": any time).
OVERFLOW_MIGRATIONS_MAX = env.int("OVERFLOW_MIGRATIONS_MAX", default=3)
OVERFLOW_NIGHT_HOURS = {
    "eu": env.str("OVERFLOW_NIGHT_HOURS_EU", default="1-5"),
    "us": env.str("OVERFLOW_NIGHT_HOURS_US", default="1-5"),
}
OVERFLOW_REGION_TIMEZONES = {"eu": "Europe/Berlin", "us": "America/New_York"}
# EUR per month (FACTS.md): a Netcup contract server and Hetzner's monthly cap, per tier.
NETCUP_MONTHLY_EUR = {"lite": 8.50, "build": 14.50, "scale": 26.00, "enterprise": 48.00}
HETZNER_MONTHLY_EUR = {"lite": 8.24, "build": 15.59, "scale": 29.09, "enterprise": 58.15}

# --- Monitoring ----------------------------------------------------------------------
# Alert routing: SOFT shows in the admin only, MEDIUM also emails STAFF_EMAILS, HARD
# also posts {"text": ...} to this Slack-compatible webhook (empty: no webhook).
ALERT_WEBHOOK_URL = env.str("ALERT_WEBHOOK_URL", default="")
ALERT_WEBHOOK_TIMEOUT = env.float("ALERT_WEBHOOK_TIMEOUT", default=10.0)
ALERT_NOTIFICATION_MAX_RETRIES = env.int("ALERT_NOTIFICATION_MAX_RETRIES", default=8)
# A notification still PENDING this long after its last try had its message lost.
ALERT_NOTIFICATION_LOST_AFTER = env.int("ALERT_NOTIFICATION_LOST_AFTER", default=900)
# Notifications per Celery message: an alert storm of 20,000 is 100 messages, not 20,000.
# Small enough that a batch whose webhook times out on every post (up to 100 posts of
# ALERT_WEBHOOK_TIMEOUT) still ends well within CELERY_TASK_TIME_LIMIT.
ALERT_NOTIFICATION_BATCH_SIZE = env.int("ALERT_NOTIFICATION_BATCH_SIZE", default=200)
# More openings than this of one kind and severity in one check run are a storm: one
# digest per channel instead of a message per alert (0: never digest).
ALERT_STORM_THRESHOLD = env.int("ALERT_STORM_THRESHOLD", default=50)
# A tenant is stale after this many missed intervals (its own heartbeat_interval).
HEARTBEAT_STALE_INTERVALS = env.int("HEARTBEAT_STALE_INTERVALS", default=3)
# A gap this long between two heartbeat checks, or with no heartbeat from anyone,
# means the Hub (beat, or web and the flush) was down: every tenant gets a fresh grace.
HUB_OUTAGE_GAP_SECONDS = env.int("HUB_OUTAGE_GAP_SECONDS", default=90)
# Below this many live tenants, fleet-wide silence is not taken for a Hub outage.
HEARTBEAT_INTAKE_MIN_FLEET = env.int("HEARTBEAT_INTAKE_MIN_FLEET", default=5)
DISK_ALERT_PERCENT = env.float("DISK_ALERT_PERCENT", default=85.0)
MEMORY_ALERT_PERCENT = env.float("MEMORY_ALERT_PERCENT", default=90.0)
TLS_EXPIRY_ALERT_DAYS = env.int("TLS_EXPIRY_ALERT_DAYS", default=14)
BACKUP_REPORT_MAX_AGE_HOURS = env.int("BACKUP_REPORT_MAX_AGE_HOURS", default=48)
# Warm pool: the minimum AVAILABLE (+ PREPARING) servers per (region, tier). Keys in
# POOL_NETCUP ("region-tier") are filled by staff ordering Netcup contracts (an alert
# says how many); the others are bought on Hetzner Cloud, at most N per run.
POOL_TARGETS = {
    ("eu", "build"): env.int("POOL_TARGET_EU_BUILD", default=3),
    ("us", "build"): env.int("POOL_TARGET_US_BUILD", default=2),
}
POOL_NETCUP = {tuple(key.split("-", 1)) for key in env.list("POOL_NETCUP", default=[])}
POOL_REPLENISH_MAX_PER_RUN = env.int("POOL_REPLENISH_MAX_PER_RUN", default=5)
# Servers at Hetzner labeled managed-by=hub that the Hub does not know are deleted
# this long after they were first seen.
RECONCILE_ORPHAN_GRACE_SECONDS = env.int("RECONCILE_ORPHAN_GRACE_SECONDS", default=6 * 3600)
# An order in one of these statuses longer than this many seconds is stuck.
ORDER_STATUS_DEADLINES = {
    "PAYMENT_CONFIRMED": env.int("ORDER_DEADLINE_PAYMENT_CONFIRMED", default=600),
    "AWAITING_SERVER": env.int("ORDER_DEADLINE_AWAITING_SERVER", default=24 * 3600),
    "SERVER_READY": env.int("ORDER_DEADLINE_SERVER_READY", default=1800),
    "DNS_PENDING": env.int("ORDER_DEADLINE_DNS_PENDING", default=1800),
    "DNS_READY": env.int("ORDER_DEADLINE_DNS_READY", default=1800),
    "PROVISIONING": env.int("ORDER_DEADLINE_PROVISIONING", default=3600),
}
# The Hub's own database: pg_dump -Fc into this directory, rotated (14 daily, 8 weekly,
# 3 monthly); the upload command gets the file's path as its last argument.
HUB_BACKUP_DIR = env.str("HUB_BACKUP_DIR", default=str(BASE_DIR / "var" / "backups"))
HUB_BACKUP_UPLOAD_COMMAND = env.str("HUB_BACKUP_UPLOAD_COMMAND", default="")
# An age public key (age1...): each backup also holds the Hub's SSH key and field keys,
# encrypted to it. Its identity (AGE-SECRET-KEY-1...) is kept apart from the Hub (the
# operators' password manager and a sealed paper copy): it is needed only to restore.
HUB_BACKUP_RECIPIENT = env.str("HUB_BACKUP_RECIPIENT", default="")
HUB_BACKUP_TIMEOUT = env.int("HUB_BACKUP_TIMEOUT", default=3600)
HUB_BACKUP_KEEP_DAILY = env.int("HUB_BACKUP_KEEP_DAILY", default=14)
HUB_BACKUP_KEEP_WEEKLY = env.int("HUB_BACKUP_KEEP_WEEKLY", default=8)
HUB_BACKUP_KEEP_MONTHLY = env.int("HUB_BACKUP_KEEP_MONTHLY", default=3)
# Daily provider snapshots of every tenant's server (provisioning/services/snapshots.py):
# how many to keep per tenant, after how long without one staff are alerted, and how
# many a run (every 15 minutes) takes at most.
SNAPSHOT_KEEP = env.int("SNAPSHOT_KEEP", default=3)
SNAPSHOT_MISSING_HOURS = env.int("SNAPSHOT_MISSING_HOURS", default=36)
SNAPSHOT_MAX_PER_RUN = env.int("SNAPSHOT_MAX_PER_RUN", default=100)
# The restore drill (monitoring/services/restore_drill.py, weekly by beat): how many
# tenants' latest backups it restores, where (a scratch directory, emptied after each),
# how much of the repository's data `restic check` reads, and each restic call's limit
# (the whole drill runs in one monitoring task: sample x 3 calls must stay under
# CELERY_TASK_SOFT_TIME_LIMIT).
RESTORE_DRILL_SAMPLE = env.int("RESTORE_DRILL_SAMPLE", default=3)
RESTORE_DRILL_SCRATCH_DIR = env.str("RESTORE_DRILL_SCRATCH_DIR", default=str(BASE_DIR / "var" / "restore-drills"))
RESTORE_DRILL_CHECK_SUBSET = env.str("RESTORE_DRILL_CHECK_SUBSET", default="5%")
RESTORE_DRILL_TIMEOUT = env.int("RESTORE_DRILL_TIMEOUT", default=600)
# Heartbeat history (tenants/services/history.py): raw samples in hourly partitions,
# 5-minute rollups in daily ones, condensed into hours once HEARTBEAT_ROLLUP_RETENTION_DAYS
# old; the hours are kept to HEARTBEAT_HISTORY_RETENTION_DAYS. Retention drops whole
# partitions. HEARTBEAT_ROLLUP_SECONDS must divide an hour.
HEARTBEAT_HISTORY_RETENTION_DAYS = env.int("HEARTBEAT_HISTORY_RETENTION_DAYS", default=30)
HEARTBEAT_ROLLUP_RETENTION_DAYS = env.int("HEARTBEAT_ROLLUP_RETENTION_DAYS", default=7)
HEARTBEAT_RAW_RETENTION_HOURS = env.int("HEARTBEAT_RAW_RETENTION_HOURS", default=24)
HEARTBEAT_ROLLUP_SECONDS = env.int("HEARTBEAT_ROLLUP_SECONDS", default=300)
# Days of 5-minute rollups one maintenance run (hourly) condenses at most: one a day is
# due in steady state; a backlog (after an upgrade or an outage) is worked off in turns.
HEARTBEAT_CONDENSE_DAYS_PER_RUN = env.int("HEARTBEAT_CONDENSE_DAYS_PER_RUN", default=2)
HEARTBEAT_PARTITIONS_AHEAD_HOURS = env.int("HEARTBEAT_PARTITIONS_AHEAD_HOURS", default=6)
HEARTBEAT_PARTITION_LOCK_TIMEOUT_MS = env.int("HEARTBEAT_PARTITION_LOCK_TIMEOUT_MS", default=100)

# --- Rollouts ------------------------------------------------------------------------
# Defaults of every new rollout; each is settable per rollout (the API, the admin).
# Stages: the internal tenants, then these cumulative percentages of the rest (newest
# tenants first); one soak time per stage, internal first (FACTS.md: 48 h / 24 h / 12 h / none).
ROLLOUT_STAGE_PERCENTS = env.list("ROLLOUT_STAGE_PERCENTS", cast=int, default=[5, 25, 100])
ROLLOUT_SOAK_SECONDS = env.list("ROLLOUT_SOAK_SECONDS", cast=int, default=[48 * 3600, 24 * 3600, 12 * 3600, 0])
# Auto-stop: halt when failed >= max(min failures, rate x finished updates); a stage is
# judged only once this many of its updates finished (or all of them, if fewer).
ROLLOUT_FAILURE_RATE = env.float("ROLLOUT_FAILURE_RATE", default=0.01)
ROLLOUT_MIN_FAILURES = env.int("ROLLOUT_MIN_FAILURES", default=3)
ROLLOUT_MIN_FINISHED = env.int("ROLLOUT_MIN_FINISHED", default=10)
# Halt when heartbeat loss among updated tenants exceeds the control group's by this.
ROLLOUT_HEARTBEAT_LOSS_RATE = env.float("ROLLOUT_HEARTBEAT_LOSS_RATE", default=0.03)
# A tenant is lost after this many missed heartbeat intervals (FACTS.md: 3).
ROLLOUT_HEARTBEAT_STALE_INTERVALS = env.int("ROLLOUT_HEARTBEAT_STALE_INTERVALS", default=3)
# An update unanswered this long counts as timed out (its command expires then too).
ROLLOUT_UPDATE_TIMEOUT = env.int("ROLLOUT_UPDATE_TIMEOUT", default=3600)
# A stage's `update` commands are queued this many to a transaction: the first part
# with the dispatch, the rest right after it by the rollouts.send_updates task (and by
# the evaluation, should that task be lost). A stage no larger goes out all at once.
ROLLOUT_COMMANDS_PER_TRANSACTION = env.int("ROLLOUT_COMMANDS_PER_TRANSACTION", default=10_000)
# How long a stage may take beyond its soak time, or wait for a promote, before it halts.
ROLLOUT_STAGE_DEADLINE = env.int("ROLLOUT_STAGE_DEADLINE", default=24 * 3600)
ROLLOUT_AUTO_ADVANCE = env.bool("ROLLOUT_AUTO_ADVANCE", default=True)
ROLLOUT_ON_HALT = env.str("ROLLOUT_ON_HALT", default="ROLLBACK")

# --- Operations ----------------------------------------------------------------------
# /metrics (ops/metrics.py) reads Postgres and the broker at scrape time, so every web
# process answers the same numbers. With METRICS_TOKEN set, a scrape needs
# `Authorization: Bearer <token>`; empty leaves it open, which is right only where
# nothing but Prometheus can reach it (the loopback dev server; in compose, nginx
# answers /metrics to private networks only). Set it in production.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Step durations are a histogram over the steps that finished in this window, and the
# per-rollout series cover the rollouts active or ended in it.
METRICS_WINDOW_HOURS = env.int("METRICS_WINDOW_HOURS", default=24)
METRICS_STEP_DURATION_BUCKETS = env.list(
    "METRICS_STEP_DURATION_BUCKETS", cast=float, default=[1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600]
)
# Heartbeats arrive every AGENT_HEARTBEAT_INTERVAL (60 s); stale after 3 missed.
METRICS_HEARTBEAT_AGE_BUCKETS = env.list(
    "METRICS_HEARTBEAT_AGE_BUCKETS", cast=float, default=[30, 60, 90, 120, 180, 300, 600, 1800, 3600, 21600, 86400]
)
# A scrape waits at most this long for the broker before reporting it down.
METRICS_BROKER_TIMEOUT = env.float("METRICS_BROKER_TIMEOUT", default=2.0)
# The Hub watching itself (hub/selfwatch): request, database-error and rate-limit
# counters live in this Redis; each web process adds its requests up in memory and
# flushes them every METRICS_FLUSH_SECONDS (one pipelined round trip).
METRICS_REDIS_URL = env.str("METRICS_REDIS_URL", default=REDIS_URL)
METRICS_FLUSH_SECONDS = env.float("METRICS_FLUSH_SECONDS", default=5.0)
METRICS_REQUEST_DURATION_BUCKETS = env.list(
    "METRICS_REQUEST_DURATION_BUCKETS",
    cast=float,
    default=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
)
METRICS_ORDER_FULFILMENT_BUCKETS = env.list(
    "METRICS_ORDER_FULFILMENT_BUCKETS", cast=float, default=[60, 300, 600, 900, 1200, 1800, 3600, 7200, 86400]
)
METRICS_WEBHOOK_HANDLING_BUCKETS = env.list(
    "METRICS_WEBHOOK_HANDLING_BUCKETS", cast=float, default=[0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600]
)
# A periodic job that has not succeeded within this many of its periods (and at least
# this many seconds) opens a `periodic_job_silent` alert.
PERIODIC_JOB_SILENT_PERIODS = env.float("PERIODIC_JOB_SILENT_PERIODS", default=2.0)
PERIODIC_JOB_SILENT_MIN_SECONDS = env.float("PERIODIC_JOB_SILENT_MIN_SECONDS", default=60.0)
# A provider's bucket that used more than this share of its quota over the last quota
# period opens a `provider_quota_high` alert.
RATE_LIMIT_ALERT_RATIO = env.float("RATE_LIMIT_ALERT_RATIO", default=0.8)
# GET /api/v1/alerts/ lists the open alerts and those resolved in the last this many hours.
ALERTS_API_RECENT_HOURS = env.int("ALERTS_API_RECENT_HOURS", default=24)
# Outgoing mail in production (EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend):
# staff alerts and customer notices go through this SMTP relay.
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=587)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=True)
