"""supabase/schemas (the current state, by concern) and supabase/migrations (the history) build the same
database, and `make migration` (python -m scripts.schema diff) writes the migration between them."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import pytest

from daemon.config import DEFAULT_MIGRATIONS_DIR
from scripts import schema
from tests.conftest import Database
from tests.standins.postgres import ThrowawayPostgres

REQUIRE_OWNER = "FUNCTION private.require_owner(text)"

# require_owner as the project has it, and with a wider bound: the same text in a migration or a schema file.
WIDER_REQUIRE_OWNER = """
create or replace function private.require_owner(p_owner text) returns void
language sql volatile
set search_path = ''
as $$
  select private.require(length(p_owner) between 1 and 100, 'lease owner must be 1 to 100 characters')
$$;
"""


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    """A copy of supabase/schemas to plant differences in."""
    copy = tmp_path / "schemas"
    shutil.copytree(schema.SCHEMAS_DIR, copy)
    return copy


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A copy of supabase/migrations to plant differences in."""
    copy = tmp_path / "migrations"
    shutil.copytree(DEFAULT_MIGRATIONS_DIR, copy)
    return copy


def plant(schemas: Path, sql: str) -> None:
    last = sorted(schemas.glob("*.sql"))[-1]
    last.write_text(last.read_text() + "\n" + sql)


def drift_of(cluster: ThrowawayPostgres, migrations: Path, schemas: Path) -> list[str]:
    return [str(d) for d in schema.drift(migrations, schemas, pg=cluster)]


def test_the_schema_files_declare_exactly_what_the_migrations_build(
    cluster: ThrowawayPostgres, database: Database
) -> None:
    """`database` is a copy of the session's migrated template; the schema files are built beside it."""
    with schema.Databases(cluster) as dbs:
        found = schema.differences(schema.catalog(database.dsn()), dbs.entries(dbs.from_schema_files()))
    if found:
        pytest.fail(schema.drift_report(found), pytrace=False)


def test_a_function_changed_only_in_a_migration_is_named(
    cluster: ThrowawayPostgres, migrations: Path
) -> None:
    (migrations / "29991231000000_drift_probe.sql").write_text(WIDER_REQUIRE_OWNER)
    assert drift_of(cluster, migrations, schema.SCHEMAS_DIR) == [f"changed  {REQUIRE_OWNER}"]


def test_objects_changed_only_in_a_schema_file_are_named(cluster: ThrowawayPostgres, schemas: Path) -> None:
    plant(
        schemas,
        WIDER_REQUIRE_OWNER
        + "create policy drift_probe on public.contacts for select to authenticated using (false);\n"
        + "alter table public.clinics add column drift_probe text;\n",
    )
    assert sorted(drift_of(cluster, DEFAULT_MIGRATIONS_DIR, schemas)) == [
        "added    POLICY public.contacts drift_probe",
        f"changed  {REQUIRE_OWNER}",
        "changed  TABLE public.clinics",
    ]


def test_a_comment_outside_a_function_body_is_no_difference(cluster: ThrowawayPostgres, schemas: Path) -> None:
    """Reasons live beside the objects in the schema files; only what the database holds is compared."""
    first = sorted(schemas.glob("*.sql"))[0]
    first.write_text("-- a reason, for the reader only\n" + first.read_text().replace("\n\n", "\n\n-- another\n", 3))
    assert drift_of(cluster, DEFAULT_MIGRATIONS_DIR, schemas) == []


