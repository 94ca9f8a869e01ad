"""What the heartbeat says about the machine: disk, memory, load and uptime from /proc
and statvfs, and the expiry of the tenant's TLS certificate. Every reader returns None
rather than raising when its source is missing."""

from __future__ import annotations

import os
import ssl
import subprocess
from datetime import UTC, datetime
from pathlib import Path


def disk_percent(path: str = "/") -> float | None:
    """Used space as `df` shows it: blocks reserved for root count as neither used nor free."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    usable = used + st.f_bavail * st.f_frsize
    return round(100.0 * used / usable, 1) if usable else None


def memory_percent(proc_root: str = "/proc") -> float | None:
    values: dict[str, int] = {}
    try:
        for line in Path(proc_root, "meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    total = values.get("MemTotal")
    available = values.get("MemAvailable")
    if not total or available is None:
        return None
    return round(100.0 * (total - available) / total, 1)


def load_average(proc_root: str = "/proc") -> float | None:
    """The one-minute load average."""
    try:
        return float(Path(proc_root, "loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def uptime_seconds(proc_root: str = "/proc") -> int | None:
    try:
        return int(float(Path(proc_root, "uptime").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return None


def tls_expires_at(cert_path: Path | None) -> str | None:
    """notAfter of a PEM certificate as ISO 8601 UTC, or None without a readable one."""
    if cert_path is None or not cert_path.is_file():
        return None
    not_after = _not_after_ssl(cert_path) or _not_after_openssl(cert_path)
    if not not_after:
        return None
    try:
        seconds = ssl.cert_time_to_seconds(not_after)
    except ValueError:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _not_after_ssl(cert_path: Path) -> str | None:
    # CPython's own decoder, used by its test suite; not public API, so openssl is the fallback.
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return None
    try:
        not_after = decode(str(cert_path)).get("notAfter")
    except (OSError, ValueError, ssl.SSLError):
        return None
    return not_after if isinstance(not_after, str) else None


def _not_after_openssl(cert_path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["openssl", "x509", "-enddate", "-noout", "-in", str(cert_path)],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().removeprefix("notAfter=") or None
