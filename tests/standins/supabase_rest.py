"""A stand-in for Supabase's REST gateway (Kong in front of PostgREST 13), RPC endpoint only.

It serves `POST /rest/v1/rpc/<function>` over HTTP on 127.0.0.1 against the project's real
PostgreSQL, so the real `supabase` client (sync and async) and plain httpx can call database
functions exactly as a Vapi assistant or the daemon would in production:

- Gateway (Kong) layer: paths outside `/rest/v1/` get Kong's 404; a request without an `apikey`
  header (or `?apikey=`) gets 401 "No API key found in request"; an `apikey` that is neither a JWT
  signed with the project's secret nor the project's `sb_publishable_...` / `sb_secret_...` key gets
  401 "Invalid API key". A new key is replaced by a JWT minted for its role (anon / service_role), also
  when `Authorization: Bearer` carries the same key; legacy JWT keys can be switched off
  (`legacy_keys=False`). See tests/standins/api_keys.py for what is imitated and how.
- PostgREST layer: the JWT in `Authorization: Bearer ...` (else the apikey) is verified (HS256/384/512,
  `exp`/`nbf`/`iat` with PostgREST's 30 s leeway) and its `role` claim (default `anon`) is switched to.
  One transaction per request, on a connection logged in as `authenticator` (one connection per server
  thread, i.e. per HTTP connection; PostgreSQL applies authenticator's own role settings at login):
  READ ONLY for a STABLE or IMMUTABLE function (even on POST, as PostgREST does), then, transaction-
  locally and in PostgREST's order, `search_path` ("public", "public", "extensions"), the settings
  configured on the role (`alter role anon set statement_timeout = '3s'`, read from the catalogue with
  PostgREST's own query when the schema cache loads), `role`, `request.jwt.claims`, `request.method`,
  `request.path`, `request.headers`, and the function's own hoisted settings (`statement_timeout`,
  `work_mem`, ...): see tests.standins.postgrest.set_request_context.
- Calling convention, as PostgREST resolves it from its schema cache (here: pg_proc and role settings,
  cached until `reload_schema()` or a restart): body keys pick the overload whose parameters they name
  (those with defaults may be omitted); arguments are converted with `json_to_record`, as PostgREST does.
  If none matches, a function with one unnamed json/jsonb parameter gets the whole body. Bodies:
  `application/json` (also when no Content-Type is sent), `application/x-www-form-urlencoded` (named
  text arguments), and `text/plain` / `text/xml` / `application/octet-stream` for a function with one
  unnamed text / xml / bytea parameter; any other Content-Type is PostgREST 13's 400 "Content-Type not
  acceptable". `Prefer` preferences PostgREST does not know, `params=single-object` among them (removed
  in v13), are ignored, or refused with PGRST122 under `Prefer: handling=strict`.
- Results: set-returning -> JSON array; a single composite -> JSON object; void -> 204 without body;
  other scalars -> the JSON value. `response.status` / `response.headers` GUCs are honoured, and so is
  `RAISE SQLSTATE 'PGRST'` with JSON message and detail.
- Errors: PostgREST's SQLSTATE -> HTTP mapping, body `{"code", "details", "hint", "message"}`.

Not implemented (answered with an explicit error, never silently): tables and views (`/rest/v1/<table>`),
RPC over GET/HEAD, bulk calls with an array or `text/csv` body, `Accept` negotiation and filters on RPC
results. Not imitated: a role's `default_transaction_isolation`, `db-pre-request`, `Prefer: tx=rollback`,
`Prefer: timezone`.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

import jwt
import psycopg
from psycopg import sql

from tests.standins.api_keys import BearerApiKey, ProjectKeys, Refusal
from tests.standins.postgrest import API_ROLES, hoisted_settings, role_settings, set_request_context
from tests.standins.service import LocalServer

# The Supabase CLI's well-known local development secret; never a real project's.
TEST_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"

SCHEMA = "public"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
JSON_TYPES = ("json", "jsonb")
# Bodies passed whole to a function with one unnamed parameter of this type (PostgREST's raw payloads).
RAW_TYPES = {"text/plain": "text", "text/xml": "xml", "application/octet-stream": "bytea"}
# The preferences PostgREST 13 knows (`Prefer`); others are ignored, or refused under handling=strict.
KNOWN_PREFERENCES = frozenset(
    {
        "resolution=merge-duplicates", "resolution=ignore-duplicates", "return=representation", "return=minimal",
        "return=headers-only", "count=exact", "count=planned", "count=estimated", "tx=commit", "tx=rollback",
        "missing=default", "missing=null", "handling=strict", "handling=lenient",
    }
)  # fmt: skip
_KEY_LIFETIME_SECONDS = 10 * 365 * 24 * 3600
_JWT_LEEWAY_SECONDS = 30  # PostgREST's allowed clock skew for exp / nbf / iat
_JWT_ALGORITHMS = ["HS256", "HS384", "HS512"]


def make_api_key(role: str, secret: str = TEST_JWT_SECRET) -> str:
    """A key shaped like Supabase's legacy `anon` / `service_role` keys: an HS256 JWT that never expires soon."""
    issued = int(time.time())
    return jwt.encode(
        {"iss": "supabase", "role": role, "iat": issued, "exp": issued + _KEY_LIFETIME_SECONDS},
        secret,
        algorithm="HS256",
    )


