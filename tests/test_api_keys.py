"""Supabase's new API keys (`sb_publishable_...`, `sb_secret_...`) on the Supabase path, beside the legacy JWT keys.

The stand-ins treat them as Supabase's API gateway does (tests/standins/api_keys.py says how), and the daemon,
the operator commands and `verify --round-trip` work with either kind, also on a project whose legacy keys are
switched off. The gateway's own refusals are checked first, then everything that uses a key.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from postgrest.exceptions import APIError
from realtime import AsyncRealtimeClient
from realtime.types import RealtimeChannelOptions
from supabase import acreate_client
from websockets.exceptions import InvalidStatus

from daemon.cli import main
from daemon.config import StoreSettings
from daemon.store import SupabaseStore
from daemon.verify import Status, VerifyOptions, run_checks
from tests.conftest import Clinic, Database
from tests.daemon_harness import Backend, DaemonThread, all_synced, connect_google, make_settings, running, wait_until
from tests.dates import upcoming
from tests.standins.google import GoogleStandIn
from tests.standins.postgres import AUTHENTICATOR, scalar
from tests.standins.realtime import RealtimeStandIn
from tests.standins.supabase_rest import SupabaseRestStandIn, make_api_key
from tests.standins.vapi import VapiCall, tool_call

TUESDAY = 2
NO_TIMER = {"sync_poll_seconds": 60, "google_requests_per_minute": 100_000}
STORE_VARIABLES = ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_ANON_KEY", "DATABASE_URL", "SYNC_DATABASE")
UNKNOWN_SECRET = "sb_secret_" + "x" * 32

# realtime 2.34.1 reads ConnectionClosed.code/.reason when a connection fails; websockets 15 deprecates both.
pytestmark = pytest.mark.filterwarnings("ignore:ConnectionClosed.(code|reason) is deprecated:DeprecationWarning")


@pytest.fixture
def new_keys_only(database: Database) -> Iterator[tuple[SupabaseRestStandIn, RealtimeStandIn]]:
    """A project with its legacy keys switched off, whose gateway hands an `Authorization: Bearer sb_...` to
    PostgREST as it is (the documented limitation), so only a client that sends new keys right gets through."""
    with (
        SupabaseRestStandIn(database.dsn(AUTHENTICATOR), legacy_keys=False, bearer_api_key="forwarded") as rest,
        RealtimeStandIn(database.dsn(), legacy_keys=False) as realtime,
    ):
        yield rest, realtime


def post(rest: SupabaseRestStandIn, function: str, headers: dict[str, str], body: Any = None) -> httpx.Response:
    return httpx.post(f"{rest.url}/rest/v1/rpc/{function}", headers=headers, json=body or {}, timeout=10)


def bearer(token: str) -> str:
    return f"Bearer {token}"


# --- the gateway ------------------------------------------------------------------------------------------


def test_the_rest_gateway_maps_each_key_to_its_role(rest: SupabaseRestStandIn, clinic: Clinic) -> None:
    staff = make_api_key("authenticated")  # a signed-in user's session JWT
    service_only = "sync_backlog"  # executable by the service role alone: 401 as anon, 403 as authenticated
    cases: list[tuple[dict[str, str], int, str | None]] = [
        ({"apikey": rest.secret_key}, 200, None),
        ({"apikey": rest.secret_key, "Authorization": bearer(rest.secret_key)}, 200, None),  # supabase-py's shape
        ({"apikey": rest.service_role_key}, 200, None),
        ({"apikey": rest.publishable_key}, 401, "42501"),
        ({"apikey": rest.publishable_key, "Authorization": bearer(rest.publishable_key)}, 401, "42501"),
        ({"apikey": rest.publishable_key, "Authorization": bearer(staff)}, 403, "42501"),
        # A new key is no credential in Authorization unless it repeats `apikey`: PostgREST sees a non-JWT.
        ({"apikey": rest.publishable_key, "Authorization": bearer(rest.secret_key)}, 401, "PGRST301"),
    ]
    for headers, status, code in cases:
        answer = post(rest, service_only, headers)
        assert answer.status_code == status, (headers, answer.text)
        assert code is None or answer.json()["code"] == code, (headers, answer.text)

    refused = post(rest, service_only, {"apikey": UNKNOWN_SECRET})
    assert (refused.status_code, refused.json()["message"]) == (401, "Invalid API key")
    nothing = post(rest, service_only, {"Authorization": bearer(rest.secret_key)})
    assert (nothing.status_code, nothing.json()["message"]) == (401, "No API key found in request")

    # The Vapi RPC as the tool definitions call it: the publishable key in `apikey` and the clinic's key.
    envelope = VapiCall().message(tool_call("check_availability", {"date": upcoming(TUESDAY).isoformat()}))
    answer = post(rest, "vapi_tool_call", {"apikey": rest.publishable_key, "x-clinic-key": clinic.key}, envelope)
    assert answer.status_code == 200 and answer.json()["results"][0]["result"].startswith("Free start times")


def test_a_project_with_legacy_keys_switched_off_refuses_them(database: Database) -> None:
    with SupabaseRestStandIn(database.dsn(AUTHENTICATOR), legacy_keys=False) as rest:
        for legacy in (rest.anon_key, rest.service_role_key):
            refused = post(rest, "sync_backlog", {"apikey": legacy, "Authorization": bearer(legacy)})
            assert (refused.status_code, refused.json()["message"]) == (401, "Legacy API keys are disabled")
        assert post(rest, "sync_backlog", {"apikey": rest.secret_key}).status_code == 200
        # A user's session JWT is no API key: with the publishable key it still makes the request `authenticated`.
        staff = post(
            rest,
            "sync_backlog",
            {"apikey": rest.publishable_key, "Authorization": bearer(make_api_key("authenticated"))},
        )
        assert (staff.status_code, staff.json()["code"]) == (403, "42501")


def test_realtime_takes_the_new_keys_at_the_handshake(database: Database) -> None:
    options: RealtimeChannelOptions = {
        "config": {"broadcast": {"ack": False}, "presence": {"key": "", "enabled": False}, "private": True}
    }

    async def join(realtime: RealtimeStandIn, key: str) -> str:
        """A private topic no policy opens: only a role that bypasses RLS (the service role) gets in."""
        client = AsyncRealtimeClient(f"{realtime.url}/realtime/v1", token=key, auto_reconnect=False)
        states: list[str] = []
        try:
            await client.connect()
            await client.channel("no-policy", options).subscribe(lambda state, _: states.append(state.value))
            deadline = time.monotonic() + 5
            while not states and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            await client.close()
        return states[0] if states else "no answer"

    async def refused(realtime: RealtimeStandIn, key: str) -> tuple[int, Any]:
        client = AsyncRealtimeClient(f"{realtime.url}/realtime/v1", token=key, auto_reconnect=False)
        try:
            with pytest.raises(InvalidStatus) as refusal:
                await client.connect()
        finally:
            await client.close()
        return refusal.value.response.status_code, json.loads(refusal.value.response.body)["message"]

    async def scenario(realtime: RealtimeStandIn) -> None:
        assert await join(realtime, realtime.secret_key) == "SUBSCRIBED"
        assert await join(realtime, realtime.publishable_key) == "CHANNEL_ERROR"
        assert await refused(realtime, UNKNOWN_SECRET) == (401, "Invalid API key")
        assert await refused(realtime, realtime.service_role_key) == (401, "Legacy API keys are disabled")

    with RealtimeStandIn(database.dsn(), legacy_keys=False) as realtime:
        asyncio.run(scenario(realtime))


# --- what uses a key ------------------------------------------------------------------------------------


def test_the_store_sends_a_secret_key_only_where_supabase_takes_it(
    new_keys_only: tuple[SupabaseRestStandIn, RealtimeStandIn],
) -> None:
    rest, _ = new_keys_only

    async def scenario() -> None:
        # supabase-py also sends the key as `Authorization: Bearer`: fine on hosted projects, refused where the
        # gateway forwards it as it is. The daemon's store sends it in `apikey` alone.
        client = await acreate_client(rest.url, rest.secret_key)
        try:
            with pytest.raises(APIError) as refusal:
                await client.rpc("sync_backlog", {}).execute()
            assert refusal.value.code == "PGRST301"
        finally:
            await client.postgrest.aclose()
        store = SupabaseStore(rest.url, rest.secret_key)
        await store.open()
        try:
            assert (await store.backlog()).by_state is not None
        finally:
            await store.close()

    asyncio.run(scenario())


def test_the_daemon_syncs_a_booking_with_new_keys_only(
    new_keys_only: tuple[SupabaseRestStandIn, RealtimeStandIn],
    admin: psycopg.Connection,
    google: GoogleStandIn,
    clinic: Clinic,
) -> None:
    rest, realtime = new_keys_only
    connect_google(admin, google, clinic.id)
    backend = Backend(
        "supabase",
        {"SUPABASE_URL": rest.url, "SUPABASE_SERVICE_ROLE_KEY": rest.secret_key, "SUPABASE_REALTIME_URL": realtime.url},
        feed=True,
    )
    with running(make_settings(backend, google, **NO_TIMER)) as runner:
        wait_until(lambda: subscribed(runner), what="the doorbell subscribed with the secret key")
        envelope = VapiCall().message(
            tool_call("book_appointment", {"start": f"{upcoming(TUESDAY)}T10:00", "patient_name": "Jo"})
        )
        booked = post(rest, "vapi_tool_call", {"apikey": rest.publishable_key, "x-clinic-key": clinic.key}, envelope)
        assert booked.json()["results"][0]["result"].startswith("Booked:"), booked.text
        wait_until(all_synced(admin), timeout=5, what="the booking synced by the doorbell")
        feed = runner.daemon.feed
        assert feed is not None and feed.last_change_at is not None  # rung by Realtime, not found by the timer
    handshakes = [m for m in realtime.messages_received() if m.get("event") == "phx_join"]
    assert handshakes and all(m["payload"]["access_token"] == rest.secret_key for m in handshakes)


def subscribed(runner: DaemonThread) -> bool:
    feed = runner.daemon.feed
    return feed is not None and feed.subscriptions >= 1 and feed.state.value == "subscribed"


def test_operator_commands_and_vapi_tools_with_new_keys(
    new_keys_only: tuple[SupabaseRestStandIn, RealtimeStandIn],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
    admin: psycopg.Connection,
) -> None:
    rest, _ = new_keys_only
    monkeypatch.chdir(tmp_path)
    for name in STORE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUPABASE_URL", rest.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", rest.secret_key)
    monkeypatch.setenv("SUPABASE_ANON_KEY", rest.publishable_key)
    monkeypatch.setenv("SYNC_DATABASE", "supabase")

    assert main(["add-clinic", "--name", "Harbour Dental"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"^clinic id:\s+(\S+)$", out, re.MULTILINE)
    assert match, out
    clinic_id = uuid.UUID(match[1])
    assert scalar(admin, "select name from public.clinics where id = %s", (clinic_id,)) == "Harbour Dental"

    assert main(["vapi-tools", "--clinic", str(clinic_id), "--issue-key"]) == 0
    tools = {tool["function"]["name"]: tool for tool in json.loads(capsys.readouterr().out)}
    server = tools["check_availability"]["server"]
    assert server["headers"]["apikey"] == rest.publishable_key  # the public key, never the secret one
    envelope = VapiCall().message(tool_call("check_availability", {"date": upcoming(TUESDAY).isoformat()}))
    answer = httpx.post(server["url"], headers=server["headers"], json=envelope, timeout=10)
    assert answer.status_code == 200 and "results" in answer.json(), answer.text


def test_verify_round_trip_with_new_keys(
    new_keys_only: tuple[SupabaseRestStandIn, RealtimeStandIn],
    admin: psycopg.Connection,
    google: GoogleStandIn,
    clinic: Clinic,
) -> None:
    rest, realtime = new_keys_only
    connect_google(admin, google, clinic.id)
    admin.execute("select public.apply_calendar_changes(%s, '[]', null, true)", (clinic.id,))
    backend = Backend(
        "supabase",
        {
            "SUPABASE_URL": rest.url,
            "SUPABASE_SERVICE_ROLE_KEY": rest.secret_key,
            "SUPABASE_ANON_KEY": rest.publishable_key,
            "SUPABASE_REALTIME_URL": realtime.url,
        },
        feed=True,
    )
    settings = make_settings(backend, google)
    with running(settings):
        report = asyncio.run(run_checks(settings, VerifyOptions(round_trip_clinic=clinic.id, budget_seconds=20)))
    assert report.passed, report.checks
    assert {c.name: c.status for c in report.checks}["round trip"] is Status.OK


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("SUPABASE_SERVICE_ROLE_KEY", "publishable", "this is the public key"),
        ("SUPABASE_SERVICE_ROLE_KEY", "anon", "this is the public key"),
        ("SUPABASE_ANON_KEY", "secret", "this is a secret key"),
        ("SUPABASE_ANON_KEY", "service_role", "this is a secret key"),
    ],
)
def test_a_key_in_the_wrong_setting_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
    rest: SupabaseRestStandIn,
    variable: str,
    value: str,
    says: str,
) -> None:
    key = {
        "publishable": rest.publishable_key,
        "anon": rest.anon_key,
        "secret": rest.secret_key,
        "service_role": rest.service_role_key,
    }[value]
    monkeypatch.chdir(tmp_path)
    for name in STORE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUPABASE_URL", rest.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", rest.secret_key)
    monkeypatch.setenv(variable, key)
    assert main(["keys", "--clinic", str(uuid.uuid4())]) == 2
    err = capsys.readouterr().err
    assert f"{variable}: Value error, {says}" in err and key not in err
    # The right keys in the right settings are accepted, whichever kind.
    accepted = StoreSettings(
        supabase_url=rest.url, supabase_service_role_key=rest.service_role_key, supabase_anon_key=rest.publishable_key
    )
    assert accepted.database_backend == "supabase"
