"""The test suite's settings: the real services, on their own Redis database, with
short leases and waits so faults are noticed in seconds, not minutes."""

import os

os.environ.setdefault("CELERY_BROKER_URL", os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
# The tenants fast path shares the run's Redis database (its keys are prefixed).
os.environ.setdefault("REDIS_URL", os.environ["CELERY_BROKER_URL"])
os.environ.setdefault("PIPELINE_LEASE_SECONDS", "2")
os.environ.setdefault("PIPELINE_MESSAGE_LOST_AFTER", "3")
os.environ.setdefault("PIPELINE_MODULES", "tests.pipelines")
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")

from hub.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# A worker process can be given the filebased backend to show what it sent.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend")

# Billing: the sandbox's Stripe keys, and an API base on loopback so nothing in a test
# run can reach the real Stripe (the emulator fixture points the tests at its port).
os.environ.setdefault("STRIPE_API_BASE", "http://127.0.0.1:12111")
STRIPE_API_BASE = os.environ["STRIPE_API_BASE"]
STRIPE_SECRET_KEY = "sk_test_hub_tests"  # noqa: S105 - test-only value
STRIPE_WEBHOOK_SECRET = "whsec_hub_tests"  # noqa: S105 - test-only value
STRIPE_MAX_NETWORK_RETRIES = 0
STRIPE_TIMEOUT_SECONDS = 5.0