def test_the_generator_writes_the_migration_for_a_changed_function_and_its_grants(
    cluster: ThrowawayPostgres, schemas: Path, migrations: Path
) -> None:
    plant(
        schemas,
        WIDER_REQUIRE_OWNER
        + "grant execute on function private.require_owner(text) to authenticated;\n"
        + "create index drift_probe_idx on public.appointments (created_at);\n",
    )
    now = dt.datetime(2999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)

    file_name, text = schema.generate_migration("wider_owner", migrations, schemas, now=now, pg=cluster)

    assert file_name == "29991231235959_wider_owner.sql"
    assert "CREATE OR REPLACE FUNCTION private.require_owner(p_owner text) RETURNS void" in text
    assert "between 1 and 100" in text
    assert "GRANT ALL ON FUNCTION private.require_owner(p_owner text) TO authenticated;" in text
    assert "CREATE INDEX drift_probe_idx ON public.appointments USING btree (created_at);" in text
    assert "OWNER TO migrator" not in text  # a real project's migrations are applied by its own `postgres`
    assert re.search(r"^--   changed  FUNCTION private\.require_owner", text, re.M)
    # With the generated file in the history, the two agree again.
    (migrations / file_name).write_text(text)
    assert drift_of(cluster, migrations, schemas) == []


def test_the_generator_drops_what_the_schema_files_no_longer_declare(
    cluster: ThrowawayPostgres, schemas: Path, migrations: Path
) -> None:
    (migrations / "29991231000000_probe_function.sql").write_text(
        "create function private.drift_probe() returns int language sql immutable set search_path = ''"
        " as $$ select 1 $$;\n"
    )
    _, text = schema.generate_migration("drop_probe", migrations, schemas, pg=cluster)
    assert "drop function private.drift_probe();" in text


def test_the_generator_refuses_a_change_that_must_be_written_by_hand(
    cluster: ThrowawayPostgres, schemas: Path, migrations: Path
) -> None:
    plant(schemas, "alter table public.clinics add column drift_probe text;\n")
    before = sorted(p.name for p in migrations.iterdir())
    with pytest.raises(schema.SchemaError, match=r"by hand(?s:.*)changed  TABLE public\.clinics"):
        schema.generate_migration("add_probe", migrations, schemas, pg=cluster)
    assert sorted(p.name for p in migrations.iterdir()) == before


def test_the_generator_has_nothing_to_say_when_they_agree(cluster: ThrowawayPostgres) -> None:
    with pytest.raises(schema.SchemaError, match="agree: there is nothing to generate"):
        schema.generate_migration("nothing", pg=cluster)


def test_a_bad_migration_name_is_refused_before_anything_is_built() -> None:
    with pytest.raises(schema.SchemaError, match="lower_snake_case"):
        schema.generate_migration("Add Probe")


def test_the_check_command_names_the_objects_and_says_what_to_do(
    schemas: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(schemas, WIDER_REQUIRE_OWNER)
    assert schema.main(["check", "--schemas", str(schemas)]) == 1
    err = capsys.readouterr().err
    assert f"changed  {REQUIRE_OWNER}" in err
    assert "make migration NAME=" in err
    assert schema.main(["check"]) == 0
    assert "agree" in capsys.readouterr().out


def test_a_schema_file_that_does_not_build_is_named(cluster: ThrowawayPostgres, schemas: Path) -> None:
    plant(schemas, "create function private.broken( returns int;\n")
    with pytest.raises(schema.SchemaError, match=r"^90_operations\.sql: syntax error"):
        schema.drift(DEFAULT_MIGRATIONS_DIR, schemas, pg=cluster)


def test_our_policies_on_supabases_realtime_messages_are_compared(
    cluster: ThrowawayPostgres, migrations: Path, schemas: Path
) -> None:
    """pg_dump leaves Supabase's schemas out, and with them the policies that keep API users out of the
    daemon's doorbell topic; the comparison reads those from the catalog."""
    probe = "create policy drift_probe on realtime.messages for select to authenticated using (false);\n"
    (migrations / "29991231000000_drift_probe.sql").write_text(probe)
    assert drift_of(cluster, migrations, schema.SCHEMAS_DIR) == ["removed  POLICY realtime.messages drift_probe"]
    plant(schemas, probe.replace("using (false)", "using (true)"))
    assert drift_of(cluster, migrations, schemas) == ["changed  POLICY realtime.messages drift_probe"]
