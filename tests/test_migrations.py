"""The migration runner (`daemon.migrations`, `scripts.migrate`) against a real throwaway PostgreSQL."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from daemon.config import DEFAULT_MIGRATIONS_DIR
from daemon.migrations import HISTORY_DDL, Migration, MigrationError, MigrationStatus, State, apply, discover, status
from scripts.migrate import main
from tests.conftest import Database
from tests.dates import upcoming
from tests.standins.clinics import issue_key
from tests.standins.postgres import AUTHENTICATOR, MIGRATOR, scalar
from tests.standins.vapi import Assistant

V1, V2, V3 = "20260101000100", "20260101000200", "20260101000300"
History = list[tuple[str, str, list[str]]]


@pytest.fixture
def dsn(empty_database: Database) -> str:
    """Where the runner connects: the database as the non-superuser `migrator`."""
    return empty_database.dsn(MIGRATOR)


@pytest.fixture
def superuser(empty_database: Database) -> Iterator[psycopg.Connection]:
    with empty_database.connect() as conn:
        yield conn


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir()
    return directory


def write(directory: Path, version: str, name: str, sql: str) -> Path:
    path = directory / f"{version}_{name}.sql"
    path.write_text(sql)
    return path


def history(conn: psycopg.Connection) -> History:
    rows = conn.execute("select version, name, statements from supabase_migrations.schema_migrations order by version")
    return [(version, name, statements) for version, name, statements in rows]


def versions_recorded(conn: psycopg.Connection) -> list[str]:
    return [version for version, _, _ in history(conn)]


def table_exists(conn: psycopg.Connection, name: str) -> bool:
    return bool(scalar(conn, "select to_regclass(%s) is not null", (f"public.{name}",)))


def states(conn: psycopg.Connection, directory: Path) -> dict[str, State]:
    return {entry.version: entry.state for entry in status(conn, discover(directory))}


def real_migrations() -> list[Migration]:
    migrations = discover(DEFAULT_MIGRATIONS_DIR)
    assert migrations, "no migrations found in the repository"
    return migrations


# --- the real migrations -------------------------------------------------------------------------


def test_apply_runs_every_real_migration_once_in_order(dsn: str, superuser: psycopg.Connection) -> None:
    files = sorted(DEFAULT_MIGRATIONS_DIR.glob("*.sql"))
    expected: History = [(path.name[:14], path.name[15:].removesuffix(".sql"), [path.read_text()]) for path in files]

    assert apply(dsn, DEFAULT_MIGRATIONS_DIR) == [version for version, _, _ in expected]
    assert history(superuser) == expected

    assert apply(dsn, DEFAULT_MIGRATIONS_DIR) == []
    assert history(superuser) == expected
    assert status(superuser, real_migrations()) == [
        MigrationStatus(version, name, State.APPLIED) for version, name, _ in expected
    ]


def test_status_on_an_empty_database_is_all_pending(superuser: psycopg.Connection) -> None:
    assert scalar(superuser, "select to_regclass('supabase_migrations.schema_migrations')") is None
    migrations = real_migrations()

    assert status(superuser, migrations) == [MigrationStatus(m.version, m.name, State.PENDING) for m in migrations]


# --- hand-written migrations ---------------------------------------------------------------------


def test_failed_migration_leaves_no_trace(dsn: str, superuser: psycopg.Connection, migrations_dir: Path) -> None:
    write(migrations_dir, V1, "one", "create table t1 (id int);")
    write(migrations_dir, V2, "two", "create table t2 (id int);\nselect * from no_such_table;")
    write(migrations_dir, V3, "three", "create table t3 (id int);")

    with pytest.raises(
        MigrationError,
        match=f"{V2}_.* failed and was rolled back: .*no_such_table.*applied before it in this run: {V1}",
    ) as failure:
        apply(dsn, migrations_dir)
    assert "\n" not in str(failure.value)

    assert versions_recorded(superuser) == [V1]
    assert table_exists(superuser, "t1")
    assert not table_exists(superuser, "t2")
    assert not table_exists(superuser, "t3")
    assert states(superuser, migrations_dir) == {V1: State.APPLIED, V2: State.PENDING, V3: State.PENDING}


def test_modified_migration_is_refused(dsn: str, superuser: psycopg.Connection, migrations_dir: Path) -> None:
    write(migrations_dir, V1, "one", "create table t1 (id int);")
    second = write(migrations_dir, V2, "two", "create table t2 (id int);")
    assert apply(dsn, migrations_dir) == [V1, V2]

    second.write_text("create table t2 (id bigint);")
    write(migrations_dir, V3, "three", "create table t3 (id int);")

    assert states(superuser, migrations_dir) == {V1: State.APPLIED, V2: State.MODIFIED, V3: State.PENDING}
    with pytest.raises(MigrationError, match=V2):
        apply(dsn, migrations_dir)
    assert versions_recorded(superuser) == [V1, V2]
    assert not table_exists(superuser, "t3")


def test_pending_migration_older_than_the_last_applied_is_refused(
    dsn: str, superuser: psycopg.Connection, migrations_dir: Path
) -> None:
    write(migrations_dir, V1, "one", "create table t1 (id int);")
    write(migrations_dir, V3, "three", "create table t3 (id int);")
    assert apply(dsn, migrations_dir) == [V1, V3]

    write(migrations_dir, V2, "two", "create table t2 (id int);")

    with pytest.raises(MigrationError, match=V2):
        apply(dsn, migrations_dir)
    assert versions_recorded(superuser) == [V1, V3]
    assert not table_exists(superuser, "t2")


def test_recorded_migration_without_a_file_is_missing(
    dsn: str, superuser: psycopg.Connection, migrations_dir: Path
) -> None:
    first = write(migrations_dir, V1, "one", "create table t1 (id int);")
    write(migrations_dir, V2, "two", "create table t2 (id int);")
    assert apply(dsn, migrations_dir) == [V1, V2]

    first.unlink()
    write(migrations_dir, V3, "three", "create table t3 (id int);")

    assert status(superuser, discover(migrations_dir)) == [
        MigrationStatus(V1, "one", State.MISSING),
        MigrationStatus(V2, "two", State.APPLIED),
        MigrationStatus(V3, "three", State.PENDING),
    ]
    assert apply(dsn, migrations_dir) == [V3]
    assert versions_recorded(superuser) == [V1, V2, V3]
    assert table_exists(superuser, "t3")


def test_history_written_by_the_supabase_cli_is_understood(
    dsn: str, superuser: psycopg.Connection, migrations_dir: Path
) -> None:
    """The CLI records a file split into trimmed statements; that is the same migration."""
    write(migrations_dir, V1, "one", "-- first\ncreate table t1 (id int);\n\ncreate table t2 (id int);\n")
    with psycopg.connect(dsn, autocommit=True) as cli:
        cli.execute(HISTORY_DDL)
    superuser.execute(
        "insert into supabase_migrations.schema_migrations (version, statements, name) values (%s, %s, 'one')",
        (V1, ["create table t1 (id int)", "create table t2 (id int)"]),
    )
    assert states(superuser, migrations_dir) == {V1: State.APPLIED}
    assert apply(dsn, migrations_dir) == []

    superuser.execute(
        "update supabase_migrations.schema_migrations set statements = %s where version = %s",
        (["create table t1 (id int)", "create table t2 (id bigint)"], V1),
    )
    assert states(superuser, migrations_dir) == {V1: State.MODIFIED}


def test_session_settings_made_by_a_migration_do_not_leak(
    dsn: str, superuser: psycopg.Connection, migrations_dir: Path
) -> None:
    write(migrations_dir, V1, "one", "create schema elsewhere; set search_path = elsewhere; set role anon;")
    write(migrations_dir, V2, "two", "create table t2 (id int);")
    assert apply(dsn, migrations_dir) == [V1, V2]
    assert versions_recorded(superuser) == [V1, V2]
    assert scalar(superuser, "select to_regclass('public.t2') is not null")
    assert scalar(superuser, "select relowner::regrole::text from pg_class where oid = 'public.t2'::regclass") == (
        MIGRATOR
    )


@pytest.mark.parametrize("file_name", ["001_init.sql", f"{V1}_Bad-Name.sql", f"{V1}_.sql", f"{V1}init.sql"])
def test_badly_named_file_is_refused(migrations_dir: Path, file_name: str) -> None:
    write(migrations_dir, V2, "fine", "select 1;")
    (migrations_dir / file_name).write_text("select 1;")

    with pytest.raises(MigrationError, match=re.escape(file_name)):
        discover(migrations_dir)


def test_two_files_with_one_version_are_refused(migrations_dir: Path) -> None:
    write(migrations_dir, V1, "one", "select 1;")
    write(migrations_dir, V1, "also_one", "select 1;")

    with pytest.raises(MigrationError, match="share one version"):
        discover(migrations_dir)


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="not found"):
        discover(tmp_path / "nowhere")


def test_concurrent_runners_apply_each_migration_once(
    dsn: str, superuser: psycopg.Connection, migrations_dir: Path
) -> None:
    write(migrations_dir, V1, "one", "create table t1 (id int);\nselect pg_sleep(0.5);")
    write(migrations_dir, V2, "two", "create table t2 (id int);")
    write(migrations_dir, V3, "three", "create table t3 (id int);")
    start = threading.Barrier(2)

    def run() -> list[str]:
        start.wait()
        return apply(dsn, migrations_dir)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(run) for _ in range(2)]
        results = [future.result() for future in futures]

    applied = [version for result in results for version in result]
    assert sorted(applied) == [V1, V2, V3]
    assert versions_recorded(superuser) == [V1, V2, V3]


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No `.env` file, no DATABASE_URL and the default migrations directory unless a test sets them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("MIGRATIONS_DIR", raising=False)


@pytest.mark.usefixtures("cli_env")
def test_cli_applies_then_is_up_to_date(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    count = len(real_migrations())

    assert main(["status", "--database-url", dsn]) == 1
    assert capsys.readouterr().out.count(State.PENDING.value) == count

    assert main(["--database-url", dsn]) == 0
    assert f"applied {count} migration(s)" in capsys.readouterr().out

    assert main(["apply", "--database-url", dsn]) == 0
    assert "up to date" in capsys.readouterr().out

    assert main(["status", "--database-url", dsn]) == 0
    assert capsys.readouterr().out.count(State.APPLIED.value) == count


@pytest.mark.usefixtures("cli_env")
def test_cli_reads_database_url_and_migrations_dir_from_the_environment(
    dsn: str, migrations_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", dsn)
    monkeypatch.setenv("MIGRATIONS_DIR", str(migrations_dir))
    write(migrations_dir, V1, "one", "create table t1 (id int);")

    assert main([]) == 0
    assert capsys.readouterr().out.strip() == f"applied 1 migration(s): {V1}"
    assert main(["status"]) == 0
    capsys.readouterr()

    write(migrations_dir, V2, "two", "create table t2 (id int);")
    assert main(["status"]) == 1
    out = capsys.readouterr().out
    assert re.search(rf"^{V2}\s+two\s+{State.PENDING.value}$", out, re.MULTILINE), out


@pytest.mark.usefixtures("cli_env")
def test_cli_reports_a_refused_migration(
    dsn: str, migrations_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MIGRATIONS_DIR", str(migrations_dir))
    write(migrations_dir, V1, "one", "create table t1 (id int);")
    assert main(["--database-url", dsn]) == 0
    (migrations_dir / f"{V1}_one.sql").write_text("create table t1 (id bigint);")

    capsys.readouterr()
    assert main(["--database-url", dsn]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors and errors[0].startswith(f"error: migration(s) {V1} changed")


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("command", [[], ["status"]])
def test_cli_without_a_database_url(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(command) == 2
    captured = capsys.readouterr()
    assert "DATABASE_URL" in captured.err
    assert captured.out == ""


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("command", [[], ["status"]])
def test_cli_with_an_unreachable_database(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--database-url", "postgresql://nobody@127.0.0.1:1/nowhere"]) == 1
    assert capsys.readouterr().err.startswith("error: database")


def test_the_supabase_seed_applies_twice_and_gives_a_bookable_clinic(database: Database) -> None:
    seed = (DEFAULT_MIGRATIONS_DIR.parent / "seed.sql").read_text()
    with database.connect(MIGRATOR) as owner:
        owner.execute(seed)
        owner.execute(seed)
        clinic_id = scalar(owner, "select id from public.clinics")
        assert scalar(owner, "select count(*) from public.clinic_opening_hours") == 5
        key = issue_key(owner, clinic_id)
    with database.connect(AUTHENTICATOR) as gateway:
        answer = Assistant(gateway, key).use("check_availability", {"date": upcoming(2).isoformat()})
    assert answer["result"].startswith("Free start times on Tuesday")
