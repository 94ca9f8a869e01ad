"""Services enqueue by task name (hub.queue), so a typo in a name would only show in a
worker. Every name the code enqueues by is a task the Celery app has registered."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from hub.celery import app

ROOT = Path(__file__).resolve().parents[2]
APPS = ("hub", "tenants", "provisioning", "rollouts", "billing", "monitoring", "ops")
ENQUEUERS = {"enqueue_on_commit", "send_task"}


def enqueued_names() -> dict[str, str]:
    """Every task name passed to enqueue_on_commit or send_task, with where it is."""
    found: dict[str, str] = {}
    for app_dir in APPS:
        for path in (ROOT / app_dir).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text())
            module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if callee not in ENQUEUERS:
                    continue
                first = node.args[0]
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found[first.value] = where
                elif isinstance(first, ast.Name) and first.id.isupper():
                    found[getattr(importlib.import_module(module_name), first.id)] = where
    return found


def test_the_code_enqueues_by_name() -> None:
    names = enqueued_names()
    assert {"hub.pipeline.run_step", "billing.send_notice", "monitoring.send_notifications"} <= set(names)


def test_every_task_name_used_for_enqueueing_is_registered() -> None:
    app.loader.import_default_modules()
    unknown = {name: where for name, where in enqueued_names().items() if name not in app.tasks}
    assert unknown == {}
