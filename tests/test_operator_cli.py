"""`clinic-sync` subcommands that manage clinics, keys and Vapi tools, over both database paths."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from daemon.cli import main
from tests.conftest import Clinic, Database
from tests.daemon_harness import Backend
from tests.dates import upcoming
from tests.standins.postgres import MIGRATOR, scalar
from tests.standins.supabase_rest import SupabaseRestStandIn
from tests.standins.vapi import Assistant, VapiCall, tool_call

DATABASE_VARIABLES = ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_ANON_KEY", "DATABASE_URL", "SYNC_DATABASE")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, backend: Backend, tmp_path: Any) -> Backend:
    """Only the backend's variables are set (a stray .env or variable must not redirect the command)."""
    monkeypatch.chdir(tmp_path)
    for name in DATABASE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    return backend


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def printed(label: str, text: str) -> str:
    match = re.search(rf"^{label}:\s+(\S+)$", text, re.MULTILINE)
    assert match, text
    return match[1]


def clinic_count(admin: psycopg.Connection) -> int:
    return int(scalar(admin, "select count(*) from public.clinics"))


def test_add_clinic_creates_a_clinic_the_assistant_can_book_at(
    environment: Backend, admin: psycopg.Connection, gateway: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "add-clinic",
        "--name",
        "Harbour Dental",
        "--time-zone",
        "Europe/Dublin",
        "--hours",
        "mon-fri 8:30-17:00",
        "--hours",
        "sat 09:00-12:00",
        "--service",
        "Check-up=30",
        "--service",
        "Hygiene=45*",
        "--phone-country-code",
        "353",
    )
    assert code == 0, out
    clinic_id, key = uuid.UUID(printed("clinic id", out)), printed("clinic key", out)
    assert "shown only this once" in out
    row = admin.execute(
        "select name, time_zone, phone_country_code from public.clinics where id = %s", (clinic_id,)
    ).fetchone()
    assert row == ("Harbour Dental", "Europe/Dublin", "353")
    hours = admin.execute(
        "select weekday, opens::text, closes::text from public.clinic_opening_hours where clinic_id = %s order by 1",
        (clinic_id,),
    ).fetchall()
    assert hours == [(d, "08:30:00", "17:00:00") for d in range(1, 6)] + [(6, "09:00:00", "12:00:00")]
    services = admin.execute(
        "select name, duration_minutes, is_default from public.clinic_services where clinic_id = %s order by 1",
        (clinic_id,),
    ).fetchall()
    assert services == [("Check-up", 30, False), ("Hygiene", 45, True)]
    assert scalar(admin, "select count(*) from public.clinic_api_keys where clinic_id = %s", (clinic_id,)) == 1
    stored = scalar(admin, "select key_hash from public.clinic_api_keys where clinic_id = %s", (clinic_id,))
    assert bytes(stored) == hashlib.sha256(key.encode()).digest()  # only the hash is kept

    saturday = upcoming(5)  # the next Saturday
    answer = Assistant(gateway, key).use("check_availability", {"date": saturday.isoformat()})
    assert "45-minute Hygiene" in answer["result"] and "09:00" in answer["result"], answer


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["--time-zone", "Europe/Londn"], 1, 'Unknown time zone "Europe/Londn"'),
        (["--hours", "mon-fri 09:00-17:00", "--hours", "mon 12:00-13:00"], 1, "two periods overlap on day 1"),
        (["--hours", "mon 17:00-09:00"], 1, "closes (09:00) before it opens (17:00)"),
        (["--hours", "mon 25:00-26:00"], 1, "times are HH:MM"),
        (["--hours", "weekdays 9-5"], 2, "are not like 'mon-fri 09:00-17:00'"),
        (["--hours", "fri-mon 09:00-17:00"], 2, "runs backwards"),
        (["--service", "Checkup"], 2, "is not like 'Check-up=30'"),
        (["--service", "A=30*", "--service", "B=30*"], 1, "Only one service can be the default"),
        (["--service", "A=3"], 1, "5 to 480 whole minutes"),
        (["--service", "A=30", "--service", "a=45"], 1, 'The service "a" is listed twice'),
        (["--phone-country-code", "+44"], 1, "1 to 3 digits"),
    ],
)
def test_add_clinic_refuses_bad_input_and_creates_nothing(
    environment: Backend,
    admin: psycopg.Connection,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    code: int,
    message: str,
) -> None:
    exit_code, out, err = run(capsys, "add-clinic", "--name", "Harbour Dental", *arguments)
    assert (exit_code, out) == (code, "")
    assert message in err
    assert clinic_count(admin) == 0


