"""The database services of a sandbox tool stack keep real data in their named volume:
`docker compose exec` runs the image's client tools (psql, pg_dump, mysql, mysqldump),
so a dump and its reload are a real round trip, wiping the volume wipes the data, and
what the real tools refuse (a role or database that does not exist, a wrong password,
an option pg_dump does not have) is refused. Run as a session runs them, without sshd."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.sandbox.stacks import write_stack

STANDINS = Path(__file__).resolve().parents[2] / "sandbox" / "standins"

Docker = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    return tmp_path


@pytest.fixture
def docker(root: Path) -> Docker:
    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HOST_ROOT": str(root), "PATH": f"{STANDINS}:{os.environ['PATH']}"}
        return subprocess.run(
            ["docker", *args], capture_output=True, text=True, env=env, input=stdin, timeout=60, check=False
        )

    return run


def compose(docker: Docker, stack: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return docker("compose", "-f", str(stack), *args, stdin=stdin)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


def test_a_postgres_dump_reloaded_after_the_volume_was_wiped_brings_the_rows_back(docker: Docker, root: Path) -> None:
    stack = write_stack(root, "nextcloud", "postgres")
    ok(compose(docker, stack, "up", "-d"))
    psql = ("exec", "-T", "postgres", "psql", "-U", "nextcloud", "-d", "nextcloud")
    ok(compose(docker, stack, *psql, "-c", "CREATE TABLE notes (id integer NOT NULL, body text, done boolean)"))
    ok(compose(docker, stack, *psql, "-c", "INSERT INTO notes VALUES (1, 'it''s\ttabbed', true), (2, NULL, false)"))

    dump = ok(compose(docker, stack, "exec", "-T", "postgres", "pg_dump", "-U", "nextcloud", "--clean", "--if-exists"))
    ok(compose(docker, stack, "down", "-v"))
    assert not (root / "var/lib/docker/volumes/nextcloud_postgres-data").exists()
    ok(compose(docker, stack, "up", "-d"))
    gone = compose(docker, stack, *psql, "-c", "SELECT * FROM notes")
    reloaded = compose(docker, stack, *psql, "-v", "ON_ERROR_STOP=1", stdin=dump)
    rows = ok(compose(docker, stack, *psql, "-At", "-c", "SELECT id, body, done FROM notes ORDER BY id"))

    assert "COPY public.notes (id, body, done) FROM stdin;\n1\tit's\\ttabbed\tt\n2\t\\N\tf\n\\." in dump
    assert (gone.returncode, gone.stderr.strip()) == (1, 'ERROR:  relation "notes" does not exist')
    assert reloaded.returncode == 0, reloaded.stderr
    assert rows == "1|it's\ttabbed|t\n2||f\n"
    data = root / "var/lib/docker/volumes/nextcloud_postgres-data/_data/sandbox-db.json"
    assert "it's" in json.loads(data.read_text())["databases"]["nextcloud"]["tables"]["public.notes"]["rows"][0][1]


def test_postgres_refuses_what_postgres_refuses(docker: Docker, root: Path) -> None:
    stack = write_stack(root, "odoo", "postgres")
    ok(compose(docker, stack, "up", "-d"))

    as_root = compose(docker, stack, "exec", "-T", "postgres", "psql", "-c", "SELECT 1")
    other_db = compose(docker, stack, "exec", "-T", "postgres", "pg_dump", "-U", "odoo", "-d", "nextcloud")
    no_clean = compose(docker, stack, "exec", "-T", "postgres", "pg_dump", "-U", "odoo", "--if-exists")
    bad_option = compose(docker, stack, "exec", "-T", "postgres", "pg_dump", "-U", "odoo", "--everything")
    stop = compose(
        docker,
        stack,
        *("exec", "-T", "postgres", "psql", "-U", "odoo", "-v", "ON_ERROR_STOP=1"),
        stdin="CREATE TABLE a (id integer);\nCREATE TABLE a (id integer);\nCREATE TABLE b (id integer);\n",
    )
    unknown_sql = compose(docker, stack, "exec", "-T", "postgres", "psql", "-U", "odoo", "-c", "VACUUM FULL")
    not_in_image = compose(docker, stack, "exec", "-T", "odoo", "pg_dump", "-U", "odoo")

    assert as_root.returncode == 2 and 'FATAL:  role "root" does not exist' in as_root.stderr
    assert other_db.returncode == 1 and 'FATAL:  database "nextcloud" does not exist' in other_db.stderr
    assert no_clean.stderr.strip() == "pg_dump: error: option --if-exists requires option -c/--clean"
    assert bad_option.returncode == 1 and "unrecognized option '--everything'" in bad_option.stderr
    assert stop.returncode == 3 and 'relation "a" already exists' in stop.stderr
    tables = ok(compose(docker, stack, "exec", "-T", "postgres", "pg_dump", "-U", "odoo", "-s"))
    assert "CREATE TABLE public.a" in tables and "public.b" not in tables, "ON_ERROR_STOP stops at the error"
    assert unknown_sql.returncode == 1 and "does not emulate" in unknown_sql.stderr
    assert not_in_image.returncode == 126 and '"pg_dump": executable file not found in $PATH' in not_in_image.stderr


def test_a_postgres_image_without_a_password_stops_and_exec_finds_it_not_running(docker: Docker, root: Path) -> None:
    stack = write_stack(root, "umami", "postgres")
    (stack.parent / ".env").write_text("POSTGRES_USER=umami\nPOSTGRES_DB=umami\n")
    ok(compose(docker, stack, "up", "-d"))

    result = compose(docker, stack, "exec", "-T", "postgres", "psql", "-U", "umami", "-c", "SELECT 1")
    undefined = compose(docker, stack, "exec", "-T", "db", "pg_dumpall")

    assert (result.returncode, result.stderr.strip()) == (1, 'service "postgres" is not running')
    assert (undefined.returncode, undefined.stderr.strip()) == (1, "no such service: db")


def test_a_mysql_dump_reloaded_after_the_volume_was_wiped_brings_the_rows_back(docker: Docker, root: Path) -> None:
    stack = write_stack(root, "ghost", "mysql")
    ok(compose(docker, stack, "up", "-d"))
    as_user = 'MYSQL_PWD="$MYSQL_PASSWORD" exec mysql -u"$MYSQL_USER" "$MYSQL_DATABASE"'
    as_root = 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" exec '
    sql = "CREATE TABLE posts (id int NOT NULL, title text, PRIMARY KEY (id)); INSERT INTO posts VALUES (1, 'it\\'s');"
    ok(compose(docker, stack, "exec", "-T", "mysql", "sh", "-c", as_user, stdin=sql))

    dump = ok(
        compose(
            docker,
            stack,
            *("exec", "-T", "mysql", "sh", "-c"),
            as_root + 'mysqldump -uroot --single-transaction --routines --triggers --databases "$MYSQL_DATABASE"',
        )
    )
    ok(compose(docker, stack, "down", "--volumes"))
    ok(compose(docker, stack, "up", "-d"))
    ok(compose(docker, stack, "exec", "-T", "mysql", "sh", "-c", as_root + "mysql -uroot", stdin=dump))
    rows = ok(compose(docker, stack, "exec", "-T", "mysql", "sh", "-c", as_user + " -N -e 'SELECT * FROM posts'"))

    assert "INSERT INTO `posts` VALUES (1,'it\\'s');" in dump
    assert rows == "1\tit's\n"


def test_mysql_refuses_a_wrong_password_and_another_users_database(docker: Docker, root: Path) -> None:
    stack = write_stack(root, "ghost", "mysql")
    ok(compose(docker, stack, "up", "-d"))

    wrong = compose(docker, stack, "exec", "-T", "-e", "MYSQL_PWD=guess", "mysql", "mysqldump", "-uroot", "ghost")
    other = compose(
        docker, stack, "exec", "-T", "mysql", "sh", "-c", 'MYSQL_PWD="$MYSQL_PASSWORD" exec mysql -ughost mysql'
    )

    assert wrong.returncode == 2
    assert "Access denied for user 'root'@'localhost' (using password: YES)" in wrong.stderr
    assert other.returncode == 1 and "Access denied for user 'ghost'@'%' to database 'mysql'" in other.stderr


def test_named_volumes_are_directories_that_outlive_down_unless_removed_with_it(docker: Docker, root: Path) -> None:
    stack = write_stack(root, "nextcloud", "postgres", tool_data="/var/www/html")
    ok(compose(docker, stack, "up", "-d"))
    files = root / "var/lib/docker/volumes/nextcloud_nextcloud-data/_data"
    (files / "photo.jpg").write_bytes(b"\xff\xd8 a photo")

    listed = ok(docker("volume", "ls", "-q", "--filter", "label=com.docker.compose.project=nextcloud"))
    mountpoint = ok(docker("volume", "inspect", "-f", "{{ .Mountpoint }}", "nextcloud_nextcloud-data"))
    in_use = docker("volume", "rm", "nextcloud_nextcloud-data")
    ok(compose(docker, stack, "down"))
    kept = (files / "photo.jpg").read_bytes()
    ok(compose(docker, stack, "down", "-v"))

    assert listed.split() == ["nextcloud_nextcloud-data", "nextcloud_postgres-data"]
    assert mountpoint.strip() == "/var/lib/docker/volumes/nextcloud_nextcloud-data/_data"
    assert in_use.returncode == 1 and "volume is in use" in in_use.stderr
    assert kept == b"\xff\xd8 a photo"
    assert not files.exists()
    missing = docker("volume", "inspect", "nextcloud_nextcloud-data")
    assert missing.returncode == 1 and "no such volume" in missing.stderr


def test_a_volume_a_service_uses_must_be_declared(docker: Docker, root: Path) -> None:
    stack = write_stack(root, "listmonk", "postgres")
    stack.write_text(stack.read_text().replace("volumes:\n  listmonk-data:\n", "volumes:\n"))

    result = compose(docker, stack, "up", "-d")

    assert result.returncode == 15
    assert 'service "listmonk" refers to undefined volume listmonk-data' in result.stderr
