"""`clinic-sync vapi-sync`: the clinic's four tools and its credential made and kept in step through Vapi's API.

Vapi's API is pinned with respx: every request is checked as it arrives (method, path, the bearer key, the
exact JSON shape of each body) by a small in-memory Vapi (`FakeVapi`) that answers as Vapi does (ids, dates,
fields of its own, 404 for what is not there) and can be told to fail. The database is the real PostgreSQL
the suite starts, over both database paths where the path matters."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
import respx

from daemon.cli import main
from daemon.config import Settings, VapiSettings
from daemon.metrics import Metrics
from daemon.vapi_api import VapiClient, VapiError, retry_after_seconds
from daemon.vapi_setup import VapiKeeper, differences, vapi_keeper
from daemon.verify import Status, VerifyOptions, run_checks
from daemon.wiring import open_store
from tests.conftest import Clinic, Database
from tests.daemon_harness import Backend, make_settings, running, wait_until
from tests.dates import upcoming
from tests.standins.google import GoogleStandIn
from tests.standins.postgres import MIGRATOR, scalar
from tests.standins.vapi import Assistant

VAPI_URL = "https://api.vapi.test"
VAPI_KEY = "vapi-private-3f9c1e7a-never-in-the-logs"
ANON_KEY = "sb_publishable_test-anon-key"
POSTGRES_SUPABASE_URL = "https://ref.supabase.co"  # only the tools' server URL, on the direct path
TOOL_NAMES = ("check_availability", "book_appointment", "cancel_appointment", "reschedule_appointment")
VARIABLES = (
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_ANON_KEY",
    "DATABASE_URL",
    "SYNC_DATABASE",
    "VAPI_API_KEY",
    "VAPI_API_URL",
)


# --- Vapi, pinned with respx -------------------------------------------------------------------------------

Fault = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeVapi:
    """Vapi's API as respx sees it: tools, custom credentials and assistants in memory; every request checked."""

    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    credentials: dict[str, dict[str, Any]] = field(default_factory=dict)  # what Vapi keeps (the token too)
    assistants: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    faults: list[tuple[str, str, Fault]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def fail(self, method: str, path: str, fault: Fault, times: int = 1) -> None:
        """The next `times` requests `method path` (a regex) get `fault`: a response, an exception to raise,
        or a function that may do the work first and then answer."""
        self.faults += [(method, path, fault)] * times

    @property
    def writes(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path in self.calls if method in ("POST", "PATCH", "DELETE")]

    def reset_calls(self) -> None:
        self.calls.clear()

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {VAPI_KEY}"
        method, path = request.method, request.url.path
        self.calls.append((method, path))
        for index, (fault_method, fault_path, fault) in enumerate(self.faults):
            if fault_method == method and re.fullmatch(fault_path, path):
                del self.faults[index]
                if isinstance(fault, Exception):
                    raise fault
                return fault if isinstance(fault, httpx.Response) else fault(request)
        return self.answer(request)

    def answer(self, request: httpx.Request) -> httpx.Response:
        method, parts = request.method, request.url.path.strip("/").split("/")
        body = json.loads(request.content) if request.content else None
        if method in ("POST", "PATCH"):
            assert request.headers["content-type"] == "application/json"
        kind, item = parts[0], parts[1] if len(parts) > 1 else None
        store = {"tool": self.tools, "credential": self.credentials, "assistant": self.assistants}[kind]
        if item is not None and item not in store:
            return httpx.Response(404, json={"message": f"Couldn't Find {kind.title()}", "statusCode": 404})
        if kind == "tool":
            return self._tool(method, item, body)
        if kind == "credential":
            return self._credential(method, item, body)
        return self._assistant(method, item, body)

    def _stamp(self, thing: dict[str, Any], prefix: str) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC).isoformat()
        return {**thing, "id": f"{prefix}-{next(self._ids)}", "orgId": "org-1", "createdAt": now, "updatedAt": now}

    def _tool(self, method: str, tool_id: str | None, body: Any) -> httpx.Response:
        if method == "GET":
            return httpx.Response(200, json=self.tools[tool_id] if tool_id else list(self.tools.values()))
        check_tool_body(body, self.credentials)
        # Vapi adds fields of its own (a sync must not call that a difference).
        body["function"] = {**body["function"], "strict": False}
        if method == "POST":
            tool = self._stamp(body, "tool")
            self.tools[tool["id"]] = tool
            return httpx.Response(201, json=tool)
        assert tool_id is not None
        self.tools[tool_id].update(body)
        return httpx.Response(200, json=self.tools[tool_id])

    def _credential(self, method: str, credential_id: str | None, body: Any) -> httpx.Response:
        if method == "GET":
            return httpx.Response(200, json=without_secret(self.credentials[str(credential_id)]))
        if method == "POST":
            assert set(body) == {"provider", "name", "authenticationPlan"}, body
            assert body["provider"] == "custom-credential"
            assert isinstance(body["name"], str) and 1 <= len(body["name"]) <= 40
            check_authentication_plan(body["authenticationPlan"])
            credential = self._stamp(body, "cred")
            self.credentials[credential["id"]] = credential
            return httpx.Response(201, json=without_secret(credential))
        assert set(body) == {"authenticationPlan"}, body
        check_authentication_plan(body["authenticationPlan"])
        self.credentials[str(credential_id)]["authenticationPlan"] = body["authenticationPlan"]
        return httpx.Response(200, json=without_secret(self.credentials[str(credential_id)]))

    def _assistant(self, method: str, assistant_id: str | None, body: Any) -> httpx.Response:
        assert assistant_id is not None
        assistant = self.assistants[assistant_id]
        if method == "PATCH":
            assert body and set(body) <= {"model", "metadata"}, body
            if "model" in body:
                assert {"provider", "model"} <= set(body["model"]), "Vapi validates the whole model"
                assert all(isinstance(i, str) and not i.startswith("<") for i in body["model"]["toolIds"])
            assistant.update(body)
        return httpx.Response(200, json=assistant)

    def token(self, credential_id: str) -> str:
        return str(self.credentials[credential_id]["authenticationPlan"]["token"])

    def tool_named(self, name: str) -> dict[str, Any]:
        [tool] = [t for t in self.tools.values() if t["function"]["name"] == name]
        return tool


