"""Stand-ins for the system commands a setup script runs on a VPS that must not run on
this machine. Each one records its call as a JSON line in
$HOST_ROOT/var/log/sandbox/calls.jsonl, consults $HOST_ROOT/etc/sandbox/faults.json,
and then behaves plausibly, keeping its state under $HOST_ROOT.

Runs under the system python3 of the sandbox machine with the standard library only.
Every executable in sandbox/standins/ except `docker` is a symlink to _standin.py,
which calls main() here, dispatched on its own name."""

from __future__ import annotations

import fcntl
import os
import sys
import time

from standin_lib import lean
from standin_lib.lean import Path, host_root

# Most calls need neither subprocess nor typing: they are imported where they are used
# (or only for the type checker), as a stand-in starts dozens of times per setup.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

REAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _locked_json_update(path: Path, update: Callable[[dict[str, Any]], T]) -> T:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        raw = handle.read()
        data = lean.loads(raw) if raw.strip() else {}
        result = update(data)
        handle.seek(0)
        handle.truncate()
        handle.write(lean.dumps(data, indent=2, sort_keys=True))
        return result


def record(cmd: str, args: list[str], **extra: object) -> None:
    path = host_root() / "var" / "log" / "sandbox" / "calls.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"cmd": cmd, "args": args, "time": time.time(), "cwd": os.getcwd(), **extra}
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(lean.dumps(entry) + "\n")


def consult_faults(cmd: str, args: list[str]) -> None:
    """Apply $HOST_ROOT/etc/sandbox/faults.json: {"fail": {"apt-get install": 2},
    "sleep": {"certbot": 5}}, matched by lean.fault_key_matches."""
    path = host_root() / "etc" / "sandbox" / "faults.json"
    if not path.exists():
        return
    words = [cmd, *args]

    def take(data: dict[str, Any]) -> tuple[str | None, float]:
        failing = None
        for key, remaining in list(data.get("fail", {}).items()):
            if remaining > 0 and lean.fault_key_matches(key, words):
                data["fail"][key] = remaining - 1
                failing = key
                break
        pause = 0.0
        for key, seconds in data.get("sleep", {}).items():
            if lean.fault_key_matches(key, words):
                pause = float(seconds)
                break
        return failing, pause

    failing, pause = _locked_json_update(path, take)
    if pause:
        time.sleep(pause)
    if failing is not None:
        record(cmd, args, injected_fault=failing, exit_code=1)
        sys.stderr.write(f"{cmd}: injected failure (sandbox fault '{failing}')\n")
        sys.exit(1)


def _positional(args: list[str]) -> list[str]:
    return [a for a in args if not a.startswith("-")]


def apt_get(args: list[str]) -> int:
    """apt-get as on a Debian 12 VPS: `install` refuses, as apt does, a package that
    neither Debian nor a repository the host added and fetched knows (see packages.py)."""
    from standin_lib import packages

    root = host_root()
    state = root / "var" / "lib" / "sandbox-apt" / "installed.json"
    words = [
        a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] not in ("-o", "-t", "-c"))
    ]
    action = words[0] if words else ""
    # `pkg=version` and `pkg:arch` name the package `pkg`; a trailing `-` asks apt to remove it.
    packages_named = [p.split("=")[0].split(":")[0] for p in words[1:]]
    quiet = any(a.startswith("-q") or a == "--quiet" for a in args)
    if action in ("install", "reinstall"):
        unknown = packages.unknown_packages(root, packages_named)
        if not quiet:
            print("Reading package lists...\nBuilding dependency tree...\nReading state information...")
        if unknown:
            for package in unknown:
                sys.stderr.write(f"E: Unable to locate package {package}\n")
            return 100

        def add(data: dict[str, Any]) -> None:
            for package in packages_named:
                data[package] = {"installed_at": time.time()}

        _locked_json_update(state, add)
        for package in packages_named:
            print(f"Setting up {package} ... (sandbox)")
    elif action in ("remove", "purge"):
        _locked_json_update(state, lambda data: [data.pop(p, None) for p in packages_named])
    elif action == "update":
        out, err, code = packages.apt_update(root)
        if not quiet:
            print("\n".join(out))
        for line in err:
            sys.stderr.write(line + "\n")
        return code
    return 0


