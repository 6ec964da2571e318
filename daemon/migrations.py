"""Applies `supabase/migrations` to a database, keeping Supabase CLI's own history table.

Each migration runs in its own transaction and is recorded in
`supabase_migrations.schema_migrations(version, statements, name)`, so `supabase migration
list` agrees about what is applied. This runner records the whole file as one statement; the
CLI records it split into statements, so contents are compared by a fingerprint that ignores
how a file was split (whitespace, comments, semicolons). A session advisory lock keeps two
runners from applying the same migration.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import psycopg
from loguru import logger

from daemon.config import DatabaseSettings

# What splitting a file into statements may drop or reflow, and so what a comparison ignores.
SPLIT_NOISE = re.compile(r"--[^\n]*|/\*.*?\*/|[\s;]", re.DOTALL)
FILE_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)\.sql$")
# Any constant shared by all runners; keeps concurrent runs of this tool from interleaving.
ADVISORY_LOCK_KEY = 0x5B_A5E_11

HISTORY_DDL = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text not null primary key,
  statements text[],
  name text
);
"""


class MigrationError(Exception):
    """The migrations cannot be applied as they stand; nothing was changed by this run."""


class State(StrEnum):
    APPLIED = "applied"
    PENDING = "pending"
    MODIFIED = "modified after it was applied"
    MISSING = "applied but has no file here"


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str


@dataclass(frozen=True)
class MigrationStatus:
    version: str
    name: str
    state: State


def discover(directory: Path) -> list[Migration]:
    """The migration files in `directory`, oldest first."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory not found: {directory}")
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files must be named <YYYYMMDDHHMMSS>_<lower_snake_name>.sql")
        migrations.append(Migration(match["version"], match["name"], path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share one version")
    return migrations


def _fingerprint(sql: str) -> str:
    return SPLIT_NOISE.sub("", sql)


def _recorded(conn: psycopg.Connection) -> dict[str, tuple[str | None, list[str] | None]]:
    exists = conn.execute("select to_regclass('supabase_migrations.schema_migrations') is not null").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("select version, name, statements from supabase_migrations.schema_migrations")
    return {version: (name, statements) for version, name, statements in rows}


def status(conn: psycopg.Connection, migrations: Sequence[Migration]) -> list[MigrationStatus]:
    """Every local and recorded migration with its state, in version order."""
    recorded = _recorded(conn)
    local = {m.version: m for m in migrations}
    result = []
    for version in sorted(local.keys() | recorded.keys()):
        migration = local.get(version)
        if migration is None:
            result.append(MigrationStatus(version, recorded[version][0] or "", State.MISSING))
        elif version not in recorded:
            result.append(MigrationStatus(version, migration.name, State.PENDING))
        elif (statements := recorded[version][1]) is not None and _fingerprint("".join(statements)) != _fingerprint(
            migration.sql
        ):
            result.append(MigrationStatus(version, migration.name, State.MODIFIED))
        else:
            result.append(MigrationStatus(version, migration.name, State.APPLIED))
    return result


def _check_applicable(states: Sequence[MigrationStatus]) -> list[str]:
    modified = [s.version for s in states if s.state is State.MODIFIED]
    if modified:
        raise MigrationError(
            f"migration(s) {', '.join(modified)} changed after being applied; add a new migration instead"
        )
    applied = [s.version for s in states if s.state in (State.APPLIED, State.MISSING)]
    pending = [s.version for s in states if s.state is State.PENDING]
    if applied and pending and min(pending) < max(applied):
        raise MigrationError(
            f"migration {min(pending)} is older than the last applied one ({max(applied)}); "
            "rename it to a newer version"
        )
    return pending


def _apply_one(conn: psycopg.Connection, migration: Migration) -> None:
    # Recorded first, in the same transaction, so a `set role` or `set search_path` inside
    # the migration cannot affect the record; reset afterwards so it cannot affect the next.
    try:
        with conn.transaction():
            conn.execute(
                "insert into supabase_migrations.schema_migrations (version, statements, name) values (%s, %s, %s)",
                (migration.version, [migration.sql], migration.name),
            )
            conn.execute(migration.sql)
    finally:
        conn.execute("reset all")
        conn.execute("reset role")


def apply(dsn: str, directory: Path) -> list[str]:
    """Apply every pending migration in order; return the versions applied (empty if none)."""
    migrations = {m.version: m for m in discover(directory)}
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            conn.execute(HISTORY_DDL)
            for version in _check_applicable(status(conn, list(migrations.values()))):
                migration = migrations[version]
                try:
                    _apply_one(conn, migration)
                except psycopg.Error as error:
                    before = f"; applied before it in this run: {', '.join(applied)}" if applied else ""
                    raise MigrationError(
                        f"migration {version}_{migration.name} failed and was rolled back: "
                        f"{error.diag.message_primary or error}{before}"
                    ) from error
                logger.info("applied migration {} {}", version, migration.name)
                applied.append(version)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    return applied


def migrate_command(settings: DatabaseSettings, action: str) -> int:
    """`clinic-sync migrate [apply|status]`: 0 when done (status: all applied), 1 otherwise."""
    try:
        if action == "status":
            with psycopg.connect(settings.database_url) as conn:
                states = status(conn, discover(settings.migrations_dir))
            for entry in states:
                print(f"{entry.version}  {entry.name:<32} {entry.state.value}")
            return 0 if all(s.state is State.APPLIED for s in states) else 1
        applied = apply(settings.database_url, settings.migrations_dir)
        print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "; up to date"))
        return 0
    except MigrationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except psycopg.Error as error:
        print(f"error: database: {error}".strip(), file=sys.stderr)
        return 1
