"""The outbox: in order, deleted only after the Hub took it, refused items set aside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.client import Reply
from agent.outbox import Outbox


class Recorder:
    def __init__(self, *statuses: int | None) -> None:
        self.statuses = list(statuses)
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, path: str, body: dict[str, Any]) -> Reply:
        self.sent.append((path, body))
        status = self.statuses.pop(0) if self.statuses else 200
        return Reply(status=status, error="ConnectionError" if status is None else "")


def test_items_are_delivered_in_order_and_deleted(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    for n in range(3):
        outbox.put("usage", "agent/usage", {"n": n})
    send = Recorder()

    result = outbox.flush(send)

    assert [body["n"] for _, body in send.sent] == [0, 1, 2]
    assert result.delivered == 3 and result.pending == 0 and len(outbox) == 0


def test_a_failure_stops_the_flush_and_keeps_the_rest_in_order(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    for n in range(3):
        outbox.put("usage", "agent/usage", {"report_id": f"r{n}"})
    first = Recorder(200, None)

    stopped = outbox.flush(first)
    resent = Recorder()
    outbox.flush(resent)

    assert stopped.delivered == 1 and stopped.failure is not None
    assert [body["report_id"] for _, body in first.sent] == ["r0", "r1"]
    assert [body["report_id"] for _, body in resent.sent] == ["r1", "r2"]


def test_refused_items_go_to_dead_letters_and_the_flush_goes_on(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    outbox.put("backups", "agent/backups", {"bad": True})
    outbox.put("usage", "agent/usage", {"good": True})

    result = outbox.flush(Recorder(400, 200))

    assert (result.delivered, result.dead, result.pending) == (1, 1, 0)
    assert outbox.dead_count() == 1


def test_unauthorized_rate_limited_and_conflict_are_not_refusals(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    outbox.put("result", "agent/commands/1/result", {})

    assert outbox.flush(Recorder(401)).failure is not None
    assert outbox.flush(Recorder(429)).failure is not None
    assert outbox.flush(Recorder(409)).delivered == 1
    assert outbox.dead_count() == 0


def test_the_queue_survives_a_restart_and_keeps_its_order(tmp_path: Path) -> None:
    first = Outbox(tmp_path / "outbox")
    first.put("usage", "agent/usage", {"n": 0})
    first.put("usage", "agent/usage", {"n": 1})

    second = Outbox(tmp_path / "outbox")
    second.put("usage", "agent/usage", {"n": 2})
    send = Recorder()
    second.flush(send)

    assert [body["n"] for _, body in send.sent] == [0, 1, 2]


def test_a_full_outbox_drops_the_oldest_report_but_keeps_results(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox", max_items=2)
    outbox.put("result", "agent/commands/1/result", {"n": 0})
    outbox.put("usage", "agent/usage", {"n": 1})

    outbox.put("usage", "agent/usage", {"n": 2})

    assert [item.body["n"] for item in outbox.items()] == [0, 2]


def test_files_are_private(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    outbox.put("usage", "agent/usage", {})

    assert (tmp_path / "outbox").stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in (tmp_path / "outbox").iterdir())
