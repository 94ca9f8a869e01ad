import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.test import override_settings

from hub import crypto
from provisioning.models import Server

ROOT_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-material-for-the-test\n-----END OPENSSH PRIVATE KEY-----\n"


@pytest.mark.django_db
def test_a_server_root_key_is_ciphertext_in_the_database() -> None:
    server = Server.objects.create(provider="NETCUP", region="eu", tier="build", ipv4="127.0.0.9", root_key=ROOT_KEY)

    with connection.cursor() as cursor:
        cursor.execute("SELECT root_key FROM provisioning_server WHERE id = %s", [server.pk])
        (raw,) = cursor.fetchone()

    assert raw.startswith("fernet:")
    assert "secret-material" not in raw and "PRIVATE KEY" not in raw
    assert Server.objects.get(pk=server.pk).root_key == ROOT_KEY


def test_a_new_key_decrypts_old_values_after_rotation() -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(FIELD_ENCRYPTION_KEYS=[old_key]):
        stored = crypto.encrypt("hcloud-token")
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key, old_key]):
        assert crypto.decrypt(stored) == "hcloud-token"
        rotated = crypto.rotate(stored)
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key]):
        assert crypto.decrypt(rotated) == "hcloud-token"
        with pytest.raises(ValueError, match="no configured key"):
            crypto.decrypt(stored)