# --- replies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes | None = None  # None: no body at all (204)
    headers: tuple[tuple[str, str], ...] = ()


def _json_reply(status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> _Reply:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return _Reply(status, body, (("Content-Type", JSON_CONTENT_TYPE), *headers))


def _error(
    status: int,
    code: str | None,
    message: str,
    details: Any = None,
    hint: Any = None,
    headers: Iterable[tuple[str, str]] = (),
) -> _Reply:
    return _json_reply(status, {"code": code, "details": details, "hint": hint, "message": message}, headers)


def _injected_fault(status: int) -> _Reply:
    """What a failing gateway says: PostgREST's own words for the statuses it produces itself."""
    if status == 503:
        return _error(
            503, "PGRST000", "Database connection error. Retrying the connection.", "injected by the stand-in"
        )
    if status == 504:
        return _error(504, "PGRST003", "Timed out acquiring connection from connection pool.")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = f"HTTP {status}"
    return _error(status, str(status), phrase, "injected by the stand-in")


def status_for_sqlstate(sqlstate: str, message: str, authenticated: bool) -> int:
    """PostgREST's SQLSTATE -> HTTP status mapping (`mapSQLtoHTTP`); unlisted codes are 400."""
    exact = {
        "23503": 409,  # foreign_key_violation
        "23505": 409,  # unique_violation
        "25006": 405,  # read_only_sql_transaction
        "53400": 500,  # config limit exceeded
        "57P01": 503,  # terminating connection due to administrator command
        "P0001": 400,  # default code for RAISE
        "42P01": 404,  # undefined table
        "42P17": 500,  # infinite recursion
    }
    if sqlstate in exact:
        return exact[sqlstate]
    if sqlstate == "21000":  # cardinality_violation; pg-safeupdate's refusal is the client's fault
        return 400 if message.endswith("requires a WHERE clause") else 500
    if sqlstate == "22023":  # a JWT role that does not exist
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if sqlstate == "42883":  # undefined function
        return 406 if message.startswith("function xmlagg(") else 404
    if sqlstate == "42501":  # insufficient privilege
        return 403 if authenticated else 401
    if sqlstate.startswith("PT"):
        digits = sqlstate[2:]
        return int(digits) if digits.isdigit() and 100 <= int(digits) <= 599 else 500
    by_class = {
        "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500, "39": 500,
        "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
        "P0": 500, "XX": 500,
    }  # fmt: skip
    return by_class.get(sqlstate[:2], 400)


def _db_error(error: psycopg.Error, authenticated: bool) -> _Reply:
    sqlstate = error.sqlstate or ""
    diag = error.diag
    message = diag.message_primary or str(error)
    detail = diag.message_detail
    if sqlstate == "PGRST":
        return _raised_pgrst(message, detail)
    status = status_for_sqlstate(sqlstate, message, authenticated)
    headers = [("WWW-Authenticate", "Bearer")] if status == 401 else []
    return _error(status, sqlstate, message, detail, diag.message_hint, headers)


def _raised_pgrst(message: str, detail: str | None) -> _Reply:
    """`RAISE SQLSTATE 'PGRST' USING message = '{"code":..,"message":..}', detail = '{"status":..,"headers":{}}'`."""
    hint_message = (
        "MESSAGE must be a JSON object with obligatory keys: 'code', 'message' and optional keys: 'details', 'hint'."
    )
    hint_detail = (
        "DETAIL must be a JSON object with obligatory keys: 'status', 'headers' and optional key: 'status_text'."
    )
    parse_error = "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error"
    try:
        body = json.loads(message)
        if not isinstance(body, dict) or "code" not in body or "message" not in body:
            raise ValueError
    except ValueError:
        return _error(500, "PGRST121", parse_error, f"Invalid JSON value for MESSAGE: '{message}'", hint_message)
    if detail is None:
        return _error(500, "PGRST121", parse_error, "DETAIL is missing in the RAISE statement", hint_detail)
    try:
        control = json.loads(detail)
        if not isinstance(control, dict) or not isinstance(control.get("status"), int) or "headers" not in control:
            raise ValueError
        headers = [(str(k), str(v)) for k, v in dict(control["headers"]).items()]
    except (ValueError, TypeError):
        return _error(500, "PGRST121", parse_error, f"Invalid JSON value for DETAIL: '{detail}'", hint_detail)
    payload = {k: body.get(k) for k in ("code", "details", "hint", "message")}
    return _json_reply(int(control["status"]), payload, headers)


# --- the schema cache -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Param:
    name: str  # "" when unnamed
    type: str  # format_type(), usable in SQL
    has_default: bool
    variadic: bool


@dataclass(frozen=True)
class _Function:
    name: str
    params: tuple[_Param, ...]
    returns_set: bool
    returns_composite: bool
    returns_void: bool
    read_only: bool = False  # STABLE or IMMUTABLE: PostgREST calls it in a READ ONLY transaction
    settings: tuple[tuple[str, str], ...] = ()  # its own SET clauses that PostgREST hoists to the transaction

    @property
    def takes_single_unnamed_json(self) -> bool:
        return self.takes_single_unnamed(*JSON_TYPES)

    def takes_single_unnamed(self, *types: str) -> bool:
        return len(self.params) == 1 and not self.params[0].name and self.params[0].type in types

    def accepts(self, keys: frozenset[str]) -> bool:
        """PostgREST's overload match: every required parameter named, no key that is not a parameter."""
        if not self.params:
            return not keys
        if any(not p.name for p in self.params):
            return False
        required = {p.name for p in self.params if not p.has_default}
        return required <= keys <= {p.name for p in self.params}

    def describe(self) -> str:
        params = ", ".join(f"{p.name} => {p.type}" for p in self.params)
        return f"{SCHEMA}.{self.name}({params})"


_INTROSPECT = """
select p.proretset,
       p.prorettype = 'pg_catalog.void'::pg_catalog.regtype,
       t.typtype = 'c' or p.prorettype = 'pg_catalog.record'::pg_catalog.regtype,
       p.pronargdefaults,
       coalesce(p.proargmodes::text[], pg_catalog.array_fill('i'::text, array[p.pronargs::int])),
       coalesce(p.proargnames, '{}'::text[]),
       array(select pg_catalog.format_type(a.oid, null)
             from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) with ordinality as a(oid, n)
             order by a.n),
       p.provolatile in ('s', 'i'),
       p.proconfig
from pg_catalog.pg_proc p
join pg_catalog.pg_type t on t.oid = p.prorettype
where p.pronamespace = %s::regnamespace and p.proname = %s and p.prokind = 'f'
order by p.oid
"""


def _introspect(conn: psycopg.Connection, name: str) -> list[_Function]:
    functions = []
    for returns_set, returns_void, composite, n_defaults, modes, names, types, read_only, config in conn.execute(
        _INTROSPECT, (SCHEMA, name)
    ).fetchall():
        inputs = [
            (names[i] if i < len(names) else "", types[i], mode == "v")
            for i, mode in enumerate(modes)
            if mode in ("i", "b", "v")
        ]
        first_default = len(inputs) - n_defaults
        params = tuple(
            _Param(arg_name, arg_type, i >= first_default, variadic)
            for i, (arg_name, arg_type, variadic) in enumerate(inputs)
        )
        functions.append(
            _Function(
                name,
                params,
                bool(returns_set),
                bool(composite),
                bool(returns_void),
                bool(read_only),
                tuple(hoisted_settings(config).items()),
            )
        )
    return functions


def _not_found(
    conn: psycopg.Connection, name: str, keys: list[str], overloads: list[_Function], raw_type: str | None = None
) -> _Reply:
    """PGRST202 in PostgREST's words, with its "Perhaps you meant" hint (difflib standing in for its fuzzy set)."""
    function = f"{SCHEMA}.{name}"
    if raw_type is not None:  # a text/xml/bytea body: only a function with one unnamed parameter of that type
        details = (
            f"Searched for the function {function} with a single unnamed {raw_type} parameter,"
            " but no matches were found in the schema cache."
        )
        return _error(404, "PGRST202", f"Could not find the function {function} in the schema cache", details)
    listed = ", ".join(keys)
    message = f"Could not find the function {function}{f'({listed})' if keys else ' without parameters'}"
    searched = f" with parameter{'s' if len(keys) > 1 else ''} {listed}" if keys else " without parameters"
    details = (
        f"Searched for the function {function}{searched} or with a single unnamed json/jsonb parameter,"
        " but no matches were found in the schema cache."
    )
    hint = None
    if overloads:
        signatures = {"(" + ", ".join(sorted(p.name for p in f.params)) + ")" for f in overloads}
        wanted = "(" + ", ".join(sorted(keys)) + ")"
        close = difflib.get_close_matches(wanted, sorted(signatures), n=1, cutoff=0.33)
        if close:
            hint = f"Perhaps you meant to call the function {function}{close[0]}"
    else:
        names = [
            row[0]
            for row in conn.execute(
                "select distinct proname from pg_catalog.pg_proc where pronamespace = %s::regnamespace",
                (SCHEMA,),
            ).fetchall()
        ]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
        if close:
            hint = f"Perhaps you meant to call the function {SCHEMA}.{close[0]}"
    return _error(404, "PGRST202", message + " in the schema cache", details, hint)


# --- one database session per server thread -------------------------------------------------


class _Session:
    """The handler thread's own `authenticator` connection, opened on first use and reopened when broken."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection | None = None

    def connection(self) -> psycopg.Connection:
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self.close()
        if self._conn is None:
            self._conn = psycopg.connect(self._dsn, autocommit=True, application_name="supabase-rest-standin")
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


class _Refused(Exception):
    def __init__(self, reply: _Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


# --- HTTP ---------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # not socketserver's 5, which resets connections when many arrive at once

    def __init__(self, address: tuple[str, int], standin: SupabaseRestStandIn) -> None:
        self.standin = standin
        self._clients_lock = threading.Lock()
        self._clients: dict[Any, threading.Thread] = {}
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True, name="supabase-rest"
        )
        with self._clients_lock:
            self._clients[request] = thread
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._clients_lock:
                self._clients.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (or a socket closed by stop()) is not worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def close_clients(self, timeout: float) -> None:
        """End kept-alive connections too, so a stopped gateway refuses every request."""
        with self._clients_lock:
            clients = list(self._clients.items())
        for sock, _ in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in clients:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "supabase-rest-standin"
    disable_nagle_algorithm = True  # headers and body are separate writes; no 40 ms delayed-ACK stalls
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self._session = _Session(self._server.standin.dsn)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._session.close()

    @property
    def _server(self) -> _Server:
        return cast(_Server, self.server)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self._serve()

    do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_POST

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(length)

    def _serve(self) -> None:
        standin = self._server.standin
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            reply = _error(400, "PGRST102", "Empty or invalid json", "unreadable request body")
        else:
            headers: dict[str, str] = {}
            for name, value in self.headers.items():
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            try:
                reply = standin._answer(self.command, self.path, headers, body, self._session)
            except Exception as error:  # a bug in the stand-in: say so loudly, as a 500
                traceback.print_exc()
                reply = _error(500, "STANDIN", f"stand-in failure: {error!r}")
        standin._record(self.command, urlsplit(self.path).path, reply.status)
        self._write(reply)

    def _write(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.body is not None:
            self.send_header("Content-Length", str(len(reply.body)))
        elif reply.status not in (204, 304) and reply.status >= 200:
            self.send_header("Content-Length", "0")
        self.end_headers()
        if reply.body is not None and self.command != "HEAD":
            self.wfile.write(reply.body)
        self.wfile.flush()


# --- the stand-in -------------------------------------------------------------------------------


class SupabaseRestStandIn(LocalServer):
    """Supabase's REST gateway for `POST /rest/v1/rpc/<function>`, over a real PostgreSQL."""

    def __init__(
        self,
        dsn: str,
        *,
        jwt_secret: str = TEST_JWT_SECRET,
        legacy_keys: bool = True,
        bearer_api_key: BearerApiKey = "minted",
    ) -> None:
        self.dsn = dsn  # a login as the `authenticator` role
        self.jwt_secret = jwt_secret
        self.keys = ProjectKeys(jwt_secret, legacy_keys=legacy_keys)
        self.bearer_api_key = bearer_api_key
        self.anon_key = self.keys.anon_key  # the legacy JWT keys (refused while legacy_keys is False)
        self.service_role_key = self.keys.service_role_key
        self.publishable_key = self.keys.publishable_key  # sb_publishable_...: the anon role
        self.secret_key = self.keys.secret_key  # sb_secret_...: the service role
        self._lock = threading.Lock()
        self._port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._failure_status = 503
        self._requests: list[tuple[str, str, int]] = []
        self._schema_cache: dict[str, list[_Function]] = {}
        self._role_settings: dict[str, dict[str, str]] | None = None

    # lifecycle

    def start(self) -> None:
        """Serve (again): after stop() the same port is reused when it is still free."""
        if self._server is not None:
            return
        try:
            server = _Server(("127.0.0.1", self._port), self)
        except OSError:
            if not self._port:
                raise
            server = _Server(("127.0.0.1", 0), self)
        self._port = server.server_address[1]
        self.reload_schema()  # PostgREST loads its schema cache when it starts
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="supabase-rest-accept"
        )
        thread.start()
        self._server, self._thread = server, thread

    def stop(self) -> None:
        """Stop listening and close every open connection; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        server.close_clients(timeout=5.0)

    # test controls

    def fail_next(self, times: int = 1, status: int = 503) -> None:
        """Answer the next `times` requests with `status` and a JSON error body, without touching the database."""
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        with self._lock:
            self._failures = max(0, times)
            self._failure_status = status

    def requests(self) -> list[tuple[str, str, int]]:
        """Every request so far: (method, path without the query string, status answered)."""
        with self._lock:
            return list(self._requests)

    def reload_schema(self) -> None:
        """Forget cached function signatures and role settings, like `NOTIFY pgrst, 'reload schema'`."""
        with self._lock:
            self._schema_cache.clear()
            self._role_settings = None

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._requests.append((method, path, status))

    # the gateway

    def _answer(self, method: str, target: str, headers: Mapping[str, str], body: bytes, session: _Session) -> _Reply:
        with self._lock:
            if self._failures > 0:
                self._failures -= 1
                return _injected_fault(self._failure_status)
        try:
            return self._route(method, target, headers, body, session)
        except _Refused as refused:
            return refused.reply

    def _route(self, method: str, target: str, headers: Mapping[str, str], body: bytes, session: _Session) -> _Reply:
        url = urlsplit(target)
        if not url.path.startswith("/rest/v1/"):
            return _json_reply(404, {"message": "no Route matched with those values"})  # Kong
        claims = self._authenticate(headers, parse_qs(url.query).get("apikey", [""])[-1])
        role = claims["role"]

        rest = url.path.removeprefix("/rest/v1")
        name = unquote(rest.removeprefix("/rpc/")) if rest.startswith("/rpc/") else ""
        if not name or "/" in name:
            return _error(
                404,
                "PGRST125",
                "Invalid path specified in request URL",
                "this stand-in serves only POST /rest/v1/rpc/<function>",
            )
        if method != "POST":
            return _error(
                405, "PGRST101", f"Cannot use the {method} method on RPC", "this stand-in calls functions by POST only"
            )
        profile = headers.get("content-profile")
        if profile is not None and profile != SCHEMA:
            return _error(406, "PGRST106", f"The schema must be one of the following: {SCHEMA}")

        _check_preferences(headers)
        media = _media_type(headers.get("content-type"))
        raw_type = RAW_TYPES.get(media)
        payload: Any = None
        if media in ("application/json", "application/vnd.pgrst.array+json"):
            try:
                text = body.decode().strip() or "{}"  # an empty body calls with no arguments, as in PostgREST
                payload = json.loads(text, parse_constant=_reject_constant)
            except ValueError:  # UnicodeDecodeError included
                return _error(400, "PGRST102", "Empty or invalid json")
        elif media == "application/x-www-form-urlencoded":
            try:
                payload = dict(parse_qsl(body.decode(), keep_blank_values=True))
            except ValueError:
                return _error(400, "PGRST102", "Empty or invalid json")
            text = json.dumps(payload)
        elif media == "text/csv":
            return _error(
                400, "PGRST102", "Content-Type not acceptable: text/csv", "this stand-in does not make bulk calls"
            )
        elif raw_type is None:
            return _error(400, "PGRST102", f"Content-Type not acceptable: {media}")

        try:
            conn = session.connection()
        except psycopg.Error as error:
            return _error(503, "PGRST000", "Database connection error. Retrying the connection.", str(error))
        try:
            if raw_type is not None:
                function = self._resolve_raw(conn, name, raw_type)
                query, params = _raw_call_query(function, body)
            else:
                function, whole_body, keys = self._resolve(
                    conn, name, payload, json_body=media != "application/x-www-form-urlencoded"
                )
                query, params = _call_query(function, whole_body, keys, text)
            settings = self._settings_of(conn, role)
        except psycopg.Error as error:
            return self._lost(error, session, role != "anon")
        return self._call(session, conn, name, function, query, params, role, claims, headers, settings)

    def _authenticate(self, headers: Mapping[str, str], apikey_param: str) -> dict[str, Any]:
        """Kong's key check, then PostgREST's JWT check; returns the claims (with `role`)."""
        apikey = headers.get("apikey") or apikey_param
        admitted = self.keys.admit(apikey)
        if isinstance(admitted, Refusal):
            raise _Refused(_json_reply(admitted.status, admitted.body))
        authorization = headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        token = credentials.strip() if scheme.lower() == "bearer" else admitted.token
        if admitted.minted and token == apikey and self.bearer_api_key == "minted":
            token = admitted.token  # the new key repeated in Authorization: the gateway forwards its minted JWT
        message = None
        claims: Any = None
        try:
            claims = jwt.decode(
                token,
                self.jwt_secret,
                algorithms=_JWT_ALGORITHMS,
                leeway=_JWT_LEEWAY_SECONDS,
                options={"verify_aud": False, "verify_iss": False},
            )
        except jwt.ExpiredSignatureError:
            message = "JWT expired"
        except jwt.ImmatureSignatureError:
            message = "JWTNotYetValid"
        except jwt.InvalidAlgorithmError:
            message = "JWSError JWSNoSignatures"
        except jwt.InvalidSignatureError:
            message = "JWSError JWSInvalidSignature"
        except jwt.PyJWTError:
            parts = token.count(".") + 1
            message = (
                "Empty JWT is sent in Authorization header"
                if not token
                else f"JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; got {parts})"
                if parts != 3
                else "JWSError JWSInvalidSignature"
            )
        if message is None and not isinstance(claims, dict):
            message = "Parsing claims failed"
        if message is not None:
            challenge = f'Bearer error="invalid_token", error_description="{message}"'
            raise _Refused(_error(401, "PGRST301", message, headers=[("WWW-Authenticate", challenge)]))
        role = claims.get("role", "anon")
        claims["role"] = role if isinstance(role, str) else json.dumps(role)
        return dict(claims)

    def _overloads(self, conn: psycopg.Connection, name: str) -> list[_Function]:
        with self._lock:
            cached = self._schema_cache.get(name)
        if cached is None:
            cached = _introspect(conn, name)
            if cached:  # misses are not cached, so a function created later is found
                with self._lock:
                    self._schema_cache[name] = cached
        return cached

    def _settings_of(self, conn: psycopg.Connection, role: str) -> dict[str, str]:
        """The role's configured settings, read as PostgREST reads them when it loads its schema cache."""
        with self._lock:
            settings = self._role_settings
        if settings is None:
            settings = role_settings(conn)
            with self._lock:
                self._role_settings = settings
        return dict(settings.get(role, {}))

    def _resolve_raw(self, conn: psycopg.Connection, name: str, raw_type: str) -> _Function:
        """A text/xml/bytea body goes whole to a function with one unnamed parameter of that type."""
        matches = [f for f in self._overloads(conn, name) if f.takes_single_unnamed(raw_type)]
        if len(matches) != 1:
            raise _Refused(_not_found(conn, name, [], matches, raw_type))
        return matches[0]

    def _resolve(
        self, conn: psycopg.Connection, name: str, payload: Any, *, json_body: bool = True
    ) -> tuple[_Function, bool, list[str]]:
        """Pick the overload PostgREST would call: (function, pass the whole body?, argument keys)."""
        cached = self._overloads(conn, name)
        keys = sorted(payload) if isinstance(payload, dict) else []
        matches = [f for f in cached if f.accepts(frozenset(keys))] if isinstance(payload, dict) else []
        if not matches and json_body:
            matches = [f for f in cached if f.takes_single_unnamed_json]
        if not matches:
            raise _Refused(_not_found(conn, name, keys, cached))
        if len(matches) > 1:
            raise _Refused(
                _error(
                    300,
                    "PGRST203",
                    "Could not choose the best candidate function between: " + ", ".join(f.describe() for f in matches),
                    hint="Try renaming the parameters or the function itself in the database"
                    " so function overloading can be resolved",
                )
            )
        function = matches[0]
        whole_body = not function.accepts(frozenset(keys)) or not isinstance(payload, dict)
        return function, whole_body and bool(function.params), keys

    def _call(
        self,
        session: _Session,
        conn: psycopg.Connection,
        name: str,
        function: _Function,
        query: sql.Composed,
        params: tuple[str, ...],
        role: str,
        claims: dict[str, Any],
        headers: Mapping[str, str],
        settings: Mapping[str, str],
    ) -> _Reply:
        authenticated = role != "anon"
        try:
            with conn.transaction():
                if function.read_only:
                    conn.execute("set transaction read only")
                if role not in API_ROLES:
                    # Let PostgreSQL refuse it, as it refuses PostgREST: authenticator may not become this role.
                    conn.execute("select set_config('role', %s, true)", (role,))
                    raise _Refused(_error(403, "42501", f'permission denied to set role "{role}"'))
                set_request_context(
                    conn,
                    role=role,
                    path=f"/rpc/{name}",
                    headers=headers,
                    claims=claims,
                    settings=settings,
                    function_settings=dict(function.settings),
                )
                row = conn.execute(query, params).fetchone()
                gucs = conn.execute(
                    "select current_setting('response.status', true), current_setting('response.headers', true)"
                ).fetchone()
        except psycopg.Error as error:
            if conn.closed or conn.broken or error.sqlstate is None:
                return self._lost(error, session, authenticated)
            return _db_error(error, authenticated)

        if function.returns_void:
            reply = _Reply(204)
        else:
            result = row[0] if row is not None and row[0] is not None else "null"
            reply = _Reply(200, result.encode(), (("Content-Type", JSON_CONTENT_TYPE),))
        return _apply_response_gucs(reply, gucs)

    @staticmethod
    def _lost(error: psycopg.Error, session: _Session, authenticated: bool) -> _Reply:
        if error.sqlstate is not None:
            return _db_error(error, authenticated)
        session.close()
        return _error(503, "PGRST001", "Database client error. Retrying the connection.", str(error) or None)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _media_type(content_type: str | None) -> str:
    """The body's media type, lower-cased without parameters; PostgREST reads a missing one as JSON."""
    if content_type is None:
        return "application/json"
    return content_type.split(";", 1)[0].strip().lower()


