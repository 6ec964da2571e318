"""What Supabase's advisor (splinter) would say about the schema, asked of pg_catalog directly.

Its security lints on functions: `anon_security_definer_function_executable` (0028),
`authenticated_security_definer_function_executable` (0029) and `function_search_path_mutable`
(0011). The one intended finding is 0028 on `vapi_tool_call`: Vapi calls it with the anon key.

Its lints on tables, each the same rule as splinter's definition (github.com/supabase/splinter, lints/),
written here over pg_catalog: `unindexed_foreign_keys` (0001), `no_primary_key` (0004),
`policy_exists_rls_disabled` (0007), `rls_enabled_no_policy` (0008), `duplicate_index` (0009),
`rls_disabled_in_public` (0013) and `multiple_permissive_policies` (0006). None of them has a finding:
the service-role-only tables (calendar_channels, clinic_links) say so with a restrictive policy no other
role gets past, rather than having no policy at all.
"""

from __future__ import annotations

import psycopg

from tests.standins.postgrest import EXPOSED_SCHEMA

API_ROLES = ("anon", "authenticated", "service_role")

# Every SECURITY DEFINER function in the exposed schema, and exactly the API roles that may run it.
INTENDED_EXECUTORS = {
    "vapi_tool_call(json)": {"anon"},
    "readiness_facts()": {"service_role"},
}

# Schemas the advisor leaves alone (Supabase's own and extensions').
ADVISOR_SKIPS = (
    "auth",
    "extensions",
    "information_schema",
    "pg_catalog",
    "realtime",
    "supabase_migrations",
    "pg_toast",
)


def security_definer_executors(admin: psycopg.Connection) -> dict[str, set[str]]:
    rows = admin.execute(
        "select p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')', r.role"
        " from pg_catalog.pg_proc p"
        " cross join unnest(%s::text[]) as r(role)"
        " where p.pronamespace = %s::regnamespace and p.prosecdef"
        "   and pg_catalog.has_function_privilege(r.role, p.oid, 'EXECUTE')",
        (list(API_ROLES), EXPOSED_SCHEMA),
    ).fetchall()
    definers = admin.execute(
        "select p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')'"
        " from pg_catalog.pg_proc p where p.pronamespace = %s::regnamespace and p.prosecdef",
        (EXPOSED_SCHEMA,),
    ).fetchall()
    executors: dict[str, set[str]] = {name: set() for (name,) in definers}
    for name, role in rows:
        executors[name].add(role)
    return executors


def test_each_security_definer_function_in_the_api_is_executable_by_exactly_the_roles_that_need_it(
    admin: psycopg.Connection,
) -> None:
    assert security_definer_executors(admin) == INTENDED_EXECUTORS


def test_the_advisors_only_function_finding_is_anon_running_the_vapi_entry_point(admin: psycopg.Connection) -> None:
    by_lint = {}
    for lint, role in (
        ("anon_security_definer_function_executable", "anon"),
        ("authenticated_security_definer_function_executable", "authenticated"),
    ):
        by_lint[lint] = [
            name
            for (name,) in admin.execute(
                "select n.nspname || '.' || p.proname from pg_catalog.pg_proc p"
                " join pg_catalog.pg_namespace n on n.oid = p.pronamespace"
                " where p.prosecdef and n.nspname = %s and pg_catalog.has_function_privilege(%s, p.oid, 'EXECUTE')"
                " order by 1",
                (EXPOSED_SCHEMA, role),
            ).fetchall()
        ]
    by_lint["function_search_path_mutable"] = [
        name
        for (name,) in admin.execute(
            "select n.nspname || '.' || p.proname from pg_catalog.pg_proc p"
            " join pg_catalog.pg_namespace n on n.oid = p.pronamespace"
            " left join pg_catalog.pg_depend d on d.objid = p.oid and d.deptype = 'e'"
            " where n.nspname <> all(%s) and n.nspname !~ '^pg_' and d.objid is null"
            "   and not exists (select from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%%')"
            " order by 1",
            (list(ADVISOR_SKIPS),),
        ).fetchall()
    ]
    assert by_lint == {
        "anon_security_definer_function_executable": ["public.vapi_tool_call"],
        "authenticated_security_definer_function_executable": [],
        "function_search_path_mutable": [],
    }


# The table lints ------------------------------------------------------------------------------------------------
# Each looks at ordinary tables outside the schemas the advisor leaves alone, and not at tables an extension owns.

ADVISED_TABLES = """
  select c.oid, n.nspname || '.' || c.relname as name
    from pg_catalog.pg_class c
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
   where c.relkind = 'r' and n.nspname <> all(%(skips)s) and n.nspname !~ '^pg_'
     and not exists (select from pg_catalog.pg_depend d where d.objid = c.oid and d.deptype = 'e')
"""


def advised(admin: psycopg.Connection, query: str, **params: object) -> list[str]:
    """The names `query` finds; it reads the advised tables as `t` (oid, name)."""
    rows = admin.execute(
        f"with t as ({ADVISED_TABLES}) {query} order by 1", {"skips": list(ADVISOR_SKIPS), **params}
    ).fetchall()
    return [name for (name,) in rows]


