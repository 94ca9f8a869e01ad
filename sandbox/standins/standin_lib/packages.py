"""What apt and systemd on a Debian 12 VPS know, for the apt-get, dpkg and systemctl
stand-ins: which packages exist, which ones a host installed, and which units those
packages ship.

A package exists when this machine's `apt-cache` knows it (this machine runs Debian 12
with the Debian archive as its only source), or when it is in a third-party repository
the host itself added and fetched with `apt-get update` (Docker's, the one the setup
scripts add; any other repository is refused, as the sandbox cannot know its contents).
The names apt-cache knows are read once into a sorted file, rebuilt when this machine's
package lists change, and looked up by binary search: no process per call.

A unit exists when a package the host installed ships it, or when a unit file was
written under $HOST_ROOT/etc/systemd/system, /lib/systemd/system or /usr/lib/systemd/system.
The units of a package installed on this machine too are read from dpkg's own file
list; for the others, UNITS is the map (tests/sandbox holds it to dpkg where it can)."""

from __future__ import annotations

import os

from standin_lib import lean
from standin_lib.lean import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap
    from collections.abc import Iterable

APT_LISTS = "/var/lib/apt/lists"
PKGNAMES_CACHE = Path("/var/cache/hub-sandbox/apt-pkgnames")
DPKG_INFO = Path("/var/lib/dpkg/info")

# What a fresh Debian 12 cloud VPS (Hetzner's and Netcup's images) has installed.
BASE_PACKAGES = frozenset(
    {
        "apt",
        "base-files",
        "bash",
        "coreutils",
        "dpkg",
        "gzip",
        "iproute2",
        "login",
        "mount",
        "openssh-client",
        "openssh-server",
        "passwd",
        "procps",
        "sed",
        "systemd",
        "systemd-sysv",
        "tar",
        "udev",
        "util-linux",
    }
)

# The packages an install pulls in whose units matter (apt installs dependencies too).
PULLS = {
    "nginx": ("nginx-common",),
    "docker-ce": ("containerd.io", "docker-ce-cli"),
    "docker.io": ("containerd", "runc"),
    "certbot": ("python3-certbot",),
    "fail2ban": ("python3-systemd",),
    "postgresql": ("postgresql-common", "postgresql-15"),
}

# Units shipped by packages this machine may not have installed (Debian 12 and
# Docker's bookworm repository). Aliases a unit's [Install] section makes on enable
# (sshd.service for ssh.service) are listed with the unit.
UNITS: dict[str, tuple[str, ...]] = {
    "apt": ("apt-daily-upgrade.service", "apt-daily-upgrade.timer", "apt-daily.service", "apt-daily.timer"),
    "certbot": ("certbot.service", "certbot.timer"),
    "containerd": ("containerd.service",),
    "containerd.io": ("containerd.service",),
    "cron": ("cron.service",),
    "docker-ce": ("docker.service", "docker.socket"),
    "docker.io": ("docker.service", "docker.socket"),
    "fail2ban": ("fail2ban.service",),
    "logrotate": ("logrotate.service", "logrotate.timer"),
    "nginx-common": ("nginx.service",),
    "openssh-server": ("rescue-ssh.target", "ssh.service", "ssh.socket", "sshd.service"),
    "postgresql-common": ("postgresql.service", "postgresql@.service"),
    "redis-server": ("redis-server.service", "redis-server@.service"),
    "rsyslog": ("rsyslog.service",),
    "systemd": (
        "multi-user.target",
        "network-online.target",
        "systemd-journald.service",
        "systemd-logind.service",
        "systemd-networkd.service",
        "systemd-sysctl.service",
        "systemd-tmpfiles-clean.timer",
        "timers.target",
    ),
    "systemd-timesyncd": ("systemd-timesyncd.service",),
    "ufw": ("ufw.service",),
    "unattended-upgrades": ("unattended-upgrades.service",),
}

# The third-party repositories the sandbox knows, by the URI a sources entry names.
DOCKER_URI = "https://download.docker.com/linux/debian"
DOCKER_KEY_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
REPOSITORIES: dict[str, dict[str, object]] = {
    DOCKER_URI: {
        "name": "docker",
        "suites": ("bookworm",),
        "fingerprint": DOCKER_KEY_FINGERPRINT,
        "key_id": "7EA0A9C3F273FCD8",
        "packages": (
            "containerd.io",
            "docker-buildx-plugin",
            "docker-ce",
            "docker-ce-cli",
            "docker-ce-rootless-extras",
            "docker-compose-plugin",
        ),
    }
}
DEBIAN_URIS = ("http://deb.debian.org/", "https://deb.debian.org/", "http://security.debian.org/")