def test_rotating_and_revoking_keys(
    environment: Backend,
    gateway: psycopg.Connection,
    clinic: Clinic,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def answers(key: str) -> bool:
        result = Assistant(gateway, key).use("check_availability", {"date": upcoming(1).isoformat()})
        return "result" in result

    code, out, _ = run(capsys, "rotate-key", "--clinic", str(clinic.id), "--grace-minutes", "0", "--label", "vapi-2")
    assert code == 0
    new_key = printed("clinic key", out)
    assert answers(new_key) and not answers(clinic.key)

    code, out, _ = run(capsys, "keys", "--clinic", str(clinic.id))
    assert code == 0
    assert new_key not in out and clinic.key not in out  # prefixes only
    [active] = [line for line in out.splitlines() if line.endswith("active")]
    assert new_key[:10] in active and "vapi-2" in active
    assert sum("revoked" in line for line in out.splitlines()) == 1

    code, out, _ = run(capsys, "revoke-key", active.split()[0])
    assert code == 0
    assert not answers(new_key)

    code, _, err = run(capsys, "revoke-key", str(uuid.uuid4()))
    assert code == 1 and "No clinic key with id" in err


def test_vapi_tools_describe_exactly_what_the_rpc_accepts(
    monkeypatch: pytest.MonkeyPatch,
    environment: Backend,
    rest: SupabaseRestStandIn,
    clinic: Clinic,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SUPABASE_URL", rest.url)
    monkeypatch.setenv("SUPABASE_ANON_KEY", rest.anon_key)
    code, out, err = run(capsys, "vapi-tools", "--clinic", str(clinic.id), "--clinic-key", clinic.key)
    assert code == 0, err
    tools = {tool["function"]["name"]: tool for tool in json.loads(out)}
    assert set(tools) == {"check_availability", "book_appointment", "cancel_appointment", "reschedule_appointment"}
    assert f'"org_id": "{clinic.id}"' in err

    for name, tool in tools.items():
        assert tool["type"] == "function" and tool["async"] is False
        server = tool["server"]
        assert server["url"] == f"{rest.url}/rest/v1/rpc/vapi_tool_call"
        assert server["headers"]["apikey"] == rest.anon_key and server["headers"]["x-clinic-key"] == clinic.key
        parameters = tool["function"]["parameters"]
        # The RPC names the arguments it takes when given one it does not know.
        refusal = call_tool(server, name, {"not_an_argument": "x"})
        accepted = set(refusal["error"].split("This tool takes: ")[1].rstrip(".").split(", "))
        # `practitioner` is described only to a clinic with practitioners (tests/test_practitioner_cli.py).
        assert set(parameters["properties"]) == accepted - {"practitioner"}, name
        assert set(parameters["required"]) <= accepted
        if "service" in parameters["properties"]:
            assert parameters["properties"]["service"]["enum"] == ["Check-up", "Consultation"]  # the default first

    # The definitions work as printed: the assistant books with exactly these headers and URL.
    day = upcoming(1).isoformat()
    booked = call_tool(
        tools["book_appointment"]["server"], "book_appointment", {"start": f"{day}T10:00", "patient_name": "Ada"}
    )
    assert booked.get("result", "").startswith("Booked:"), booked


def call_tool(server: dict[str, Any], name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    envelope = VapiCall().message(tool_call(name, arguments))
    response = httpx.post(server["url"], headers=server["headers"], json=envelope, timeout=10)
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    return dict(result)


def test_vapi_tools_can_issue_a_key_and_leaves_placeholders_otherwise(
    monkeypatch: pytest.MonkeyPatch,
    environment: Backend,
    rest: SupabaseRestStandIn,
    gateway: psycopg.Connection,
    clinic: Clinic,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SUPABASE_URL", rest.url)
    code, out, err = run(capsys, "vapi-tools", "--clinic", str(clinic.id), "--issue-key")
    assert code == 0
    headers = json.loads(out)[0]["server"]["headers"]
    assert headers["apikey"].startswith("<") and "SUPABASE_ANON_KEY" in err
    assert "result" in Assistant(gateway, headers["x-clinic-key"]).use(
        "check_availability", {"date": upcoming(1).isoformat()}
    )

    code, out, err = run(capsys, "vapi-tools", "--clinic", str(clinic.id))
    assert code == 0 and json.loads(out)[0]["server"]["headers"]["x-clinic-key"].startswith("<")
    assert "the clinic key" in err


def test_vapi_tools_for_an_unknown_clinic_or_without_a_url(
    monkeypatch: pytest.MonkeyPatch, environment: Backend, rest: SupabaseRestStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = uuid.uuid4()
    monkeypatch.setenv("SUPABASE_URL", rest.url)
    code, out, err = run(capsys, "vapi-tools", "--clinic", str(missing))
    assert (code, out) == (1, "") and f"No clinic with id {missing}" in err
    if environment.name == "postgres":
        monkeypatch.delenv("SUPABASE_URL")
        code, out, err = run(capsys, "vapi-tools", "--clinic", str(missing))
        assert (code, out) == (2, "") and "SUPABASE_URL" in err


def test_commands_name_the_missing_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in DATABASE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    code, out, err = run(capsys, "add-clinic", "--name", "X")
    assert (code, out) == (2, "")
    assert "configuration error" in err and "SUPABASE_URL" in err
    code, _, err = run(capsys, "migrate", "status")
    assert code == 2 and "DATABASE_URL" in err


def test_a_bad_encryption_key_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "DATABASE_URL": database.dsn(MIGRATOR),
        "GOOGLE_CLIENT_ID": "id",
        "GOOGLE_CLIENT_SECRET": "secret",
        "TOKEN_ENCRYPTION_KEY": "correct horse battery staple",
    }.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "verify")
    assert (code, out) == (2, "")
    assert "TOKEN_ENCRYPTION_KEY must be Fernet keys" in err and "correct horse" not in err
