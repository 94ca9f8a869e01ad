"""Sandbox hosts: real OpenSSH servers, one per loopback address, whose sessions see
HOST_ROOT (the host's own filesystem root) and the stand-ins first on PATH.

The supervisor owns the sshd processes through `HostManager`; the functions below the
class work from the state directory alone, so a test process can read a host's
recorded calls or freeze it without talking to the supervisor."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
STANDINS_DIR = Path(__file__).resolve().parent / "standins"
SESSION_SHELL = Path(__file__).resolve().parent / "session.sh"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# sshd refuses to start without its privilege separation directory.
PRIVSEP_DIR = Path("/run/sshd")
# The off-site backup target confines each tenant with sshd's ChrootDirectory, which
# sshd allows only on a path whose every component is root's and writable by nobody
# else: not under /tmp, where test state directories live. Its host directory lives
# here instead, linked from the state directory.
CHROOT_SAFE_DIR = Path("/run/hub-sandbox")
# sshd looks users up through NSS: with nss_wrapper it reads the host's own
# $HOST_ROOT/etc/passwd and group, where useradd and groupadd (stand-ins) write.
NSS_WRAPPER = Path("/usr/lib/x86_64-linux-gnu/libnss_wrapper.so")
BACKUP_TARGET_ROLE = "backup-target"
FIRST_ADDRESS = ipaddress.IPv4Address("127.0.0.2")
LAST_ADDRESS = ipaddress.IPv4Address("127.0.255.254")


@dataclass(frozen=True)
class HostInfo:
    addr: str
    port: int
    pid: int
    dir: str
    root: str
    name: str = ""
    role: str = ""

    @property
    def endpoint(self) -> str:
        return f"{self.addr}:{self.port}"


def hosts_dir(state_dir: Path) -> Path:
    return state_dir / "hosts"


def ensure_key_pair(path: Path, comment: str) -> Path:
    """An ed25519 key pair at `path` (private) and `path.pub`, made once."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        path.chmod(0o600)
    return path


