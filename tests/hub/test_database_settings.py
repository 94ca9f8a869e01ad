"""How the Hub's connections to Postgres are set up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def _options_with(**env: str) -> str:
    """The libpq options the settings build in a fresh process with this environment."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings; "
            "print(settings.DATABASES['default'].get('OPTIONS', {}).get('options', ''))",
        ],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "hub.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


@pytest.mark.django_db
def test_the_hub_connects_with_postgres_jit_off() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('jit')")
        assert cursor.fetchone() == ("off",)


def test_jit_can_be_given_back_and_other_options_in_the_url_are_kept() -> None:
    assert _options_with(DATABASE_JIT="true") == ""
    url = "postgres://postgres@127.0.0.1:5432/hub?options=-c%20statement_timeout%3D5000"
    assert _options_with(DATABASE_URL=url) == "-c statement_timeout=5000 -c jit=off"