def dpkg(args: list[str]) -> int:
    from standin_lib import packages

    if "--print-architecture" in args:
        print("amd64")
        return 0
    installed = packages.installed_packages(host_root())
    if args and args[0] in ("-s", "--status", "-l", "--list"):
        missing = [p for p in args[1:] if p not in installed]
        for package in args[1:]:
            if package in installed:
                print(f"Package: {package}\nStatus: install ok installed")
        if missing:
            sys.stderr.write(f"dpkg-query: package '{missing[0]}' is not installed and no information is available\n")
            return 1
    return 0


def systemctl(args: list[str]) -> int:
    state = host_root() / "var" / "lib" / "sandbox-systemd" / "units.json"
    words = _positional(args)
    verb = words[0] if words else "list-units"
    units = [u if "." in u else f"{u}.service" for u in words[1:]]
    refused = _systemctl_refusal(verb, units)
    if refused is not None:
        message, code = refused
        sys.stderr.write(message + "\n")
        return code

    def change(data: dict[str, Any]) -> int:
        for unit in units:
            entry = data.setdefault(unit, {"active": False, "enabled": False})
            if verb in ("start", "restart", "reload", "reload-or-restart", "try-restart"):
                entry["active"] = True
            elif verb == "stop":
                entry["active"] = False
            elif verb == "enable":
                entry["enabled"] = True
                if "--now" in args:
                    entry["active"] = True
            elif verb == "disable":
                entry["enabled"] = False
                if "--now" in args:
                    entry["active"] = False
            elif verb in ("mask",):
                entry["enabled"] = False
        if verb == "is-active":
            active = all(data.get(u, {}).get("active") for u in units)
            print("active" if active else "inactive")
            return 0 if active else 3
        if verb == "is-enabled":
            enabled = all(data.get(u, {}).get("enabled") for u in units)
            print("enabled" if enabled else "disabled")
            return 0 if enabled else 1
        if verb == "status":
            for unit in units:
                running = data.get(unit, {}).get("active")
                print(f"* {unit}\n     Active: {'active (running)' if running else 'inactive (dead)'}")
            return 0 if all(data.get(u, {}).get("active") for u in units) else 3
        return 0

    code = _locked_json_update(state, change)
    starts = verb in ("start", "restart", "reload-or-restart", "try-restart") or (verb == "enable" and "--now" in args)
    stops = verb in ("stop", "restart", "reload-or-restart", "try-restart") or (verb == "disable" and "--now" in args)
    for unit in units:
        if stops:
            _unit_stop(unit)
        if starts:
            _unit_start(unit)
    reloads = verb in ("reload", "restart", "reload-or-restart", "try-restart", "try-reload-or-restart")
    if reloads and {"ssh.service", "sshd.service"} & set(units):
        _sshd_reload()
    return code


def _host_sshd_reads_drop_ins() -> Path | None:
    """The sandbox sshd's own config, when it reads the drop-ins the host's scripts
    write ($HOST_ROOT/etc/ssh/sshd_config.d, as the backup target's does)."""
    config = host_root().parent / "sshd_config"
    if config.exists() and f"Include {host_root()}/etc/ssh/sshd_config.d/" in config.read_text():
        return config
    return None


