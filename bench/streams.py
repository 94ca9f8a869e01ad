"""Benchmark 7: the event streams. The web process as it runs in production
(scripts/web.sh: gunicorn's ASGI worker) on loopback.

1. Heartbeat ingest side by side: without streams, with STREAMS idle event streams open
   (each got its snapshot and waits), and without again; the goal compares the middle
   run with the mean of the two around it (the machine's drift cancels out). At the
   end every open stream must still be there and receive one more event.
2. Latency: one client connected (the idle streams still open); EVENTS events, each
   published after the commit of a transaction that writes a row; from the commit to
   the client having read the event, p50/p95/max."""

from __future__ import annotations

import shutil
import socket
import threading
import time

from bench.common import (
    VAR,
    Process,
    Result,
    bench_env,
    free_port,
    fresh_database,
    percentile,
    start_gunicorn,
    wait_for,
)
from bench.heartbeat import _python_load, _simulate_fleet, _wrk

GOAL_INGEST_LOSS = 0.10
GOAL_LATENCY_P95_MS = 250.0


def _start_web(port: int, env: dict[str, str]) -> Process:
    import urllib.request

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    process = Process("streams-web", ["bash", "scripts/web.sh", "--bind", f"127.0.0.1:{port}"], env=env)
    return process.start(ready=answers, timeout=90)


