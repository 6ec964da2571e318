"""The Supabase REST gateway stand-in, driven by the real `supabase` client (sync and async) and plain httpx."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, acreate_client, create_client

from tests.conftest import Clinic, Database
from tests.dates import upcoming
from tests.standins.postgres import AUTHENTICATOR, scalar
from tests.standins.supabase_rest import TEST_JWT_SECRET, SupabaseRestStandIn, make_api_key
from tests.standins.vapi import VapiCall, tool_call

# supabase 2.34 itself passes postgrest its deprecated `timeout` / `verify` arguments.
pytestmark = pytest.mark.filterwarnings(r"ignore:The '(timeout|verify)' parameter is deprecated:DeprecationWarning")

TUESDAY = 2
ANON = make_api_key("anon")
OTHER_SECRET = "another-projects-secret-that-is-also-long-enough"

# Functions created by the superuser: PUBLIC may execute them unless revoked (as on Supabase).
PROBES = """
create table public.t_log (note text primary key);
grant select, insert on public.t_log to anon, authenticated, service_role;

create function public.t_add(a int, b int default 1) returns int language sql as $$ select a + b $$;
create function public.t_rows(n int) returns table (i int, label text) language sql
  as $$ select g, 'row ' || g from generate_series(1, n) g $$;
create function public.t_evens(n int) returns setof int language sql
  as $$ select g from generate_series(2, n, 2) g $$;
create function public.t_first_note() returns public.t_log language sql
  as $$ select * from public.t_log order by note limit 1 $$;
create function public.t_note(note text) returns void language sql
  as $$ insert into public.t_log values (note) $$;
create function public.t_fail(reason text) returns int language plpgsql as $$
begin
  insert into public.t_log values (reason);
  raise exception '%', reason using detail = 'it was asked to', hint = 'ask nicely';
end $$;
create function public.t_pay() returns int language plpgsql
  as $$ begin raise sqlstate 'PT402' using message = 'Payment required'; end $$;
create function public.t_created() returns text language plpgsql as $$
begin
  perform set_config('response.status', '201', true);
  perform set_config('response.headers', '[{"Location": "/things/1"}]', true);
  return 'made';
end $$;
create sequence public.t_seq;
grant usage on sequence public.t_seq to anon, authenticated, service_role;
-- STABLE, but calls a volatile function that writes: fine in a read-write transaction, refused in a READ ONLY one.
create function public.t_next() returns bigint language sql stable as $$ select nextval('public.t_seq') $$;
create function public.t_settings() returns jsonb language sql stable as $$
  select jsonb_build_object(
    'statement_timeout', current_setting('statement_timeout'), 'lock_timeout', current_setting('lock_timeout'),
    'search_path', current_setting('search_path'), 'read_only', current_setting('transaction_read_only'))
$$;
create function public.t_settings_rw() returns jsonb language sql volatile
  as $$ select public.t_settings() $$;
create function public.t_sleep(seconds float) returns text language sql
  as $$ select 'slept ' || pg_sleep(seconds)::text $$;
-- Its own statement_timeout, which PostgREST hoists to the whole transaction (db-hoisted-tx-settings).
create function public.t_hasty(seconds float) returns text language sql set statement_timeout = '500ms'
  as $$ select 'slept ' || pg_sleep(seconds)::text $$;
create function public.t_echo(text) returns text language sql as $$ select 'echo: ' || $1 $$;
create function public.t_one(j json) returns json language sql as $$ select j $$;
create function public.t_whoami() returns jsonb language sql as $$
  select jsonb_build_object(
    'current_user', current_user, 'role', current_setting('role'), 'auth_role', auth.role(),
    'claims', current_setting('request.jwt.claims', true)::jsonb,
    'headers', current_setting('request.headers', true)::jsonb,
    'path', current_setting('request.path', true), 'method', current_setting('request.method', true),
    'backend', pg_backend_pid())
