"""What Supabase's advisor (splinter) would say about the schema, asked of pg_catalog directly.

Its security lints on functions: `anon_security_definer_function_executable` (0028),
`authenticated_security_definer_function_executable` (0029) and `function_search_path_mutable`
(0011). The one intended finding is 0028 on `vapi_tool_call`: Vapi calls it with the anon key.
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
