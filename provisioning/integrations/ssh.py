"""The SSH seam: the only module that imports paramiko. Host keys are trusted on
first contact and verified on every later one; a script is uploaded and run with
bash, its output streamed line by line to the caller; every call has a connect and a
command timeout. A `ConnectionCache` keeps a verified connection per server between a
job's steps, so a provisioning makes one SSH handshake instead of one per script."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shlex
import socket
import threading
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


class SessionNotOpened(SshError):
    """The connection refused a new session: nothing was sent, the script never started."""


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


def _tcp_connect(target: Target, timeout: float) -> socket.socket:
    """The TCP connection under the SSH one, with Nagle's algorithm off. A session's
    open and exec requests, and a short script's body and end of input, are small
    packets sent back to back: with Nagle on, the second of each pair waited for the
    server's delayed acknowledgement, 40 ms a time (a probe took 88 ms, now 5 ms)."""
    sock = socket.create_connection((target.address, target.port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        sock.close()
        raise
    return sock


def _open(
    target: Target,
    *,
    private_key: paramiko.PKey,
    known_host_key: str | None,
    on_first_contact: Callable[[str], None] | None,
    timeout: float,
) -> paramiko.SSHClient:
    """A connected, authenticated client whose host key was verified against
    known_host_key (or, on first contact, handed to on_first_contact)."""
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
        sock = _tcp_connect(target, timeout)
        client.connect(
            target.address,
            sock=sock,
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
    return client


@contextmanager
def connect(
    target: Target,
    *,
    private_key: paramiko.PKey,
    known_host_key: str | None,
    on_first_contact: Callable[[str], None] | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> Iterator[paramiko.SSHClient]:
    client = _open(
        target,
        private_key=private_key,
        known_host_key=known_host_key,
        on_first_contact=on_first_contact,
        timeout=timeout,
    )
    try:
        yield client
    finally:
        client.close()


@dataclass
class Connection:
    client: paramiko.SSHClient
    reused: bool

    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()


@dataclass
class _Idle:
    client: paramiko.SSHClient
    host_key: str
    since: float


class ConnectionCache:
    """Idle connections kept between uses, one caller at a time on each. A connection
    is reused only for the same target and client key, and only while the host key it
    was verified with (at its handshake) is the one the caller now expects: verifying
    it again would compare the same key. First contact always connects afresh. A
    connection that is closed, idle too long, or was in use when anything raised is
    closed, never reused. Thread-safe; bounded in total and per target."""

    def __init__(self, *, max_idle: int = 64, max_idle_per_target: int = 2, idle_seconds: float = 60.0) -> None:
        self.max_idle = max_idle
        self.max_idle_per_target = max_idle_per_target
        self.idle_seconds = idle_seconds
        self._idle: dict[tuple[Target, str], list[_Idle]] = {}
        self._lock = threading.Lock()
        # A forked child (prefork) must not share its parent's sockets.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._idle = {}

    @contextmanager
    def connect(
        self,
        target: Target,
        *,
        private_key: paramiko.PKey,
        known_host_key: str | None,
        on_first_contact: Callable[[str], None] | None = None,
        timeout: float = CONNECT_TIMEOUT,
    ) -> Iterator[Connection]:
        slot = (target, fingerprint(private_key))
        client = self._take(slot, known_host_key) if known_host_key else None
        reused = client is not None
        if client is None:
            client = _open(
                target,
                private_key=private_key,
                known_host_key=known_host_key,
                on_first_contact=on_first_contact,
                timeout=timeout,
            )
        try:
            yield Connection(client, reused)
        except BaseException:
            client.close()
            raise
        self._give_back(slot, client)

    def _take(self, slot: tuple[Target, str], known_host_key: str) -> paramiko.SSHClient | None:
        stale: list[paramiko.SSHClient] = []
        found = None
        now = time.monotonic()
        with self._lock:
            entries = self._idle.get(slot, [])
            while entries and found is None:
                entry = entries.pop()
                transport = entry.client.get_transport()
                if (
                    entry.host_key == known_host_key
                    and now - entry.since < self.idle_seconds
                    and transport is not None
                    and transport.is_active()
                ):
                    found = entry.client
                else:
                    stale.append(entry.client)
        for client in stale:
            client.close()
        return found

    def _give_back(self, slot: tuple[Target, str], client: paramiko.SSHClient) -> None:
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            client.close()
            return
        entry = _Idle(client, host_key_string(transport.get_remote_server_key()), time.monotonic())
        closing: list[paramiko.SSHClient] = []
        with self._lock:
            entries = self._idle.setdefault(slot, [])
            entries.append(entry)
            while len(entries) > self.max_idle_per_target:
                closing.append(entries.pop(0).client)
            closing += self._evict_locked()
        for old in closing:
            old.close()

    def _evict_locked(self) -> list[paramiko.SSHClient]:
        """Drop the idle-too-long, then the oldest, until within max_idle."""
        now = time.monotonic()
        closing = []
        for slot, entries in list(self._idle.items()):
            for entry in [e for e in entries if now - e.since >= self.idle_seconds]:
                entries.remove(entry)
                closing.append(entry.client)
            if not entries:
                del self._idle[slot]
        flat = sorted(((e.since, slot, e) for slot, es in self._idle.items() for e in es), key=lambda t: t[0])
        for _, slot, entry in flat[: max(0, len(flat) - self.max_idle)]:
            self._idle[slot].remove(entry)
            closing.append(entry.client)
            if not self._idle[slot]:
                del self._idle[slot]
        return closing


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
    session_timeout: float = CONNECT_TIMEOUT,
) -> list[str]:
    """Upload the script with its environment in front and run it with bash, streaming
    its output. Returns the last lines; raises ScriptFailed on a non-zero exit and
    SshError on a timeout or a lost connection."""
    body = (_exports(env) + script).encode()
    transport = client.get_transport()
    try:
        if transport is None:
            raise paramiko.SSHException("not connected")
        # On a kept connection this is the first word to the host since the last step.
        channel = transport.open_session(timeout=session_timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise SessionNotOpened(
            f"{name}: host did not answer for a new session within {session_timeout:.0f}s ({exc})"
        ) from exc
    try:
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