$$;
"""


@pytest.fixture
def standin(database: Database) -> Iterator[SupabaseRestStandIn]:
    with SupabaseRestStandIn(database.dsn(AUTHENTICATOR)) as server:
        yield server


@pytest.fixture
def http(standin: SupabaseRestStandIn) -> Iterator[httpx.Client]:
    """One plain httpx client (building one costs ~50 ms of TLS setup, even for http://)."""
    with httpx.Client(base_url=standin.url) as client:
        yield client


@pytest.fixture
def probes(admin: psycopg.Connection) -> None:
    admin.execute(PROBES)


@contextlib.contextmanager
def supabase(url: str, key: str, **headers: str) -> Iterator[Client]:
    """The real sync client, with its HTTP connections closed afterwards."""
    options = ClientOptions()
    options.headers = {**options.headers, **headers}
    client = create_client(url, key, options)
    try:
        yield client
    finally:
        client.postgrest.aclose()  # (sic) the sync client's close


def call(client: Client, function: str, params: dict[str, Any] | None = None) -> Any:
    return client.rpc(function, params or {}).execute().data


def post(http: httpx.Client, function: str, body: Any = None, key: str = "", **headers: str) -> httpx.Response:
    """POST /rest/v1/rpc/<function> as Supabase's docs show it: apikey plus the same key as bearer token."""
    key = key or ANON
    return http.post(
        f"/rest/v1/rpc/{function}",
        json={} if body is None else body,
        headers={"apikey": key, "Authorization": f"Bearer {key}", **headers},
    )


def notes(admin: psycopg.Connection) -> list[str]:
    return [row[0] for row in admin.execute("select note from public.t_log order by note").fetchall()]


def test_api_keys_look_like_supabases_legacy_keys() -> None:
    key = make_api_key("service_role")
    claims = jwt.decode(key, TEST_JWT_SECRET, algorithms=["HS256"])
    assert jwt.get_unverified_header(key)["alg"] == "HS256"
    assert claims["iss"] == "supabase" and claims["role"] == "service_role"
    assert claims["exp"] > time.time() + 5 * 365 * 24 * 3600


def test_the_sync_client_calls_functions_by_named_parameters(
    standin: SupabaseRestStandIn, http: httpx.Client, probes: None, admin: psycopg.Connection
) -> None:
    with supabase(standin.url, standin.service_role_key) as client:
        assert call(client, "t_add", {"a": 2, "b": 3}) == 5
        assert call(client, "t_add", {"a": 2}) == 3  # b has a default
        assert call(client, "t_rows", {"n": 2}) == [{"i": 1, "label": "row 1"}, {"i": 2, "label": "row 2"}]
        assert call(client, "t_rows", {"n": 0}) == []
        assert call(client, "t_evens", {"n": 6}) == [2, 4, 6]
        # A single composite is an object, as in PostgREST >= 8; a missing row is an object of nulls.
        assert call(client, "t_first_note") == {"note": None}

        # void: PostgREST answers 204 without a body, and the client makes that an empty list.
        assert call(client, "t_note", {"note": "first"}) == []
        assert notes(admin) == ["first"]  # committed
        assert call(client, "t_first_note") == {"note": "first"}

    void = post(http, "t_note", {"note": "second"})
    assert (void.status_code, void.content, void.headers.get("content-type")) == (204, b"", None)
    scalar_reply = post(http, "t_add", {"a": 1, "b": 1})
    assert (scalar_reply.status_code, scalar_reply.text) == (200, "2")
    assert scalar_reply.headers["content-type"] == "application/json; charset=utf-8"
    assert standin.requests()[-2:] == [
        ("POST", "/rest/v1/rpc/t_note", 204),
        ("POST", "/rest/v1/rpc/t_add", 200),
    ]


def test_database_errors_reach_the_client_as_api_errors(
    standin: SupabaseRestStandIn, probes: None, admin: psycopg.Connection
) -> None:
    with supabase(standin.url, standin.service_role_key) as client:
        with pytest.raises(APIError) as raised:
            call(client, "t_fail", {"reason": "the diary is full"})
        error = raised.value
        assert (error.code, error.message) == ("P0001", "the diary is full")
        assert (error.details, error.hint) == ("it was asked to", "ask nicely")
        assert notes(admin) == []  # the function's insert was rolled back with it

        with pytest.raises(APIError) as raised:
            call(client, "t_pay")
        assert (raised.value.code, raised.value.message) == ("PT402", "Payment required")

        with pytest.raises(APIError) as raised:
            call(client, "t_nope", {"x": 1})
        assert raised.value.code == "PGRST202"
        assert raised.value.message == "Could not find the function public.t_nope(x) in the schema cache"

        with pytest.raises(APIError) as raised:
            call(client, "t_add", {"c": 1})
        assert raised.value.message == "Could not find the function public.t_add(c) in the schema cache"
        assert raised.value.details == (
            "Searched for the function public.t_add with parameter c or with a single unnamed json/jsonb"
            " parameter, but no matches were found in the schema cache."
        )
        assert raised.value.hint == "Perhaps you meant to call the function public.t_add(a, b)"

        with pytest.raises(APIError) as raised:
            call(client, "t_ad", {"a": 1})
        assert raised.value.hint == "Perhaps you meant to call the function public.t_add"
    assert [status for *_, status in standin.requests()] == [400, 402, 404, 404, 404]


def test_http_statuses_follow_postgrests_mapping(
    standin: SupabaseRestStandIn, http: httpx.Client, probes: None, clinic: Clinic
) -> None:
    authenticated = make_api_key("authenticated")
    assert post(http, "t_note", {"note": "dup"}).status_code == 204
    cases: list[tuple[str, dict[str, Any], str, int, str]] = [
        ("t_fail", {"reason": "no"}, standin.anon_key, 400, "P0001"),
        ("t_pay", {}, standin.anon_key, 402, "PT402"),
        ("t_note", {"note": "dup"}, standin.anon_key, 409, "23505"),
        ("t_add", {"a": "two"}, standin.anon_key, 400, "22P02"),
        ("issue_clinic_key", {"p_clinic_id": str(clinic.id)}, standin.anon_key, 401, "42501"),
        ("issue_clinic_key", {"p_clinic_id": str(clinic.id)}, authenticated, 403, "42501"),
        ("revoke_clinic_key", {"p_key_id": str(uuid.uuid4())}, standin.service_role_key, 500, "P0002"),
        ("t_nope", {}, standin.anon_key, 404, "PGRST202"),
    ]
    for function, body, key, status, code in cases:
        reply = post(http, function, body, key)
        assert (reply.status_code, reply.json()["code"]) == (status, code), (function, reply.text)
        assert set(reply.json()) == {"code", "message", "details", "hint"}
        assert (reply.headers.get("www-authenticate") == "Bearer") == (status == 401)

    issued = post(http, "issue_clinic_key", {"p_clinic_id": str(clinic.id)}, standin.service_role_key)
    assert issued.status_code == 200 and issued.json().startswith("ck_")

    created = post(http, "t_created")  # response.status / response.headers set by the function
    assert (created.status_code, created.json(), created.headers["location"]) == (201, "made", "/things/1")


def test_the_role_is_switched_and_request_headers_reach_the_database(
    standin: SupabaseRestStandIn, http: httpx.Client, probes: None
) -> None:
    with supabase(standin.url, standin.service_role_key, **{"X-Clinic-Key": "ck_from_header"}) as client:
        me = call(client, "t_whoami")
    assert (me["current_user"], me["role"], me["auth_role"]) == ("service_role",) * 3
    assert (me["path"], me["method"]) == ("/rpc/t_whoami", "POST")
    assert me["claims"]["iss"] == "supabase"
    headers = me["headers"]
    assert all(name == name.lower() for name in headers)
    assert headers["x-clinic-key"] == "ck_from_header"
    assert headers["apikey"] == standin.service_role_key
    assert headers["authorization"] == f"Bearer {standin.service_role_key}"
    # What the real client sends besides: its identity and the schema profile headers.
    assert headers["x-client-info"].startswith("supabase-py/")
    assert (headers["accept-profile"], headers["content-profile"]) == ("public", "public")

    with supabase(standin.url, standin.anon_key) as client:
        me = call(client, "t_whoami")
    assert (me["current_user"], me["role"], me["auth_role"]) == ("anon",) * 3

    # A signed-in user's JWT in Authorization wins over the apikey.
    user_id = str(uuid.uuid4())
    user_jwt = jwt.encode({"role": "authenticated", "sub": user_id, "exp": time.time() + 60}, TEST_JWT_SECRET)
    me = post(http, "t_whoami", Authorization=f"Bearer {user_jwt}").json()
    assert (me["current_user"], me["claims"]["sub"]) == ("authenticated", user_id)

    # Without Authorization, the apikey's role is used.
    me = http.post("/rest/v1/rpc/t_whoami", json={}, headers={"apikey": standin.service_role_key}).json()
    assert me["current_user"] == "service_role"


def test_vapi_tool_call_books_through_plain_httpx(
    standin: SupabaseRestStandIn, clinic: Clinic, admin: psycopg.Connection
) -> None:
    day = upcoming(TUESDAY)
    booking = tool_call("book_appointment", {"start": f"{day}T10:00", "patient_name": "Jane Doe"})
    envelope = VapiCall().message(booking)
    url = f"{standin.url}/rest/v1/rpc/vapi_tool_call"
    key = standin.anon_key

    reply = httpx.post(
        url, json=envelope, headers={"apikey": key, "Authorization": f"Bearer {key}", "x-clinic-key": clinic.key}
    )
    assert reply.status_code == 200
    [result] = reply.json()["results"]
    assert result["toolCallId"] == booking["id"]
    assert result["result"].startswith("Booked: Check-up on "), result
    assert scalar(admin, "select count(*) from public.appointments where clinic_id = %s", (clinic.id,)) == 1

    intruder = tool_call("book_appointment", {"start": f"{day}T11:00", "patient_name": "John Roe"})
    reply = httpx.post(
        url, json=VapiCall().message(intruder), headers={"apikey": key, "Authorization": f"Bearer {key}"}
    )
    assert reply.status_code == 200  # Vapi ignores other statuses: refusals are per call
    assert reply.json() == {
        "results": [
            {
                "toolCallId": intruder["id"],
                "error": "Not authorised: this assistant's clinic key is missing, wrong or revoked",
            }
        ]
    }
    assert scalar(admin, "select count(*) from public.appointments") == 1


def test_the_async_client_works_too(standin: SupabaseRestStandIn, probes: None) -> None:
    async def calls() -> tuple[Any, Any, Any]:
        client = await acreate_client(standin.url, standin.anon_key)
        try:
            total = (await client.rpc("t_add", {"a": 20, "b": 22}).execute()).data
            me = (await client.rpc("t_whoami").execute()).data
            try:
                await client.rpc("t_pay").execute()
            except APIError as error:
                refused: Any = error.code
            return total, me, refused
        finally:
            await client.postgrest.aclose()

    total, me, refused = asyncio.run(calls())
    assert (total, me["current_user"], refused) == (42, "anon", "PT402")


def test_the_gateway_refuses_bad_credentials_and_bad_requests(
    standin: SupabaseRestStandIn, http: httpx.Client, probes: None
) -> None:
    path = "/rest/v1/rpc/t_add"
    body = {"a": 1}

    missing = http.post(path, json=body)
    assert missing.status_code == 401
    assert missing.json()["message"] == "No API key found in request"
    assert missing.headers["content-type"] == "application/json; charset=utf-8"

    foreign_key = make_api_key("service_role", OTHER_SECRET)
    foreign = http.post(path, json=body, headers={"apikey": foreign_key})
    assert (foreign.status_code, foreign.json()["message"]) == (401, "Invalid API key")

    forged = jwt.encode({"role": "service_role"}, OTHER_SECRET)
    expired = jwt.encode({"role": "anon", "exp": int(time.time()) - 3600}, TEST_JWT_SECRET)
    for token, message in [
        (forged, "JWSError JWSInvalidSignature"),
        (expired, "JWT expired"),
        ("not-a-jwt", "JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; got 1)"),
    ]:
        reply = post(http, "t_add", body, Authorization=f"Bearer {token}")
        assert (reply.status_code, reply.json()["code"], reply.json()["message"]) == (401, "PGRST301", message)
        assert reply.headers["www-authenticate"].startswith('Bearer error="invalid_token"')

    with (
        supabase(standin.url, standin.anon_key, Authorization=f"Bearer {forged}") as client,
        pytest.raises(APIError) as raised,
    ):
        call(client, "t_add", body)
    assert (raised.value.code, raised.value.message) == ("PGRST301", "JWSError JWSInvalidSignature")

    headers = {"apikey": standin.anon_key}
    malformed = http.post(path, content=b"{not json", headers={**headers, "Content-Type": "application/json"})
    assert (malformed.status_code, malformed.json()["code"]) == (400, "PGRST102")
    elsewhere = http.post("/auth/v1/token", json={}, headers=headers)
    assert (elsewhere.status_code, elsewhere.json()) == (404, {"message": "no Route matched with those values"})
    assert http.get(path, headers=headers).status_code == 405
    other_schema = http.post(path, json=body, headers={**headers, "Content-Profile": "private"})
    assert (other_schema.status_code, other_schema.json()["code"]) == (406, "PGRST106")
    assert [status for *_, status in standin.requests()] == [401, 401, 401, 401, 401, 401, 400, 404, 405, 406]


def test_injected_failures_reach_the_client_without_touching_the_database(
    standin: SupabaseRestStandIn, http: httpx.Client, probes: None, admin: psycopg.Connection
) -> None:
    with supabase(standin.url, standin.anon_key) as client:
        standin.fail_next(status=503)
        # POST is never retried by the client (only GET/HEAD are), so the 503 surfaces as an APIError.
        with pytest.raises(APIError) as raised:
            call(client, "t_note", {"note": "lost"})
        assert (raised.value.code, raised.value.message) == (
            "PGRST000",
            "Database connection error. Retrying the connection.",
        )
        assert notes(admin) == []
        assert call(client, "t_note", {"note": "kept"}) == []
        assert notes(admin) == ["kept"]
    assert standin.requests() == [("POST", "/rest/v1/rpc/t_note", 503), ("POST", "/rest/v1/rpc/t_note", 204)]

    standin.fail_next(times=2, status=500)
    assert [post(http, "t_add", {"a": 1}).status_code for _ in range(3)] == [500, 500, 200]


def test_a_stopped_gateway_refuses_connections_and_a_restarted_one_serves_again(
    standin: SupabaseRestStandIn, probes: None
) -> None:
    url = standin.url
    with supabase(url, standin.anon_key) as client:
        assert call(client, "t_add", {"a": 1}) == 2  # leaves a kept-alive connection in the client's pool
        standin.stop()
        standin.stop()
        # Not retried (POST), and no APIError: the transport error reaches the caller as it is.
        with pytest.raises(httpx.ConnectError):
            call(client, "t_add", {"a": 1})
        standin.start()
        assert standin.url == url
        assert call(client, "t_add", {"a": 2}) == 3


def test_keep_alive_reuses_one_database_session_and_threads_serve_in_parallel(
    standin: SupabaseRestStandIn, http: httpx.Client, probes: None
) -> None:
    first = post(http, "t_whoami")
    second = post(http, "t_whoami")
    assert first.headers.get("connection") != "close"
    assert first.json()["backend"] == second.json()["backend"]  # one HTTP connection, one server thread

    # The shared client opens several connections when used from several threads at once.
    with ThreadPoolExecutor(max_workers=8) as pool:
        sums = list(pool.map(lambda n: post(http, "t_add", {"a": n, "b": n}).json(), range(24)))
    assert sums == [2 * n for n in range(24)]
    assert [status for *_, status in standin.requests()] == [200] * 26


# --- what PostgREST does per request: read-only calls, role settings, search_path, bodies, preferences -----


def test_stable_and_immutable_functions_run_in_a_read_only_transaction_even_on_post(
    http: httpx.Client, probes: None
) -> None:
    assert post(http, "t_settings").json()["read_only"] == "on"
    assert post(http, "t_settings_rw").json()["read_only"] == "off"  # volatile: read-write

    refused = post(http, "t_next")  # STABLE, yet it writes (a sequence): PostgREST refuses it
    assert (refused.status_code, refused.json()["code"]) == (405, "25006")
    assert refused.json()["message"] == "cannot execute nextval() in a read-only transaction"


def test_each_request_carries_its_roles_settings_and_postgrests_search_path(
    standin: SupabaseRestStandIn, http: httpx.Client, probes: None
) -> None:
    authenticated = make_api_key("authenticated")
    as_anon = post(http, "t_settings").json()
    as_service = post(http, "t_settings", key=standin.service_role_key).json()
    as_user = post(http, "t_settings", key=authenticated).json()
    # Supabase's role settings: anon 3 s; authenticated 8 s; the service role has none of its own, so
    # authenticator's (applied at login: 8 s statement and lock timeouts) stay in force.
    assert (as_anon["statement_timeout"], as_anon["lock_timeout"]) == ("3s", "8s")
    assert (as_user["statement_timeout"], as_service["statement_timeout"]) == ("8s", "8s")
    assert as_anon["search_path"] == '"public", "public", "extensions"'
    # Transaction-local: the same session (one HTTP connection) is back to authenticator's own afterwards.
    assert post(http, "t_settings", key=standin.service_role_key).json()["statement_timeout"] == "8s"


def test_a_request_as_anon_is_cancelled_after_three_seconds(http: httpx.Client, probes: None) -> None:
    assert post(http, "t_sleep", {"seconds": 0.1}).status_code == 200
    cancelled = post(http, "t_sleep", {"seconds": 3.5})
    assert (cancelled.status_code, cancelled.json()["code"]) == (500, "57014")
    assert cancelled.json()["message"] == "canceling statement due to statement timeout"

    hasty = post(http, "t_hasty", {"seconds": 1.0})  # its own 500 ms, hoisted to the transaction
    assert (hasty.status_code, hasty.json()["code"]) == (500, "57014")


def test_bodies_are_json_unless_the_content_type_says_otherwise(
    standin: SupabaseRestStandIn, http: httpx.Client, probes: None
) -> None:
    headers = {"apikey": standin.anon_key}
    url = "/rest/v1/rpc/t_add"
    as_json = http.post(url, content=b'{"a": 1, "b": 2}', headers={**headers, "Content-Type": "application/json"})
    untyped = http.post(url, content=b'{"a": 1, "b": 2}', headers=headers)  # no Content-Type: read as JSON
    with_charset = http.post(
        url, content=b'{"a": 1, "b": 2}', headers={**headers, "Content-Type": "Application/JSON; charset=utf-8"}
    )
    assert [r.json() for r in (as_json, untyped, with_charset)] == [3, 3, 3]

    form = http.post(url, content=b"a=40&b=2", headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
    assert (form.status_code, form.json()) == (200, 42)

    for content_type in ("application/xml", "text/html", "application/vnd.api+json"):
        refused = http.post(url, content=b'{"a": 1, "b": 2}', headers={**headers, "Content-Type": content_type})
        assert (refused.status_code, refused.json()["code"]) == (400, "PGRST102"), content_type
        assert refused.json()["message"] == f"Content-Type not acceptable: {content_type}"

    # text/plain goes whole to a function with one unnamed text parameter, and to nothing else.
    echoed = http.post("/rest/v1/rpc/t_echo", content=b"hello", headers={**headers, "Content-Type": "text/plain"})
    assert (echoed.status_code, echoed.json()) == (200, "echo: hello")
    plain = http.post(url, content=b'{"a": 1}', headers={**headers, "Content-Type": "text/plain"})
    assert (plain.status_code, plain.json()["code"]) == (404, "PGRST202")
    assert plain.json()["message"] == "Could not find the function public.t_add in the schema cache"
    assert plain.json()["details"] == (
        "Searched for the function public.t_add with a single unnamed text parameter,"
        " but no matches were found in the schema cache."
    )


def test_prefer_params_single_object_is_gone_as_in_postgrest_13(
    http: httpx.Client, probes: None, clinic: Clinic, admin: psycopg.Connection
) -> None:
    named = post(http, "t_one", {"j": {"x": 1}})
    assert (named.status_code, named.json()) == (200, {"x": 1})
    # v12 passed the whole body to a single json parameter; v13 ignores the preference.
    ignored = post(http, "t_one", {"x": 1}, Prefer="params=single-object")
    assert (ignored.status_code, ignored.json()["code"]) == (404, "PGRST202")
    strict = post(http, "t_one", {"j": {"x": 1}}, Prefer="handling=strict, params=single-object")
    assert (strict.status_code, strict.json()["code"]) == (400, "PGRST122")
    assert strict.json()["details"] == "Invalid preferences: params=single-object"
    # Known preferences pass, strict or not.
    assert post(http, "t_one", {"j": 1}, Prefer="handling=strict, return=minimal").json() == 1

    # The Vapi entry point needs no preference: one unnamed json parameter takes the whole body.
    envelope = VapiCall().message(tool_call("check_availability", {"date": upcoming(TUESDAY).isoformat()}))
    reply = post(http, "vapi_tool_call", envelope, **{"x-clinic-key": clinic.key, "Prefer": "params=single-object"})
    assert reply.status_code == 200 and reply.json()["results"][0]["result"].startswith("Free start times")
