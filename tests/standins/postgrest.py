"""Calls a database function exactly as Supabase's REST gateway (PostgREST) does.

PostgREST logs in as `authenticator` and, per request and transaction-locally, sets `role`
(from the JWT's role claim), `request.jwt.claims`, `request.method`, `request.path` and
`request.headers` (JSON, lower-cased names), then runs `select <fn>($1::jsonb)` for a
function taking one unnamed jsonb parameter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

API_ROLES = ("anon", "authenticated", "service_role")


def set_request_context(
    conn: psycopg.Connection,
    *,
    role: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    claims: Mapping[str, Any] | None = None,
) -> None:
    """Inside an open transaction: become `role` with this request's settings."""
    if role not in API_ROLES:
        raise ValueError(f"PostgREST only switches to {API_ROLES}, not {role!r}")
    conn.execute(
        "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true),"
        " set_config('request.method', 'POST', true), set_config('request.path', %s, true),"
        " set_config('request.headers', %s, true)",
        (
            role,
            json.dumps({"role": role, **(claims or {})}),
            path,
            json.dumps({name.lower(): value for name, value in (headers or {}).items()}),
        ),
    )


def rpc(
    conn: psycopg.Connection,
    function: str,
    body: Any,
    *,
    role: str = "anon",
    headers: Mapping[str, str] | None = None,
    claims: Mapping[str, Any] | None = None,
) -> Any:
    """POST /rest/v1/rpc/<function> with `body`, committed as one transaction."""
    with conn.transaction():
        set_request_context(conn, role=role, path=f"/rpc/{function}", headers=headers, claims=claims)
        row = conn.execute(
            sql.SQL("select public.{}(%s::jsonb)").format(sql.Identifier(function)), (Jsonb(body),)
        ).fetchone()
    assert row is not None
    return row[0]
