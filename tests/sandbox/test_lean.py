"""The stand-ins' own pathlib and json subsets (sandbox/standins/standin_lib/lean.py)
behave as the standard library does for everything they offer: what `dumps` writes is
what `json.dumps` writes, `loads` reads what `json.loads` reads and refuses what it
refuses, and `Path` spells, joins and splits paths as pathlib does."""

from __future__ import annotations

import json
import math
import pathlib
import sys
from pathlib import Path as StdPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(StdPath(__file__).resolve().parents[2] / "sandbox" / "standins"))

from standin_lib import lean

# Every code point, lone surrogates included (json escapes and reads them back).
TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=20)
SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30) | st.floats(allow_nan=False) | TEXT
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(VALUES, st.sampled_from([None, 0, 1, 2, 4]), st.booleans())
def test_dumps_writes_what_json_dumps_writes(value: Any, indent: int | None, sort_keys: bool) -> None:
    assert lean.dumps(value, indent=indent, sort_keys=sort_keys) == json.dumps(
        value, indent=indent, sort_keys=sort_keys
    )


@settings(max_examples=300, deadline=None)
@given(VALUES, st.sampled_from([None, 2]), st.booleans())
def test_loads_reads_what_json_writes(value: Any, indent: int | None, ensure_ascii: bool) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)
    assert lean.loads(text) == json.loads(text)


def test_dumps_keys_and_special_floats_as_json_does() -> None:
    for value in ({10: "int", 9: "int", 2.5: "float"}, {True: "bool"}, {"inf": math.inf, "ninf": -math.inf}):
        assert lean.dumps(value) == json.dumps(value)
        assert lean.dumps(value, sort_keys=True, indent=2) == json.dumps(value, sort_keys=True, indent=2)
    assert lean.dumps([math.nan]) == json.dumps([math.nan]) == "[NaN]"
    with pytest.raises(TypeError):
        lean.dumps({(1, 2): "tuple key"})
    with pytest.raises(TypeError):
        lean.dumps({None: 1, 2.5: 2}, sort_keys=True)
    assert lean.dumps({None: 1}) == json.dumps({None: 1})
    with pytest.raises(TypeError):
        lean.dumps(object())


# Fragments of JSON, valid and not, for texts both readers must agree on.
JSON_FRAGMENTS = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\n",
        '"a"',
        '"\\u00e9"',
        '"\\ud83d\\ude80"',
        '"\\ud800"',
        '"\\ud800\\u0041"',
        '"\\uzzzz"',
        '"\\x"',
        '"tab\there"',
        '"',
        "0",
        "-0",
        "01",
        "1.5",
        "1.",
        ".5",
        "1e5",
        "1E-2",
        "1e",
        "-",
        "true",
        "false",
        "null",
        "NaN",
        "Infinity",
        "-Infinity",
        "nul",
        "tru",
        "x",
    ]
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(JSON_FRAGMENTS, max_size=8).map("".join))
def test_loads_accepts_and_refuses_what_json_loads_does(text: str) -> None:
    try:
        expected: Any = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            lean.loads(text)
        return
    got = lean.loads(text)
    assert json.dumps(got) == json.dumps(expected)


PATH_PARTS = st.lists(st.sampled_from(["", "/", "//", "///", "a", "b.txt", ".", "..", "c.tar.gz", ".hidden", "d/"]))


@settings(max_examples=500, deadline=None)
@given(PATH_PARTS.filter(bool), st.sampled_from(["x", "y.json", ".", ".."]))
def test_path_spells_joins_and_splits_as_pathlib_does(parts: list[str], child: str) -> None:
    ours, theirs = lean.Path(*parts), pathlib.PurePosixPath(*parts)

    assert str(ours) == str(theirs)
    assert str(ours / child) == str(theirs / child)
    assert ours.name == theirs.name
    assert str(ours.parent) == str(theirs.parent)
    if theirs.name:
        assert str(ours.with_suffix(".tmp")) == str(theirs.with_suffix(".tmp"))


def test_path_reads_writes_and_lists_as_pathlib_does(tmp_path: StdPath) -> None:
    root = lean.Path(str(tmp_path))
    (root / "a" / "b").mkdir(parents=True, exist_ok=True)
    (root / "a" / "b").mkdir(parents=True, exist_ok=True)
    with pytest.raises(FileExistsError):
        (root / "a").mkdir()
    (root / "a" / "f.json").write_text("ü")

    assert (tmp_path / "a" / "f.json").read_text() == "ü" == (root / "a" / "f.json").read_text()
    assert (root / "a" / "f.json").read_bytes() == "ü".encode()
    assert sorted(p.name for p in (root / "a").iterdir()) == ["b", "f.json"]
    assert (root / "a" / "f.json").is_file() and (root / "a" / "b").is_dir() and not (root / "nope").exists()
    (root / "a" / "f.json").replace(root / "a" / "g.json")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b", "g.json"]
    (root / "a" / "g.json").unlink()
    (root / "a" / "g.json").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        (root / "a" / "g.json").unlink()
    assert str((root / "a" / ".." / "a").resolve()) == str((tmp_path / "a").resolve())


def test_the_stand_ins_import_neither_re_nor_json_nor_pathlib() -> None:
    # The point of lean.py: a stand-in's start stays clear of the heavy modules.
    import subprocess

    standins = StdPath(__file__).resolve().parents[2] / "sandbox" / "standins"
    probe = (
        f"import sys; sys.path.insert(0, {str(standins)!r}); "
        "import standin_lib.system, standin_lib.docker; "
        "print(sorted({'re', 'json', 'pathlib', 'enum'} & set(sys.modules)))"
    )
    out = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("key", "call", "matches"),
    [
        ("apt-get install", "apt-get install -y nginx", True),
        ("apt-get install", "apt-get update", False),
        ("docker compose", "docker compose version", True),
        ("docker compose ... up", "docker compose -f /opt/a/compose.yml up -d", True),
        ("docker compose ... up", "docker compose -f /opt/a/compose.yml exec -T db sh", False),
        ("docker compose ... up", "docker compose version", False),
        ("docker compose ... exec ... pg_dumpall", "docker compose -f x exec -T db pg_dumpall -U u", True),
        ("docker compose ... pg_dumpall ... exec", "docker compose -f x exec -T db pg_dumpall", False),
        ("docker pull", "docker", False),
    ],
)
def test_a_fault_key_names_the_calls_it_says(key: str, call: str, matches: bool) -> None:
    assert lean.fault_key_matches(key, call.split()) is matches