def wait_for_banner(addr: str, port: int, *, timeout: float) -> bool:
    """True once an SSH server at addr:port sends its identification line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((addr, port), timeout=1.0) as sock:
                sock.settimeout(1.0)
                if sock.recv(64).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def _port_free(addr: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((addr, port))
        except OSError:
            return False
    return True


def _sshd_config(
    *,
    host_dir: Path,
    root: Path,
    addr: str,
    port: int,
    authorized_keys: Path,
    name: str,
    extra_env: dict[str, str] | None = None,
    role: str,
) -> str:
    path = f"{STANDINS_DIR}:{SYSTEM_PATH}"
    env = {
        **(extra_env or {}),
        "HOST_ROOT": str(root),
        "PATH": path,
        # A home of its own, so nothing a script puts under ~ leaks between hosts and
        # root's real dotfiles are not sourced by the session shell.
        "HOME": str(root / "root"),
        "SANDBOX_HOST": addr,
        "SANDBOX_HOSTNAME": name,
    }
    set_env = " ".join(f'"{key}={value}"' for key, value in env.items())
    return "\n".join(
        [
            f"ListenAddress {addr}:{port}",
            f"HostKey {host_dir / 'ssh_host_ed25519_key'}",
            f"PidFile {host_dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # The state directory lives in a checkout whose permissions sshd cannot vouch for.
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "MaxStartups 200:30:400",
            "MaxSessions 64",
            "LogLevel INFO",
            f"SetEnv {set_env}",
            f"ForceCommand {SESSION_SHELL}",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            # The backup target reads the drop-ins its setup writes (at the end: a Match
            # block there must not swallow the lines above), as Debian's sshd does.
            *([f"Include {root}/etc/ssh/sshd_config.d/*.conf"] if role == BACKUP_TARGET_ROLE else []),
            "",
        ]
    )


def _host_dir(state_dir: Path, addr: str, role: str) -> Path:
    """A host's directory, fresh: in the state directory, or (for the backup target) in
    CHROOT_SAFE_DIR with a link to it from the state directory."""
    link = hosts_dir(state_dir) / addr
    if link.is_symlink():
        shutil.rmtree(link.resolve(), ignore_errors=True)
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    if role != BACKUP_TARGET_ROLE:
        return link
    import hashlib

    CHROOT_SAFE_DIR.mkdir(mode=0o755, exist_ok=True)
    CHROOT_SAFE_DIR.chmod(0o755)
    safe = CHROOT_SAFE_DIR / f"{hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]}-{addr}"
    shutil.rmtree(safe, ignore_errors=True)
    safe.mkdir(mode=0o755)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(safe)
    return safe


def _seed_accounts(root: Path) -> dict[str, str]:
    """The accounts sshd needs (root, and sshd for privilege separation) in the host's
    own passwd and group, and the environment that makes sshd read them."""
    if not NSS_WRAPPER.exists():
        raise RuntimeError(f"the backup target needs nss_wrapper ({NSS_WRAPPER}): apt-get install libnss-wrapper")

    def lines(path: str, names: tuple[str, ...]) -> list[str]:
        return [line for line in Path(path).read_text().splitlines() if line.split(":", 1)[0] in names]

    passwd = lines("/etc/passwd", ("root", "sshd"))
    groups = lines("/etc/group", ("root", "nogroup"))
    (root / "etc" / "passwd").write_text("".join(f"{line}\n" for line in passwd))
    (root / "etc" / "group").write_text("".join(f"{line}\n" for line in groups))
    return {
        "LD_PRELOAD": str(NSS_WRAPPER),
        "NSS_WRAPPER_PASSWD": str(root / "etc" / "passwd"),
        "NSS_WRAPPER_GROUP": str(root / "etc" / "group"),
    }


class HostManager:
    """Starts and stops the sshd processes of one sandbox (used by the supervisor)."""

    def __init__(self, *, state_dir: Path, ssh_port: int, hub_public_key: str) -> None:
        self.state_dir = state_dir
        self.ssh_port = ssh_port
        self.hub_public_key = hub_public_key
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._hosts: dict[str, HostInfo] = {}
        self._next = FIRST_ADDRESS
        # What every session learns from the sandbox itself (never a credential): where
        # the public DNS resolver is, for the certbot stand-in.
        self.session_env: dict[str, str] = {}

    def _allocate(self) -> str:
        # Addresses are never reused within a run: a new server must not inherit an old
        # one's host key in somebody's known_hosts.
        while self._next <= LAST_ADDRESS:
            candidate = self._next
            self._next += 1
            if str(candidate).endswith((".0", ".1", ".255")):
                continue
            addr = str(candidate)
            if _port_free(addr, self.ssh_port):
                return addr
        raise RuntimeError("no free loopback address left for a sandbox host")

    def start(self, *, name: str = "", role: str = "", timeout: float = 15.0) -> HostInfo:
        info = self._hosts[self.launch(name=name, role=role)]
        self.wait_ready(info.addr, timeout=timeout)
        return info

    def launch(self, *, name: str = "", public_keys: list[str] | None = None, role: str = "") -> str:
        """Start a host's sshd and return its address, without waiting for it. The
        Hub's key is always authorized, `public_keys` (a server's SSH keys) as well.
        `role` "backup-target" makes the off-site SFTP target (see _host_dir)."""
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        with self._lock:
            addr = self._allocate()
        host_dir = _host_dir(self.state_dir, addr, role)
        root = host_dir / "root"
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
        for sub in ("etc/sandbox", "var/log/sandbox", "root", "tmp", "home"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        sshd_env = _seed_accounts(root) if role == BACKUP_TARGET_ROLE else {}
        (root / "etc" / "hostname").write_text(f"{name or addr}\n")
        ensure_key_pair(host_dir / "ssh_host_ed25519_key", f"sandbox-host-{addr}")
        authorized_keys = host_dir / "authorized_keys"
        keys = [self.hub_public_key, *(public_keys or [])]
        authorized_keys.write_text("".join(f"{key.strip()}\n" for key in keys))
        config = host_dir / "sshd_config"
        config.write_text(
            _sshd_config(
                host_dir=host_dir,
                root=root,
                addr=addr,
                port=self.ssh_port,
                authorized_keys=authorized_keys,
                name=name,
                extra_env=self.session_env,
                role=role,
            )
        )
        log = open(host_dir / "sshd.log", "ab")  # noqa: SIM115 - sshd keeps writing after we return
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **sshd_env} if sshd_env else None,
        )
        log.close()
        info = HostInfo(
            addr=addr, port=self.ssh_port, pid=proc.pid, dir=str(host_dir), root=str(root), name=name, role=role
        )
        (host_dir / "host.json").write_text(json.dumps(asdict(info)))
        with self._lock:
            self._procs[addr] = proc
            self._hosts[addr] = info
        return addr

    def wait_ready(self, addr: str, *, timeout: float = 15.0) -> None:
        info = self._hosts[addr]
        if not wait_for_banner(addr, self.ssh_port, timeout=timeout):
            tail = (Path(info.dir) / "sshd.log").read_text(errors="replace")[-2000:]
            self.stop(addr)
            raise RuntimeError(f"sandbox host {addr}:{self.ssh_port} did not answer:\n{tail}")
        logger.info("sandbox host %s:%s up (sshd pid %s)", addr, self.ssh_port, info.pid)

    def freeze(self, addr: str) -> None:
        host_freeze(self.state_dir, addr)

    def thaw(self, addr: str) -> None:
        host_thaw(self.state_dir, addr)

    def stop(self, addr: str) -> None:
        with self._lock:
            proc = self._procs.pop(addr, None)
            info = self._hosts.pop(addr, None)
        if info is None or proc is None:
            return
        stop_processes(host_processes(info))
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        logger.info("sandbox host %s stopped", addr)

    def stop_all(self) -> None:
        for addr in list(self._procs):
            self.stop(addr)

    def hosts(self) -> list[HostInfo]:
        with self._lock:
            return list(self._hosts.values())


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name sits in parentheses and may itself contain spaces.
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, parents first."""
    children = _children_map()
    order: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop(0)
        order.append(current)
        pending.extend(children.get(current, []))
    return order


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _session_processes(root: str) -> list[int]:
    """Processes started in a host's sessions, found by the HOST_ROOT they inherited:
    this also catches daemons (an agent) that detached from the sshd process tree."""
    marker = f"HOST_ROOT={root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def host_processes(info: HostInfo) -> list[int]:
    """The host's sshd with its sessions and everything they started, parents first."""
    pids = process_tree(info.pid) if _owned_sshd(info) else []
    return pids + [pid for pid in _session_processes(info.root) if pid not in pids]