# --- the names apt-cache knows -------------------------------------------------------


def _lists_stamp() -> str:
    try:
        return str(os.stat(APT_LISTS).st_mtime_ns)
    except OSError:
        return "none"


def _build_pkgnames(stamp: str) -> None:
    import subprocess

    names = subprocess.run(
        ["/usr/bin/apt-cache", "pkgnames"], check=True, capture_output=True, text=True, timeout=120
    ).stdout.split()
    PKGNAMES_CACHE.parent.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed: hosts building it at once each see a whole file.
    tmp = Path(f"{PKGNAMES_CACHE}.{os.getpid()}")
    tmp.write_text(stamp + "\n" + "\n".join(sorted(set(names))) + "\n")
    tmp.replace(PKGNAMES_CACHE)


def _in_sorted_lines(data: bytes | mmap.mmap, start: int, name: bytes) -> bool:
    """Binary search for a whole line in `data[start:]`, whose lines are sorted."""
    low, high = start, len(data)
    while low < high:
        middle = (low + high) // 2
        line_start = data.rfind(b"\n", start, middle) + 1
        line_start = max(line_start, start)
        line_end = data.find(b"\n", line_start)
        if line_end < 0:
            line_end = len(data)
        line = data[line_start:line_end]
        if line == name:
            return True
        if line < name:
            low = line_end + 1
        else:
            high = line_start
    return False


def debian_knows(names: Iterable[str]) -> dict[str, bool]:
    """For each name: does this machine's apt-cache know a package of that name?"""
    import mmap

    stamp = _lists_stamp()
    for _ in range(2):
        try:
            with open(PKGNAMES_CACHE, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                first = data.find(b"\n")
                if data[:first].decode() == stamp:
                    return {name: _in_sorted_lines(data, first + 1, name.encode()) for name in names}
        except (OSError, ValueError):
            pass
        _build_pkgnames(stamp)
    raise RuntimeError("sandbox apt: cannot read the package name cache")


# --- the host's sources and fetched repositories -------------------------------------


def _sources_entries(root: Path) -> list[dict[str, str]]:
    """The `deb` entries of the host's own sources (one-line .list and deb822 .sources)."""
    entries: list[dict[str, str]] = []
    base = root / "etc" / "apt"
    files = [base / "sources.list"]
    parts = base / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.name.endswith((".list", ".sources")))
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text()
        if path.name.endswith(".sources"):
            for stanza in text.split("\n\n"):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    key, sep, value = line.partition(":")
                    if sep and not line.startswith((" ", "#")):
                        fields[key.strip().lower()] = value.strip()
                if fields.get("enabled", "yes") == "no" or "deb" not in fields.get("types", "").split():
                    continue
                for uri in fields.get("uris", "").split():
                    for suite in fields.get("suites", "").split():
                        signed_by = fields.get("signed-by", "")
                        entries.append({"uri": uri.rstrip("/"), "suite": suite, "signed_by": signed_by})
            continue
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            options: dict[str, str] = {}
            rest = words[1:]
            if rest and rest[0].startswith("["):
                option_words = []
                while rest:
                    word = rest.pop(0)
                    option_words.append(word.strip("[]"))
                    if word.endswith("]"):
                        break
                for option in option_words:
                    key, _, value = option.partition("=")
                    options[key] = value
            if len(rest) >= 2:
                signed_by = options.get("signed-by", "")
                entries.append({"uri": rest[0].rstrip("/"), "suite": rest[1], "signed_by": signed_by})
    return entries