def _check_preferences(headers: Mapping[str, str]) -> None:
    """PostgREST ignores preferences it does not know (`params=single-object` since v13) unless handling=strict."""
    given = [p.strip() for p in headers.get("prefer", "").split(",") if p.strip()]
    unknown = [p for p in given if p not in KNOWN_PREFERENCES and not p.startswith(("timezone=", "max-affected="))]
    if unknown and "handling=strict" in given:
        raise _Refused(
            _error(
                400,
                "PGRST122",
                "Invalid preferences given with handling=strict",
                "Invalid preferences: " + ", ".join(unknown),
            )
        )


def _raw_call_query(function: _Function, body: bytes) -> tuple[sql.Composed, tuple[Any, ...]]:
    """`select fn($1::text)` with the raw body (PostgREST's text/plain, text/xml, application/octet-stream)."""
    value: Any = body if function.params[0].type == "bytea" else body.decode(errors="replace")
    call = sql.SQL("{}(%s::{})").format(sql.Identifier(SCHEMA, function.name), sql.SQL(function.params[0].type))
    if function.returns_void:
        return sql.SQL("select {}").format(call), (value,)
    if function.returns_set or function.returns_composite:
        aggregate = (
            "coalesce(pg_catalog.json_agg(pgrst_call), '[]')"
            if function.returns_set
            else ("coalesce(pg_catalog.json_agg(pgrst_call) -> 0, 'null')")
        )
        return sql.SQL("select ({})::text from {} pgrst_call").format(sql.SQL(aggregate), call), (value,)
    return sql.SQL("select pg_catalog.to_json({})::text").format(call), (value,)