def check_authentication_plan(plan: Any) -> None:
    assert set(plan) == {"type", "token", "headerName", "bearerPrefixEnabled"}, plan
    assert plan["type"] == "bearer" and plan["headerName"] == "x-clinic-key" and plan["bearerPrefixEnabled"] is False
    assert re.fullmatch(r"ck_[A-Za-z0-9_-]{40,}", plan["token"]), "a clinic key"


def check_tool_body(body: Any, credentials: dict[str, Any]) -> None:
    """A function tool as Vapi's CreateFunctionToolDto / UpdateToolsRequestBody_Function take it."""
    assert set(body) == {"type", "async", "function", "messages", "server"}, body
    assert body["type"] == "function" and body["async"] is False
    assert set(body["function"]) == {"name", "description", "parameters"}
    assert body["function"]["name"] in TOOL_NAMES
    server = body["server"]
    assert set(server) == {"url", "timeoutSeconds", "credentialId", "headers"}, server
    assert server["url"].endswith("/rest/v1/rpc/vapi_tool_call")
    assert server["credentialId"] in credentials, "a credential that exists"
    # The clinic key travels in the credential only; the publishable key may stay a header.
    assert server["headers"] == {"apikey": ANON_KEY, "Content-Type": "application/json"}


def without_secret(credential: dict[str, Any]) -> dict[str, Any]:
    """Vapi never returns a credential's secret."""
    plan = {k: v for k, v in credential["authenticationPlan"].items() if k != "token"}
    return {**credential, "authenticationPlan": plan}


@pytest.fixture
def vapi() -> Iterator[FakeVapi]:
    fake = FakeVapi()
    fake.assistants["asst-1"] = {
        "id": "asst-1",
        "name": "Reception",
        "model": {"provider": "openai", "model": "gpt-4o", "messages": [{"role": "system", "content": "Be kind."}]},
        "metadata": {},
    }
    with respx.mock(assert_all_called=False) as router:
        router.route(host="api.vapi.test").mock(side_effect=fake.handle)
        router.route(host="127.0.0.1").pass_through()  # the Supabase REST stand-in
        yield fake


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's waits between retries, recorded instead of slept."""
    waited: list[float] = []

    async def record(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr("daemon.vapi_api._pause", record)
    return waited


# --- the command --------------------------------------------------------------------------------------


def vapi_env(backend: Backend) -> dict[str, str]:
    env = {
        **backend.env,
        "SUPABASE_ANON_KEY": ANON_KEY,
        "VAPI_API_KEY": VAPI_KEY,
        "VAPI_API_URL": VAPI_URL,
        "LOG_LEVEL": "DEBUG",
    }
    env.setdefault("SUPABASE_URL", POSTGRES_SUPABASE_URL)
    return env


def set_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, env: dict[str, str]) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, backend: Backend, tmp_path: Any) -> Backend:
    """Both database paths (the store names the SQL functions for each)."""
    set_env(monkeypatch, tmp_path, vapi_env(backend))
    return backend


@pytest.fixture
def direct(monkeypatch: pytest.MonkeyPatch, database: Database, tmp_path: Any) -> Backend:
    """The direct path only, for what does not depend on the path."""
    backend = Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)})
    set_env(monkeypatch, tmp_path, vapi_env(backend))
    return backend


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Outcome:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert VAPI_KEY not in out + err, "the Vapi API key was printed or logged"
    return Outcome(code, out, err)


def sync(capsys: pytest.CaptureFixture[str], clinic: Clinic, *extra: str) -> Outcome:
    return run(capsys, "vapi-sync", "--clinic", str(clinic.id), *extra)


def setup_row(admin: psycopg.Connection, clinic: Clinic) -> dict[str, Any]:
    row = admin.execute(
        "select to_jsonb(s) || jsonb_build_object('stale', private.vapi_setup_is_stale(s)) from public.vapi_setups s"
        " where clinic_id = %s",
        (clinic.id,),
    ).fetchone()
    assert row is not None
    return dict(row[0])


def recorded_tools(admin: psycopg.Connection, clinic: Clinic) -> dict[str, str]:
    rows = admin.execute(
        "select tool_name, tool_id from public.vapi_setup_tools where clinic_id = %s", (clinic.id,)
    ).fetchall()
    return dict(rows)


def keys(admin: psycopg.Connection, clinic: Clinic) -> list[tuple[str, bytes, dt.datetime | None]]:
    rows = admin.execute(
        "select label, key_hash, revoked_at from public.clinic_api_keys where clinic_id = %s order by created_at",
        (clinic.id,),
    ).fetchall()
    return [(label, bytes(digest), revoked) for label, digest, revoked in rows]