def test_every_foreign_key_has_an_index_leading_with_its_columns(admin: psycopg.Connection) -> None:
    """0001 unindexed_foreign_keys: a valid index whose first columns are the key's, in the key's order (splinter
    does not look at a partial index's predicate). Without one, deleting a referenced row reads the whole table."""
    unindexed = advised(
        admin,
        "select t.name || '.' || k.conname from t join pg_catalog.pg_constraint k on k.conrelid = t.oid"
        " where k.contype = 'f'"
        "   and not exists (select from pg_catalog.pg_index i"
        "                    where i.indrelid = t.oid and i.indisvalid"
        "                      and (string_to_array(i.indkey::text, ' ')::smallint[])[1:cardinality(k.conkey)]"
        "                          = k.conkey)",
    )
    assert unindexed == []


def test_every_table_has_a_primary_key(admin: psycopg.Connection) -> None:
    """0004 no_primary_key."""
    without = advised(
        admin,
        "select t.name from t"
        " where not exists (select from pg_catalog.pg_index i where i.indrelid = t.oid and i.indisprimary)",
    )
    assert without == []


def test_every_table_with_row_level_security_has_a_policy(admin: psycopg.Connection) -> None:
    """0008 rls_enabled_no_policy. A table for the service role only (which bypasses RLS) has a restrictive
    `using (false)` policy saying so, so that a table whose policies were forgotten still stands out."""
    without = advised(
        admin,
        "select t.name from t join pg_catalog.pg_class c on c.oid = t.oid"
        " where c.relrowsecurity and not exists (select from pg_catalog.pg_policy p where p.polrelid = t.oid)",
    )
    assert without == []


def test_the_service_role_only_tables_let_no_other_role_past_their_policy(admin: psycopg.Connection) -> None:
    policies = admin.execute(
        "select tablename, policyname, permissive, roles::text[], cmd, qual, with_check from pg_catalog.pg_policies"
        " where schemaname = 'public' and tablename in ('calendar_channels', 'clinic_links') order by 1"
    ).fetchall()
    assert policies == [
        (table, "service_role_only", "RESTRICTIVE", ["public"], "ALL", "false", "false")
        for table in ("calendar_channels", "clinic_links")
    ]
    for table in ("calendar_channels", "clinic_links"):
        grantees = admin.execute(
            "select r.rolname from pg_catalog.pg_roles r"
            " where pg_catalog.has_table_privilege(r.oid, %s, 'SELECT, INSERT, UPDATE, DELETE')"
            "   and not r.rolsuper and not r.rolbypassrls and r.rolname !~ '^pg_'",
            (f"public.{table}",),
        ).fetchall()
        assert grantees == [], table  # the policy is the second lock: no role it applies to holds a grant


def test_no_table_has_policies_without_row_level_security(admin: psycopg.Connection) -> None:
    """0007 policy_exists_rls_disabled: policies on such a table do nothing."""
    found = advised(
        admin,
        "select t.name from t join pg_catalog.pg_class c on c.oid = t.oid"
        " where not c.relrowsecurity and exists (select from pg_catalog.pg_policy p where p.polrelid = t.oid)",
    )
    assert found == []


def test_no_table_the_api_roles_may_read_is_without_row_level_security(admin: psycopg.Connection) -> None:
    """0013 rls_disabled_in_public: in the schema PostgREST exposes, a table anon or authenticated may select from
    without RLS."""
    found = advised(
        admin,
        "select t.name from t join pg_catalog.pg_class c on c.oid = t.oid"
        " where not c.relrowsecurity and c.relnamespace = %(exposed)s::regnamespace"
        "   and (pg_catalog.has_table_privilege('anon', c.oid, 'SELECT')"
        "        or pg_catalog.has_table_privilege('authenticated', c.oid, 'SELECT'))",
        exposed=EXPOSED_SCHEMA,
    )
    assert found == []


def test_no_table_has_the_same_index_twice(admin: psycopg.Connection) -> None:
    """0009 duplicate_index: two indexes whose definitions differ only in their names."""
    found = advised(
        admin,
        "select t.name || ': ' || string_agg(x.indexname, ', ' order by x.indexname)"
        "  from t join pg_catalog.pg_class c on c.oid = t.oid"
        "  join pg_catalog.pg_indexes x on x.schemaname = c.relnamespace::regnamespace::text"
        "                              and x.tablename = c.relname"
        " group by t.name, replace(x.indexdef, x.indexname, '') having count(*) > 1",
    )
    assert found == []


def test_no_role_meets_two_permissive_policies_for_one_command(admin: psycopg.Connection) -> None:
    """0006 multiple_permissive_policies: each would be evaluated for every row (roles that bypass RLS, and
    PostgreSQL's and Supabase's administrators, do not count)."""
    found = advised(
        admin,
        "select t.name || ' ' || r.rolname || ' ' || a.command"
        "  from t join pg_catalog.pg_policy p on p.polrelid = t.oid and p.polpermissive"
        "  join pg_catalog.pg_roles r on r.oid = any (p.polroles) or p.polroles = '{0}'::oid[]"
        "  cross join lateral unnest(case p.polcmd when 'r' then '{SELECT}'::text[] when 'a' then '{INSERT}'"
        "                                     when 'w' then '{UPDATE}' when 'd' then '{DELETE}'"
        "                                     else '{SELECT,INSERT,UPDATE,DELETE}' end) a(command)"
        " where not r.rolbypassrls and r.rolname !~ '^pg_' and r.rolname not like 'supabase%%admin'"
        " group by t.name, r.rolname, a.command having count(*) > 1",
    )
    assert found == []
