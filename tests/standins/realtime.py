"""A stand-in for Supabase Realtime: Phoenix channels (serializer vsn 1.0.0) with postgres_changes, broadcast,
Broadcast from Database and private channels (Realtime Authorization).

It serves `ws://127.0.0.1:PORT/realtime/v1/websocket` from a thread of its own, so the real `realtime`
client (`AsyncRealtimeClient`, as `supabase` builds it from SUPABASE_URL) talks to it as to Supabase. What it
says and when follows the Realtime server (supabase/realtime) and Phoenix, not the client's expectations:

- Handshake: the key comes from `?apikey=` (or an `x-api-key` header). First Supabase's API gateway
  (tests/standins/api_keys.py): a publishable or secret key (`sb_publishable_...`, `sb_secret_...`) becomes a
  JWT minted for its role (anon / service_role), an unknown one is refused with HTTP 401 "Invalid API key", and
  with `legacy_keys=False` a JWT key is refused with 401 "Legacy API keys are disabled" (the gateway's
  `{"message", "hint"}` body). Then Realtime's own check of the JWT: missing, not signed with the project's
  secret (HS256/384/512), expired, or without `role` and `exp` claims -> the upgrade is refused with HTTP 401
  and `{"error": "<Realtime's words>"}`; the WebSocket never opens. Any path but the socket's -> 404.
- Frames are Phoenix v1 JSON objects `{"event", "topic", "payload", "ref"}`. Like Phoenix's V1 serializer, what
  the server sends never carries `join_ref`, and server pushes have `"ref": null`.
- `heartbeat` on topic `phoenix` -> `phx_reply` ok with the same ref (null included). Anything else for a topic
  the connection has not joined -> `phx_reply` error `{"reason": "unmatched topic"}`; `phx_leave` -> ok.
- `phx_join` on `realtime:<name>`: the access token of the payload (else the socket's token; an `sb_...` access
  token is ignored for the socket's, as Realtime does) is checked as at the handshake; a bad one gets `phx_reply`
  error `{"reason": "<Code>: <message>"}`. With `config.private` the join is authorised as Realtime does it
  (Realtime.Tenants.Authorization): probe rows for the topic are inserted into `realtime.messages` (extension
  `broadcast`, and `presence` when presence is enabled), then selected with `role`, `realtime.topic`,
  `request.jwt.claims`, `request.jwt.claim.sub`/`.role` and `request.headers` (the upgrade's x- headers) set as
  the joining role, and rolled back. Unless the role may read one of them (the service role bypasses RLS; anon
  and authenticated need a policy; a failing check counts as no) the reply is error `{"reason": "Unauthorized:
  You do not have permissions to read from this Channel topic: <name>"}`. `config.broadcast.replay` is refused
  (public channels: Realtime's words; private: not implemented). Otherwise the reply is ok with
  `{"postgres_changes": [<each binding as sent, plus "id">]}` in the order of the request; an id is a hash of the
  binding (Realtime uses `:erlang.phash2`), so equal bindings share an id. Only after that reply are the bindings
  subscribed: each is resolved against the tables of the `supabase_realtime` publication *at that moment*
  (schema/table `*` or absent as in Realtime), filters are checked against the table. Then comes `system`
  `{"extension": "postgres_changes", "status": "ok", "message": "Subscribed to PostgreSQL", "channel": <name>}`,
  and from then on changes flow. A binding that matches no published table, or whose filter names a missing
  column or a value of the wrong type, fails the whole channel, as Realtime's one-transaction subscription
  insert does: `system` with `"status": "error"` and Realtime's message, and no changes at all.
  A join with `config.presence.enabled` gets `presence_state` `{}`; one with `config.broadcast.replication_ready`
  gets `system` `{"extension": "system", "status": "ok", "message": "Replication connection established"}` at
  once (the stand-in's LISTEN is its replication connection, up whenever it serves).
- Broadcast from Database: a row trigger `realtime_standin_broadcast` on `realtime.messages` (what
  `realtime.send` inserts into; tests/standins/supabase_bootstrap.sql creates Supabase's table and function)
  NOTIFYs after commit, in commit order, like the changes below. Realtime streams that table's inserts through a
  temporary logical replication slot; a trigger and LISTEN deliver the same rows in the same order, need no
  `wal_level = logical` on the test server, and lose the same messages (those committed while nobody listens),
  so the stand-in uses them. Each row goes to the channels joined to `realtime:<topic>` with the same privacy
  (a private message to private channels whose role may read the topic, a public one to public channels) as
  `broadcast` `{"event": <event>, "payload": <payload>, "type": "broadcast", "meta": {"id": <message id>}}`, the
  V1 serializer's rendering of Realtime's UserBroadcast. Rows without topic, event, private flag or a JSON
  payload (send_binary's) are not broadcast (stderr says so). Rolled-back messages never arrive.
- Changes: a row trigger `realtime_standin_capture` (on every published table; tables published later get it on
  the next join) NOTIFYs after commit, in commit order; `postgres_changes` is pushed to each joined channel with
  matching bindings as `{"ids": [...], "data": {"schema", "table", "commit_timestamp", "type", "columns",
  "record" (INSERT/UPDATE), "old_record" (UPDATE/DELETE), "errors": null}}`, shaped as Realtime's walrus does:
  `old_record` holds the replica identity (DEFAULT: the primary key; FULL: the whole row; NOTHING: null), a
  DELETE on a table with RLS keeps only the primary key, and DELETE has no `record` key. Filters are evaluated
  on the new row (DELETE: on the replica identity) with PostgreSQL's own `=` for the column type. The
  subscriber's role (the `role` claim of its token) must be able to select the row: with RLS on the table,
  INSERT/UPDATE are checked with `select exists(...)` as that role, with `request.jwt.claims` set (service_role
  bypasses RLS, anon sees nothing unless a policy says so); columns it may not select are left out. Records
  over 1 MiB keep only values of at most 64 bytes and carry `errors: ["Error 413: Payload Too Large"]`.
  `commit_timestamp` is when the stand-in received the transaction's first notification (UTC, ms, `Z`): one
  value per transaction, a few milliseconds after the real commit. Nothing is replayed: a change committed
  while nobody (or the stand-in itself) was listening is gone.
- `broadcast`: forwarded as `{"event": "broadcast", "payload": <as sent>}` to the other connections joined to the
  topic (with the same privacy), and to the sender too with `config.broadcast.self`; replied to (ok) only with
  `config.broadcast.ack`. On a private channel the role must also be allowed to write: Realtime inserts a message
  as that role (rolled back) once per channel, and a refusal by RLS drops every broadcast without a reply, ack or
  not. `presence` -> ok (presence is not tracked). `access_token` -> no reply; an `sb_...` one is ignored; an
  invalid token ends the channel (`system` error, then `phx_close`); a valid one re-evaluates a private channel's
  policies (a role no longer allowed to read ends it the same way) and re-announces "Subscribed to PostgreSQL".
  Other events on a joined topic get no reply, as in Realtime.

Not implemented, and refused out loud (join error or `system` error): the old topic-based join without
`config`, `select` column lists, filter operators other than `eq` (with or without `not.`), broadcast replay.
Tables without a primary key are not delivered (Realtime would send an error record); the stand-in says so
on stderr. It never prints row contents. Not imitated at all: rate limits and payload size limits, the
tenant's "private channels only" setting, presence tracking and presence authorisation beyond the join, the
periodic re-check of a token's expiry (a channel outlives its token here), Realtime's messages janitor.

Test controls: `drop_connections`, `close_connections`, `go_silent` / `resume`, `restart`; observation:
`connection_count`, `joins`, `messages_received`, `messages_sent` (every frame that crossed the wire to a
client). The controls block until done, and `close_connections`,
`stop` and `restart` wait for each client's closing handshake: from a coroutine on the loop the client runs
on, call them with `await asyncio.to_thread(...)`, or the client cannot answer until websockets gives up (10 s).
`start()` installs schema `realtime_standin` (a sequence, a table for payloads too large for NOTIFY, the trigger
functions, and the trigger on realtime.messages when that table exists) as the superuser; `stop()` removes
nothing from the database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import re
import sys
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import psycopg
from psycopg import sql
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.standins.api_keys import ProjectKeys, Refusal, is_new_key
from tests.standins.service import LocalServer
from tests.standins.supabase_rest import TEST_JWT_SECRET

PUBLICATION = "supabase_realtime"
SOCKET_PATH = "/realtime/v1/websocket"
NOTIFY_CHANNEL = "realtime_standin"
TRIGGER_NAME = "realtime_standin_capture"
PHOENIX_TOPIC = "phoenix"
TOPIC_PREFIX = "realtime:"
SUBSCRIBED_MESSAGE = "Subscribed to PostgreSQL"
REPLICATION_READY_MESSAGE = "Replication connection established"
MESSAGE_TRIGGER_NAME = "realtime_standin_broadcast"

_JWT_ALGORITHMS = ["HS256", "HS384", "HS512"]
_MAX_RECORD_BYTES = 1024 * 1024  # walrus' max_record_bytes
_MAX_TRUNCATED_VALUE_BYTES = 64
_FILTER_OPERATORS = (
    "eq",
    "neq",
    "lt",
    "lte",
    "gt",
    "gte",
    "in",
    "like",
    "ilike",
    "is",
    "match",
    "imatch",
    "isdistinct",
)
_ACTIONS = ("INSERT", "UPDATE", "DELETE")
_CONTROL_TIMEOUT_SECONDS = 15.0

_SETUP_SQL = """
select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('realtime_standin'));
create schema if not exists realtime_standin;
revoke all on schema realtime_standin from public;
create sequence if not exists realtime_standin.change_seq;
create table if not exists realtime_standin.spilled (
  id bigint primary key,
  body text not null,
  created_at timestamptz not null default pg_catalog.now()
);
create or replace function realtime_standin.capture() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  change_id bigint;
  body text;
