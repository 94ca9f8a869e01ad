"""The command journal: what was accepted, run and finished survives a restart."""

from __future__ import annotations

import os
import time
from pathlib import Path

from agent.journal import ACCEPTED, DONE, RUNNING, Journal


def test_states_and_result_survive_a_new_instance(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.accept("c-1", "update", {"component": "ghost", "version": "5.9"})
    journal.accept("c-2", "restart", {})
    journal.mark_running("c-1")
    journal.finish("c-1", {"status": "succeeded", "output": "ok"})
    journal.mark_running("c-2")

    reopened = Journal(tmp_path / "journal")

    first, second = reopened.get("c-1"), reopened.get("c-2")
    assert first is not None and second is not None
    assert (first.state, first.result, first.payload) == (
        DONE,
        {"status": "succeeded", "output": "ok"},
        {"component": "ghost", "version": "5.9"},
    )
    assert second.state == RUNNING and second.result is None
    assert reopened.get("c-3") is None


def test_ids_that_are_not_safe_file_names_are_hashed(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")

    journal.accept("../../etc/passwd", "diagnostics", {})

    assert [p.parent for p in (tmp_path / "journal").iterdir()] == [tmp_path / "journal"]
    entry = journal.get("../../etc/passwd")
    assert entry is not None and entry.state == ACCEPTED


def test_prune_forgets_only_old_finished_commands(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal", retention_days=1)
    journal.accept("old-done", "restart", {})
    journal.finish("old-done", {"status": "succeeded", "output": ""})
    journal.accept("old-accepted", "restart", {})
    two_days_ago = time.time() - 2 * 86400
    for path in (tmp_path / "journal").iterdir():
        os.utime(path, (two_days_ago, two_days_ago))
    journal.accept("new", "restart", {})

    assert journal.prune() == 1
    assert journal.get("old-done") is None
    assert journal.get("old-accepted") is not None and journal.get("new") is not None
