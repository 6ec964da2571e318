"""The real Supabase CLI agrees with `clinic-sync migrate` about the migration history, both ways round.

The CLI is npm's `supabase` at the version tools/package.json pins (its Linux binary comes from npm as an
optional dependency); `make test` installs it into tools/node_modules. It speaks TCP only, so it gets the
throwaway cluster's 127.0.0.1 address with a password for the migrator role (Supabase's `postgres`), and a
copy of supabase/ as its project directory (it writes a .temp folder there). Both runs also happen on
PostgreSQL 15 in CI (`make test-pg15`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.config import DEFAULT_MIGRATIONS_DIR
from daemon.migrations import discover
from tests.conftest import Database
from tests.standins.postgres import MIGRATOR

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "tools" / "node_modules" / ".bin" / "supabase"
CLINIC_SYNC = Path(sys.executable).parent / "clinic-sync"
# The CLI checks for a newer release and sends telemetry unless told not to; this machine reaches neither.
QUIET = {"SUPABASE_NO_UPDATE_NOTIFIER": "1", "SUPABASE_TELEMETRY_DISABLED": "1", "DO_NOT_TRACK": "1"}

# What makes the schema: every table, column, function, policy and trigger in public, as the catalog has them.
CATALOG = """
select 'table', c.relname, string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' order by a.attnum)
  from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
 where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v') group by c.relname
union all
select 'function', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', md5(p.prosrc)
  from pg_proc p where p.pronamespace = 'public'::regnamespace
union all
select 'policy', tablename || '.' || policyname, coalesce(qual, '') || coalesce(with_check, '')
  from pg_policies where schemaname = 'public'
union all
select 'trigger', tgrelid::regclass::text || '.' || tgname, pg_get_triggerdef(oid)
  from pg_trigger where not tgisinternal and tgrelid::regclass::text not like '%.%'
order by 1, 2
"""


@pytest.fixture(scope="module")
def cli() -> Path:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: `make supabase-cli` installs it (`make test` does)")
    pinned = json.loads((ROOT / "tools" / "package.json").read_text())["devDependencies"]["supabase"]
    version = subprocess.run(
        [str(CLI), "--version"], capture_output=True, text=True, timeout=60, env={**os.environ, **QUIET}, check=True
    ).stdout.strip()
    assert version == pinned, f"tools/node_modules has supabase {version}, tools/package.json pins {pinned}"
    return CLI


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A copy of the project's supabase/ (config.toml and the migrations), for --workdir."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "supabase" / "migrations", project / "supabase" / "migrations")
    shutil.copy(ROOT / "supabase" / "config.toml", project / "supabase" / "config.toml")
    return project


def supabase(cli: Path, workdir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cli), *argv, "--workdir", str(workdir)],
        env={**os.environ, **QUIET},
        stdin=subprocess.DEVNULL,  # it would ask before pushing; --yes answers
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def migration_list(cli: Path, workdir: Path, url: str) -> list[tuple[str, str]]:
    """(local, remote) version of each row of `supabase migration list`; "" where one side has none."""
    result = supabase(cli, workdir, "migration", "list", "--db-url", url, "--output-format", "json")
    assert result.returncode == 0, f"supabase migration list: {result.stdout}{result.stderr}"
    rows: list[dict[str, Any]] = json.loads(result.stdout)["migrations"]
    return [(row["local"], row["remote"]) for row in rows]


def clinic_sync_migrate(database: Database, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "MIGRATIONS_DIR")}
    return subprocess.run(
        [str(CLINIC_SYNC), "migrate", *argv, "--database-url", database.dsn(MIGRATOR)],
        env={**env, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def local_versions() -> list[str]:
    versions = [migration.version for migration in discover(DEFAULT_MIGRATIONS_DIR)]
    assert versions
    return versions


def test_supabase_migration_list_sees_every_migration_clinic_sync_applied(
    empty_database: Database, cli: Path, workdir: Path
) -> None:
    url = empty_database.cluster.tcp_url(empty_database.name, MIGRATOR)
    local = local_versions()
    # Before: the CLI reads the history and finds nothing applied (so the comparison below means something).
    assert migration_list(cli, workdir, url) == [(version, "") for version in local]

    applied = clinic_sync_migrate(empty_database)
    assert applied.returncode == 0, applied.stderr

    assert migration_list(cli, workdir, url) == [(version, version) for version in local]


def test_clinic_sync_migrate_status_accepts_what_supabase_db_push_applied(
    empty_database: Database, database: Database, cli: Path, workdir: Path
) -> None:
    local = local_versions()
    pending = clinic_sync_migrate(empty_database, "status")
    assert pending.returncode == 1 and pending.stdout.count("pending") == len(local), pending.stdout

    url = empty_database.cluster.tcp_url(empty_database.name, MIGRATOR)
    pushed = supabase(cli, workdir, "db", "push", "--db-url", url, "--yes")
    assert pushed.returncode == 0, f"supabase db push: {pushed.stdout}{pushed.stderr}"
    assert pushed.stderr.count("Applying migration ") == len(local), pushed.stderr

    status = clinic_sync_migrate(empty_database, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    lines = status.stdout.splitlines()
    assert [line.split()[0] for line in lines] == local
    assert all(line.rstrip().endswith(" applied") for line in lines), status.stdout

    again = clinic_sync_migrate(empty_database)
    assert again.returncode == 0 and "applied 0 migration(s); up to date" in again.stdout, again.stdout + again.stderr

    # The same schema as `clinic-sync migrate` makes (`database` is migrated by it).
    with empty_database.connect() as pushed_db, database.connect() as migrated_db:
        assert pushed_db.execute(CATALOG).fetchall() == migrated_db.execute(CATALOG).fetchall()
