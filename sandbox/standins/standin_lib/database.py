"""The database services of a sandbox tool stack (the postgres and mysql images): their
client tools as `docker compose exec` runs them inside the container (psql, pg_dump,
pg_isready; mysql, mysqldump), on data that lives in the service's data directory (its
named volume), so a dump and its reload are a real round trip and wiping the volume
wipes the data.

Only as much SQL is emulated as honest round trips need: CREATE/DROP TABLE, INSERT,
COPY ... FROM stdin, SELECT (columns, count(*), one WHERE equality, ORDER BY, LIMIT),
DELETE, TRUNCATE, and the SET/LOCK/comment lines a dump carries. What the real tools
refuse, these refuse with their messages: an unknown role or database, a wrong MySQL
password, an option pg_dump does not have. A statement outside that subset is refused
with an error that says the sandbox does not emulate it (never silently accepted).

The data directory holds sandbox-db.json, written atomically under a lock, and is
created by the image's entrypoint at container start (`initialize`) from the
environment the official images read: POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_DB, and
MYSQL_ROOT_PASSWORD/MYSQL_DATABASE/MYSQL_USER/MYSQL_PASSWORD."""

from __future__ import annotations

import fcntl
import os
import sys
import time

from standin_lib import lean
from standin_lib.lean import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

STATE_FILE = "sandbox-db.json"
PG_VERSION = "16.4"
MYSQL_VERSION = "8.0.39"
PG_SOCKET = '"/var/run/postgresql/.s.PGSQL.5432"'
INT_TYPES = ("int", "integer", "bigint", "smallint", "serial", "bigserial", "tinyint", "mediumint", "int4", "int8")
BOOL_TYPES = ("bool", "boolean")


class SqlError(Exception):
    pass


class ClientError(Exception):
    """A refusal of the client itself: message and exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --- the data directory --------------------------------------------------------------


def data_state_path(data_dir: Path) -> Path:
    return data_dir / STATE_FILE


def initialize(family: str, data_dir: Path, env: dict[str, str]) -> str | None:
    """What the image's entrypoint does at container start: initialise an empty data
    directory from the environment. Returns the error that stops the container, if any."""
    path = data_state_path(data_dir)
    if path.exists():
        return None
    data_dir.mkdir(parents=True, exist_ok=True)
    if family == "postgres":
        if not env.get("POSTGRES_PASSWORD") and env.get("POSTGRES_HOST_AUTH_METHOD") != "trust":
            return (
                "Error: Database is uninitialized and superuser password is not specified.\n"
                "       You must specify POSTGRES_PASSWORD to a non-empty value for the\n"
                '       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".'
            )
        user = env.get("POSTGRES_USER") or "postgres"
        database = env.get("POSTGRES_DB") or user
        state: dict[str, Any] = {
            "engine": "postgres",
            "roles": {user: {"superuser": True}},
            "databases": {name: {"owner": user, "tables": {}} for name in {"postgres", database}},
        }
        (data_dir / "PG_VERSION").write_text("16\n")
    elif family == "mysql":
        root_password = env.get("MYSQL_ROOT_PASSWORD")
        if (
            root_password is None
            and not env.get("MYSQL_ALLOW_EMPTY_PASSWORD")
            and not env.get("MYSQL_RANDOM_ROOT_PASSWORD")
        ):
            return (
                "[ERROR] [Entrypoint]: Database is uninitialized and password option is not specified\n"
                "    You need to specify one of the following as an environment variable:\n"
                "    - MYSQL_ROOT_PASSWORD\n    - MYSQL_ALLOW_EMPTY_PASSWORD\n    - MYSQL_RANDOM_ROOT_PASSWORD"
            )
        users: dict[str, Any] = {"root": {"password": root_password or "", "databases": ["*"]}}
        databases: dict[str, Any] = {"mysql": {"tables": {}}}
        name = env.get("MYSQL_DATABASE")
        if name:
            databases[name] = {"tables": {}}
        if env.get("MYSQL_USER") and env.get("MYSQL_PASSWORD"):
            users[env["MYSQL_USER"]] = {"password": env["MYSQL_PASSWORD"], "databases": [name] if name else []}
        state = {"engine": "mysql", "users": users, "databases": databases}
    else:
        return None
    _write_state(data_dir, state)
    return None


def _write_state(data_dir: Path, state: dict[str, Any]) -> None:
    path = data_state_path(data_dir)
    tmp = Path(f"{path}.{os.getpid()}")
    tmp.write_text(lean.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, path)


class Store:
    """The data directory, locked for the life of one client call."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        path = data_state_path(data_dir)
        if not path.exists():
            raise ClientError("no database files in the data directory", 2)
        self.lock = open(f"{path}.lock", "a")  # noqa: SIM115 - held until the call ends
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.state: dict[str, Any] = lean.loads(path.read_text())

    def save(self) -> None:
        _write_state(self.data_dir, self.state)


# --- SQL text: statements, tokens, literals ------------------------------------------


