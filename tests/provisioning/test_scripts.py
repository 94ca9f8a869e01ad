"""The step scripts as they are uploaded (helpers in front): strict bash,
shellcheck-clean, and idempotent when run twice on a sandbox-like root."""

import os
import subprocess
from pathlib import Path

import pytest

from provisioning.services.remote import script_names, step_script


@pytest.mark.parametrize("name", script_names())
def test_every_step_script_is_strict_and_shellcheck_clean(name: str, tmp_path: Path) -> None:
    script = step_script(name)
    assert "set -euo pipefail" in script
    path = tmp_path / f"{name}.sh"
    path.write_text(script)
    result = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def run_with_helpers(root: Path, body: str) -> subprocess.CompletedProcess[str]:
    """`body` under strict bash after the helpers every step script gets, on `root`."""
    helpers = step_script("01-system").split("set -euo pipefail", 1)[0]
    env = {**os.environ, "HOST_ROOT": str(root)}
    program = helpers + "set -euo pipefail\n" + body
    return subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env, timeout=30)


def test_write_file_leaves_an_unchanged_file_alone_and_fails_loudly(tmp_path: Path) -> None:
    result = run_with_helpers(
        tmp_path,
        'write_file /etc/x.conf 0600 <<<hello; echo "first=$WROTE"\n'
        'write_file /etc/x.conf 0600 <<<hello; echo "second=$WROTE"\n'
        'write_file /etc/x.conf 0600 <<<changed; echo "third=$WROTE"\n'
        # A file where a directory must go: even root cannot write there.
        'touch "$ROOT/blocked"; write_file /blocked/y.conf 0600 <<<x || true; echo unreachable\n',
    )
    assert "first=1" in result.stdout and "second=0" in result.stdout and "third=1" in result.stdout
    assert (tmp_path / "etc" / "x.conf").read_text() == "changed\n"
    assert oct((tmp_path / "etc" / "x.conf").stat().st_mode & 0o777) == "0o600"
    assert "unreachable" not in result.stdout, "a failed write stops the script even when its caller tests it"
    assert result.returncode != 0


def test_write_file_keeps_the_text_byte_for_byte_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    text = "  indented\\n kept\ttab \\\\ backslash $HOME `x`\n\n\ntrailing blank lines\n\n"
    (tmp_path / "input").write_text(text)
    result = run_with_helpers(
        tmp_path,
        'write_file /etc/app/a.conf 0644 < "$ROOT/input"; echo "first=$WROTE"\n'
        'write_file /etc/app/a.conf 0644 < "$ROOT/input"; echo "second=$WROTE"\n'
        'printf "one more line\\n" >> "$ROOT/input"\n'
        'write_file /etc/app/a.conf 0644 < "$ROOT/input"; echo "third=$WROTE"\n',
    )
    assert result.returncode == 0, result.stderr
    assert "first=1" in result.stdout and "second=0" in result.stdout and "third=1" in result.stdout
    assert (tmp_path / "etc" / "app" / "a.conf").read_text() == text + "one more line\n"
    assert [p.name for p in (tmp_path / "etc" / "app").iterdir()] == ["a.conf"]


def test_the_dns_01_hook_that_06_tls_installs_is_shellcheck_clean(tmp_path: Path) -> None:
    # It is a script of its own on the server, written from a heredoc shellcheck skips.
    script = step_script("06-tls")
    body = script.split("""write_file "$hooks/dns-01-hook" 0755 <<'HOOK'\n""", 1)[1].split("\nHOOK\n", 1)[0]
    assert body.startswith("#!/bin/bash\n") and "set -euo pipefail" in body
    path = tmp_path / "dns-01-hook"
    path.write_text(body + "\n")
    result = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