begin
  if not exists (
    select
    from pg_catalog.pg_publication p
    join pg_catalog.pg_publication_tables t on t.pubname = p.pubname
    where p.pubname = 'supabase_realtime'
      and t.schemaname = tg_table_schema
      and t.tablename = tg_table_name
      and case tg_op when 'INSERT' then p.pubinsert when 'UPDATE' then p.pubupdate else p.pubdelete end
  ) then
    return null;
  end if;
  change_id := pg_catalog.nextval('realtime_standin.change_seq');
  body := pg_catalog.jsonb_build_object(
    'id', change_id,
    'xid', pg_catalog.txid_current(),
    'relid', tg_relid::bigint,
    'schema', tg_table_schema,
    'table', tg_table_name,
    'type', tg_op,
    'record', case when tg_op <> 'DELETE' then pg_catalog.to_jsonb(new) end,
    'old_record', case when tg_op <> 'INSERT' then pg_catalog.to_jsonb(old) end
  )::text;
  if pg_catalog.octet_length(body) > 7000 then  -- NOTIFY payloads must stay under 8000 bytes
    insert into realtime_standin.spilled (id, body) values (change_id, body);
    body := pg_catalog.jsonb_build_object('id', change_id, 'xid', pg_catalog.txid_current(), 'spilled', true)::text;
  end if;
  perform pg_catalog.pg_notify('realtime_standin', body);
  return null;
end
$$;
revoke all on function realtime_standin.capture() from public;
create or replace function realtime_standin.capture_message() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  change_id bigint := pg_catalog.nextval('realtime_standin.change_seq');
  body text;
begin
  body := pg_catalog.jsonb_build_object(
    'id', change_id,
    'xid', pg_catalog.txid_current(),
    'kind', 'message',
    'message_id', new.id,
    'topic', new.topic,
    'event', new.event,
    'private', new.private,
    'payload', new.payload,
    'binary', new.binary_payload is not null
  )::text;
  if pg_catalog.octet_length(body) > 7000 then
    insert into realtime_standin.spilled (id, body) values (change_id, body);
    body := pg_catalog.jsonb_build_object('id', change_id, 'xid', pg_catalog.txid_current(), 'spilled', true)::text;
  end if;
  perform pg_catalog.pg_notify('realtime_standin', body);
  return null;
end
$$;
revoke all on function realtime_standin.capture_message() from public;
do $$
begin
  if pg_catalog.to_regclass('realtime.messages') is not null and not exists (
    select from pg_catalog.pg_trigger
    where tgrelid = 'realtime.messages'::pg_catalog.regclass and tgname = 'realtime_standin_broadcast'
  ) then
    create trigger realtime_standin_broadcast after insert on realtime.messages
      for each row execute function realtime_standin.capture_message();
  end if;
end
$$;
delete from realtime_standin.spilled where created_at < pg_catalog.now() - interval '1 hour';
"""

# Realtime's read check (Realtime.Tenants.Authorization): probe messages inserted as the stand-in (which
# bypasses RLS), then selected as the joining role with its claims and the topic set; rolled back.
_SET_ROLE_SQL = """
select pg_catalog.set_config('role', %(role)s, true),
       pg_catalog.set_config('realtime.topic', %(topic)s, true),
       pg_catalog.set_config('request.jwt.claims', %(claims)s, true),
       pg_catalog.set_config('request.jwt.claim.sub', %(sub)s, true),
       pg_catalog.set_config('request.jwt.claim.role', %(role)s, true),
       pg_catalog.set_config('request.headers', %(headers)s, true)
"""

_PUBLISHED_SQL = """
select schemaname::text, tablename::text
from pg_catalog.pg_publication_tables
where pubname = %(pub)s
  and schemaname like (case %(schema)s when '*' then '%%' else %(schema)s end) escape ''
  and tablename like (case %(table)s when '*' then '%%' else %(table)s end) escape ''