def stop_processes(pids: list[int]) -> None:
    """Terminate a host's processes (sessions outlive the sshd listener otherwise)."""
    _signal_all(pids, signal.SIGCONT)
    _signal_all(list(reversed(pids)), signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    _signal_all([p for p in pids if _alive(p)], signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2] != "Z"


def host_info(state_dir: Path, addr: str) -> HostInfo:
    path = hosts_dir(state_dir) / addr / "host.json"
    if not path.exists():
        raise LookupError(f"no sandbox host {addr} in {state_dir}")
    return HostInfo(**json.loads(path.read_text()))


def _owned_sshd(info: HostInfo) -> bool:
    """Guard against signalling a recycled pid that is no longer this host's sshd."""
    try:
        cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes()
    except OSError:
        return False
    # sshd rewrites its process title, so the config path is matched as a substring.
    return str(Path(info.dir) / "sshd_config").encode() in cmdline


def host_freeze(state_dir: Path, addr: str) -> None:
    """Make a host stop answering: SIGSTOP its sshd and every process of its sessions."""
    _signal_all(host_processes(host_info(state_dir, addr)), signal.SIGSTOP)


def host_thaw(state_dir: Path, addr: str) -> None:
    _signal_all(host_processes(host_info(state_dir, addr)), signal.SIGCONT)


def host_kill(state_dir: Path, addr: str) -> None:
    """Stop a host for good, as if its machine died (used when the supervisor is gone)."""
    stop_processes(host_processes(host_info(state_dir, addr)))


def host_calls(state_dir: Path, addr: str) -> list[dict[str, Any]]:
    """The stand-in calls recorded on a host, oldest first."""
    return list(_read_jsonl(Path(host_info(state_dir, addr).root) / "var" / "log" / "sandbox" / "calls.jsonl"))


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        if line.strip():
            yield json.loads(line)