def split_statements(text: str, *, dialect: str) -> Iterator[tuple[str, str | None]]:
    """Yield (statement, copy data) pairs; copy data is the block after a
    `COPY ... FROM stdin;` up to its `\\.` line (psql sends it to the server)."""
    i, n = 0, len(text)
    current: list[str] = []
    while i < n:
        ch = text[i]
        if not "".join(current).strip() and ch == "\\" and dialect == "postgres":
            end = text.find("\n", i)
            end = n if end < 0 else end
            yield text[i:end].strip(), None
            i = end + 1
            continue
        if ch in "'\"`":
            j = i + 1
            while j < n:
                if text[j] == "\\" and dialect == "mysql" and ch in "'\"":
                    j += 2
                    continue
                if text[j] == ch:
                    if j + 1 < n and text[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            current.append(text[i : j + 1])
            i = j + 1
            continue
        if text.startswith("--", i) or (dialect == "mysql" and ch == "#"):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end
            inner = text[i + 2 : end]
            if dialect == "mysql" and inner.startswith("!"):
                # A versioned comment runs on servers at least that version: all of ours.
                current.append(" " + inner[1:].lstrip("0123456789") + " ")
            i = end + 2
            continue
        if ch == ";":
            statement = "".join(current).strip()
            current = []
            i += 1
            if statement and dialect == "postgres" and _is_copy_from_stdin(statement):
                line_end = text.find("\n", i)
                start = n if line_end < 0 else line_end + 1
                stop = text.find("\n\\.", start - 1)
                if stop < 0:
                    raise ClientError("psql: error: unexpected end of COPY data", 3)
                yield statement, text[start : stop + 1]
                after = text.find("\n", stop + 3)
                i = n if after < 0 else after + 1
                continue
            if statement:
                yield statement, None
            continue
        current.append(ch)
        i += 1
    rest = "".join(current).strip()
    if rest:
        yield rest, None


def _is_copy_from_stdin(statement: str) -> bool:
    words = statement.lower().split()
    return bool(words) and words[0] == "copy" and "stdin" in words[-1]


def tokenize(statement: str, *, dialect: str) -> list[str]:
    tokens: list[str] = []
    i, n = 0, len(statement)
    while i < n:
        ch = statement[i]
        if ch.isspace():
            i += 1
        elif ch in "'\"`":
            j = i + 1
            while j < n:
                if statement[j] == "\\" and dialect == "mysql" and ch in "'\"":
                    j += 2
                    continue
                if statement[j] == ch:
                    if j + 1 < n and statement[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            tokens.append(statement[i : j + 1])
            i = j + 1
        elif ch.isalnum() or ch in "_$@":
            j = i
            while j < n and (statement[j].isalnum() or statement[j] in "_$@."):
                j += 1
            tokens.append(statement[i:j])
            i = j
        elif ch == "-" and i + 1 < n and statement[i + 1].isdigit() and (not tokens or tokens[-1] in ("(", ",", "=")):
            j = i + 1
            while j < n and (statement[j].isalnum() or statement[j] == "."):
                j += 1
            tokens.append(statement[i:j])
            i = j
        else:
            tokens.append(ch)
            i += 1
    return tokens


def unquote_ident(token: str, *, dialect: str) -> str:
    quote = '"' if dialect == "postgres" else "`"
    if len(token) >= 2 and token[0] == quote and token[-1] == quote:
        return token[1:-1].replace(quote * 2, quote)
    return token.lower() if dialect == "postgres" else token


def literal(token: str, *, dialect: str) -> Any:
    # MySQL reads a double-quoted word as a string too (without ANSI_QUOTES, its default).
    if token.startswith("'") or (dialect == "mysql" and token.startswith('"')):
        quote = token[0]
        body = token[1:-1]
        if dialect == "mysql":
            out, i = [], 0
            escapes = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "Z": "\x1a", "b": "\b"}
            while i < len(body):
                if body[i] == "\\" and i + 1 < len(body):
                    out.append(escapes.get(body[i + 1], body[i + 1]))
                    i += 2
                elif body[i] == quote and i + 1 < len(body) and body[i + 1] == quote:
                    out.append(quote)
                    i += 2
                else:
                    out.append(body[i])
                    i += 1
            return "".join(out)
        return body.replace("''", "'")
    upper = token.upper()
    if upper == "NULL":
        return None
    if upper in ("TRUE", "FALSE"):
        return upper == "TRUE"
    try:
        return int(token)
    except ValueError:
        pass
    try:
        float(token)
        return token
    except ValueError:
        raise SqlError(f'syntax error at or near "{token}"') from None


def split_top_level(tokens: list[str]) -> list[list[str]]:
    """Split a parenthesised token list on its top-level commas."""
    parts: list[list[str]] = [[]]
    depth = 0
    for word in tokens:
        if word == "(":
            depth += 1
        elif word == ")":
            depth -= 1
        if word == "," and depth == 0:
            parts.append([])
        else:
            parts[-1].append(word)
    return [p for p in parts if p]


def closing(tokens: list[str], start: int) -> int:
    """Index of the parenthesis closing the one at `start`."""
    depth = 0
    for index in range(start, len(tokens)):
        if tokens[index] == "(":
            depth += 1
        elif tokens[index] == ")":
            depth -= 1
            if depth == 0:
                return index
    raise SqlError("syntax error at end of input")


def coerce(value: Any, column_type: str) -> Any:
    if value is None:
        return None
    base = column_type.split("(")[0].split()[0].lower() if column_type else ""
    if base in INT_TYPES:
        return int(value)
    if base in BOOL_TYPES and isinstance(value, str):
        return value.lower() in ("t", "true", "1", "yes", "on")
    return value if isinstance(value, (int, bool)) and base not in ("text", "varchar") else str(value)


def render_tokens(tokens: list[str]) -> str:
    out = ""
    for word in tokens:
        glued = not out or word in (",", ")") or out.endswith("(") or (word == "(" and out[-1:].isalnum())
        out += word if glued else " " + word
    return out


# --- the engine shared by both dialects ---------------------------------------------


class Session:
    def __init__(self, store: Store, *, dialect: str, database: str | None, user: str) -> None:
        self.store = store
        self.dialect = dialect
        self.database = database
        self.user = user
        self.out: list[str] = []

    # tables
    def _tables(self) -> dict[str, Any]:
        if self.database is None:
            raise SqlError("1046 (3D000): No database selected")
        result: dict[str, Any] = self.store.state["databases"][self.database]["tables"]
        return result

    def table_key(self, token: str) -> str:
        name = ".".join(unquote_ident(part, dialect=self.dialect) for part in _split_qualified(token))
        if self.dialect == "postgres" and "." not in name:
            name = f"public.{name}"
        if self.dialect == "mysql" and "." in name:
            database, _, name = name.partition(".")
            if database != self.database:
                raise SqlError(f"sandbox: a table of another database ({database}) is not emulated")
        return name

    def missing(self, key: str) -> SqlError:
        if self.dialect == "postgres":
            return SqlError(f'relation "{key.removeprefix("public.")}" does not exist')
        return SqlError(f"1146 (42S02): Table '{self.database}.{key}' doesn't exist")

    def table(self, token: str) -> tuple[str, dict[str, Any]]:
        key = self.table_key(token)
        table = self._tables().get(key)
        if table is None:
            raise self.missing(key)
        return key, table

    # statements
    def execute(self, statement: str, copy_data: str | None) -> None:
        tokens = tokenize(statement, dialect=self.dialect)
        if not tokens:
            return
        verb = tokens[0].upper()
        words = [t.upper() for t in tokens]
        handler = {
            "CREATE": self.create,
            "DROP": self.drop,
            "INSERT": self.insert,
            "SELECT": self.select,
            "DELETE": self.delete,
            "TRUNCATE": self.truncate,
            "COPY": self.copy,
            "USE": self.use,
        }.get(verb)
        if verb in ("SET", "BEGIN", "COMMIT", "START", "LOCK", "UNLOCK", "ALTER") and self._ignorable(words):
            return
        if verb == "SELECT" and len(words) > 1 and words[1].startswith("PG_CATALOG.SET_CONFIG"):
            return
        if handler is None:
            raise self.unsupported(statement)
        handler(tokens, words, copy_data)

    def _ignorable(self, words: list[str]) -> bool:
        if words[0] == "ALTER":
            # What a dump says about ownership; the sandbox keeps none.
            return "OWNER" in words
        return True

    def unsupported(self, statement: str) -> SqlError:
        return SqlError(f"the sandbox's {self.dialect} does not emulate this statement: {statement[:80]}")

    def create(self, tokens: list[str], words: list[str], _: str | None) -> None:
        if words[1] == "SCHEMA" and self.dialect == "postgres":
            return
        if words[1] in ("DATABASE", "SCHEMA") and self.dialect == "mysql":
            if_not_exists = words[2:5] == ["IF", "NOT", "EXISTS"]
            name = unquote_ident(tokens[5 if if_not_exists else 2], dialect=self.dialect)
            self._require_root()
            databases = self.store.state["databases"]
            if name in databases:
                if if_not_exists:
                    return
                raise SqlError(f"1007 (HY000): Can't create database '{name}'; database exists")
            databases[name] = {"tables": {}}
            return
        if words[1] != "TABLE":
            raise self.unsupported(" ".join(tokens))
        at = 2
        if_not_exists = words[2:5] == ["IF", "NOT", "EXISTS"]
        if if_not_exists:
            at = 5
        key = self.table_key(tokens[at])
        tables = self._tables()
        if key in tables:
            if if_not_exists:
                return
            if self.dialect == "postgres":
                raise SqlError(f'relation "{key.removeprefix("public.")}" already exists')
            raise SqlError(f"1050 (42S01): Table '{key}' already exists")
        if at + 1 >= len(tokens) or tokens[at + 1] != "(":
            raise SqlError(f'syntax error at or near "{tokens[at + 1] if at + 1 < len(tokens) else ";"}"')
        end = closing(tokens, at + 1)
        columns, constraints = [], []
        for part in split_top_level(tokens[at + 2 : end]):
            head = part[0].upper()
            if head in ("PRIMARY", "UNIQUE", "CONSTRAINT", "FOREIGN", "CHECK", "KEY", "INDEX"):
                constraints.append(render_tokens(part))
            else:
                columns.append({"name": unquote_ident(part[0], dialect=self.dialect), "type": render_tokens(part[1:])})
        tables[key] = {"columns": columns, "constraints": constraints, "rows": []}

    def drop(self, tokens: list[str], words: list[str], _: str | None) -> None:
        if words[1] == "DATABASE" and self.dialect == "mysql":
            self._require_root()
            if_exists = words[2:4] == ["IF", "EXISTS"]
            name = unquote_ident(tokens[4 if if_exists else 2], dialect=self.dialect)
            if self.store.state["databases"].pop(name, None) is None and not if_exists:
                raise SqlError(f"1008 (HY000): Can't drop database '{name}'; database doesn't exist")
            return
        if words[1] != "TABLE":
            raise self.unsupported(" ".join(tokens))
        if_exists = words[2:4] == ["IF", "EXISTS"]
        names = [t for t in tokens[4 if if_exists else 2 :] if t != "," and t.upper() not in ("CASCADE", "RESTRICT")]
        tables = self._tables()
        keys = [self.table_key(name) for name in names]
        for key in keys:
            if key not in tables and not if_exists:
                raise (
                    self.missing(key)
                    if self.dialect == "postgres"
                    else SqlError(f"1051 (42S02): Unknown table '{self.database}.{key}'")
                )
        for key in keys:
            tables.pop(key, None)

    def _insert_columns(self, table: dict[str, Any], names: list[str] | None) -> list[int]:
        all_names = [c["name"] for c in table["columns"]]
        if names is None:
            return list(range(len(all_names)))
        positions = []
        for name in names:
            if name not in all_names:
                if self.dialect == "postgres":
                    raise SqlError(f'column "{name}" of relation does not exist')
                raise SqlError(f"1054 (42S22): Unknown column '{name}' in 'field list'")
            positions.append(all_names.index(name))
        return positions

    def _add_row(self, table: dict[str, Any], positions: list[int], values: list[Any]) -> None:
        if len(values) != len(positions):
            if self.dialect == "mysql":
                raise SqlError("1136 (21S01): Column count doesn't match value count at row 1")
            raise SqlError(
                "INSERT has more expressions than target columns"
                if len(values) > len(positions)
                else "INSERT has more target columns than expressions"
            )
        row: list[Any] = [None] * len(table["columns"])
        for position, value in zip(positions, values, strict=True):
            row[position] = coerce(value, table["columns"][position]["type"])
        table["rows"].append(row)

    def insert(self, tokens: list[str], words: list[str], _: str | None) -> None:
        if words[1] != "INTO":
            raise SqlError(f'syntax error at or near "{tokens[1]}"')
        _, table = self.table(tokens[2])
        at = 3
        names = None
        if at < len(tokens) and tokens[at] == "(":
            end = closing(tokens, at)
            names = [unquote_ident(t, dialect=self.dialect) for t in tokens[at + 1 : end] if t != ","]
            at = end + 1
        if at >= len(tokens) or words[at] not in ("VALUES", "VALUE"):
            raise self.unsupported(" ".join(tokens))
        positions = self._insert_columns(table, names)
        at += 1
        while at < len(tokens):
            if tokens[at] == ",":
                at += 1
                continue
            if tokens[at] != "(":
                raise SqlError(f'syntax error at or near "{tokens[at]}"')
            end = closing(tokens, at)
            values = [literal(part[0], dialect=self.dialect) for part in split_top_level(tokens[at + 1 : end])]
            self._add_row(table, positions, values)
            at = end + 1

    def copy(self, tokens: list[str], words: list[str], data: str | None) -> None:
        if data is None or "FROM" not in words:
            raise self.unsupported(" ".join(tokens))
        _, table = self.table(tokens[1])
        names = None
        if len(tokens) > 2 and tokens[2] == "(":
            end = closing(tokens, 2)
            names = [unquote_ident(t, dialect=self.dialect) for t in tokens[3:end] if t != ","]
        positions = self._insert_columns(table, names)
        for line in data.splitlines():
            self._add_row(table, positions, [_copy_unescape(field) for field in line.split("\t")])

    def _where(self, tokens: list[str], words: list[str], table: dict[str, Any]) -> tuple[list[list[Any]], int]:
        rows = table["rows"]
        at = 0
        if "WHERE" in words:
            at = words.index("WHERE")
            name = unquote_ident(tokens[at + 1], dialect=self.dialect)
            if tokens[at + 2] != "=":
                raise self.unsupported(" ".join(tokens))
            names = [c["name"] for c in table["columns"]]
            if name not in names:
                raise SqlError(f'column "{name}" does not exist')
            wanted = literal(tokens[at + 3], dialect=self.dialect)
            index = names.index(name)
            rows = [row for row in rows if row[index] == coerce(wanted, table["columns"][index]["type"])]
        return rows, at

    def select(self, tokens: list[str], words: list[str], _: str | None) -> None:
        if "FROM" not in words:
            # SELECT 1 and the like: constants only.
            values = [literal(part[0], dialect=self.dialect) for part in split_top_level(tokens[1:])]
            self.result(["?column?"] * len(values), [values])
            return
        at = words.index("FROM")
        _, table = self.table(tokens[at + 1])
        rows = self._where(tokens, words, table)[0]
        names = [c["name"] for c in table["columns"]]
        if "ORDER" in words:
            by = words.index("ORDER") + 2
            index = names.index(unquote_ident(tokens[by], dialect=self.dialect))
            descending = by + 1 < len(words) and words[by + 1] == "DESC"
            rows = sorted(rows, key=lambda r: (r[index] is None, r[index]), reverse=descending)
        if "LIMIT" in words:
            rows = rows[: int(tokens[words.index("LIMIT") + 1])]
        selected = tokens[1:at]
        if [w.upper() for w in selected] == ["COUNT", "(", "*", ")"]:
            self.result(["count"] if self.dialect == "postgres" else ["count(*)"], [[len(rows)]])
            return
        if selected == ["*"]:
            self.result(names, rows)
            return
        indexes = []
        for part in split_top_level(selected):
            name = unquote_ident(part[0], dialect=self.dialect)
            if name not in names:
                raise SqlError(f'column "{name}" does not exist')
            indexes.append(names.index(name))
        self.result([names[i] for i in indexes], [[row[i] for i in indexes] for row in rows])

    def delete(self, tokens: list[str], words: list[str], _: str | None) -> None:
        _, table = self.table(tokens[2])
        doomed = self._where(tokens, words, table)[0]
        table["rows"] = [row for row in table["rows"] if not any(row is d for d in doomed)]

    def truncate(self, tokens: list[str], words: list[str], _: str | None) -> None:
        names = [t for t in tokens[1:] if t != "," and t.upper() not in ("TABLE", "ONLY", "CASCADE", "RESTRICT")]
        for name in names:
            self.table(name)[1]["rows"] = []

    def use(self, tokens: list[str], words: list[str], _: str | None) -> None:
        name = unquote_ident(tokens[1], dialect=self.dialect)
        self.database = mysql_database_allowed(self.store.state, self.user, name)

    def _require_root(self) -> None:
        if self.user != "root":
            raise SqlError(f"1044 (42000): Access denied for user '{self.user}'@'%' to database")

    def result(self, names: list[str], rows: list[list[Any]]) -> None:
        self.out.append(lean.dumps({"names": names, "rows": rows}))


def _split_qualified(token: str) -> list[str]:
    parts, current, quote = [], "", ""
    for ch in token:
        if ch in '"`' and (not quote or quote == ch):
            quote = "" if quote else ch
        if ch == "." and not quote:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def _copy_unescape(field: str) -> Any:
    if field == "\\N":
        return None
    out, i = [], 0
    escapes = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", "b": "\b", "f": "\f", "v": "\v"}
    while i < len(field):
        if field[i] == "\\" and i + 1 < len(field):
            out.append(escapes.get(field[i + 1], field[i + 1]))
            i += 2
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _copy_escape(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


# --- options ------------------------------------------------------------------------


def parse_options(
    args: list[str], *, program: str, with_value: dict[str, str], flags: dict[str, str]
) -> tuple[dict[str, list[str]], list[str]]:
    """Short and long options as getopt_long reads them; an unknown one is refused."""
    options: dict[str, list[str]] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            positional.extend(args[i + 1 :])
            break
        if arg.startswith("--"):
            name, has_value, value = arg[2:].partition("=")
            key = "--" + name
            if key in with_value:
                if not has_value:
                    if i + 1 >= len(args):
                        raise ClientError(f"{program}: option '{key}' requires an argument", 1)
                    i += 1
                    value = args[i]
                options.setdefault(with_value[key], []).append(value)
            elif key in flags:
                options.setdefault(flags[key], []).append("")
            else:
                raise ClientError(f"{program}: unrecognized option '{arg}'", 1)
        elif arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                key = "-" + arg[j]
                if key in with_value:
                    value = arg[j + 1 :]
                    if not value:
                        if i + 1 >= len(args):
                            raise ClientError(f"{program}: option requires an argument -- '{arg[j]}'", 1)
                        i += 1
                        value = args[i]
                    options.setdefault(with_value[key], []).append(value)
                    break
                if key in flags:
                    options.setdefault(flags[key], []).append("")
                    j += 1
                    continue
                raise ClientError(f"{program}: invalid option -- '{arg[j]}'", 1)
        else:
            positional.append(arg)
        i += 1
    return options, positional


# --- postgres: psql, pg_dump, pg_isready ---------------------------------------------

PG_CONNECTION_OPTIONS = {
    "-U": "user",
    "--username": "user",
    "-d": "dbname",
    "--dbname": "dbname",
    "-h": "host",
    "--host": "host",
    "-p": "port",
    "--port": "port",
}


def pg_connect(data_dir: Path, options: dict[str, list[str]], positional: list[str], *, program: str) -> Session:
    user = (options.get("user") or [""])[-1] or os.environ.get("PGUSER") or os.environ.get("SANDBOX_EXEC_USER", "root")
    database = (options.get("dbname") or [""])[-1] or (positional[0] if positional else None)
    database = database or os.environ.get("PGDATABASE") or user
    host = (options.get("host") or [""])[-1]
    prefix = f"{program}: error: "
    if host and host not in ("localhost", "127.0.0.1", "/var/run/postgresql"):
        raise ClientError(f'{prefix}could not translate host name "{host}" to address: Name or service not known', 2)
    where = (
        'connection to server at "localhost" (127.0.0.1), port 5432 failed'
        if host
        else (f"connection to server on socket {PG_SOCKET} failed")
    )
    # psql exits 2 when it cannot connect, pg_dump 1.
    code = 2 if program == "psql" else 1
    store = Store(data_dir)
    state = store.state
    if user not in state["roles"]:
        raise ClientError(f'{prefix}{where}: FATAL:  role "{user}" does not exist', code)
    if database not in state["databases"]:
        raise ClientError(f'{prefix}{where}: FATAL:  database "{database}" does not exist', code)
    return Session(store, dialect="postgres", database=database, user=user)


def psql(args: list[str], data_dir: Path) -> int:
    options, positional = parse_options(
        args,
        program="psql",
        with_value={
            **PG_CONNECTION_OPTIONS,
            "-c": "command",
            "--command": "command",
            "-f": "file",
            "--file": "file",
            "-v": "set",
            "--set": "set",
            "--variable": "set",
            "-F": "separator",
            "--field-separator": "separator",
            "-o": "output",
            "--output": "output",
        },
        flags={
            "-X": "no_psqlrc",
            "--no-psqlrc": "no_psqlrc",
            "-q": "quiet",
            "--quiet": "quiet",
            "-A": "unaligned",
            "--no-align": "unaligned",
            "-t": "tuples_only",
            "--tuples-only": "tuples_only",
            "-1": "single_transaction",
            "--single-transaction": "single_transaction",
            "-w": "no_password",
            "--no-password": "no_password",
            "-b": "echo_errors",
            "--echo-errors": "echo_errors",
        },
    )
    session = pg_connect(data_dir, options, positional, program="psql")
    variables = dict(v.partition("=")[::2] for v in options.get("set", []))
    stop_on_error = variables.get("ON_ERROR_STOP", "").lower() in ("1", "on", "true")
    single = "single_transaction" in options
    if "command" in options:
        sources = [(c, True) for c in options["command"]]
    elif "file" in options:
        sources = []
        for name in options["file"]:
            if name == "-":
                sources.append((sys.stdin.read(), False))
                continue
            try:
                sources.append((open(name).read(), False))  # noqa: SIM115 - read at once
            except OSError as exc:
                sys.stderr.write(f"psql: error: {name}: {exc.strerror}\n")
                return 1
    else:
        sources = [(sys.stdin.read(), False)]
    original = lean.dumps(session.store.state)
    failed = stopped = False
    line_no = 0
    for text, from_command in sources:
        for statement, copy_data in split_statements(text, dialect="postgres"):
            line_no += 1
            try:
                if statement.startswith("\\"):
                    _psql_meta(session, statement)
                else:
                    session.execute(statement, copy_data)
            except SqlError as exc:
                failed = True
                where = "" if from_command else f"psql:<stdin>:{line_no}: "
                sys.stderr.write(f"{where}ERROR:  {exc}\n")
                stopped = from_command or stop_on_error or single
                if stopped:
                    break
        if stopped:
            break
    if failed and single:
        session.store.state = lean.loads(original)
    session.store.save()
    _psql_print(session, options)
    if not failed:
        return 0
    if "command" in options:
        return 1
    return 3 if stopped else 0


def _psql_meta(session: Session, statement: str) -> None:
    words = statement.split()
    if words[0] in ("\\connect", "\\c") and len(words) > 1:
        if words[1] not in session.store.state["databases"]:
            raise SqlError(f'database "{words[1]}" does not exist')
        session.database = words[1]
        return
    if words[0] in ("\\restrict", "\\unrestrict"):
        return
    raise SqlError(f"invalid command {words[0]}")


def _psql_print(session: Session, options: dict[str, list[str]]) -> None:
    unaligned = "unaligned" in options
    tuples_only = "tuples_only" in options
    separator = (options.get("separator") or ["|"])[-1]
    for raw in session.out:
        result = lean.loads(raw)
        names, rows = result["names"], result["rows"]
        cells = [
            ["" if v is None else ("t" if v is True else "f" if v is False else str(v)) for v in row] for row in rows
        ]
        if unaligned:
            if not tuples_only:
                print(separator.join(names))
            for row in cells:
                print(separator.join(row))
            if not tuples_only:
                print(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
            continue
        widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
        if not tuples_only:
            print("|".join(f" {n.center(w)} " for n, w in zip(names, widths, strict=True)).rstrip())
            print("+".join("-" * (w + 2) for w in widths))
        for row in cells:
            print("|".join(f" {v.ljust(w)} " for v, w in zip(row, widths, strict=True)).rstrip())
        if not tuples_only:
            print(f"({len(rows)} row{'' if len(rows) == 1 else 's'})\n")


def pg_dump(args: list[str], data_dir: Path) -> int:
    options, positional = parse_options(
        args,
        program="pg_dump",
        with_value={**PG_CONNECTION_OPTIONS, "-f": "file", "--file": "file", "-F": "format", "--format": "format"},
        flags={
            "-c": "clean",
            "--clean": "clean",
            "--if-exists": "if_exists",
            "-O": "no_owner",
            "--no-owner": "no_owner",
            "-x": "no_privileges",
            "--no-privileges": "no_privileges",
            "--no-acl": "no_privileges",
            "-w": "no_password",
            "--no-password": "no_password",
            "-a": "data_only",
            "--data-only": "data_only",
            "-s": "schema_only",
            "--schema-only": "schema_only",
            "--quote-all-identifiers": "quote_all",
            "-v": "verbose",
            "--verbose": "verbose",
        },
    )
    if "if_exists" in options and "clean" not in options:
        raise ClientError("pg_dump: error: option --if-exists requires option -c/--clean", 1)
    if "data_only" in options and "schema_only" in options:
        raise ClientError("pg_dump: error: options -s/--schema-only and -a/--data-only cannot be used together", 1)
    dump_format = (options.get("format") or ["p"])[-1]
    if dump_format not in ("p", "plain"):
        raise ClientError(
            f"pg_dump: error: the sandbox's pg_dump writes the plain format only (asked for {dump_format!r})", 1
        )
    session = pg_connect(data_dir, options, positional, program="pg_dump")
    text = pg_dump_text(session, options)
    target = (options.get("file") or [""])[-1]
    if target:
        with open(target, "w") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


def pg_dump_text(session: Session, options: dict[str, list[str]]) -> str:
    tables = session.store.state["databases"][session.database]["tables"]
    owner = session.store.state["databases"][session.database]["owner"]
    lines = [
        "--",
        "-- PostgreSQL database dump",
        "--",
        "",
        f"-- Dumped from database version {PG_VERSION} (sandbox)",
        f"-- Dumped by pg_dump version {PG_VERSION} (sandbox)",
        "",
        "SET statement_timeout = 0;",
        "SET lock_timeout = 0;",
        "SET client_encoding = 'UTF8';",
        "SET standard_conforming_strings = on;",
        "SELECT pg_catalog.set_config('search_path', '', false);",
        "SET check_function_bodies = false;",
        "SET client_min_messages = warning;",
        "",
    ]
    if "clean" in options and "data_only" not in options:
        exists = " IF EXISTS" if "if_exists" in options else ""
        lines += [f"DROP TABLE{exists} {key};" for key in sorted(tables, reverse=True)] + [""]
    lines += ["SET default_tablespace = '';", "", "SET default_table_access_method = heap;", ""]
    for key in sorted(tables):
        table = tables[key]
        schema, _, name = key.partition(".")
        if "data_only" not in options:
            lines += ["--", f"-- Name: {name}; Type: TABLE; Schema: {schema}; Owner: {owner}", "--", ""]
            definitions = [f"    {_pg_ident(c['name'])} {c['type']}".rstrip() for c in table["columns"]]
            definitions += [f"    {c}" for c in table["constraints"]]
            lines += [f"CREATE TABLE {key} (", ",\n".join(definitions), ");", ""]
            if "no_owner" not in options:
                lines += ["", f"ALTER TABLE {key} OWNER TO {owner};", ""]
        if "schema_only" not in options:
            columns = ", ".join(_pg_ident(c["name"]) for c in table["columns"])
            lines += ["--", f"-- Data for Name: {name}; Type: TABLE DATA; Schema: {schema}; Owner: {owner}", "--", ""]
            lines.append(f"COPY {key} ({columns}) FROM stdin;")
            lines += ["\t".join(_copy_escape(v) for v in row) for row in table["rows"]]
            lines += ["\\.", "", ""]
    lines += ["--", "-- PostgreSQL database dump complete", "--", "", ""]
    return "\n".join(lines)


def _pg_ident(name: str) -> str:
    plain = name.isidentifier() and name == name.lower() and name.upper() not in _PG_RESERVED
    return name if plain else '"' + name.replace('"', '""') + '"'


_PG_RESERVED = frozenset({"USER", "ORDER", "GROUP", "SELECT", "TABLE", "FROM", "WHERE", "DEFAULT", "CHECK", "LIMIT"})


def pg_isready(args: list[str], data_dir: Path) -> int:
    if not data_state_path(data_dir).exists():
        print("/var/run/postgresql:5432 - no response")
        return 2
    print("/var/run/postgresql:5432 - accepting connections")
    return 0


# --- mysql: mysql, mysqldump ----------------------------------------------------------

MYSQL_CONNECTION_OPTIONS = {
    "-u": "user",
    "--user": "user",
    "-h": "host",
    "--host": "host",
    "-P": "port",
    "--port": "port",
    "-D": "database",
    "--database": "database",
    "--default-character-set": "charset",
    "--protocol": "protocol",
    "-S": "socket",
    "--socket": "socket",
}


def _mysql_password(args: list[str]) -> tuple[list[str], str | None]:
    """-pSECRET / --password=SECRET take their value glued on; a bare -p would prompt."""
    rest, password = [], os.environ.get("MYSQL_PWD")
    for arg in args:
        if arg.startswith("--password=") or (arg.startswith("-p") and not arg.startswith("--") and len(arg) > 2):
            password = arg.split("=", 1)[1] if arg.startswith("--") else arg[2:]
            sys.stderr.write("mysql: [Warning] Using a password on the command line interface can be insecure.\n")
        elif arg in ("-p", "--password"):
            raise ClientError("Enter password: sandbox: no terminal to read a password from", 1)
        else:
            rest.append(arg)
    return rest, password


def mysql_connect(data_dir: Path, options: dict[str, list[str]], password: str | None, *, program: str) -> Session:
    user = (options.get("user") or [""])[-1] or os.environ.get("SANDBOX_EXEC_USER", "root")
    store = Store(data_dir)
    users = store.state["users"]
    account = users.get(user)
    using = "YES" if password else "NO"
    if account is None or (account["password"] or None) != (password or None):
        denied = f"Access denied for user '{user}'@'localhost' (using password: {using})"
        if program == "mysql":
            raise ClientError(f"ERROR 1045 (28000): {denied}", 1)
        raise ClientError(f"{program}: Got error: 1045: {denied} when trying to connect", 2)
    return Session(store, dialect="mysql", database=None, user=user)


def mysql_database_allowed(state: dict[str, Any], user: str, name: str) -> str:
    allowed = state["users"][user]["databases"]
    if "*" not in allowed and name not in allowed:
        raise SqlError(f"1044 (42000): Access denied for user '{user}'@'%' to database '{name}'")
    if name not in state["databases"]:
        raise SqlError(f"1049 (42000): Unknown database '{name}'")
    return name


def mysql(args: list[str], data_dir: Path) -> int:
    args, password = _mysql_password(args)
    options, positional = parse_options(
        args,
        program="mysql",
        with_value={**MYSQL_CONNECTION_OPTIONS, "-e": "execute", "--execute": "execute"},
        flags={
            "-N": "skip_column_names",
            "--skip-column-names": "skip_column_names",
            "-B": "batch",
            "--batch": "batch",
            "-s": "silent",
            "--silent": "silent",
            "-f": "force",
            "--force": "force",
            "--no-defaults": "no_defaults",
        },
    )
    session = mysql_connect(data_dir, options, password, program="mysql")
    database = (options.get("database") or [""])[-1] or (positional[0] if positional else None)
    try:
        if database:
            session.database = mysql_database_allowed(session.store.state, session.user, database)
    except SqlError as exc:
        sys.stderr.write(f"ERROR {exc}\n")
        return 1
    text = "\n".join(options["execute"]) if "execute" in options else sys.stdin.read()
    force = "force" in options
    code = 0
    for line, (statement, _) in enumerate(split_statements(text, dialect="mysql"), start=1):
        try:
            session.execute(statement, None)
        except SqlError as exc:
            number, _, message = str(exc).partition(": ")
            if not number[:4].isdigit():
                number, message = "1064 (42000)", str(exc)
            sys.stderr.write(f"ERROR {number} at line {line}: {message}\n")
            code = 1
            if not force:
                break
    session.store.save()
    for raw in session.out:
        result = lean.loads(raw)
        if "skip_column_names" not in options:
            print("\t".join(result["names"]))
        for row in result["rows"]:
            print("\t".join("NULL" if v is None else str(int(v) if isinstance(v, bool) else v) for v in row))
    return code


def mysqladmin(args: list[str], data_dir: Path) -> int:
    """`mysqladmin ping` only: what a healthcheck or a restore waiting for the server asks."""
    if "ping" not in args:
        raise ClientError("mysqladmin: the sandbox's mysqladmin answers `ping` only", 1)
    if not data_state_path(data_dir).exists():
        sys.stderr.write("mysqladmin: connect to server at 'localhost' failed\n")
        return 1
    print("mysqld is alive")
    return 0


def mysqldump(args: list[str], data_dir: Path) -> int:
    args, password = _mysql_password(args)
    options, positional = parse_options(
        args,
        program="mysqldump",
        with_value={**MYSQL_CONNECTION_OPTIONS, "-r": "result_file", "--result-file": "result_file"},
        flags={
            "-B": "databases",
            "--databases": "databases",
            "--single-transaction": "single_transaction",
            "-R": "routines",
            "--routines": "routines",
            "--triggers": "triggers",
            "--events": "events",
            "-E": "events",
            "--no-tablespaces": "no_tablespaces",
            "-y": "no_tablespaces",
            "--add-drop-table": "add_drop_table",
            "--skip-add-drop-table": "skip_add_drop_table",
            "--add-drop-database": "add_drop_database",
            "--set-gtid-purged=OFF": "gtid_off",
            "--hex-blob": "hex_blob",
            "--quick": "quick",
            "-q": "quick",
            "--no-defaults": "no_defaults",
        },
    )
    session = mysql_connect(data_dir, options, password, program="mysqldump")
    if not positional:
        raise ClientError(
            "Usage: mysqldump [OPTIONS] database [tables]\nOR     mysqldump [OPTIONS] --databases DB1 [DB2 DB3...]", 1
        )
    names = positional if "databases" in options else positional[:1]
    for name in names:
        try:
            mysql_database_allowed(session.store.state, session.user, name)
        except SqlError as exc:
            number, _, message = str(exc).partition(": ")
            code = number.split()[0]
            raise ClientError(f"mysqldump: Got error: {code}: {message} when selecting the database", 2) from None
    text = mysqldump_text(session, names, options)
    target = (options.get("result_file") or [""])[-1]
    if target:
        with open(target, "w") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


def mysqldump_text(session: Session, names: list[str], options: dict[str, list[str]]) -> str:
    lines = [
        f"-- MySQL dump 10.13  Distrib {MYSQL_VERSION}, for Linux (x86_64)",
        "--",
        f"-- Host: localhost    Database: {names[0]}",
        "-- ------------------------------------------------------",
        f"-- Server version\t{MYSQL_VERSION}",
        "",
        "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;",
        "/*!50503 SET NAMES utf8mb4 */;",
        "/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;",
        "/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;",
        "",
    ]
    for name in names:
        if "databases" in options:
            lines += [
                "--",
                f"-- Current Database: `{name}`",
                "--",
                "",
                f"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `{name}` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;",
                "",
                f"USE `{name}`;",
                "",
            ]
        tables = session.store.state["databases"][name]["tables"]
        for key in sorted(tables):
            table = tables[key]
            definitions = [f"  `{c['name']}` {c['type']}".rstrip() for c in table["columns"]]
            definitions += [f"  {c}" for c in table["constraints"]]
            lines += ["--", f"-- Table structure for table `{key}`", "--", ""]
            if "skip_add_drop_table" not in options:
                lines.append(f"DROP TABLE IF EXISTS `{key}`;")
            lines += [
                f"CREATE TABLE `{key}` (",
                ",\n".join(definitions),
                ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;",
                "",
            ]
            lines += ["--", f"-- Dumping data for table `{key}`", "--", "", f"LOCK TABLES `{key}` WRITE;"]
            if table["rows"]:
                values = ",".join("(" + ",".join(_mysql_value(v) for v in row) + ")" for row in table["rows"])
                lines.append(f"INSERT INTO `{key}` VALUES {values};")  # noqa: S608 - the dump's own text
            lines += ["UNLOCK TABLES;", ""]
    lines += [
        "/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;",
        "/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;",
        "/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;",
        "",
        f"-- Dump completed on {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}",
        "",
    ]
    return "\n".join(lines)


def _mysql_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    escaped = (
        str(value)
        .replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\0", "\\0")
    )
    return f"'{escaped}'"


# --- entry point --------------------------------------------------------------------

TOOLS = {
    "postgres": {"psql": psql, "pg_dump": pg_dump, "pg_isready": pg_isready},
    "mysql": {"mysql": mysql, "mysqldump": mysqldump, "mysqladmin": mysqladmin},
}


def main() -> int:
    """Run as a client tool inside a database container (see container_exec.py): the
    family, data directory and exec user come from the environment the exec set."""
    program = Path(sys.argv[0]).name
    family = os.environ.get("SANDBOX_CONTAINER_FAMILY", "")
    data_dir = Path(os.environ.get("SANDBOX_CONTAINER_DATA", "/nonexistent"))
    tool = TOOLS.get(family, {}).get(program)
    if tool is None:
        sys.stderr.write(f"sh: 1: {program}: not found\n")
        return 127
    try:
        return tool(sys.argv[1:], data_dir)
    except ClientError as exc:
        sys.stderr.write(f"{exc}\n")
        return exc.code
