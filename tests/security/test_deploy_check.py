"""Production settings: refuse to start without their secrets, and pass Django's
deployment checklist with nothing to report."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_SECRETS = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
    "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "STRIPE_SECRET_KEY": "sk_live_" + secrets.token_hex(16),
    "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(16),
    "HCLOUD_TOKEN": secrets.token_hex(32),
    "CLOUDFLARE_API_TOKEN": secrets.token_hex(20),
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "HUB_", "STRIPE_", "FIELD_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "hub.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_with_production_settings_reports_nothing() -> None:
    env = {"HUB_ENV": "production", "DJANGO_ALLOWED_HOSTS": "hub.example.com", **PRODUCTION_SECRETS}

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_refuses_to_start_without_its_secret_key() -> None:
    env = {"HUB_ENV": "production", "DJANGO_ALLOWED_HOSTS": "hub.example.com", **PRODUCTION_SECRETS}
    del env["DJANGO_SECRET_KEY"]

    result = manage("check", env=env)

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr
