"""The parts of pathlib and json the stand-ins use, on os and the builtins alone, and the
host root they keep their state under.

A setup script calls stand-ins dozens of times, and in the sandbox every host's calls
share this machine's cores. Importing pathlib or json pulls in re and enum, which cost a
stand-in more than half of its start (about 25 of 40 ms of CPU here); these stand-ins
for them cost nothing to import. Both follow the standard library's behaviour for what
they offer: `dumps` writes what `json.dumps` writes (ensure_ascii, its separators,
indent, sort_keys) and `loads` reads what `json.loads` reads (tests/sandbox hold them to
it), `Path` does what `pathlib.PurePosixPath` and `Path` do for the methods it has."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any


def _normalized(path: str) -> str:
    """As pathlib spells a path: no empty or "." parts, no trailing slash, ".." kept,
    exactly two leading slashes kept (POSIX gives them a meaning of their own)."""
    if path.startswith("//") and not path.startswith("///"):
        root = "//"
    elif path.startswith("/"):
        root = "/"
    else:
        root = ""
    parts = [part for part in path.split("/") if part and part != "."]
    return root + "/".join(parts) if root or parts else "."


class Path:
    """A POSIX path with the pathlib methods the stand-ins call."""

    __slots__ = ("_path",)

    def __init__(self, *parts: str | os.PathLike[str]) -> None:
        self._path = _normalized(os.path.join(*(os.fspath(p) for p in parts)) if parts else "")

    def __fspath__(self) -> str:
        return self._path

    def __str__(self) -> str:
        return self._path

    def __repr__(self) -> str:
        return f"Path({self._path!r})"

    def __truediv__(self, other: str | os.PathLike[str]) -> Path:
        return Path(self._path, other)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Path) and self._path == other._path

    def __hash__(self) -> int:
        return hash(self._path)

    def __lt__(self, other: Path) -> bool:
        return self._path.split("/") < other._path.split("/")

    @property
    def name(self) -> str:
        return "" if self._path in ("/", "//", ".") else os.path.basename(self._path)

    @property
    def parent(self) -> Path:
        if self._path in ("/", "//", "."):
            return self
        head = os.path.dirname(self._path)
        return Path(head or ".")

    def with_suffix(self, suffix: str) -> Path:
        name = self.name
        if not name or (suffix and (not suffix.startswith(".") or suffix == ".")):
            raise ValueError(f"invalid suffix {suffix!r} for {self._path!r}")
        dot = name.rfind(".")
        old = name[dot:] if 0 < dot < len(name) - 1 else ""
        return self.parent / (name[: len(name) - len(old)] + suffix)

    def resolve(self) -> Path:
        return Path(os.path.realpath(self._path))

    def exists(self) -> bool:
        return os.path.exists(self._path)

    def is_file(self) -> bool:
        return os.path.isfile(self._path)

    def is_dir(self) -> bool:
        return os.path.isdir(self._path)

    def iterdir(self) -> Iterator[Path]:
        for entry in os.listdir(self._path):
            yield self / entry

    def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        try:
            if parents:
                os.makedirs(self._path, mode, exist_ok=exist_ok)
            else:
                os.mkdir(self._path, mode)
        except FileExistsError:
            if not exist_ok or not os.path.isdir(self._path):
                raise

    def read_text(self, encoding: str = "utf-8") -> str:
        with open(self._path, encoding=encoding) as handle:
            return handle.read()

    def read_bytes(self) -> bytes:
        with open(self._path, "rb") as handle:
            return handle.read()

    def write_text(self, data: str, encoding: str = "utf-8") -> int:
        with open(self._path, "w", encoding=encoding) as handle:
            return handle.write(data)

    def replace(self, target: str | os.PathLike[str]) -> Path:
        os.replace(self._path, target)
        return Path(target)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            if not missing_ok:
                raise


def host_root() -> Path:
    """The simulated host's filesystem root, $HOST_ROOT: every stand-in keeps its state
    under it. Outside a sandbox session there is nothing safe to pretend on."""
    root = os.environ.get("HOST_ROOT")
    if not root:
        sys.stderr.write("sandbox stand-in: HOST_ROOT is not set; refusing to run\n")
        sys.exit(127)
    return Path(root)


# --- JSON -----------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _string(text: str) -> str:
    out = ['"']
    for char in text:
        escaped = _ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif " " <= char <= "~":
            out.append(char)
        else:
            code = ord(char)
            if code > 0xFFFF:
                code -= 0x10000
                out.append(f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
    out.append('"')
    return "".join(out)


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _key(key: object) -> str:
    if isinstance(key, str):
        return key
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return _number(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _encode(value: Any, indent: str | None, sort_keys: bool, level: int, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, dict):
        # Sorted by the keys as they are, as json does (10 after 9; mixed types refused).
        items = [(_key(k), v) for k, v in (sorted(value.items()) if sort_keys else value.items())]
        _container("{", "}", items, indent, sort_keys, level, out)
    elif isinstance(value, list | tuple):
        _container("[", "]", [(None, v) for v in value], indent, sort_keys, level, out)
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _container(
    opening: str,
    closing: str,
    items: Sequence[tuple[str | None, Any]],
    indent: str | None,
    sort_keys: bool,
    level: int,
    out: list[str],
) -> None:
    if not items:
        out.append(opening + closing)
        return
    out.append(opening)
    separator = ", " if indent is None else ","
    inner = "" if indent is None else "\n" + indent * (level + 1)
    for index, (key, item) in enumerate(items):
        out.append((separator if index else "") + inner)
        if key is not None:
            out.append(_string(key) + ": ")
        _encode(item, indent, sort_keys, level + 1, out)
    out.append(("" if indent is None else "\n" + indent * level) + closing)


def dumps(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    out: list[str] = []
    _encode(value, None if indent is None else " " * indent, sort_keys, 0, out)
    return "".join(out)


_WHITESPACE = " \t\n\r"
_UNESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_CONSTANTS = {"true": True, "false": False, "null": None, "NaN": float("nan")}
_DIGITS = "0123456789"


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{what} at char {self.at}")

    def skip_space(self) -> None:
        text, at = self.text, self.at
        while at < len(text) and text[at] in _WHITESPACE:
            at += 1
        self.at = at

    def value(self, depth: int) -> Any:
        if depth > 900:
            raise self.fail("nested too deeply")
        self.skip_space()
        if self.at >= len(self.text):
            raise self.fail("Expecting value")
        char = self.text[self.at]
        if char == '"':
            return self.string()
        if char == "{":
            return self.object(depth)
        if char == "[":
            return self.array(depth)
        for word, constant in _CONSTANTS.items():
            if self.text.startswith(word, self.at):
                self.at += len(word)
                return constant
        for word, infinite in (("Infinity", float("inf")), ("-Infinity", float("-inf"))):
            if self.text.startswith(word, self.at):
                self.at += len(word)
                return infinite
        return self.number()

    def number(self) -> int | float:
        text, start = self.text, self.at
        at = start
        if at < len(text) and text[at] == "-":
            at += 1
        if at < len(text) and text[at] == "0":
            at += 1
        elif at < len(text) and text[at] in "123456789":
            while at < len(text) and text[at] in _DIGITS:
                at += 1
        else:
            raise self.fail("Expecting value")
        integer = True
        if at + 1 < len(text) and text[at] == "." and text[at + 1] in _DIGITS:
            integer = False
            at += 1
            while at < len(text) and text[at] in _DIGITS:
                at += 1
        if at < len(text) and text[at] in "eE":
            mark = at + 1
            if mark < len(text) and text[mark] in "+-":
                mark += 1
            if mark < len(text) and text[mark] in _DIGITS:
                integer = False
                at = mark
                while at < len(text) and text[at] in _DIGITS:
                    at += 1
        self.at = at
        return int(text[start:at]) if integer else float(text[start:at])

    def string(self) -> str:
        text = self.text
        at = self.at + 1
        parts: list[str] = []
        while True:
            end = at
            while end < len(text) and text[end] not in '"\\' and text[end] >= " ":
                end += 1
            parts.append(text[at:end])
            if end >= len(text):
                self.at = end
                raise self.fail("Unterminated string")
            char = text[end]
            if char == '"':
                self.at = end + 1
                return "".join(parts)
            if char != "\\":
                self.at = end
                raise self.fail("Invalid control character")
            escape = text[end + 1 : end + 2]
            if escape == "u":
                code = self.hex4(end + 2)
                at = end + 6
                if 0xD800 <= code <= 0xDBFF and text.startswith("\\u", at):
                    low = self.hex4(at + 2)
                    if 0xDC00 <= low <= 0xDFFF:
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        at += 6
                parts.append(chr(code))
            elif escape in _UNESCAPES:
                parts.append(_UNESCAPES[escape])
                at = end + 2
            else:
                self.at = end
                raise self.fail("Invalid \\escape")

    def hex4(self, at: int) -> int:
        digits = self.text[at : at + 4]
        if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
            self.at = at
            raise self.fail("Invalid \\uXXXX escape")
        return int(digits, 16)

    def object(self, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        self.at += 1
        self.skip_space()
        if self.text.startswith("}", self.at):
            self.at += 1
            return result
        while True:
            self.skip_space()
            if not self.text.startswith('"', self.at):
                raise self.fail("Expecting property name enclosed in double quotes")
            key = self.string()
            self.skip_space()
            if not self.text.startswith(":", self.at):
                raise self.fail("Expecting ':' delimiter")
            self.at += 1
            result[key] = self.value(depth + 1)
            self.skip_space()
            if self.text.startswith(",", self.at):
                self.at += 1
            elif self.text.startswith("}", self.at):
                self.at += 1
                return result
            else:
                raise self.fail("Expecting ',' delimiter")

    def array(self, depth: int) -> list[Any]:
        result: list[Any] = []
        self.at += 1
        self.skip_space()
        if self.text.startswith("]", self.at):
            self.at += 1
            return result
        while True:
            result.append(self.value(depth + 1))
            self.skip_space()
            if self.text.startswith(",", self.at):
                self.at += 1
            elif self.text.startswith("]", self.at):
                self.at += 1
                return result
            else:
                raise self.fail("Expecting ',' delimiter")


def loads(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    reader = _Reader(text)
    value = reader.value(0)
    reader.skip_space()
    if reader.at != len(text):
        raise reader.fail("Extra data")
    return value


def fault_key_matches(key: str, words: list[str]) -> bool:
    """Whether a sandbox fault's key names this call: the call's words start with the
    key's, and after a `...` in the key come the rest of its words in order, anywhere
    later ("docker compose ... up" is an `up` whatever the options before it)."""
    head, *tails = key.split(" ... ")
    wanted = head.split()
    if words[: len(wanted)] != wanted:
        return False
    at = len(wanted)
    for tail in tails:
        part = tail.split()
        while at + len(part) <= len(words) and words[at : at + len(part)] != part:
            at += 1
        if at + len(part) > len(words):
            return False
        at += len(part)
    return True