def _sshd_reload() -> None:
    """Reloading ssh makes this host's sshd read its configuration again (SIGHUP, as
    systemd's ExecReload does), and returns once it answers again."""
    import socket

    if _host_sshd_reads_drop_ins() is None:
        return
    info = lean.loads((host_root().parent / "host.json").read_text())
    os.kill(int(info["pid"]), 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            with socket.create_connection((info["addr"], int(info["port"])), timeout=1.0) as sock:
                if sock.recv(8).startswith(b"SSH-"):
                    return
        except OSError:
            continue


# How systemd 252 (Debian 12) answers a verb on a unit no package or file provides.
_UNIT_FILE_VERBS = {"enable": "enable", "disable": "disable", "reenable": "reenable"}
_JOB_VERBS = {
    "start": "start",
    "restart": "restart",
    "reload": "reload",
    "try-restart": "try-restart",
    "reload-or-restart": "reload-or-restart",
    "try-reload-or-restart": "try-reload-or-restart",
}


def _systemctl_refusal(verb: str, units: list[str]) -> tuple[str, int] | None:
    """The message and exit code systemctl gives for a unit that was never installed."""
    if verb not in (*_UNIT_FILE_VERBS, *_JOB_VERBS, "stop", "is-enabled", "status"):
        return None
    from standin_lib import packages

    root = host_root()
    for unit in units:
        if packages.unit_installed(root, unit):
            continue
        if verb in _UNIT_FILE_VERBS:
            return f"Failed to {_UNIT_FILE_VERBS[verb]} unit: Unit file {unit} does not exist.", 1
        if verb in _JOB_VERBS:
            return f"Failed to {_JOB_VERBS[verb]} {unit}: Unit {unit} not found.", 5
        if verb == "stop":
            return f"Failed to stop {unit}: Unit {unit} not loaded.", 5
        if verb == "is-enabled":
            return f"Failed to get unit file state for {unit}: No such file or directory", 1
        return f"Unit {unit} could not be found.", 4
    return None


def _unit_file(unit: str) -> Path:
    return host_root() / "etc" / "systemd" / "system" / unit


def _unit_pid_file(unit: str) -> Path:
    return host_root() / "run" / "sandbox-systemd" / f"{unit}.pid"


def _unit_running(unit: str) -> int | None:
    pid_file = _unit_pid_file(unit)
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().strip() or 0)
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    # A recycled pid is somebody else's process: only ours carries this HOST_ROOT.
    return pid if f"HOST_ROOT={host_root()}".encode() in environ.split(b"\0") else None


def _unit_start(unit: str) -> None:
    """A unit the scripts installed under HOST_ROOT really runs, as a detached process
    of this host (so the deployed agent talks to the Hub for real)."""
    import subprocess

    path = _unit_file(unit)
    if not path.exists() or _unit_running(unit):
        return
    env = dict(os.environ)
    exec_start, workdir = "", str(host_root())
    for line in path.read_text().splitlines():
        key, _, value = line.strip().partition("=")
        if key == "ExecStart":
            exec_start = value
        elif key == "WorkingDirectory":
            workdir = value
        elif key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
    if not exec_start:
        return
    log = host_root() / "var" / "log" / f"{unit}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            exec_start.split(),
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _unit_pid_file(unit).parent.mkdir(parents=True, exist_ok=True)
    _unit_pid_file(unit).write_text(str(proc.pid))


def _unit_stop(unit: str) -> None:
    pid = _unit_running(unit)
    if pid is None:
        return
    os.kill(pid, 15)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _unit_running(unit):
        time.sleep(0.05)
    if _unit_running(unit):
        os.kill(pid, 9)


def service(args: list[str]) -> int:
    if len(args) >= 2:
        return systemctl([args[1], args[0]])
    return 0