order by 1, 2
"""

_HAS_TRIGGER_SQL = """
select exists (
  select
  from pg_catalog.pg_trigger g
  join pg_catalog.pg_class c on c.oid = g.tgrelid
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  where n.nspname = %s and c.relname = %s and g.tgname = %s
)
"""

_COLUMN_TYPE_SQL = """
select a.atttypid::pg_catalog.regtype::text
from pg_catalog.pg_attribute a
join pg_catalog.pg_class c on c.oid = a.attrelid
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where n.nspname = %s and c.relname = %s and a.attname = %s and a.attnum > 0 and not a.attisdropped
"""

_RELATION_SQL = """
select c.relreplident::text,
       c.relrowsecurity,
       array(select a.attname::text from pg_catalog.pg_attribute a
             where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped order by a.attnum),
       array(select t.typname::text from pg_catalog.pg_attribute a join pg_catalog.pg_type t on t.oid = a.atttypid
             where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped order by a.attnum),
       array(select a.atttypid::pg_catalog.regtype::text from pg_catalog.pg_attribute a
             where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped order by a.attnum),
       array(select a.attname::text from pg_catalog.pg_index i
             join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
             where i.indrelid = c.oid and i.indisprimary order by a.attnum),
       array(select a.attname::text from pg_catalog.pg_index i
             join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
             where i.indrelid = c.oid and i.indisreplident order by a.attnum)
from pg_catalog.pg_class c
where c.oid = %s
"""

_SELECTABLE_SQL = """
select array(
  select a.attname::text from pg_catalog.pg_attribute a
  where a.attrelid = %s and a.attnum > 0 and not a.attisdropped
    and pg_catalog.has_column_privilege(%s, a.attrelid, a.attnum, 'SELECT')
  order by a.attnum)
"""


def _warn(message: str) -> None:
    """Say something on stderr; callers never pass row contents."""
    print(f"realtime stand-in: {message}", file=sys.stderr, flush=True)


def _warn_bug(stage: str, error: BaseException) -> None:
    """A failure inside the stand-in: where, without the exception's message (it could quote a row)."""
    frames = "".join(traceback.format_tb(error.__traceback__))
    _warn(f"{type(error).__name__} while {stage} (message withheld: it may quote row data)\n{frames}")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _reply(topic: Any, ref: Any, status: str, response: Mapping[str, Any]) -> dict[str, Any]:
    """Phoenix V1 `phx_reply`: no join_ref, ever."""
    return {"event": "phx_reply", "topic": topic, "payload": {"status": status, "response": dict(response)}, "ref": ref}


def _push(topic: str, event: str, payload: Any, ref: str | None = None) -> dict[str, Any]:
    return {"event": event, "topic": topic, "payload": payload, "ref": ref}


def _http_refusal(status: int, body: Mapping[str, Any]) -> Response:
    data = _json(body).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("Connection", "close"),
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, data)


def _trim(
    row: Mapping[str, Any], selectable: frozenset[str], too_big: bool, keep: Iterable[str] | None = None
) -> dict[str, Any] | None:
    """A record as walrus sends it: selectable columns only; when too big, only values of at most 64 bytes."""
    allowed = selectable if keep is None else selectable & frozenset(keep)
    kept = {
        name: value
        for name, value in row.items()
        if name in allowed and (not too_big or len(_json(value).encode()) <= _MAX_TRUNCATED_VALUE_BYTES)
    }
    return kept or None  # jsonb_object_agg over nothing is null


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# --- tokens -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TokenProblem:
    kind: str  # missing | malformed | signature | signer | expired | claims
    message: str  # Realtime's words for it
    code: str  # the prefix Realtime puts before the message in a join error


def _verify_token(token: Any, secret: str) -> dict[str, Any] | _TokenProblem:
    """Realtime's check of a key or access token: a JWT signed with the project secret, with `role` and `exp`."""
    if not isinstance(token, str) or not token:
        return _TokenProblem("missing", "API key is missing", "MissingAPIKey")
    token = re.sub(r"\s", "", token)
    malformed = _TokenProblem("malformed", "The token provided is not a valid JWT", "MalformedJWT")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return malformed
    if header.get("alg") not in _JWT_ALGORITHMS:
        return _TokenProblem(
            "signer", "Failed to generate JWT signer, check your JWT secret or JWKS configuration", "JwtSignerError"
        )
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=_JWT_ALGORITHMS,
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
        )
    except jwt.InvalidSignatureError:
        return _TokenProblem("signature", "Failed to validate JWT signature", "JwtSignatureError")
    except jwt.PyJWTError:
        return malformed
    if not isinstance(claims, dict):
        return malformed
    if "role" not in claims or "exp" not in claims:
        return _TokenProblem("claims", "Fields `role` and `exp` are required in JWT", "InvalidJWTToken")
    exp = claims["exp"]
    now = int(time.time())
    if not isinstance(exp, int | float) or exp <= now:
        ago = now - int(exp) if isinstance(exp, int | float) else 0
        return _TokenProblem("expired", f"Token has expired {ago} seconds ago", "InvalidJWTToken")
    return claims


# --- subscriptions ------------------------------------------------------------------------------------


class _Refused(Exception):
    """A subscription Realtime would not make; the message is what its `system` error says."""


@dataclass(frozen=True)
class _Filter:
    column: str
    value: str
    negate: bool


@dataclass
class _Binding:
    id: int
    params: dict[str, Any]
    action: str  # "*" or INSERT / UPDATE / DELETE
    schema: str
    table: str  # may be "*"
    filters: tuple[_Filter, ...]
    # entity -> {filter column: its SQL type}; fixed when subscribed, as Realtime's subscription rows are
    entities: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def describe(self) -> str:
        """Realtime's `params_to_log`."""
        filters = ", ".join(
            f'{{{_json(f.column)}, "eq", {_json(f.value)}, {"true" if f.negate else "false"}}}' for f in self.filters
        )
        return f"event: {self.action}, schema: {self.schema}, table: {self.table}, filters: [{filters}], select: nil"


def _binding_id(params: Mapping[str, Any]) -> int:
    """A stable 27-bit id per distinct binding, like `:erlang.phash2(params)`; never 0 (the client ignores id 0)."""
    return zlib.crc32(_json(dict(sorted(params.items()))).encode()) & 0x7FFFFFF or 1


def _parse_filters(text: str) -> tuple[_Filter, ...]:
    if not text.strip():
        return ()
    filters = []
    for segment in text.strip().split(","):
        column, equals, rest = segment.strip().partition("=")
        parts = rest.split(".", 1)
        negate = False
        if len(parts) == 2 and parts[0] == "not":
            negate = True
            parts = parts[1].split(".", 1)
        if not equals or not column or len(parts) != 2 or parts[0] not in _FILTER_OPERATORS:
            raise _Refused(f"Error parsing `filter` params: {_json(rest.split('.') if rest else [segment])}")
        operator, value = parts
        if operator != "eq":
            raise _Refused(f"stand-in: filter operator `{operator}` is not implemented, only `eq` (filter: {text})")
        filters.append(_Filter(column, value, negate))
    return tuple(filters)