def hashed(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def printed_tools(capsys: pytest.CaptureFixture[str], clinic: Clinic) -> dict[str, dict[str, Any]]:
    """What `vapi-tools` prints, by function name."""
    outcome = run(capsys, "vapi-tools", "--clinic", str(clinic.id), "--clinic-key", clinic.key)
    assert outcome.code == 0, outcome
    return {tool["function"]["name"]: tool for tool in json.loads(outcome.out)}


def add_practitioner(capsys: pytest.CaptureFixture[str], clinic: Clinic, name: str) -> None:
    outcome = run(capsys, "add-practitioner", "--clinic", str(clinic.id), "--name", name, "--services", "Check-up")
    assert outcome.code == 0, outcome


def test_vapi_sync_first_run_second_run_a_new_practitioner_and_a_key_rotation(
    environment: Backend,
    admin: psycopg.Connection,
    gateway: psycopg.Connection,
    clinic: Clinic,
    vapi: FakeVapi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # First run: the credential, the four tools, and the assistant given.
    first = sync(capsys, clinic, "--assistant", "asst-1")
    assert first.code == 0, first
    assert vapi.calls == [
        ("GET", "/assistant/asst-1"),
        ("POST", "/credential"),
        *[("POST", "/tool")] * 4,
        ("PATCH", "/assistant/asst-1"),
    ]
    [credential_id] = vapi.credentials
    assert re.search(rf"created\s+credential {credential_id}: bearer, header x-clinic-key, no prefix", first.out)
    for name in TOOL_NAMES:
        assert re.search(rf"created\s+tool {name}: tool-\d+", first.out), first.out
    assert "Vapi matches the clinic (revision 1)." in first.out
    # What Vapi holds is what vapi-tools prints, the key in the credential instead of a header.
    for name, printed in printed_tools(capsys, clinic).items():
        server = {**printed["server"], "credentialId": credential_id}
        server["headers"] = {k: v for k, v in printed["server"]["headers"].items() if k != "x-clinic-key"}
        assert differences({**printed, "server": server}, vapi.tool_named(name)) == []
    # The credential's key is a clinic key of its own, whose hash only is stored; the RPC takes it.
    token = vapi.token(credential_id)
    assert ("vapi credential", hashed(token), None) in keys(admin, clinic)
    answer = Assistant(gateway, token).use("check_availability", {"date": upcoming(1).isoformat()})
    assert "result" in answer, answer
    # The tools' ids are remembered, the assistant has them and knows its clinic.
    ids = recorded_tools(admin, clinic)
    assert ids == {vapi.tool_named(name)["function"]["name"]: vapi.tool_named(name)["id"] for name in TOOL_NAMES}
    assistant = vapi.assistants["asst-1"]
    assert sorted(assistant["model"]["toolIds"]) == sorted(ids.values())
    assert assistant["model"]["provider"] == "openai" and assistant["model"]["messages"]  # the rest kept
    assert assistant["metadata"] == {"org_id": str(clinic.id)}
    assert setup_row(admin, clinic)["stale"] is False

    # Second run: everything read, nothing written.
    vapi.reset_calls()
    second = sync(capsys, clinic)
    assert second.code == 0, second
    assert vapi.writes == []
    assert sorted(vapi.calls) == sorted(
        [
            ("GET", f"/credential/{credential_id}"),
            *[("GET", f"/tool/{i}") for i in ids.values()],
            ("GET", "/assistant/asst-1"),
        ]
    )
    assert "Nothing to change: Vapi matches the clinic (revision 1)." in second.out
    assert len(vapi.tools) == 4 and len(vapi.credentials) == 1

    # A new practitioner: the database marks the setup stale; the three tools that name practitioners are
    # updated in place (same ids, no copies).
    add_practitioner(capsys, clinic, "Dr Anika Patel")
    stale = setup_row(admin, clinic)
    assert stale["stale"] is True and stale["stale_because"] == "practitioner Dr Anika Patel added"
    vapi.reset_calls()
    third = sync(capsys, clinic)
    assert third.code == 0, third
    changed = {"check_availability", "book_appointment", "reschedule_appointment"}
    assert sorted(vapi.writes) == sorted(("PATCH", f"/tool/{ids[name]}") for name in changed)
    for name in changed:
        assert re.search(rf"updated\s+tool {name}: {ids[name]}: function.description", third.out), third.out
        assert "Dr Anika Patel (Check-up)" in vapi.tool_named(name)["function"]["description"]
    assert re.search(rf"unchanged\s+tool cancel_appointment: {ids['cancel_appointment']}", third.out)
    assert recorded_tools(admin, clinic) == ids and len(vapi.tools) == 4
    assert setup_row(admin, clinic)["stale"] is False

    # A key rotation: a new key into the same credential; the old ones stop after the grace period.
    vapi.reset_calls()
    rotated = run(capsys, "rotate-key", "--clinic", str(clinic.id), "--grace-minutes", "60")
    assert rotated.code == 0, rotated
    assert vapi.writes == [("PATCH", f"/credential/{credential_id}")]
    new_token = vapi.token(credential_id)
    assert new_token != token and new_token not in rotated.out  # only Vapi has it
    assert re.search(rf"re-keyed\s+credential {credential_id}", rotated.out)
    assert "previous keys stop working in 60 minute(s)" in rotated.out
    rows = keys(admin, clinic)
    now = dt.datetime.now(dt.UTC)
    assert [r for r in rows if r[1] == hashed(new_token)] == [("vapi credential", hashed(new_token), None)]
    for _label, digest, revoked in rows:
        if digest != hashed(new_token):
            assert revoked is not None and dt.timedelta(minutes=59) < revoked - now <= dt.timedelta(minutes=60)
    assert "result" in Assistant(gateway, new_token).use("check_availability", {"date": upcoming(1).isoformat()})


def test_dry_run_reads_prints_the_plan_and_changes_nothing(
    direct: Backend, admin: psycopg.Connection, clinic: Clinic, vapi: FakeVapi, capsys: pytest.CaptureFixture[str]
) -> None:
    planned = sync(capsys, clinic, "--assistant", "asst-1", "--dry-run")
    assert planned.code == 0, planned
    assert vapi.writes == [] and vapi.calls == [("GET", "/assistant/asst-1")]
    assert re.search(r"would create\s+credential: bearer", planned.out)
    assert all(re.search(rf"would create\s+tool {name}", planned.out) for name in TOOL_NAMES)
    assert re.search(r"would update\s+assistant asst-1: attached check_availability, book_appointment", planned.out)
    assert "Dry run: nothing was changed" in planned.out
    assert scalar(admin, "select count(*) from public.vapi_setups") == 0
    assert len(keys(admin, clinic)) == 1  # no key issued

    assert sync(capsys, clinic).code == 0
    add_practitioner(capsys, clinic, "Dr Anika Patel")
    before = setup_row(admin, clinic)
    vapi.reset_calls()
    planned = sync(capsys, clinic, "--dry-run")
    assert planned.code == 0 and vapi.writes == []
    assert re.search(r"would update\s+tool check_availability: tool-\d+: function.description", planned.out)
    assert re.search(r"unchanged\s+tool cancel_appointment", planned.out)
    assert setup_row(admin, clinic) == before  # still stale, nothing recorded


def test_a_wrong_api_key_is_refused_clearly_once_and_the_unused_clinic_key_revoked(
    direct: Backend, admin: psycopg.Connection, clinic: Clinic, vapi: FakeVapi, capsys: pytest.CaptureFixture[str]
) -> None:
    vapi.fail("POST", "/credential", httpx.Response(401, json={"message": "Invalid Key. Hot tip, ..."}), times=5)
    failed = sync(capsys, clinic)
    assert failed.code == 1
    assert vapi.calls == [("POST", "/credential")]  # not repeated
    assert "Vapi refused VAPI_API_KEY for creating the credential (HTTP 401" in failed.err
    assert "private API key (Vapi dashboard -> API Keys)" in failed.err
    vapi_key_rows = [r for r in keys(admin, clinic) if r[0] == "vapi credential"]
    assert len(vapi_key_rows) == 1 and vapi_key_rows[0][2] is not None  # Vapi never got it: revoked
    row = setup_row(admin, clinic)
    assert row["stale"] is True and row["sync_attempts"] == 1 and "HTTP 401" in row["last_error"]
    assert row["credential_id"] is None and row["lease_owner"] is None


@pytest.mark.parametrize("where", ["GET", "PATCH"])
def test_a_tool_deleted_in_the_dashboard_is_made_again_and_the_assistant_follows(
    direct: Backend,
    admin: psycopg.Connection,
    clinic: Clinic,
    vapi: FakeVapi,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    assert sync(capsys, clinic, "--assistant", "asst-1").code == 0
    old = recorded_tools(admin, clinic)["check_availability"]
    if where == "GET":
        del vapi.tools[old]  # deleted in the dashboard before the run
    else:
        add_practitioner(capsys, clinic, "Dr Anika Patel")  # so the tool must be updated

        def deleted_meanwhile(request: httpx.Request) -> httpx.Response:
            del vapi.tools[old]
            return httpx.Response(404, json={"message": "Couldn't Find Tool"})

        vapi.fail("PATCH", f"/tool/{old}", deleted_meanwhile)
    vapi.reset_calls()
    again = sync(capsys, clinic)
    assert again.code == 0, again
    new = recorded_tools(admin, clinic)["check_availability"]
    assert new != old and new in vapi.tools and old not in vapi.tools
    assert [w for w in vapi.writes if w[1] == "/tool"] == [("POST", "/tool")]
    assert re.search(rf"made again\s+tool check_availability: {new}", again.out), again.out
    assert vapi.assistants["asst-1"]["model"]["toolIds"].count(new) == 1
    assert old not in vapi.assistants["asst-1"]["model"]["toolIds"]
    assert len(vapi.tools) == 4
    assert setup_row(admin, clinic)["stale"] is False


def test_rate_limits_are_waited_out_within_bounds(
    direct: Backend,
    admin: psycopg.Connection,
    clinic: Clinic,
    vapi: FakeVapi,
    sleeps: list[float],
    capsys: pytest.CaptureFixture[str],
) -> None:
    vapi.fail("POST", "/credential", httpx.Response(429, headers={"Retry-After": "2"}))
    assert sync(capsys, clinic).code == 0
    assert vapi.calls[:2] == [("POST", "/credential"), ("POST", "/credential")]
    assert sleeps == [2.0]  # Vapi's Retry-After, honoured

    # Longer than the bound: not waited for in the run; recorded, and the next try waits that long.
    add_practitioner(capsys, clinic, "Dr Anika Patel")
    vapi.fail("PATCH", r"/tool/.*", httpx.Response(429, headers={"Retry-After": "120"}))
    vapi.reset_calls()
    limited = sync(capsys, clinic)
    assert limited.code == 1 and sleeps == [2.0]
    assert len([c for c in vapi.calls if c[0] == "PATCH"]) == 1
    assert "Vapi rate-limited updating tool" in limited.err and "Vapi asks to wait 120s" in limited.err
    row = setup_row(admin, clinic)
    wait = dt.datetime.fromisoformat(row["next_attempt_at"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=110) < wait <= dt.timedelta(seconds=120)  # Retry-After beats the 30 s backoff
    assert row["stale"] is True and row["sync_attempts"] == 1


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (
            httpx.Response(503, json={"message": "Service Unavailable"}),
            "Vapi failed updating tool tool-2 with HTTP 503",
        ),
        (httpx.ReadTimeout("read timed out"), "Vapi did not answer updating tool tool-2 within 10s"),
    ],
)
def test_server_errors_and_timeouts_are_retried_then_recorded(
    direct: Backend,
    admin: psycopg.Connection,
    clinic: Clinic,
    vapi: FakeVapi,
    sleeps: list[float],
    capsys: pytest.CaptureFixture[str],
    fault: Fault,
    message: str,
) -> None:
    assert sync(capsys, clinic).code == 0
    add_practitioner(capsys, clinic, "Dr Anika Patel")
    vapi.fail("PATCH", "/tool/tool-2", fault, times=4)
    vapi.reset_calls()
    failed = sync(capsys, clinic)
    assert failed.code == 1
    assert vapi.calls.count(("PATCH", "/tool/tool-2")) == 4 and len(sleeps) == 3
    assert all(0 < s <= 8 for s in sleeps)
    assert message in failed.err and "(4 tries)" in failed.err
    row = setup_row(admin, clinic)
    assert row["stale"] is True and row["sync_attempts"] == 1 and message in row["last_error"]
    assert row["lease_owner"] is None  # the daemon may take it
    # Once Vapi is back, the next run finishes the job.
    assert sync(capsys, clinic).code == 0 and setup_row(admin, clinic)["stale"] is False


def test_a_create_vapi_may_have_done_is_not_repeated_and_the_next_run_adopts_it(
    direct: Backend, admin: psycopg.Connection, clinic: Clinic, vapi: FakeVapi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(capsys, clinic).code == 0
    del vapi.tools[recorded_tools(admin, clinic)["book_appointment"]]

    def made_then_failed(request: httpx.Request) -> httpx.Response:
        vapi.answer(request)  # Vapi made it, then its gateway failed
        return httpx.Response(502)

    vapi.fail("POST", "/tool", made_then_failed)
    vapi.reset_calls()
    failed = sync(capsys, clinic)
    assert failed.code == 1 and vapi.calls.count(("POST", "/tool")) == 1
    assert "not repeated, as Vapi may have done it" in failed.err
    made = vapi.tool_named("book_appointment")["id"]
    vapi.reset_calls()
    adopted = sync(capsys, clinic)
    assert adopted.code == 0, adopted
    assert ("GET", "/tool") in vapi.calls and ("POST", "/tool") not in vapi.calls
    assert recorded_tools(admin, clinic)["book_appointment"] == made and len(vapi.tools) == 4
    assert "made by an earlier run, now recorded" in adopted.out


def test_a_credential_deleted_in_vapi_is_made_again_with_a_new_key_and_the_old_key_revoked(
    direct: Backend, admin: psycopg.Connection, clinic: Clinic, vapi: FakeVapi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(capsys, clinic).code == 0
    [old] = vapi.credentials
    old_token = vapi.token(old)
    del vapi.credentials[old]
    vapi.reset_calls()
    again = sync(capsys, clinic)
    assert again.code == 0, again
    [new] = vapi.credentials
    assert re.search(rf"made again\s+credential {new}: {old} was deleted in Vapi", again.out)
    assert all(t["server"]["credentialId"] == new for t in vapi.tools.values())  # the tools follow
    revoked = {digest: when for _label, digest, when in keys(admin, clinic)}
    assert revoked[hashed(old_token)] is not None and revoked[hashed(vapi.token(new))] is None


def test_rotate_key_of_a_clinic_in_vapi_needs_the_vapi_settings_and_changes_nothing_without(
    direct: Backend,
    admin: psycopg.Connection,
    clinic: Clinic,
    vapi: FakeVapi,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert sync(capsys, clinic).code == 0
    before = keys(admin, clinic)
    monkeypatch.delenv("VAPI_API_KEY")
    refused = run(capsys, "rotate-key", "--clinic", str(clinic.id))
    assert refused.code == 2 and "VAPI_API_KEY" in refused.err and "Vapi credential" in refused.err
    assert keys(admin, clinic) == before
    # A clinic never set up in Vapi rotates as before: the key is printed for pasting by hand.
    other = run(capsys, "add-clinic", "--name", "Elsewhere")
    other_id = re.search(r"clinic id:\s+(\S+)", other.out)
    assert other_id
    plain = run(capsys, "rotate-key", "--clinic", other_id[1])
    assert plain.code == 0 and re.search(r"^clinic key: ck_", plain.out, re.M)


def test_vapi_sync_names_the_missing_settings(
    direct: Backend, clinic: Clinic, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VAPI_API_KEY")
    monkeypatch.delenv("SUPABASE_ANON_KEY")
    refused = run(capsys, "vapi-sync", "--clinic", str(clinic.id))
    assert refused.code == 2
    assert "configuration error: VAPI_API_KEY, SUPABASE_ANON_KEY: vapi-sync" in refused.err


# --- the database's rules (real PostgreSQL) --------------------------------------------------------------------


def stale(admin: psycopg.Connection, clinic_id: uuid.UUID) -> tuple[bool, str | None]:
    row = admin.execute(
        "select private.vapi_setup_is_stale(s), s.stale_because from public.vapi_setups s where clinic_id = %s",
        (clinic_id,),
    ).fetchone()
    assert row is not None
    return bool(row[0]), row[1]


def set_up(admin: psycopg.Connection, clinic_id: uuid.UUID, owner: str = "test") -> int:
    """A setup in step, as a sync leaves it."""
    setup = scalar(admin, "select public.claim_vapi_setup(%s, %s, 60)", (clinic_id, owner))
    admin.execute("select public.vapi_setup_synced(%s, %s, %s)", (clinic_id, owner, setup["revision"]))
    return int(setup["revision"])


def test_changes_the_tools_describe_mark_the_setup_stale_and_nothing_else_does(
    admin: psycopg.Connection, gateway: psycopg.Connection, clinic: Clinic
) -> None:
    practitioner = scalar(admin, "select public.add_practitioner(%s, 'Dr Lee')", (clinic.id,))
    set_up(admin, clinic.id)
    assert stale(admin, clinic.id) == (False, None)
    harmless = [
        "update public.clinic_services set duration_minutes = 45 where clinic_id = %(c)s and name = 'Consultation'",
        "update public.clinics set slot_minutes = 30, min_notice_minutes = 0 where id = %(c)s",
        "update public.clinics set name = name where id = %(c)s",
        'select public.change_practitioner(%(p)s, \'{"calendar_id": "lee@example.com"}\')',
        'select public.change_practitioner(%(p)s, \'{"opening_hours": [{"weekday": 1, "opens": "09:00",'
        ' "closes": "12:00"}]}\')',
    ]
    for statement in harmless:
        admin.execute(statement, {"c": clinic.id, "p": practitioner})
        assert stale(admin, clinic.id) == (False, None), statement
    # Bookings never touch the setup.
    Assistant(gateway, clinic.key).book(f"{upcoming(1).isoformat()}T10:00")
    assert stale(admin, clinic.id) == (False, None)

    described = [
        ("select public.add_practitioner(%(c)s, 'Dr Kaur')", "practitioner Dr Kaur added"),
        ('select public.change_practitioner(%(p)s, \'{"name": "Dr Lee-Smith"}\')', "practitioner Dr Lee-Smith changed"),
        (
            'select public.change_practitioner(%(p)s, \'{"services": ["Check-up"]}\')',
            "practitioner Dr Lee-Smith changed",
        ),
        ("select public.deactivate_practitioner(%(p)s)", "practitioner Dr Lee-Smith deactivated"),
        ("select public.change_practitioner(%(p)s, '{\"active\": true}')", "practitioner Dr Lee-Smith taken back"),
        ("insert into public.clinic_services values (%(c)s, 'Hygiene', 45, false)", "service Hygiene added"),
        (
            "update public.clinic_services set name = 'Scale and polish' where clinic_id = %(c)s and name = 'Hygiene'",
            "service Scale and polish changed",
        ),
        (
            "delete from public.clinic_services where clinic_id = %(c)s and name = 'Scale and polish'",
            "service Scale and polish removed",
        ),
        ("update public.clinics set name = 'Riverside Dental' where id = %(c)s", "the clinic was renamed"),
        ("update public.clinics set time_zone = 'Europe/Dublin' where id = %(c)s", "the clinic's time zone changed"),
    ]
    for statement, because in described:
        revision = set_up(admin, clinic.id)
        admin.execute(statement, {"c": clinic.id, "p": practitioner})
        assert stale(admin, clinic.id) == (True, because), statement
        assert (
            scalar(admin, "select wanted_revision from public.vapi_setups where clinic_id = %s", (clinic.id,))
            > revision
        )
    # A clinic not set up in Vapi has no row to mark; deleting a clinic takes its setup with it.
    other = scalar(admin, "insert into public.clinics (name) values ('Other') returning id")
    admin.execute("insert into public.clinic_services values (%s, 'Check-up', 30, true)", (other,))
    assert scalar(admin, "select count(*) from public.vapi_setups where clinic_id = %s", (other,)) == 0
    admin.execute("delete from public.clinics where id = %s", (clinic.id,))
    assert scalar(admin, "select count(*) from public.vapi_setups") == 0


def test_failed_syncs_back_off_in_the_database_and_leases_keep_runs_apart(
    admin: psycopg.Connection, clinic: Clinic
) -> None:
    set_up(admin, clinic.id)
    admin.execute("select public.add_practitioner(%s, 'Dr Lee')", (clinic.id,))
    claimed = scalar(admin, "select public.claim_stale_vapi_setups('daemon-a', 10, 60)")
    assert [c["clinic_id"] for c in claimed] == [str(clinic.id)]
    # Leased: neither another replica nor a command gets it.
    assert scalar(admin, "select public.claim_stale_vapi_setups('daemon-b', 10, 60)") == []
    with pytest.raises(psycopg.errors.RaiseException, match="is being synced by daemon-a until"):
        admin.execute("select public.claim_vapi_setup(%s, 'clinic-sync:host:1', 60)", (clinic.id,))
    waits = []
    for attempt in range(1, 9):
        if attempt > 1:
            admin.execute("update public.vapi_setups set next_attempt_at = now() where clinic_id = %s", (clinic.id,))
            assert len(scalar(admin, "select public.claim_stale_vapi_setups('daemon-a', 10, 60)")) == 1
        due = scalar(admin, "select public.vapi_setup_failed(%s, 'daemon-a', 'HTTP 503', null)", (clinic.id,))
        waits.append(round((due - scalar(admin, "select now()")).total_seconds()))
        # Not due yet: not claimed.
        assert scalar(admin, "select public.claim_stale_vapi_setups('daemon-a', 10, 60)") == []
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600]
    admin.execute("update public.vapi_setups set next_attempt_at = now() where clinic_id = %s", (clinic.id,))
    scalar(admin, "select public.claim_stale_vapi_setups('daemon-a', 10, 60)")
    due = scalar(admin, "select public.vapi_setup_failed(%s, 'daemon-a', 'HTTP 429', 7200)", (clinic.id,))
    assert round((due - scalar(admin, "select now()")).total_seconds()) == 7200  # Retry-After when longer
    # A sync of an older revision than the clinic's leaves it stale, due at once.
    admin.execute("update public.vapi_setups set next_attempt_at = now() where clinic_id = %s", (clinic.id,))
    [setup] = scalar(admin, "select public.claim_stale_vapi_setups('daemon-a', 10, 60)")
    admin.execute("select public.add_practitioner(%s, 'Dr Kaur')", (clinic.id,))
    assert scalar(admin, "select public.vapi_setup_synced(%s, 'daemon-a', %s)", (clinic.id, setup["revision"])) is False
    assert stale(admin, clinic.id) == (True, "practitioner Dr Kaur added")
    assert scalar(admin, "select sync_attempts from public.vapi_setups where clinic_id = %s", (clinic.id,)) == 0
    # Without the lease nothing is recorded.
    with pytest.raises(psycopg.errors.RaiseException, match="no longer holds its lease"):
        admin.execute("select public.record_vapi_tool(%s, 'daemon-a', 'check_availability', 'tool-1')", (clinic.id,))


def test_only_the_service_role_may_touch_vapi_setups(database: Database) -> None:
    with database.connect() as owner:
        functions = owner.execute(
            "select p.oid::regprocedure::text from pg_proc p where p.pronamespace = 'public'::regnamespace"
            " and (p.proname like '%vapi_setup%' or p.proname like '%vapi_credential%'"
            "      or p.proname = 'record_vapi_tool')"
        ).fetchall()
        assert len(functions) == 9
        for (signature,) in functions:
            for role in ("anon", "authenticated", "vapi_clinic"):
                allowed = scalar(owner, "select has_function_privilege(%s, %s, 'execute')", (role, signature))
                assert allowed is False, (role, signature)
            assert scalar(owner, "select has_function_privilege('service_role', %s, 'execute')", (signature,))
        for table in ("vapi_setups", "vapi_setup_tools"):
            assert scalar(owner, "select relrowsecurity from pg_class where oid = %s::regclass", (f"public.{table}",))
            for role in ("anon", "authenticated", "vapi_clinic"):
                assert not scalar(owner, "select has_table_privilege(%s, %s, 'select')", (role, f"public.{table}"))


# --- the daemon's re-syncs ----------------------------------------------------------------------------------


def daemon_settings(database: Database) -> VapiSettings:
    return VapiSettings(
        database_url=database.dsn(MIGRATOR),
        supabase_url=POSTGRES_SUPABASE_URL,
        supabase_anon_key=ANON_KEY,
        vapi_api_key=VAPI_KEY,
        vapi_api_url=VAPI_URL,
    )


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def test_the_daemon_resyncs_stale_clinics_retries_failures_and_bookings_go_on(
    direct: Backend,
    database: Database,
    admin: psycopg.Connection,
    gateway: psycopg.Connection,
    clinic: Clinic,
    vapi: FakeVapi,
    sleeps: list[float],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert sync(capsys, clinic, "--assistant", "asst-1").code == 0
    ids = recorded_tools(admin, clinic)
    settings, metrics = daemon_settings(database), Metrics()

    async def keeper_run(times: int = 1) -> list[int]:
        store = await open_store(settings)
        try:
            keeper = vapi_keeper(settings, store, "daemon-1", metrics)
            assert isinstance(keeper, VapiKeeper)
            tried = [await keeper.run_once() for _ in range(times)]
            return tried
        finally:
            await store.close()

    assert asyncio.run(keeper_run()) == [0]  # nothing stale: not even a request to Vapi
    vapi.reset_calls()
    assert vapi.calls == []

    # Vapi is down when a practitioner joins: the re-sync fails, is recorded, and waits; bookings go on.
    add_practitioner(capsys, clinic, "Dr Anika Patel")
    vapi.fail("PATCH", r"/tool/.*", httpx.Response(500), times=4)
    assert asyncio.run(keeper_run(times=2)) == [1, 0]  # the second run: not due yet
    assert metric(metrics, "calendar_sync_vapi_syncs_total", result="failed") == 1
    assert metric(metrics, "calendar_sync_vapi_setups_stale") == 1
    assert metric(metrics, "calendar_sync_vapi_oldest_stale_seconds") >= 0
    row = setup_row(admin, clinic)
    assert row["stale"] and row["sync_attempts"] == 1 and "HTTP 500 (4 tries)" in row["last_error"]
    reference = Assistant(gateway, vapi.token(row["credential_id"])).book(f"{upcoming(1).isoformat()}T11:00")
    assert reference

    # Due again (as after the backoff): the daemon brings the tools in step, in place.
    admin.execute("update public.vapi_setups set next_attempt_at = now() where clinic_id = %s", (clinic.id,))
    vapi.reset_calls()
    assert asyncio.run(keeper_run()) == [1]
    assert sorted(w[1] for w in vapi.writes) == sorted(
        f"/tool/{ids[n]}" for n in ("check_availability", "book_appointment", "reschedule_appointment")
    )
    assert "Dr Anika Patel" in vapi.tool_named("check_availability")["function"]["description"]
    assert metric(metrics, "calendar_sync_vapi_syncs_total", result="ok") == 1
    assert metric(metrics, "calendar_sync_vapi_setups_stale") == 0
    row = setup_row(admin, clinic)
    assert not row["stale"] and row["sync_attempts"] == 0 and row["last_error"] is None
    assert recorded_tools(admin, clinic) == ids
    assert VAPI_KEY not in capsys.readouterr().err


def test_the_daemon_job_needs_the_vapi_settings(database: Database) -> None:
    settings = daemon_settings(database)
    assert vapi_keeper(settings.model_copy(update={"vapi_api_key": None}), None, "d") is None  # type: ignore[arg-type]
    assert vapi_keeper(settings.model_copy(update={"supabase_anon_key": None}), None, "d") is None  # type: ignore[arg-type]


# --- verify ------------------------------------------------------------------------------------------


def full_settings(database: Database, google: GoogleStandIn, **overrides: Any) -> Settings:
    backend = Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)})
    return make_settings(
        backend,
        google,
        supabase_url=POSTGRES_SUPABASE_URL,
        supabase_anon_key=ANON_KEY,
        vapi_api_key=VAPI_KEY,
        vapi_api_url=VAPI_URL,
        **overrides,
    )


def test_the_running_daemon_keeps_vapi_in_step(
    direct: Backend,
    database: Database,
    admin: psycopg.Connection,
    google: GoogleStandIn,
    clinic: Clinic,
    vapi: FakeVapi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert sync(capsys, clinic).code == 0
    with running(full_settings(database, google, vapi_sync_interval_seconds=0.2)) as runner:
        add_practitioner(capsys, clinic, "Dr Anika Patel")
        wait_until(lambda: not setup_row(admin, clinic)["stale"], what="the daemon re-synced Vapi")
        wait_until(
            lambda: metric(runner.daemon.metrics, "calendar_sync_vapi_syncs_total", result="ok") == 1,
            what="the re-sync counted",
        )
        wait_until(lambda: metric(runner.daemon.metrics, "calendar_sync_vapi_setups_stale") == 0, what="no stale")
    assert "Dr Anika Patel" in vapi.tool_named("check_availability")["function"]["description"]
    assert len(vapi.tools) == 4
    assert VAPI_KEY not in capsys.readouterr().err


def test_verify_compares_each_clinic_in_vapi_and_names_a_stale_one(
    direct: Backend,
    database: Database,
    admin: psycopg.Connection,
    google: GoogleStandIn,
    clinic: Clinic,
    vapi: FakeVapi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = full_settings(database, google)
    quick = VerifyOptions(feed_timeout_seconds=1.0)

    def vapi_check() -> Any:
        report = asyncio.run(run_checks(settings, quick))
        [check] = [c for c in report.checks if c.name.startswith("vapi")]
        return check

    assert sync(capsys, clinic, "--assistant", "asst-1").code == 0
    vapi.reset_calls()
    check = vapi_check()
    assert check.name == "vapi: Riverside Clinic" and check.status is Status.OK, check
    assert "4 tools match vapi-tools" in check.detail and "attached to assistant asst-1" in check.detail
    assert vapi.writes == []

    add_practitioner(capsys, clinic, "Dr Anika Patel")
    check = vapi_check()
    assert check.status is Status.FAIL, check
    assert "Vapi's tools are not what vapi-tools would print" in check.detail
    assert "tool check_availability (tool-" in check.detail and "function.description" in check.detail
    assert "stale since" in check.detail and "practitioner Dr Anika Patel added" in check.detail
    assert f"clinic-sync vapi-sync --clinic {clinic.id}" in check.detail
    assert vapi.writes == []

    # Deleted in the dashboard, the key revoked: both named.
    assert sync(capsys, clinic).code == 0
    del vapi.tools[recorded_tools(admin, clinic)["cancel_appointment"]]
    admin.execute("update public.clinic_api_keys set revoked_at = now() where label = 'vapi credential'")
    check = vapi_check()
    assert check.status is Status.FAIL
    assert "was deleted in Vapi" in check.detail and "its key was revoked" in check.detail

    # Without VAPI_API_KEY, what the database knows.
    check = asyncio.run(run_checks(settings.model_copy(update={"vapi_api_key": None}), quick))
    [warned] = [c for c in check.checks if c.name == "vapi"]
    assert warned.status is Status.WARN and "not compared without VAPI_API_KEY" in warned.detail


# --- the client's pieces --------------------------------------------------------------------------------


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    now = dt.datetime(2026, 12, 8, 12, 0, tzinfo=dt.UTC)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds("Tue, 08 Dec 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None


def test_the_client_never_repeats_a_refusal_and_scrubs_secrets_from_what_vapi_says(vapi: FakeVapi) -> None:
    echoed = f"token ck_{'x' * 43} and key {VAPI_KEY} are wrong"
    vapi.fail("POST", "/credential", httpx.Response(400, json={"message": [echoed]}), times=3)

    async def create() -> None:
        async with VapiClient(VAPI_URL, VAPI_KEY) as client:
            await client.create_credential(
                {"provider": "custom-credential", "name": "n", "authenticationPlan": {"token": f"ck_{'x' * 43}"}}
            )

    with pytest.raises(VapiError) as raised:
        asyncio.run(create())
    assert vapi.calls == [("POST", "/credential")]
    assert str(raised.value) == "Vapi refused creating the credential (HTTP 400: token *** and key *** are wrong)"


def test_differences_ignore_what_vapi_adds_but_not_extra_headers_or_arguments() -> None:
    wanted: dict[str, Any] = {
        "function": {"name": "f", "parameters": {"properties": {"a": {"type": "string"}}}},
        "server": {"headers": {"apikey": "k"}},
    }
    assert differences(wanted, {**wanted, "id": "t", "function": {**wanted["function"], "strict": False}}) == []
    assert differences(wanted, {**wanted, "server": {"headers": {"apikey": "k", "x-clinic-key": "ck_1"}}}) == [
        "server.headers.x-clinic-key"
    ]
    extra = {"function": {"name": "f", "parameters": {"properties": {"a": {"type": "string"}, "b": {}}}}}
    assert differences(wanted, {**wanted, **extra}) == ["function.parameters.properties.b"]