def ufw(args: list[str]) -> int:
    state = host_root() / "etc" / "ufw" / "sandbox-state.json"
    words = [a for a in args if a not in ("--force",)]

    def change(data: dict[str, Any]) -> int:
        data.setdefault("enabled", False)
        data.setdefault("rules", [])
        data.setdefault("defaults", {})
        verb = words[0] if words else "status"
        if verb == "enable":
            data["enabled"] = True
            print("Firewall is active and enabled on system startup")
        elif verb == "disable":
            data["enabled"] = False
        elif verb == "reset":
            data.update(enabled=False, rules=[], defaults={})
        elif verb == "default" and len(words) >= 3:
            data["defaults"][words[2]] = words[1]
        elif verb in ("allow", "deny", "limit", "reject"):
            rule = " ".join(words)
            if rule not in data["rules"]:
                data["rules"].append(rule)
                print("Rule added")
            else:
                print("Skipping adding existing rule")
        elif verb == "delete":
            rule = " ".join(words[1:])
            if rule in data["rules"]:
                data["rules"].remove(rule)
        elif verb == "status":
            print(f"Status: {'active' if data['enabled'] else 'inactive'}")
            for rule in data["rules"]:
                print(rule)
        return 0

    return _locked_json_update(state, change)


def _option_values(args: list[str], *names: str) -> list[str]:
    values = []
    for index, arg in enumerate(args):
        for name in names:
            if arg == name and index + 1 < len(args):
                values.append(args[index + 1])
            elif arg.startswith(name + "="):
                values.append(arg.split("=", 1)[1])
    return values


def certbot(args: list[str]) -> int:
    # Only certbot calls need it (standin_lib/certbot.py): the other stand-ins stay lean.
    from standin_lib import certbot as certbot_standin

    return certbot_standin.main(args)


def _sandbox_users() -> dict[str, list[str]]:
    return _sandbox_accounts("passwd", 7)


def _sandbox_groups() -> dict[str, list[str]]:
    return _sandbox_accounts("group", 4)


def _sandbox_accounts(name: str, fields_count: int) -> dict[str, list[str]]:
    path = host_root() / "etc" / name
    found = {}
    if path.exists():
        for line in path.read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= fields_count:
                found[fields[0]] = fields
    return found


def _free_id(used: set[int]) -> int:
    candidate = 1000
    while candidate in used:
        candidate += 1
    return candidate


def groupadd(args: list[str]) -> int:
    names = _positional([a for i, a in enumerate(args) if i == 0 or args[i - 1] not in ("-g", "--gid", "-K")])
    if not names:
        sys.stderr.write("Usage: groupadd [options] GROUP\n")
        return 2
    name = names[-1]
    groups = _sandbox_groups()
    if name in groups:
        if "-f" in args or "--force" in args:
            return 0
        sys.stderr.write(f"groupadd: group '{name}' already exists\n")
        return 9
    gid = _free_id({int(g[2]) for g in groups.values() if g[2].isdigit()})
    path = host_root() / "etc" / "group"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(f"{name}:x:{gid}:\n")
    return 0