def _key_fingerprints(path: Path) -> set[str]:
    import subprocess
    import tempfile

    # A home of its own: reading a key file must not touch anybody's keyring.
    with tempfile.TemporaryDirectory() as home:
        result = subprocess.run(
            ["/usr/bin/gpg", "--batch", "--show-keys", "--with-colons", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            env={"GNUPGHOME": home, "PATH": "/usr/bin:/bin"},
            check=False,
        )
    return {line.split(":")[9] for line in result.stdout.splitlines() if line.startswith("fpr:")}


def apt_update(root: Path) -> tuple[list[str], list[str], int]:
    """Fetch the host's third-party repositories as `apt-get update` would: returns
    (stdout lines, stderr lines, exit code) and records what was fetched."""
    out: list[str] = []
    err: list[str] = []
    fetched: list[str] = []
    failed = False
    for entry in _sources_entries(root):
        uri, suite = entry["uri"], entry["suite"]
        if uri.startswith(DEBIAN_URIS) or uri + "/" in DEBIAN_URIS:
            continue
        repository = REPOSITORIES.get(uri)
        release = f"{uri} {suite} InRelease"
        if repository is None or suite not in repository["suites"]:  # type: ignore[operator]
            err.append(f"E: Failed to fetch {uri}/dists/{suite}/InRelease  (the sandbox does not know this repository)")
            err.append(f"E: The repository '{release}' is not known to the sandbox.")
            failed = True
            continue
        keyring = entry["signed_by"]
        key_path = root / keyring.lstrip("/") if keyring.startswith("/") else None
        if key_path is None or not key_path.is_file() or repository["fingerprint"] not in _key_fingerprints(key_path):
            err.append(
                f"W: GPG error: {release}: The following signatures couldn't be verified because the public key "
                f"is not available: NO_PUBKEY {repository['key_id']}"
            )
            err.append(f"E: The repository '{release}' is not signed.")
            failed = True
            continue
        out.append(f"Get: {release} [48.8 kB]")
        fetched.append(uri)
    state = root / "var" / "lib" / "sandbox-apt" / "repositories.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(lean.dumps(sorted(set(fetched))))
    out.append("Reading package lists...")
    return out, err, 100 if failed else 0


def _fetched_packages(root: Path) -> set[str]:
    state = root / "var" / "lib" / "sandbox-apt" / "repositories.json"
    if not state.exists():
        return set()
    known: set[str] = set()
    for uri in lean.loads(state.read_text()):
        repository = REPOSITORIES.get(uri)
        if repository is not None:
            known.update(repository["packages"])  # type: ignore[arg-type]
    return known


def unknown_packages(root: Path, names: list[str]) -> list[str]:
    """The names apt could not locate on this host, in the order given."""
    fetched = _fetched_packages(root)
    rest = [name for name in names if name not in fetched]
    known = debian_knows(rest) if rest else {}
    return [name for name in rest if not known[name]]


# --- installed packages and their units ---------------------------------------------


def installed_state(root: Path) -> dict[str, object]:
    state = root / "var" / "lib" / "sandbox-apt" / "installed.json"
    return lean.loads(state.read_text()) if state.exists() else {}


def installed_packages(root: Path) -> set[str]:
    chosen = set(BASE_PACKAGES) | set(installed_state(root))
    for name in list(chosen):
        chosen.update(PULLS.get(name, ()))
    return chosen


def _dpkg_units(package: str) -> tuple[str, ...] | None:
    """The units a package installed on this machine ships, from dpkg's file list."""
    listing = DPKG_INFO / f"{package}.list"
    if not listing.exists():
        listing = DPKG_INFO / f"{package}:amd64.list"
        if not listing.exists():
            return None
    units = []
    for line in listing.read_text().splitlines():
        head, _, name = line.rpartition("/")
        in_unit_dir = head in ("/lib/systemd/system", "/usr/lib/systemd/system")
        if in_unit_dir and "." in name and not name.endswith((".d", ".wants")):
            units.append(name)
    return tuple(units)


def package_units(package: str) -> tuple[str, ...]:
    shipped = _dpkg_units(package)
    if shipped is None:
        return UNITS.get(package, ())
    # An alias its [Install] section makes when enabled is no file in the package.
    return shipped + tuple(u for u in UNITS.get(package, ()) if u not in shipped)


def unit_name(word: str) -> str:
    return word if "." in word else f"{word}.service"


def _template(unit: str) -> str | None:
    stem, _, suffix = unit.rpartition(".")
    if "@" in stem and not stem.endswith("@"):
        return stem.split("@", 1)[0] + "@." + suffix
    return None


def unit_installed(root: Path, unit: str) -> bool:
    names = {unit} | ({_template(unit)} - {None})
    for directory in ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system"):
        for name in names:
            if (root / directory / name).exists():
                return True
    return any(name in package_units(package) for package in installed_packages(root) for name in names)