def _parse_binding(params: Any) -> _Binding:
    """Realtime's `parse_subscription_params`, for the part the stand-in implements."""
    if not isinstance(params, dict):
        raise _Refused(
            "No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: "
            + _json(params)
        )
    select = params.get("select")
    if isinstance(select, list) and any(isinstance(c, str) for c in select):
        raise _Refused("stand-in: `select` (column lists) is not implemented")
    event = params.get("event")
    action = event.upper() if isinstance(event, str) and event.upper() in _ACTIONS else "*"
    schema, table, text = params.get("schema"), params.get("table"), params.get("filter")
    filters: tuple[_Filter, ...] = ()
    if isinstance(schema, str) and isinstance(table, str) and isinstance(text, str):
        filters = _parse_filters(text)
    elif isinstance(schema, str) and isinstance(table, str) and "filter" not in params:
        pass
    elif isinstance(schema, str) and "table" not in params and "filter" not in params:
        table = "*"
    elif isinstance(table, str) and "schema" not in params and "filter" not in params:
        schema = "public"
    else:
        raise _Refused(
            "No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: "
            + _json(params)
        )
    assert isinstance(schema, str) and isinstance(table, str)
    return _Binding(_binding_id(params), dict(params), action, schema, table, filters)


@dataclass
class _Channel:
    client: _Client
    topic: str
    name: str
    join_ref: str | None
    token: str
    claims: dict[str, Any]
    ack_broadcast: bool
    self_broadcast: bool
    requested: list[Any]  # postgres_changes as the join asked for them
    bindings: list[_Binding] = field(default_factory=list)  # non-empty once changes flow
    private: bool = False
    presence_enabled: bool = False
    # Realtime Authorization (private channels only): what the RLS policies on realtime.messages allow
    broadcast_read: bool = True
    presence_read: bool = False
    broadcast_write: bool | None = None  # checked at the first broadcast the client sends

    def hears(self, topic: str, private: bool) -> bool:
        """Whether a broadcast to `topic` (a public or a private one) reaches this channel."""
        return self.topic == topic and self.private == private and (not private or self.broadcast_read)

    @property
    def current(self) -> bool:
        return self.client.channels.get(self.topic) is self


class _Client:
    """One WebSocket connection."""

    def __init__(self, ws: ServerConnection, token: str, headers: dict[str, str], closed: asyncio.Future[None]) -> None:
        self.ws = ws
        self.token = token  # the JWT Realtime got: the legacy key itself, or the one the gateway minted
        self.headers = headers  # the upgrade request's x- headers (Realtime's `request.headers` for policies)
        self.closed = closed
        self.channels: dict[str, _Channel] = {}
        self.outbox: asyncio.Queue[str] = asyncio.Queue()

    def send(self, message: Mapping[str, Any]) -> None:
        self.outbox.put_nowait(_json(message))


@dataclass(frozen=True)
class _Relation:
    relid: int
    replica_identity: str  # d / f / i / n
    rls: bool
    columns: tuple[tuple[str, str], ...]  # (name, typname) in attnum order
    sql_types: dict[str, str]
    primary_key: tuple[str, ...]
    identity_index: tuple[str, ...]

    @property
    def identity(self) -> tuple[str, ...]:
        if self.replica_identity == "f":
            return tuple(name for name, _ in self.columns)
        if self.replica_identity == "d":
            return self.primary_key
        if self.replica_identity == "i":
            return self.identity_index
        return ()


# --- the stand-in -------------------------------------------------------------------------------------