def useradd(args: list[str]) -> int:
    names = _positional([a for i, a in enumerate(args) if i == 0 or not _takes_value(args[i - 1])])
    if not names:
        sys.stderr.write("useradd: no user name given\n")
        return 2
    name = names[-1]
    users = _sandbox_users()
    if name in users:
        sys.stderr.write(f"useradd: user '{name}' already exists\n")
        return 9
    uid = _free_id({int(u[2]) for u in users.values() if u[2].isdigit()})
    gid = str(uid)
    wanted_group = (_option_values(args, "-g", "--gid") or [""])[0]
    if wanted_group:
        groups = _sandbox_groups()
        if wanted_group in groups:
            gid = groups[wanted_group][2]
        elif wanted_group.isdigit():
            gid = wanted_group
        else:
            sys.stderr.write(f"useradd: group '{wanted_group}' does not exist\n")
            return 6
    home = (_option_values(args, "-d", "--home-dir") or [f"/home/{name}"])[0]
    shell = (_option_values(args, "-s", "--shell") or ["/bin/sh"])[0]
    passwd = host_root() / "etc" / "passwd"
    passwd.parent.mkdir(parents=True, exist_ok=True)
    with open(passwd, "a") as handle:
        handle.write(f"{name}:x:{uid}:{gid}::{home}:{shell}\n")
    if "-m" in args or "--create-home" in args:
        (host_root() / home.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return 0


def _takes_value(option: str) -> bool:
    return option in ("-d", "--home-dir", "-s", "--shell", "-G", "--groups", "-g", "--gid", "-u", "--uid", "-c")


def id_(args: list[str]) -> int:
    import subprocess

    names = _positional(args)
    users = _sandbox_users()
    if names and names[-1] in users:
        fields = users[names[-1]]
        if "-u" in args:
            print(fields[2])
        elif "-g" in args:
            print(fields[3])
        else:
            print(f"uid={fields[2]}({fields[0]}) gid={fields[3]}({fields[0]}) groups={fields[3]}({fields[0]})")
        return 0
    return subprocess.run(["/usr/bin/id", *args], check=False).returncode


def chown(args: list[str]) -> int:
    """A user or group of the host's own passwd and group is changed to its ids there:
    this machine does not know the name, and sshd (on the backup target) logs in as
    those ids."""
    import subprocess

    index = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if index is None:
        return subprocess.run(["/bin/chown", *args], check=False).returncode
    owner = args[index]
    user, sep, group = owner.partition(":")
    users, groups = _sandbox_users(), _sandbox_groups()
    if user in users or group in groups:
        uid = users[user][2] if user in users else user
        # `user:` means the user's own group, as chown reads it.
        login_group = users[user][3] if sep and not group and user in users else group
        gid = groups[group][2] if group in groups else login_group
        args = [*args[:index], f"{uid}:{gid}" if sep else uid, *args[index + 1 :]]
    return subprocess.run(["/bin/chown", *args], check=False).returncode


def sshd(args: list[str]) -> int:
    if "-t" in args or "-T" in args:
        config = _host_sshd_reads_drop_ins()
        if config is None:
            return 0
        import subprocess

        # The drop-ins this host's sshd reads are checked by sshd itself.
        return subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(config)], check=False).returncode
    sys.stderr.write("sshd (sandbox): only 'sshd -t' is available on a sandbox host\n")
    return 1


def hostnamectl(args: list[str]) -> int:
    words = _positional(args)
    if len(words) >= 2 and words[0] in ("set-hostname", "hostname"):
        (host_root() / "etc" / "hostname").write_text(words[1] + "\n")
    else:
        hostname = host_root() / "etc" / "hostname"
        print(f"Static hostname: {hostname.read_text().strip() if hostname.exists() else 'sandbox'}")
    return 0


def hostname(args: list[str]) -> int:
    if "-I" in args or "-i" in args or "--all-ip-addresses" in args:
        print(os.environ.get("SANDBOX_HOST", "127.0.0.1"))
        return 0
    names = _positional(args)
    path = host_root() / "etc" / "hostname"
    if names:
        path.write_text(names[0] + "\n")
        return 0
    name = path.read_text().strip() if path.exists() else "sandbox"
    print(name.split(".")[0] if "-s" in args or "--short" in args else name)
    return 0


def timedatectl(args: list[str]) -> int:
    words = _positional(args)
    if len(words) >= 2 and words[0] == "set-timezone":
        (host_root() / "etc" / "timezone").write_text(words[1] + "\n")
    return 0


def succeed(args: list[str]) -> int:
    return 0


BEHAVIOURS: dict[str, Callable[[list[str]], int]] = {
    "apt-get": apt_get,
    "apt": apt_get,
    "dpkg": dpkg,
    "systemctl": systemctl,
    "service": service,
    "ufw": ufw,
    "certbot": certbot,
    "useradd": useradd,
    "groupadd": groupadd,
    "id": id_,
    "chown": chown,
    "sshd": sshd,
    "hostnamectl": hostnamectl,
    "hostname": hostname,
    "timedatectl": timedatectl,
}


def main() -> int:
    cmd = Path(sys.argv[0]).name
    args = sys.argv[1:]
    consult_faults(cmd, args)
    behaviour = BEHAVIOURS.get(cmd, succeed)
    code = behaviour(args)
    record(cmd, args, exit_code=code)
    return code
