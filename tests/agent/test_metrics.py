"""Machine metrics from /proc and statvfs, and the TLS certificate's expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent import metrics
from tests.agent.conftest import make_certificate


def test_proc_readings(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal:       16000000 kB\nMemFree: 1 kB\nMemAvailable:    4000000 kB\n")
    (tmp_path / "loadavg").write_text("0.75 0.50 0.25 1/123 4567\n")
    (tmp_path / "uptime").write_text("12345.67 54321.00\n")

    assert metrics.memory_percent(str(tmp_path)) == 75.0
    assert metrics.load_average(str(tmp_path)) == 0.75
    assert metrics.uptime_seconds(str(tmp_path)) == 12345


def test_missing_sources_read_as_none(tmp_path: Path) -> None:
    assert metrics.memory_percent(str(tmp_path)) is None
    assert metrics.load_average(str(tmp_path)) is None
    assert metrics.uptime_seconds(str(tmp_path)) is None
    assert metrics.disk_percent(str(tmp_path / "absent")) is None
    assert metrics.tls_expires_at(tmp_path / "cert.pem") is None
    assert metrics.tls_expires_at(None) is None


def test_disk_percent_of_a_real_filesystem(tmp_path: Path) -> None:
    value = metrics.disk_percent(str(tmp_path))

    assert value is not None and 0.0 <= value <= 100.0


def test_tls_expiry_of_the_domain_certificate(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    make_certificate(cert, days=20)

    reported = metrics.tls_expires_at(cert)

    assert reported is not None
    expires = datetime.fromisoformat(reported.replace("Z", "+00:00"))

    assert abs(expires - (datetime.now(UTC) + timedelta(days=20))) < timedelta(minutes=5)
