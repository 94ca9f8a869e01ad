"""The SSH seam: the only module that imports paramiko. Host keys are trusted on
first contact and verified on every later one; a script is uploaded and run with
bash, its output streamed line by line to the caller; every call has a connect and a
command timeout."""

from __future__ import annotations

import base64
import hashlib
import io
import shlex
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import paramiko

from hub.pipeline.spec import PermanentStepError

CONNECT_TIMEOUT = 10.0


class SshError(Exception):
    """Retryable: the host did not answer, or the connection dropped."""


class HostKeyMismatch(PermanentStepError):
    """The server presented a different host key than the one recorded: refuse."""

    def __init__(self, address: str, port: int, expected: str, presented: str) -> None:
        super().__init__(
            f"host key of {address}:{port} changed: expected {expected}, presented {presented}; refusing to connect"
        )
        self.address = address
        self.port = port
        self.presented = presented


class ScriptFailed(Exception):
    def __init__(self, name: str, exit_code: int, tail: list[str]) -> None:
        last = "\n".join(tail)
        super().__init__(f"{name} exited with {exit_code}:\n{last}")
        self.exit_code = exit_code
        self.tail = tail


@dataclass(frozen=True)
class Target:
    address: str
    port: int
    username: str = "root"


def fingerprint(key: paramiko.PKey) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def host_key_string(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def load_private_key(text: str) -> paramiko.PKey:
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except paramiko.SSHException:
            continue
    raise PermanentStepError("the SSH private key is not an ed25519, ecdsa or rsa key")


class _RecordingPolicy(paramiko.MissingHostKeyPolicy):
    """First contact: accept the key and remember it, so the caller can record it."""

    def __init__(self) -> None:
        self.presented: paramiko.PKey | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.presented = key


@contextmanager
def connect(
    target: Target,
    *,
    private_key: paramiko.PKey,
    known_host_key: str | None,
    on_first_contact: Callable[[str], None] | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> Iterator[paramiko.SSHClient]:
    client = paramiko.SSHClient()
    policy = _RecordingPolicy()
    host_id = target.address if target.port == 22 else f"[{target.address}]:{target.port}"
    if known_host_key:
        key_type, key_b64 = known_host_key.split(" ", 1)
        client.get_host_keys().add(
            host_id, key_type, paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64))
        )
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    else:
        client.set_missing_host_key_policy(policy)
    try:
        client.connect(
            target.address,
            port=target.port,
            username=target.username,
            pkey=private_key,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyMismatch(target.address, target.port, known_host_key or "", host_key_string(exc.key)) from exc
    except paramiko.AuthenticationException as exc:
        client.close()
        raise SshError(f"ssh {target.address}:{target.port}: authentication failed: {exc}") from exc
    except paramiko.SSHException as exc:
        client.close()
        if known_host_key and "not found in known_hosts" in str(exc):
            raise HostKeyMismatch(target.address, target.port, known_host_key, "a key of another type") from exc
        # A frozen or overloaded host shows up here as a banner or session timeout.
        raise SshError(
            f"ssh {target.address}:{target.port}: host did not answer within {timeout:.0f}s ({exc})"
        ) from exc
    except (TimeoutError, OSError, EOFError) as exc:
        client.close()
        raise SshError(f"ssh {target.address}:{target.port}: {type(exc).__name__}: {exc}") from exc
    if policy.presented is not None and on_first_contact is not None:
        on_first_contact(host_key_string(policy.presented))
    try:
        yield client
    finally:
        client.close()


def _exports(env: Mapping[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def run_script(
    client: paramiko.SSHClient,
    *,
    name: str,
    script: str,
    env: Mapping[str, str],
    timeout: float,
    on_line: Callable[[str], None],
    tail_lines: int = 20,
) -> list[str]:
    """Upload the script with its environment in front and run it with bash, streaming
    its output. Returns the last lines; raises ScriptFailed on a non-zero exit and
    SshError on a timeout or a lost connection."""
    body = (_exports(env) + script).encode()
    try:
        channel = client.get_transport().open_session(timeout=CONNECT_TIMEOUT)  # type: ignore[union-attr]
        channel.set_combine_stderr(True)
        channel.settimeout(1.0)
        # The script travels on stdin: nothing is left on the server's disk, and its
        # environment (which may carry a token) never shows on a command line.
        channel.exec_command("bash -s")
        channel.sendall(body)
        channel.shutdown_write()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise SshError(f"{name}: {exc}") from exc

    tail: deque[str] = deque(maxlen=tail_lines)
    pending = b""
    deadline = time.monotonic() + timeout

    def emit(raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        tail.append(line)
        on_line(line)

    while True:
        if time.monotonic() > deadline:
            channel.close()
            raise SshError(f"{name}: no exit after {timeout:.0f}s (command timeout)")
        try:
            chunk = channel.recv(32768)
        except TimeoutError:
            if channel.exit_status_ready():
                break
            continue
        except (paramiko.SSHException, OSError) as exc:
            raise SshError(f"{name}: connection lost: {exc}") from exc
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            emit(raw)
    if pending:
        emit(pending)
    if not channel.exit_status_ready() and time.monotonic() > deadline:
        raise SshError(f"{name}: no exit status")
    code = channel.recv_exit_status()
    if code != 0:
        raise ScriptFailed(name, code, list(tail))
    return list(tail)