def _open_stream(port: int, token: str) -> socket.socket:
    """An EventSource's connection, read up to its snapshot, then left idle."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        (
            f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
    )
    seen = b""
    # The response is chunked: the snapshot's frame is complete at its blank line.
    while b"event: snapshot" not in seen or b"\n\n" not in seen.split(b"event: snapshot", 1)[1]:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"stream closed before its snapshot: {seen[:300]!r}")
        seen += chunk
    if not seen.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"stream refused: {seen[:300]!r}")
    return sock


def _received(sock: socket.socket, marker: bytes, timeout: float) -> bool:
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            return False
        seen = (seen + chunk)[-65536:]
        if marker in seen:
            return True
    return False


def _staff_token() -> str:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_user("bench-streams", is_staff=True)
    return str(Token.objects.create(user=user).key)


def _latencies(port: int, token: str, count: int) -> list[float]:
    """Seconds from each commit to the client having read the event it published."""
    from django.db import transaction

    from hub import events
    from hub.audit import audit_record

    committed: dict[int, float] = {}
    published: dict[int, list[str] | None] = {}
    arrived: dict[int, float] = {}
    sock = _open_stream(port, token)
    done = threading.Event()
    closed = threading.Event()

    def read() -> None:
        buffer = b""
        sock.settimeout(1.0)
        while not done.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                closed.set()
                return
            now = time.perf_counter()
            buffer += chunk
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                if b"event: bench.latency" in frame:
                    n = int(frame.rsplit(b'"n":', 1)[1].rstrip(b"}"))
                    arrived[n] = now

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for n in range(count):
            with transaction.atomic():
                # The first callback after the commit: the commit's time.
                transaction.on_commit(lambda at=n: committed.__setitem__(at, time.perf_counter()))  # type: ignore[misc]
                audit_record(actor="bench", action="bench.latency", object_type="bench", object_id=n)
                # What events.publish does, keeping what Redis answered.
                transaction.on_commit(
                    lambda at=n: published.__setitem__(at, events.send("bench.latency", {"n": at}))  # type: ignore[misc]
                )
            time.sleep(0.02)
        try:
            wait_for(lambda: len(arrived) >= count, timeout=30, message="every event to reach the client")
        except TimeoutError as exc:
            missing = sorted(set(range(count)) - set(arrived))
            unpublished = sorted(n for n, ids in published.items() if not ids)
            stream = "was closed by the server" if closed.is_set() else "stayed open"
            raise TimeoutError(
                f"{exc}: {len(arrived)} of {count} arrived; missing {missing[:20]}; not published (Redis refused "
                f"or timed out) {unpublished[:20]}; the stream {stream}"
            ) from None
    finally:
        done.set()
        reader.join(timeout=5)
        sock.close()
    return [arrived[n] - committed[n] for n in range(count)]


def run(quick: bool) -> Result:
    tenants = 200 if quick else 2_000
    seconds = 1 if quick else 10
    streams = 20 if quick else 200
    count = 20 if quick else 200
    has_wrk = shutil.which("wrk") is not None
    load = _wrk if has_wrk else _python_load
    result = Result(
        f"event streams: scripts/web.sh (gunicorn ASGI worker, 2 processes), {tenants} tenants, "
        f"{streams} idle streams, heartbeats {seconds}s per run ({'wrk' if has_wrk else 'Python load'})"
    )
    throttle = "100000/minute"
    env = bench_env(AGENT_THROTTLE_RATE=throttle, AGENT_HEARTBEAT_INTERVAL="60", WEB_CONCURRENCY="2")
    keys_file = VAR / "streams-keys.txt"
    with fresh_database():
        _simulate_fleet(tenants, keys_file)
        token = _staff_token()
        port = free_port()
        web: Process | None = None
        sockets: list[socket.socket] = []
        try:
            web = _start_web(port, env)
            url = f"http://127.0.0.1:{port}/api/v1/agent/heartbeat"
            if not quick:
                load(url, seconds=3, keys_file=keys_file, mode="heartbeat")  # warm-up
            before = load(url, seconds=seconds, keys_file=keys_file, mode="heartbeat")
            sockets = [_open_stream(port, token) for _ in range(streams)]
            during = load(url, seconds=seconds, keys_file=keys_file, mode="heartbeat")

            from hub import events

            ids = events.send("bench.ping", {"streams": streams})
            marker = f"id: {ids[0]}".encode() if ids else b"event: bench.ping"
            alive = sum(_received(sock, marker, timeout=10) for sock in sockets)
            latencies = _latencies(port, token, count)
            for sock in sockets:
                sock.close()
            sockets = []
            after = load(url, seconds=seconds, keys_file=keys_file, mode="heartbeat")
        finally:
            for sock in sockets:
                sock.close()
            if web is not None:
                web.stop()
        # The yardstick of the choice: the same load on the synchronous worker the web
        # process used before (gthread, 2 processes x 4 threads; no streams possible
        # there without a thread each).
        sync_port = free_port()
        sync_web = start_gunicorn("streams-web-gthread", port=sync_port, workers=2, threads=4, env=env)
        try:
            sync_url = f"http://127.0.0.1:{sync_port}/api/v1/agent/heartbeat"
            gthread = load(sync_url, seconds=seconds, keys_file=keys_file, mode="heartbeat")
        finally:
            sync_web.stop()

    baseline = (before.rps + after.rps) / 2
    loss = 1 - during.rps / baseline if baseline else 1.0
    errors = before.errors + during.errors + after.errors
    result.add("heartbeats/s without streams (before)", f"{before.rps:,.0f}", "")
    result.add(f"heartbeats/s with {streams} idle streams", f"{during.rps:,.0f}", "")
    result.add("heartbeats/s without streams (after)", f"{after.rps:,.0f}", "")
    result.add(
        "ingest lost to the open streams",
        f"{loss:.1%}",
        f"<= {GOAL_INGEST_LOSS:.0%}",
        loss <= GOAL_INGEST_LOSS,
    )
    result.add("heartbeats/s on gthread (2 x 4 threads, no streams)", f"{gthread.rps:,.0f}", "")
    result.add("heartbeat p99 without / with streams", f"{before.p99_ms:.1f} / {during.p99_ms:.1f} ms", "")
    result.add("heartbeat errors", str(errors), "0", errors == 0)
    result.add("open streams that got the next event", f"{alive} of {streams}", "all", alive == streams)
    p95 = percentile(latencies, 95) * 1000
    result.add("commit -> client p50", f"{percentile(latencies, 50) * 1000:.1f} ms", "")
    result.add("commit -> client p95", f"{p95:.1f} ms", f"<= {GOAL_LATENCY_P95_MS:.0f} ms", p95 <= GOAL_LATENCY_P95_MS)
    result.add("commit -> client max", f"{max(latencies) * 1000:.1f} ms", "")
    result.ratio = f"ingest with / without {streams} idle streams = {during.rps / baseline if baseline else 0:.2f}"
    result.notes.append(
        f"AGENT_THROTTLE_RATE={throttle}; load generator and {streams} stream clients on the same 2 cores; "
        f"latency over {count} events with the idle streams open, no heartbeat load"
    )
    return result
