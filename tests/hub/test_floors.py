"""The layout's rule holds and stays held: `make lint` runs import-linter with the
floors contract (.importlinter), and it refuses an import that runs up a floor."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / ".importlinter"), "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_of_the_code(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns(".venv", ".git", "var", "tests", "__pycache__", "*.pyc", "node_modules")
    shutil.copytree(ROOT, tree, ignore=ignore, symlinks=True)
    return tree


def test_the_tree_keeps_its_floors(tmp_path: Path) -> None:
    result = lint_imports(copy_of_the_code(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_an_import_that_runs_up_a_floor_is_refused(tmp_path: Path) -> None:
    # given the core (floor 0) reaching up into provisioning (floor 2)
    tree = copy_of_the_code(tmp_path)
    (tree / "hub" / "upstairs.py").write_text("from provisioning.models import Order  # noqa: F401\n")

    result = lint_imports(tree)

    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "hub.upstairs -> provisioning.models" in result.stdout


def test_provisioning_and_rollouts_never_import_each_other(tmp_path: Path) -> None:
    tree = copy_of_the_code(tmp_path)
    (tree / "provisioning" / "sideways.py").write_text("import rollouts.models  # noqa: F401\n")

    result = lint_imports(tree)

    assert result.returncode != 0
    assert "provisioning.sideways -> rollouts.models" in result.stdout


def test_only_ops_bench_and_tests_use_the_sandbox(tmp_path: Path) -> None:
    tree = copy_of_the_code(tmp_path)
    (tree / "monitoring" / "peek.py").write_text("import sandbox.control  # noqa: F401\n")

    result = lint_imports(tree)

    assert result.returncode != 0
    assert "monitoring.peek -> sandbox.control" in result.stdout
