"""No secret is readable in the database: after agents registered, a key was rotated
and a server came with its root key over the API, no text column of any table holds
any of them in the clear (the root key is Fernet ciphertext, keys and tokens hashes)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from django.test import Client
from psycopg import sql

from provisioning.models import Server
from tests.security.conftest import World

pytestmark = pytest.mark.django_db

ROOT_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nroot-key-material-for-the-scan\n-----END OPENSSH PRIVATE KEY-----\n"


def columns_holding(needle: str) -> list[str]:
    """Every `table.column` of a text-like column whose raw value contains the needle."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'jsonb', 'json')"
        )
        columns = cursor.fetchall()
        found = []
        for table, column in columns:
            query = sql.SQL("SELECT 1 FROM {} WHERE strpos({}::text, %s) > 0 LIMIT 1").format(
                sql.Identifier(table), sql.Identifier(column)
            )
            cursor.execute(query, [needle])
            if cursor.fetchone():
                found.append(f"{table}.{column}")
    return found


def test_the_scan_finds_a_plaintext_value() -> None:
    # Created in the test's transaction, so it is rolled back with it.
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE security_scan_canary (value text)")
        cursor.execute("INSERT INTO security_scan_canary VALUES ('hak_plaintext_canary')")

    assert columns_holding("hak_plaintext_canary") != []


def test_no_agent_key_token_or_root_key_is_stored_in_the_clear(world: World) -> None:
    staff = Client(HTTP_AUTHORIZATION=f"Token {world.staff_token}")
    agent = Client(HTTP_AUTHORIZATION=f"Bearer {world.key_a}")
    issued = staff.post(f"/api/v1/tenants/{world.tenant_b.pk}/registration-token/", {}, content_type="application/json")
    rotated = agent.post("/api/v1/agent/rotate-key")
    server = staff.post(
        "/api/v1/servers/",
        {"region": "eu", "tier": "build", "ipv4": "127.0.0.78", "root_key": ROOT_KEY},
        content_type="application/json",
    )
    assert (issued.status_code, rotated.status_code, server.status_code) == (201, 201, 201)
    assert "root_key" not in server.json(), "the root key is write-only"
    secrets = {
        "agent key A": world.key_a,
        "agent key B": world.key_b,
        "rotated agent key": rotated.json()["api_key"],
        "registration token": issued.json()["registration_token"],
        "root key": "root-key-material-for-the-scan",
    }

    leaks = {name: columns_holding(value) for name, value in secrets.items()}

    assert leaks == {name: [] for name in secrets}


def test_an_old_field_key_is_retired_by_re_encrypting_under_the_new_one(settings) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    servers = [
        Server.objects.create(name=f"rot-{i}", ipv4=f"198.18.0.{i + 1}", root_key=f"{ROOT_KEY}{i}") for i in range(3)
    ]

    def raw() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT root_key FROM provisioning_server WHERE name LIKE 'rot-%%' ORDER BY id")
            return [row[0] for row in cursor.fetchall()]

    before = raw()
    # the new key goes first; the old one still reads what it wrote
    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    call_command("rotate_field_keys", batch_size=2)
    after = raw()

    # then, with the old key dropped, every value still reads, and the column changed
    settings.FIELD_ENCRYPTION_KEYS = [new]
    assert [Server.objects.get(pk=s.pk).root_key for s in servers] == [f"{ROOT_KEY}{i}" for i in range(3)]
    assert all(a != b and a.startswith("fernet:") for a, b in zip(after, before, strict=True))
    assert not any(ROOT_KEY.strip() in value for value in after)


def test_a_backup_repositorys_password_and_key_are_ciphertext_at_rest_and_read_back(world: World) -> None:
    from tenants.models import BackupRepository
    from tenants.services import backup_repository_ensure

    repository = backup_repository_ensure(tenant_id=world.tenant_a.pk, host="backup.example.net", port=23, actor="t")
    again = backup_repository_ensure(tenant_id=world.tenant_a.pk, host="backup.example.net", port=23, actor="t")
    key_body = "".join(line for line in repository.ssh_private_key.splitlines() if not line.startswith("-----"))

    with connection.cursor() as cursor:
        cursor.execute("SELECT password, ssh_private_key FROM tenants_backuprepository WHERE id = %s", [repository.pk])
        raw = cursor.fetchone()

    assert again.pk == repository.pk, "made once per tenant"
    assert all(value.startswith("fernet:") for value in raw)
    assert columns_holding(repository.password) == [] and columns_holding(key_body[:40]) == []
    stored = BackupRepository.objects.get(pk=repository.pk)
    assert (stored.password, stored.ssh_private_key) == (repository.password, repository.ssh_private_key)
    assert repository.ssh_public_key.startswith("ssh-ed25519 ")
    assert repository.url == f"sftp://tenant-{world.tenant_a.pk}@backup.example.net:23//repo"
