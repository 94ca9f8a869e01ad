"""Configuration: a JSON or INI file, overridden by HUB_AGENT_* variables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config


def test_json_file_with_environment_overrides(tmp_path: Path) -> None:
    conf = tmp_path / "agent.conf"
    conf.write_text(json.dumps({"hub_url": "http://127.0.0.1:8000/", "heartbeat_interval": 30, "domain": "a.example"}))

    config = load_config(
        {"HUB_AGENT_CONFIG": str(conf), "HUB_AGENT_HEARTBEAT_INTERVAL": "15", "HUB_AGENT_STATE_DIR": str(tmp_path)}
    )

    assert config.hub_url == "http://127.0.0.1:8000"
    assert config.heartbeat_interval == 15.0
    assert config.state_dir == tmp_path
    assert config.api_key_path == tmp_path / "api_key"
    assert config.tls_cert == Path("/etc/letsencrypt/live/a.example/cert.pem")


def test_ini_file_and_lists(tmp_path: Path) -> None:
    conf = tmp_path / "agent.conf"
    conf.write_text(
        "[agent]\nhub_url = https://hub.example\ncompose_files = /opt/a/compose.yml, /opt/b/compose.yml\n"
        "host_root = /host\n"
    )

    config = load_config({"HUB_AGENT_CONFIG": str(conf)})

    assert config.compose_files == ("/opt/a/compose.yml", "/opt/b/compose.yml")
    assert config.backup_status_path == Path("/host/var/backups/hub/backup-status.json")


def test_environment_alone_is_enough(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t0ken\n")

    config = load_config(
        {"HUB_AGENT_HUB_URL": "http://127.0.0.1:1", "HUB_AGENT_REGISTRATION_TOKEN_FILE": str(token_file)}
    )

    assert config.registration_token_value() == "t0ken"


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ('{"heartbeat_interval": 5}', {}, "hub_url is required"),
        ('{"hub_url": "http://x", "colour": "blue"}', {}, "unknown config keys: colour"),
        ('{"hub_url": "http://x"}', {"HUB_AGENT_HEARTBEAT_INTERVAL": "soon"}, "heartbeat_interval"),
        ('{"hub_url": "ftp://x"}', {}, "http"),
        ("hub_url = http://x\n", {}, "[agent]"),
    ],
)
def test_bad_configuration_says_what_is_wrong(tmp_path: Path, content: str, env: dict[str, str], message: str) -> None:
    conf = tmp_path / "agent.conf"
    conf.write_text(content)

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config({"HUB_AGENT_CONFIG": str(conf), **env})


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({"HUB_AGENT_CONFIG": str(tmp_path / "absent"), "HUB_AGENT_HUB_URL": "http://x"})
