"""Calls a database function exactly as Supabase's REST gateway (PostgREST 13) does.

PostgREST logs in as `authenticator` (whose own role settings PostgreSQL applies at login: on
Supabase `statement_timeout` and `lock_timeout` of 8 s) and runs each request as one transaction:

- `BEGIN ... READ ONLY` when the function is STABLE or IMMUTABLE (even on POST), else read-write;
- one statement of `set_config(..., true)` calls, in PostgREST's order (`txVarQuery`): `search_path`
  (the exposed schema, then `db-extra-search-path`: Supabase's is `public, extensions`), the settings
  configured on the role it switches to (`alter role anon set statement_timeout = '3s'`: only those
  a user may set, read from the catalogue as PostgREST's `queryRoleSettings` does), `role`,
  `request.jwt.claims`, `request.method`, `request.path`, `request.headers` (JSON, lower-cased names),
  then the function's own settings from `db-hoisted-tx-settings` (`statement_timeout`, `work_mem`, ...);
- then `select <fn>($1::json)` with the raw request body for a function taking one unnamed json/jsonb
  parameter.

`rpc()` is that whole request without HTTP; tests.standins.supabase_rest serves it over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

API_ROLES = ("anon", "authenticated", "service_role")
# The schema PostgREST exposes (`db-schemas`) and the rest of every request's search_path.
EXPOSED_SCHEMA = "public"
EXTRA_SEARCH_PATH = ("public", "extensions")  # Supabase's `db-extra-search-path`
# PostgREST's default `db-hoisted-tx-settings`: a function's own SET clauses for these become transaction settings.
HOISTED_SETTINGS = (
    "statement_timeout",
    "plan_filter.statement_cost_limit",
    "work_mem",
    "hash_mem_multiplier",
    "temp_buffers",
)

# PostgREST's `queryRoleSettings`: the settings of each role authenticator may become, that it may set.
ROLE_SETTINGS_QUERY = """
with role_setting as (
  select r.rolname, unnest(r.rolconfig) as setting
  from pg_catalog.pg_auth_members m
  join pg_catalog.pg_roles r on r.oid = m.roleid
  where m.member = pg_catalog.quote_ident(current_user)::regrole::oid
),
kv_settings as (
  select rolname, substr(setting, 1, strpos(setting, '=') - 1) as key,
         substr(setting, strpos(setting, '=') + 1) as value
  from role_setting
)
select kv.rolname, kv.key, kv.value
from kv_settings kv
join pg_catalog.pg_settings ps on ps.name = kv.key
  and (ps.context = 'user' or pg_catalog.has_parameter_privilege(current_user, ps.name, 'set'))
where kv.key <> 'default_transaction_isolation'
order by kv.rolname, kv.key
"""


def search_path(schema: str = EXPOSED_SCHEMA) -> str:
    """The search_path PostgREST sets: `"public", "public", "extensions"` (its escapeIdentList)."""
    return ", ".join('"' + name.replace('"', '""') + '"' for name in (schema, *EXTRA_SEARCH_PATH))


def role_settings(conn: psycopg.Connection) -> dict[str, dict[str, str]]:
    """{role: {setting: value}} as PostgREST reads it when it loads its schema cache (conn: as authenticator)."""
    found: dict[str, dict[str, str]] = {}
    for role, key, value in conn.execute(ROLE_SETTINGS_QUERY).fetchall():
        found.setdefault(role, {})[key] = value
    return found


def hoisted_settings(proconfig: list[str] | None) -> dict[str, str]:
    """The function's own settings PostgREST applies to the whole transaction (`db-hoisted-tx-settings`)."""
    pairs = (setting.split("=", 1) for setting in proconfig or [])
    return {key: value for key, value in pairs if key in HOISTED_SETTINGS}


def set_request_context(
    conn: psycopg.Connection,
    *,
    role: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    claims: Mapping[str, Any] | None = None,
    settings: Mapping[str, str] | None = None,
    function_settings: Mapping[str, str] | None = None,
) -> None:
    """Inside an open transaction: become `role` with this request's settings, in PostgREST's order.

    `settings`: the role's configured settings; read from the catalogue when not given (the REST stand-in
    passes what its schema cache holds)."""
    if role not in API_ROLES:
        raise ValueError(f"PostgREST only switches to {API_ROLES}, not {role!r}")
    if settings is None:
        settings = role_settings(conn).get(role, {})
    pairs: list[tuple[str, str]] = [
        ("search_path", search_path()),
        *settings.items(),
        ("role", role),
        ("request.jwt.claims", json.dumps({**(claims or {}), "role": role})),
        ("request.method", "POST"),
        ("request.path", path),
        ("request.headers", json.dumps({name.lower(): value for name, value in (headers or {}).items()})),
        *(function_settings or {}).items(),
    ]
    query = sql.SQL("select ") + sql.SQL(", ").join(sql.SQL("pg_catalog.set_config(%s, %s, true)") for _ in pairs)
    conn.execute(query, [value for pair in pairs for value in pair])


def _single_json_routine(conn: psycopg.Connection, function: str) -> tuple[str, bool, dict[str, str]]:
    """(parameter type, read only?, hoisted settings) of public.<function>(json|jsonb), as PostgREST's cache has it."""
    row = conn.execute(
        "select pg_catalog.format_type(p.proargtypes[0], null), p.provolatile in ('s', 'i'), p.proconfig"
        " from pg_catalog.pg_proc p"
        " where p.pronamespace = %s::regnamespace and p.proname = %s and p.pronargs = 1"
        " and p.proargtypes[0] in ('json'::regtype, 'jsonb'::regtype) and coalesce(p.proargnames[1], '') = ''",
        (EXPOSED_SCHEMA, function),
    ).fetchone()
    if row is None:
        raise LookupError(f"no function {EXPOSED_SCHEMA}.{function} with a single unnamed json/jsonb parameter")
    return str(row[0]), bool(row[1]), hoisted_settings(row[2])


def rpc(
    conn: psycopg.Connection,
    function: str,
    body: Any,
    *,
    role: str = "anon",
    headers: Mapping[str, str] | None = None,
    claims: Mapping[str, Any] | None = None,
) -> Any:
    """POST /rest/v1/rpc/<function> with `body` (JSON-encoded, as a client sends it), committed as one transaction.

    `conn`: autocommit, logged in as `authenticator`."""
    param_type, read_only, function_settings = _single_json_routine(conn, function)
    with conn.transaction():
        if read_only:
            conn.execute("set transaction read only")
        set_request_context(
            conn,
            role=role,
            path=f"/rpc/{function}",
            headers=headers,
            claims=claims,
            function_settings=function_settings,
        )
        row = conn.execute(
            sql.SQL("select {}(%s::{})").format(sql.Identifier(EXPOSED_SCHEMA, function), sql.SQL(param_type)),
            (json.dumps(body, ensure_ascii=False),),
        ).fetchone()
    assert row is not None
    return row[0]