class RealtimeStandIn(LocalServer):
    """Supabase Realtime (postgres_changes + broadcast) over the project's real PostgreSQL, on 127.0.0.1.

    `url` is what SUPABASE_URL would be; the socket is at `<url>/realtime/v1/websocket`."""

    def __init__(self, dsn: str, *, jwt_secret: str = TEST_JWT_SECRET, legacy_keys: bool = True) -> None:
        self.dsn = dsn  # a superuser login: it installs the capture triggers and LISTENs
        self.jwt_secret = jwt_secret
        self.keys = ProjectKeys(jwt_secret, legacy_keys=legacy_keys)
        self.anon_key = self.keys.anon_key  # the legacy JWT keys (refused while legacy_keys is False)
        self.service_role_key = self.keys.service_role_key
        self.publishable_key = self.keys.publishable_key  # the same keys as a SupabaseRestStandIn's with this secret
        self.secret_key = self.keys.secret_key
        self._lock = threading.Lock()  # guards the observation counters below
        self._joins = 0
        self._received: list[dict[str, Any]] = []
        self._sent: list[str] = []
        self._connections = 0
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # The rest lives in the server's event loop and is only touched there.
        self._stop_event: asyncio.Event | None = None
        self._audible: asyncio.Event | None = None  # cleared while silent
        self._db_lock: asyncio.Lock | None = None
        self._db: psycopg.AsyncConnection | None = None
        self._clients: set[_Client] = set()
        self._handshakes: dict[ServerConnection, tuple[str, dict[str, str]]] = {}
        self._last_xid: Any = None
        self._last_stamp = ""

    # lifecycle

    def start(self) -> None:
        """Listen to the database, then serve; after stop() the same port is used again."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        thread = threading.Thread(target=self._run, args=(loop, ready), daemon=True, name="realtime-standin")
        thread.start()
        try:
            self._port = ready.result(timeout=60)
        except BaseException:
            thread.join(timeout=30)
            raise
        self._loop, self._thread = loop, thread

    def stop(self) -> None:
        """Close every connection (code 1001, as a server going away) and the LISTEN connection; idempotent."""
        loop, thread, stop_event = self._loop, self._thread, self._stop_event
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if stop_event is not None:
            loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout=60)
        if thread.is_alive():
            raise RuntimeError("the Realtime stand-in did not stop")

    def restart(self) -> None:
        """Stop, then serve again on the same port; whatever was committed in between is never delivered."""
        self.stop()
        self.start()

    def _run(self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[int]) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(ready))
        finally:
            try:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    async def _main(self, ready: concurrent.futures.Future[int]) -> None:
        self._stop_event = stop_event = asyncio.Event()
        self._audible = asyncio.Event()
        self._audible.set()
        self._db_lock = asyncio.Lock()
        self._clients = set()
        self._handshakes = {}
        db: psycopg.AsyncConnection | None = None
        listen: psycopg.AsyncConnection | None = None
        listener: asyncio.Task[None] | None = None
        server: Server | None = None
        try:
            db = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, application_name="realtime-standin")
            await db.execute(_SETUP_SQL)
            for schema, table in await self._published(db, "*", "*"):
                await self._ensure_trigger(db, schema, table)
            self._db = db
            listen = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, application_name="realtime-standin-listen"
            )
            await listen.execute(sql.SQL("listen {}").format(sql.Identifier(NOTIFY_CHANNEL)))
            listener = asyncio.create_task(self._listen(listen))
            server = await serve(
                self._serve_connection,
                "127.0.0.1",
                self._port,
                process_request=self._process_request,
                ping_interval=None,  # Phoenix does not ping; the client's heartbeat is the keepalive
                open_timeout=None,  # a silent stand-in keeps handshakes waiting; the client's timeout decides
                max_size=None,
            )
            port = int(next(iter(server.sockets)).getsockname()[1])
            ready.set_result(port)
            await stop_event.wait()
        except BaseException as error:
            if not ready.done():
                ready.set_exception(error)
            else:
                _warn_bug("serving", error)
        finally:
            self._audible.set()  # release handshakes and writers held by go_silent
            for client in list(self._clients):
                with contextlib.suppress(Exception):
                    client.ws.transport.resume_reading()
            if server is not None:
                server.close()
                await server.wait_closed()
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
            self._db = None
            for conn in (listen, db):
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()

    # faults and observation (called from other threads)

    def _control(self, action: Callable[[], Coroutine[Any, Any, None]]) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the stand-in is not running")
        asyncio.run_coroutine_threadsafe(action(), loop).result(timeout=_CONTROL_TIMEOUT_SECONDS)

    def drop_connections(self) -> None:
        """Abort every client's TCP connection: no close frame, the client sees an abnormal closure (1006)."""

        async def drop() -> None:
            clients = list(self._clients)
            for client in clients:
                client.ws.transport.abort()
            await self._until_gone(clients)

        self._control(drop)

    def close_connections(self) -> None:
        """Close every client connection cleanly: close frame with code 1000."""

        async def close() -> None:
            clients = list(self._clients)
            await asyncio.gather(*(client.ws.close(1000) for client in clients), return_exceptions=True)
            await self._until_gone(clients)

        self._control(close)

    def go_silent(self) -> None:
        """Keep connections open but answer nothing: no replies, no pongs, no changes; handshakes hang."""

        async def silence() -> None:
            assert self._audible is not None
            self._audible.clear()
            for client in self._clients:
                client.ws.transport.pause_reading()

        self._control(silence)

    def resume(self) -> None:
        """Undo go_silent. Frames that arrived meanwhile are answered now; changes meanwhile are lost."""

        async def speak() -> None:
            assert self._audible is not None
            for client in self._clients:
                client.ws.transport.resume_reading()
            self._audible.set()

        self._control(speak)

    def connection_count(self) -> int:
        """Open WebSocket connections (handshake completed, not yet closed)."""
        with self._lock:
            return self._connections

    def joins(self) -> int:
        """`phx_join` messages answered ok so far (across restarts)."""
        with self._lock:
            return self._joins

    def messages_sent(self) -> list[dict[str, Any]]:
        """Every frame sent to clients so far, in order (across restarts): what crossed the wire."""
        with self._lock:
            sent = list(self._sent)
        return [json.loads(text) for text in sent]

    def messages_received(self) -> list[dict[str, Any]]:
        """Every JSON-object frame received from clients so far, in order (across restarts)."""
        with self._lock:
            return list(self._received)

    @staticmethod
    async def _until_gone(clients: Iterable[_Client]) -> None:
        waiting = [client.closed for client in clients]
        if waiting:
            await asyncio.wait(waiting, timeout=_CONTROL_TIMEOUT_SECONDS)

    # the socket

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        assert self._audible is not None
        await self._audible.wait()
        url = urlsplit(request.path)
        if url.path.rstrip("/") != SOCKET_PATH:
            return _http_refusal(404, {"message": "no Route matched with those values"})
        query = parse_qs(url.query)
        vsn = query.get("vsn", ["1.0.0"])[-1]
        if vsn != "1.0.0":
            return _http_refusal(
                400, {"error": f"stand-in: only Phoenix serializer vsn 1.0.0 is implemented, not {vsn}"}
            )
        token = request.headers.get("x-api-key") or query.get("apikey", [""])[-1]
        if is_new_key(token) or (token and not self.keys.legacy_keys):
            # The API gateway in front of Realtime: a new key becomes a JWT minted for its role; a legacy one
            # is refused once the project switched legacy keys off. Everything else reaches Realtime as sent.
            admitted = self.keys.admit(token)
            if isinstance(admitted, Refusal):
                return _http_refusal(admitted.status, admitted.body)
            token = admitted.token
        verified = _verify_token(token, self.jwt_secret)
        if isinstance(verified, _TokenProblem):
            return _http_refusal(401, {"error": verified.message})
        x_headers = {
            name.lower(): value for name, value in request.headers.raw_items() if name.lower().startswith("x-")
        }
        self._handshakes[connection] = (token, x_headers)
        return None

    async def _serve_connection(self, ws: ServerConnection) -> None:
        assert self._audible is not None
        token, x_headers = self._handshakes.pop(ws, ("", {}))
        client = _Client(ws, token, x_headers, asyncio.get_running_loop().create_future())
        self._clients.add(client)
        with self._lock:
            self._connections += 1
        writer = asyncio.create_task(self._write(client))
        try:
            async for frame in ws:
                await self._audible.wait()
                try:
                    await self._on_frame(client, frame)
                    await self._after_frame(client)
                except Exception as error:  # a stand-in bug: say where, keep serving
                    _warn_bug("handling a client frame", error)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            client.channels.clear()
            with self._lock:
                self._connections -= 1
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            client.closed.set_result(None)

    async def _write(self, client: _Client) -> None:
        assert self._audible is not None
        with contextlib.suppress(ConnectionClosed):
            while True:
                text = await client.outbox.get()
                await self._audible.wait()
                await client.ws.send(text)
                with self._lock:
                    self._sent.append(text)

    async def _on_frame(self, client: _Client, frame: str | bytes) -> None:
        if not isinstance(frame, str):
            return  # the V1 serializer speaks text only; Realtime logs and ignores what it cannot decode
        try:
            message = json.loads(frame)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        with self._lock:
            self._received.append(message)
        topic, event, ref = message.get("topic"), message.get("event"), message.get("ref")
        payload = message.get("payload")
        if not isinstance(topic, str) or not isinstance(event, str):
            return  # Phoenix.Socket.InvalidMessageError: logged by Realtime, not answered
        if topic == PHOENIX_TOPIC and event == "heartbeat":
            client.send(_reply(topic, ref, "ok", {}))
            return
        if event == "phx_join":
            await self._join(client, topic, payload if isinstance(payload, dict) else {}, ref, message.get("join_ref"))
            return
        channel = client.channels.get(topic)
        if channel is None:
            if event == "phx_leave":
                client.send(_reply(topic, ref, "ok", {}))
            else:
                client.send(_reply(topic, ref, "error", {"reason": "unmatched topic"}))
            return
        if event == "phx_leave":
            del client.channels[topic]
            client.send(_reply(topic, ref, "ok", {}))
        elif event == "broadcast":
            if channel.private and not await self._may_write(channel):
                return  # Realtime drops it without a word, ack or not
            for other in self._clients:
                peer = other.channels.get(topic)
                if (
                    peer is not None
                    and peer.hears(topic, channel.private)
                    and (other is not client or channel.self_broadcast)
                ):
                    other.send(_push(topic, "broadcast", payload))
            if channel.ack_broadcast:
                client.send(_reply(topic, ref, "ok", {}))
        elif event == "presence":
            client.send(_reply(topic, ref, "ok", {}))
        elif event == "access_token":
            await self._refresh_token(channel, payload)
        # Anything else: Realtime's catch-all handle_in logs it and does not reply.

    async def _join(self, client: _Client, topic: str, payload: dict[str, Any], ref: Any, join_ref: Any) -> None:
        if not topic.startswith(TOPIC_PREFIX):
            client.send(_reply(topic, ref, "error", {"reason": "unmatched topic"}))
            return
        name = topic.removeprefix(TOPIC_PREFIX)
        if not name:
            client.send(_reply(topic, ref, "error", {"reason": "TopicNameRequired: You must provide a topic name"}))
            return
        token = payload.get("access_token") or payload.get("user_token")
        if not isinstance(token, str) or token.startswith("sb_"):
            token = client.token
        verified = _verify_token(token, self.jwt_secret)
        if isinstance(verified, _TokenProblem):
            client.send(_reply(topic, ref, "error", {"reason": f"{verified.code}: {verified.message}"}))
            return
        config = payload.get("config")
        if not isinstance(config, dict):
            reason = "stand-in: joins without `config` (the old topic-based API) are not implemented"
            client.send(_reply(topic, ref, "error", {"reason": reason}))
            return
        private = bool(config.get("private"))
        broadcast: dict[str, Any] = config["broadcast"] if isinstance(config.get("broadcast"), dict) else {}
        presence: dict[str, Any] = config["presence"] if isinstance(config.get("presence"), dict) else {}
        presence_enabled = bool(presence.get("enabled"))
        if broadcast.get("replay") is not None:
            reason = (
                "stand-in: broadcast replay is not implemented"
                if private
                else "UnableToReplayMessages: Replay is not allowed for public channels"
            )
            client.send(_reply(topic, ref, "error", {"reason": reason}))
            return
        reads = (True, False)
        if private:  # Realtime Authorization: the RLS policies on realtime.messages, as the joining role
            checked = await self._authorize_read(name, verified, client.headers, presence_enabled)
            if checked is None or not any(checked):
                reason = f"Unauthorized: You do not have permissions to read from this Channel topic: {name}"
                client.send(_reply(topic, ref, "error", {"reason": reason}))
                return
            reads = checked
        requested = config.get("postgres_changes")
        requested = [p for p in requested if p is not None] if isinstance(requested, list) else []
        channel = _Channel(
            client=client,
            topic=topic,
            name=name,
            join_ref=join_ref if isinstance(join_ref, str) else ref if isinstance(ref, str) else None,
            token=token,
            claims=verified,
            ack_broadcast=bool(broadcast.get("ack")),
            self_broadcast=bool(broadcast.get("self")),
            requested=requested,
            private=private,
            presence_enabled=presence_enabled,
            broadcast_read=reads[0],
            presence_read=reads[1],
        )
        client.channels[topic] = channel  # a second join on the topic replaces the first, as in Phoenix
        response = [{**p, "id": _binding_id(p)} if isinstance(p, dict) else p for p in requested]
        client.send(_reply(topic, ref, "ok", {"postgres_changes": response}))
        with self._lock:
            self._joins += 1
        if presence_enabled:
            client.send(_push(topic, "presence_state", {}))
        if broadcast.get("replication_ready"):
            # Broadcast from Database flows once Realtime's replication connection to the project is up; the
            # stand-in's (its LISTEN) is up whenever it serves, so it says so at once, as Realtime does then.
            ready = {"extension": "system", "status": "ok", "message": REPLICATION_READY_MESSAGE, "channel": name}
            client.send(_push(topic, "system", ready))

    def _context(self, name: str, claims: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
        """What Realtime sets before evaluating a channel's policies (Authorization.set_conn_config)."""
        role = claims.get("role")
        sub = claims.get("sub")
        return {
            "role": role if isinstance(role, str) else None,
            "topic": name,
            "claims": _json(dict(claims)),
            "sub": sub if isinstance(sub, str) else None,
            "headers": _json(dict(headers)),
        }

    async def _authorize_read(
        self, name: str, claims: Mapping[str, Any], headers: Mapping[str, str], presence: bool
    ) -> tuple[bool, bool] | None:
        """(broadcast read, presence read) for a private topic, as Realtime decides them: probe messages for the
        topic are inserted (by the stand-in, which bypasses RLS), then selected as the role, and rolled back.
        None when the check itself failed (no such role, no SELECT privilege, a policy that raises): Realtime
        then refuses the join as unauthorised too."""
        assert self._db_lock is not None
        probes = {extension: uuid.uuid4() for extension in (("broadcast", "presence") if presence else ("broadcast",))}
        async with self._db_lock:
            db = self._db
            if db is None:
                return None
            try:
                async with db.transaction(force_rollback=True):
                    for extension, probe in probes.items():
                        await db.execute(
                            "insert into realtime.messages (id, topic, extension) values (%s, %s, %s)",
                            (probe, name, extension),
                        )
                    await db.execute(_SET_ROLE_SQL, self._context(name, claims, headers))
                    cursor = await db.execute(
                        "select id from realtime.messages where id = any(%s)", (list(probes.values()),)
                    )
                    seen = {row[0] for row in await cursor.fetchall()}
            except psycopg.Error:
                return None
        return probes["broadcast"] in seen, probes.get("presence") in seen

    async def _may_write(self, channel: _Channel) -> bool:
        """Whether the channel's role may send broadcasts to its private topic: Realtime inserts a message as that
        role (in a transaction it rolls back); refused by RLS (42501) means no. Decided once per channel."""
        assert self._db_lock is not None
        if channel.broadcast_write is None:
            async with self._db_lock:
                db = self._db
                if db is None:
                    return False
                try:
                    async with db.transaction(force_rollback=True):
                        await db.execute(
                            _SET_ROLE_SQL, self._context(channel.name, channel.claims, channel.client.headers)
                        )
                        try:
                            async with db.transaction():
                                await db.execute(
                                    "insert into realtime.messages (topic, extension) values (%s, 'broadcast')",
                                    (channel.name,),
                                )
                            allowed = True
                        except psycopg.errors.InsufficientPrivilege:
                            allowed = False
                except psycopg.Error:
                    return False  # Realtime logs the error and drops the broadcast; it checks again next time
            channel.broadcast_write = allowed
        return channel.broadcast_write

    def _shut(self, channel: _Channel, message: str) -> None:
        """Realtime's shutdown_response: a `system` error, then the channel ends (phx_close)."""
        client = channel.client
        client.send(
            _push(
                channel.topic,
                "system",
                {"extension": "system", "status": "error", "message": message, "channel": channel.name},
            )
        )
        if channel.current:
            del client.channels[channel.topic]
        client.send(_push(channel.topic, "phx_close", {}, channel.join_ref))

    async def _after_frame(self, client: _Client) -> None:
        """Subscribe the bindings of channels joined by the frame just handled (after their join reply)."""
        for channel in list(client.channels.values()):
            if channel.requested and not channel.bindings:
                requested, channel.requested = channel.requested, []
                await self._subscribe(channel, requested)

    async def _refresh_token(self, channel: _Channel, payload: Any) -> None:
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or token.startswith("sb_") or token == channel.token:
            return
        verified = _verify_token(token, self.jwt_secret)
        client = channel.client
        if isinstance(verified, _TokenProblem):
            self._shut(channel, verified.message)
            return
        channel.token, channel.claims = token, verified
        if channel.private:  # the policies are evaluated again with the new claims
            reads = await self._authorize_read(channel.name, verified, client.headers, channel.presence_enabled)
            if not channel.current:
                return
            if reads is None or not any(reads):
                self._shut(channel, f"You do not have permissions to read from this Channel topic: {channel.name}")
                return
            if channel.broadcast_read and not reads[0]:
                self._shut(channel, f"You no longer have permission to read from this Channel topic: {channel.name}")
                return
            channel.broadcast_read, channel.presence_read = reads
            channel.broadcast_write = None
        if channel.bindings:  # Realtime re-subscribes with the new claims and says so again
            client.send(_push(channel.topic, "system", self._subscribed(channel)))

    @staticmethod
    def _subscribed(channel: _Channel) -> dict[str, Any]:
        return {"extension": "postgres_changes", "status": "ok", "message": SUBSCRIBED_MESSAGE, "channel": channel.name}

    async def _subscribe(self, channel: _Channel, requested: list[Any]) -> None:
        assert self._db_lock is not None
        try:
            bindings = [_parse_binding(params) for params in requested]
            async with self._db_lock:
                db = self._db
                if db is None:
                    return
                for binding in bindings:
                    await self._resolve(db, binding)
        except _Refused as refused:
            if channel.current:
                message = {
                    "extension": "postgres_changes",
                    "status": "error",
                    "message": str(refused),
                    "channel": channel.name,
                }
                channel.client.send(_push(channel.topic, "system", message))
            return
        if channel.current:
            channel.bindings = bindings
            channel.client.send(_push(channel.topic, "system", self._subscribed(channel)))

    async def _resolve(self, db: psycopg.AsyncConnection, binding: _Binding) -> None:
        """What inserting Realtime's subscription rows checks: published tables, filter columns and values."""
        entities = await self._published(db, binding.schema, binding.table)
        if not entities:
            raise _Refused(
                "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the"
                f" given connect parameters: [{binding.describe()}]"
            )
        for schema, table in entities:
            types: dict[str, str] = {}
            for f in binding.filters:
                try:
                    row = await (await db.execute(_COLUMN_TYPE_SQL, (schema, table, f.column))).fetchone()
                    if row is None:
                        raise _Refused(
                            self._exception(
                                binding, "ERROR P0001 (raise_exception)", f"invalid column for filter {f.column}"
                            )
                        )
                    types[f.column] = str(row[0])
                    await db.execute(sql.SQL("select (%s::text)::{}").format(sql.SQL(types[f.column])), (f.value,))
                except psycopg.Error as error:
                    state = f"ERROR {error.sqlstate} ({_snake(type(error).__name__)})"
                    raise _Refused(self._exception(binding, state, error.diag.message_primary or "")) from None
            binding.entities[(schema, table)] = types
            await self._ensure_trigger(db, schema, table)

    @staticmethod
    def _exception(binding: _Binding, state: str, message: str) -> str:
        return (
            "Unable to subscribe to changes with given parameters. An exception happened so please check your"
            f" connect parameters: [{binding.describe()}]. Exception: {state} {message}"
        )

    @staticmethod
    async def _published(db: psycopg.AsyncConnection, schema: str, table: str) -> list[tuple[str, str]]:
        cursor = await db.execute(_PUBLISHED_SQL, {"pub": PUBLICATION, "schema": schema, "table": table})
        return [(str(s), str(t)) for s, t in await cursor.fetchall()]

    @staticmethod
    async def _ensure_trigger(db: psycopg.AsyncConnection, schema: str, table: str) -> None:
        row = await (await db.execute(_HAS_TRIGGER_SQL, (schema, table, TRIGGER_NAME))).fetchone()
        if row is not None and row[0]:
            return
        with contextlib.suppress(psycopg.errors.DuplicateObject):
            await db.execute(
                sql.SQL(
                    "create trigger {} after insert or update or delete on {} for each row"
                    " execute function realtime_standin.capture()"
                ).format(sql.Identifier(TRIGGER_NAME), sql.Identifier(schema, table))
            )

    # changes

    async def _listen(self, conn: psycopg.AsyncConnection) -> None:
        try:
            async for notify in conn.notifies():
                try:
                    await self._dispatch(notify.payload)
                except Exception as error:  # a stand-in bug: say where, keep listening
                    _warn_bug("delivering a change", error)
        except psycopg.Error as error:  # the database went away: no more changes, and say so
            _warn_bug("listening for changes (no more changes will be delivered)", error)

    def _stamp(self, xid: Any) -> str:
        """One commit_timestamp per transaction: when its first notification arrived."""
        if xid is None or xid != self._last_xid:
            now = datetime.now(UTC)
            self._last_xid = xid
            self._last_stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        return self._last_stamp

    async def _dispatch(self, text: str) -> None:
        assert self._audible is not None and self._db_lock is not None
        change = json.loads(text)
        stamp = self._stamp(change.get("xid"))
        if not self._audible.is_set():
            return  # a silent server delivers nothing, and Realtime never replays
        if change.get("spilled"):
            async with self._db_lock:
                if self._db is None:
                    return
                cursor = await self._db.execute(
                    "select body from realtime_standin.spilled where id = %s", (change["id"],)
                )
                row = await cursor.fetchone()
            if row is None:
                return
            change = json.loads(row[0])
        if change.get("kind") == "message":
            self._broadcast_message(change)
            return
        entity = (str(change["schema"]), str(change["table"]))
        action = str(change["type"])
        targets: list[tuple[_Channel, list[_Binding]]] = []
        for client in self._clients:
            for channel in client.channels.values():
                matched = [b for b in channel.bindings if entity in b.entities and b.action in ("*", action)]
                if matched:
                    targets.append((channel, matched))
        if not targets:
            return
        async with self._db_lock:
            if self._db is not None and self._audible.is_set():
                await self._deliver(self._db, change, entity, action, stamp, targets)

    def _broadcast_message(self, message: Mapping[str, Any]) -> None:
        """A row inserted into realtime.messages, broadcast as Realtime's replication handler does: to the channels
        joined to its topic (private messages to private channels allowed to read, public to public ones), as a
        `broadcast` whose payload is `{"event", "payload", "type": "broadcast", "meta": {"id"}}`."""
        name, event, private = message.get("topic"), message.get("event"), message.get("private")
        if not isinstance(name, str) or not isinstance(event, str) or not isinstance(private, bool):
            _warn(
                "a realtime.messages row without topic, event or private was not broadcast (UnableToBroadcastChanges)"
            )
            return
        if message.get("binary") or message.get("payload") is None:
            _warn(f"a message to {name!r} without a JSON payload was not broadcast (the V1 serializer sends JSON only)")
            return
        topic = TOPIC_PREFIX + name
        body = {
            "event": event,
            "payload": message["payload"],
            "type": "broadcast",
            "meta": {"id": message.get("message_id")},
        }
        for client in self._clients:
            channel = client.channels.get(topic)
            if channel is not None and channel.hears(topic, private):
                client.send(_push(topic, "broadcast", body))

    async def _deliver(
        self,
        db: psycopg.AsyncConnection,
        change: Mapping[str, Any],
        entity: tuple[str, str],
        action: str,
        stamp: str,
        targets: list[tuple[_Channel, list[_Binding]]],
    ) -> None:
        relation = await self._relation(db, int(change["relid"]))
        if relation is None:
            return  # dropped since
        record: dict[str, Any] = change.get("record") or {}
        old_full: dict[str, Any] = change.get("old_record") or {}
        identity = relation.identity
        old: dict[str, Any] | None = None
        if action != "INSERT" and identity:
            old = {name: old_full[name] for name in identity if name in old_full}
        # walrus filters the new row; a DELETE has none and is filtered on its replica identity instead
        filter_row = record if action != "DELETE" else (old or {})
        verdicts = await self._filter_verdicts(db, entity, filter_row, targets)
        too_big = len(_json({"record": record, "old_record": old_full}).encode()) > _MAX_RECORD_BYTES
        views: dict[str, frozenset[str] | None] = {}
        for channel, bindings in targets:
            ids = [
                b.id
                for b in bindings
                if all(
                    verdicts.get((f.column, f.value, b.entities[entity].get(f.column, ""), f.negate)) for f in b.filters
                )
            ]
            if not ids or not channel.current:
                continue
            role = channel.claims.get("role")
            if not isinstance(role, str):
                continue
            key = _json([role, channel.claims])
            if key not in views:
                views[key] = await self._view(db, relation, entity, action, record, role, channel.claims)
            selectable = views[key]
            if selectable is None:
                continue

            data: dict[str, Any] = {
                "schema": entity[0],
                "table": entity[1],
                "commit_timestamp": stamp,
                "type": action,
                "columns": [{"name": n, "type": t} for n, t in relation.columns if n in selectable],
            }
            if action in ("INSERT", "UPDATE"):
                data["record"] = _trim(record, selectable, too_big)
            if action == "UPDATE":
                data["old_record"] = _trim(old, selectable, too_big) if old is not None else None
            if action == "DELETE":
                keep = relation.primary_key if relation.rls else None  # RLS cannot vet deletes: key only
                data["old_record"] = _trim(old, selectable, too_big, keep) if old is not None else None
            data["errors"] = ["Error 413: Payload Too Large"] if too_big else None
            channel.client.send(_push(channel.topic, "postgres_changes", {"ids": ids, "data": data}))

    @staticmethod
    async def _relation(db: psycopg.AsyncConnection, relid: int) -> _Relation | None:
        row = await (await db.execute(_RELATION_SQL, (relid,))).fetchone()
        if row is None:
            return None
        replident, rls, names, typnames, sql_types, pkey, identity_index = row
        return _Relation(
            relid=relid,
            replica_identity=str(replident),
            rls=bool(rls),
            columns=tuple(zip(names, typnames, strict=True)),
            sql_types=dict(zip(names, sql_types, strict=True)),
            primary_key=tuple(pkey),
            identity_index=tuple(identity_index),
        )

    @staticmethod
    async def _filter_verdicts(
        db: psycopg.AsyncConnection,
        entity: tuple[str, str],
        row: Mapping[str, Any],
        targets: list[tuple[_Channel, list[_Binding]]],
    ) -> dict[tuple[str, str, str, bool], bool]:
        """Each distinct filter's verdict on the row, compared as PostgreSQL compares the column's type."""
        checks = {
            (f.column, f.value, b.entities[entity].get(f.column, ""), f.negate)
            for _, bindings in targets
            for b in bindings
            for f in b.filters
        }
        verdicts = {check: False for check in checks}  # a column missing from the row, or null: not visible
        asked = [c for c in checks if c[2] and row.get(c[0]) is not None]
        if not asked:
            return verdicts
        parts = [
            sql.SQL("(%s::jsonb #>> '{{}}')::{} = (%s::text)::{}").format(sql.SQL(c[2]), sql.SQL(c[2])) for c in asked
        ]
        params: list[Any] = []
        for column, value, _, _ in asked:
            params += [_json(row[column]), value]
        try:
            result = await (await db.execute(sql.SQL("select ") + sql.SQL(", ").join(parts), params)).fetchone()
        except psycopg.Error:
            return verdicts
        assert result is not None
        for check, equal in zip(asked, result, strict=True):
            if equal is not None:
                verdicts[check] = bool(equal) != check[3]
        return verdicts

    @staticmethod
    async def _view(
        db: psycopg.AsyncConnection,
        relation: _Relation,
        entity: tuple[str, str],
        action: str,
        record: Mapping[str, Any],
        role: str,
        claims: Mapping[str, Any],
    ) -> frozenset[str] | None:
        """The columns `role` may see of this change, or None when it may not see the change at all."""
        try:
            row = await (await db.execute(_SELECTABLE_SQL, (relation.relid, role))).fetchone()
        except psycopg.Error:
            return None  # e.g. a role that does not exist
        selectable = frozenset(row[0]) if row is not None else frozenset()
        if action == "DELETE":
            return selectable  # walrus skips RLS for deletes (and trims them to the key when RLS is on)
        if not relation.primary_key:
            _warn(f"{entity[0]}.{entity[1]} has no primary key; Realtime would send 'Error 400: Bad Request'")
            return None
        if not set(relation.primary_key) <= selectable:
            _warn(f"role {role} may not select the key of {entity[0]}.{entity[1]}; Realtime would send 'Error 401'")
            return None
        if not relation.rls:
            return selectable
        condition = sql.SQL(" and ").join(
            sql.SQL("{} = (%s::jsonb #>> '{{}}')::{}").format(sql.Identifier(name), sql.SQL(relation.sql_types[name]))
            for name in relation.primary_key
        )
        query = sql.SQL("select exists (select 1 from {} where {})").format(sql.Identifier(*entity), condition)
        try:
            async with db.transaction():
                await db.execute(
                    "select pg_catalog.set_config('role', %s, true),"
                    " pg_catalog.set_config('request.jwt.claims', %s, true)",
                    (role, _json(dict(claims))),
                )
                visible = await (
                    await db.execute(query, [_json(record.get(n)) for n in relation.primary_key])
                ).fetchone()
        except psycopg.Error:
            return None  # e.g. no SELECT privilege on the table: Realtime sends nothing usable either
        return selectable if visible is not None and visible[0] else None