def _call_query(
    function: _Function, whole_body: bool, keys: list[str], body: str
) -> tuple[sql.Composed, tuple[str, ...]]:
    """The SQL PostgREST would run for this call, returning the response body as JSON text."""
    target = sql.Identifier(SCHEMA, function.name)
    source: sql.Composable | None = None
    params: tuple[str, ...] = ()
    if whole_body:
        args: sql.Composable = sql.SQL("%s::{}").format(sql.SQL(function.params[0].type))
        params = (body,)
    else:
        used = [p for p in function.params if p.name in keys]
        args = sql.SQL(", ").join(
            sql.SQL("{}{} := pgrst_body.{}").format(
                sql.SQL("variadic " if p.variadic else ""), sql.Identifier(p.name), sql.Identifier(p.name)
            )
            for p in used
        )
        if used:
            columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(p.name), sql.SQL(p.type)) for p in used)
            source = sql.SQL("pg_catalog.json_to_record(%s::json) as pgrst_body({})").format(columns)
            params = (body,)
    call = sql.SQL("{}({})").format(target, args)

    def from_(*more: sql.Composable) -> sql.Composable:
        parts = [source, *more] if source is not None else list(more)
        if not parts:
            return sql.SQL("")
        return sql.SQL(" from ") + sql.SQL(" cross join lateral ").join(parts)

    if function.returns_void:
        query = sql.SQL("select {}{}").format(call, from_())
    elif function.returns_set or function.returns_composite:
        if function.returns_composite:
            rows: sql.Composable = sql.SQL("{} pgrst_call").format(call)
            value: sql.Composable = sql.SQL("pgrst_call")
        else:  # set of scalars
            rows = sql.SQL("(select pgrst_scalar from {} pgrst_scalar) pgrst_call").format(call)
            value = sql.SQL("pgrst_call.pgrst_scalar")
        aggregate = (
            sql.SQL("coalesce(pg_catalog.json_agg({}), '[]')")
            if function.returns_set
            else sql.SQL("coalesce(pg_catalog.json_agg({}) -> 0, 'null')")
        ).format(value)
        query = sql.SQL("select ({})::text{}").format(aggregate, from_(rows))
    else:
        query = sql.SQL("select pg_catalog.to_json({})::text{}").format(call, from_())
    return query, params


def _apply_response_gucs(reply: _Reply, gucs: tuple[Any, ...] | None) -> _Reply:
    """`set_config('response.status', ...)` and `set_config('response.headers', ...)` from the function."""
    status_text, headers_text = gucs if gucs is not None else (None, None)
    status = reply.status
    headers = list(reply.headers)
    if status_text:
        try:
            status = int(status_text)
            if not 100 <= status <= 599:
                raise ValueError
        except ValueError:
            return _error(500, "PGRST112", "response.status guc must be a valid status code")
    if headers_text:
        try:
            extra = json.loads(headers_text)
            if not isinstance(extra, list):
                raise ValueError
            for item in extra:
                if not isinstance(item, dict) or len(item) != 1:
                    raise ValueError
                [(name, value)] = item.items()
                if not isinstance(value, str):
                    raise ValueError
                headers = [h for h in headers if h[0].lower() != name.lower()] + [(name, value)]
        except ValueError:
            return _error(
                500,
                "PGRST111",
                "response.headers guc must be a JSON array composed of objects with a single key and a string value",
            )
    return _Reply(status, reply.body, tuple(headers))
