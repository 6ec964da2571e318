"""supabase/schema.sql (`make schema`, scripts/schema.py) stays what the migrations produce."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from daemon.config import DEFAULT_MIGRATIONS_DIR
from daemon.migrations import apply
from scripts import schema
from tests.conftest import Database
from tests.standins.postgres import MIGRATOR

VERSION_SPECIFIC = re.compile(r"^(\\(un)?restrict |-- Dumped (from|by) |SET |SELECT pg_catalog\.set_config\()", re.M)

# One more migration on top of the project's: a new column, and a function replaced.
PROBE_MIGRATION = """
alter table public.clinics add column drift_probe text;

create or replace function private.require_owner(p_owner text) returns void
language sql volatile
set search_path = ''
as $$
  select private.require(length(p_owner) between 1 and 100, 'lease owner must be 1 to 100 characters')
$$;
"""


def test_the_schema_file_matches_the_migrations(database: Database) -> None:
    """A copy of the session's freshly migrated template, dumped, is the committed file to the byte."""
    committed = schema.SCHEMA_FILE.read_text()
    regenerated = schema.dump_schema(database.dsn())
    if regenerated != committed:
        pytest.fail(
            f"{schema.drift_summary(committed, regenerated)}\n\n{schema.unified_diff(committed, regenerated)}",
            pytrace=False,
        )


def test_the_schema_file_is_stable_and_says_how_it_is_made() -> None:
    committed = schema.SCHEMA_FILE.read_text()
    assert committed.startswith("-- supabase/schema.sql: GENERATED, DO NOT EDIT BY HAND.")
    assert "`make schema`" in committed.split("\n\n")[0]
    assert VERSION_SPECIFIC.findall(committed) == []
    # What a reader comes for: objects of both schemas, their grants, the triggers that ring the doorbells.
    assert "CREATE TABLE public.appointments (" in committed
    assert "CREATE FUNCTION private.require(" in committed
    assert "GRANT ALL ON FUNCTION public.vapi_tool_call(json) TO anon;" in committed
    assert "CREATE TRIGGER appointments_broadcast_calendar_sync AFTER INSERT OR UPDATE" in committed
    assert "ALTER PUBLICATION supabase_realtime" not in committed  # no whole rows through Postgres Changes
    assert "CREATE TABLE auth.users" not in committed
    assert "CREATE TABLE supabase_migrations.schema_migrations" not in committed


def test_one_more_migration_is_caught_and_named(
    database: Database,
    empty_database: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(DEFAULT_MIGRATIONS_DIR, migrations)
    (migrations / "29991231000000_drift_probe.sql").write_text(PROBE_MIGRATION)
    apply(empty_database.dsn(MIGRATOR), migrations)
    committed = schema.SCHEMA_FILE.read_text()

    regenerated = schema.dump_schema(empty_database.dsn())

    assert regenerated != committed
    probed = {
        "Name: clinics; Type: TABLE; Schema: public",
        "Name: require_owner(text); Type: FUNCTION; Schema: private",
    }
    assert set(schema.changed_objects(committed, regenerated)) >= probed
    # Exactly those, against the same migrations without the probe (`database`: the migrated template).
    assert set(schema.changed_objects(schema.dump_schema(database.dsn()), regenerated)) == probed
    diff = schema.unified_diff(committed, regenerated)
    added = [line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert any(re.fullmatch(r"\+    drift_probe text,?", line) for line in added)
    assert any("between 1 and 100" in line for line in added)
    hunk_headings = [line.split(" @@ ", 1)[1] for line in diff.splitlines() if line.startswith("@@ ")]
    assert "Name: clinics; Type: TABLE; Schema: public" in hunk_headings
    assert "Name: require_owner(text); Type: FUNCTION; Schema: private" in hunk_headings

    # The command's --check says the same: a diff on stdout, what changed and what to do on stderr.
    monkeypatch.setattr(schema, "generate", lambda: regenerated)
    assert schema.main(["--check"]) == 1
    out, err = capsys.readouterr()
    assert out == diff
    assert "run `make schema`" in err and "Name: clinics; Type: TABLE; Schema: public" in err

    # Writing puts the regenerated text in place, after which --check passes.
    monkeypatch.setattr(schema, "SCHEMA_FILE", tmp_path / "schema.sql")
    assert schema.main([]) == 0
    assert (tmp_path / "schema.sql").read_text() == regenerated
    assert schema.main(["--check"]) == 0
