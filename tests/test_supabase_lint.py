"""`supabase db lint` (the real Supabase CLI, plpgsql_check underneath) finds nothing at warning level.

The CLI lints every PL/pgSQL function of the schemas it is given with the plpgsql_check extension, which
it creates itself, so it connects as the superuser. It runs against a database migrated from
supabase/migrations on Debian's PostgreSQL 15 (what hosted projects run) with Debian's
postgresql-15-plpgsql-check, whatever TEST_POSTGRES says: the embedded PostgreSQL 18 has no plpgsql_check.
`make postgres15` installs both (`make test` does).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from daemon.config import DEFAULT_MIGRATIONS_DIR
from daemon.migrations import apply
from tests.standins.postgres import MIGRATOR, SUPERUSER, ThrowawayPostgres
from tests.test_supabase_cli import CLI, QUIET

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
DATABASE = "lint"
# As a project would run it in CI: fail on anything at warning level or above.
AT_WARNING = ("--level", "warning", "--fail-on", "warning")


@pytest.fixture(scope="module")
def pg15() -> Iterator[ThrowawayPostgres]:
    if not (PG15_BIN / "postgres").is_file():
        pytest.fail(f"{PG15_BIN} has no PostgreSQL 15 server: `make postgres15` installs it (`make test` does)")
    with ThrowawayPostgres(PG15_BIN) as pg:
        with psycopg.connect(pg.dsn()) as conn:
            available = conn.execute("select from pg_available_extensions where name = 'plpgsql_check'").fetchall()
        if not available:
            pytest.fail(
                "PostgreSQL 15 has no plpgsql_check extension (Debian's postgresql-15-plpgsql-check):"
                " `make postgres15` installs it (`make test` does)"
            )
        pg.create_database(DATABASE)
        pg.bootstrap_supabase(DATABASE)
        apply(pg.dsn(DATABASE, MIGRATOR), DEFAULT_MIGRATIONS_DIR)
        yield pg


def supabase_db_lint(pg: ThrowawayPostgres, workdir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: `make supabase-cli` installs it (`make test` does)")
    return subprocess.run(
        [str(CLI), *argv, "--db-url", pg.tcp_url(DATABASE, SUPERUSER), "--workdir", str(workdir)],
        env={**os.environ, **QUIET},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_supabase_db_lint_finds_nothing_in_public_and_private(pg15: ThrowawayPostgres, tmp_path: Path) -> None:
    result = supabase_db_lint(pg15, tmp_path, "db", "lint", "-s", "public,private", *AT_WARNING)
    assert result.returncode == 0, f"supabase db lint:\n{result.stdout}\n{result.stderr}"
    assert "Linting schema: public" in result.stderr and "Linting schema: private" in result.stderr, result.stderr


def test_supabase_db_lint_here_reports_the_warnings_it_is_run_for(pg15: ThrowawayPostgres, tmp_path: Path) -> None:
    """The check above means something: the same run refuses a function with a warning of the kind it once had
    (an untyped literal assigned to text[]), in a schema of its own."""
    with psycopg.connect(pg15.dsn(DATABASE), autocommit=True) as conn:
        conn.execute("create schema if not exists lint_probe")
        conn.execute(
            "create or replace function lint_probe.untyped() returns text[] language plpgsql as"
            " $$ declare v text[] := '{}'; begin return v; end $$"
        )
    result = supabase_db_lint(pg15, tmp_path, "db", "lint", "-s", "lint_probe", *AT_WARNING)
    assert result.returncode != 0, f"supabase db lint:\n{result.stdout}\n{result.stderr}"
    [finding] = json.loads(result.stdout)
    assert finding["function"] == "lint_probe.untyped"
    assert [issue["message"] for issue in finding["issues"]] == ["target type is different type than source type"]
