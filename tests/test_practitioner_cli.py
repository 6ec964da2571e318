"""`clinic-sync` practitioner commands (issue #16), over both database paths, against the real SQL: adding,
listing, changing and deactivating practitioners, bad input refused with a sentence and nothing changed, and
the Vapi tool definitions naming them only for a clinic that has them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import Clinic
from tests.daemon_harness import Backend
from tests.dates import upcoming
from tests.standins.supabase_rest import SupabaseRestStandIn
from tests.standins.vapi import Assistant, VapiCall, tool_call
from tests.test_operator_cli import DATABASE_VARIABLES, printed, run

TUESDAY = 2
INDENT = " " * 38


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, backend: Backend, tmp_path: Any) -> Backend:
    """Only the backend's variables are set (a stray .env or variable must not redirect the command)."""
    monkeypatch.chdir(tmp_path)
    for name in DATABASE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    return backend


def add(capsys: pytest.CaptureFixture[str], clinic: Clinic, name: str, *options: str) -> uuid.UUID:
    code, out, err = run(capsys, "add-practitioner", "--clinic", str(clinic.id), "--name", name, *options)
    assert code == 0, err
    return uuid.UUID(printed("practitioner id", out))


def listing(capsys: pytest.CaptureFixture[str], clinic: Clinic) -> str:
    code, out, err = run(capsys, "practitioners", "--clinic", str(clinic.id))
    assert code == 0, err
    return out


def practitioner_rows(admin: psycopg.Connection) -> list[tuple[Any, ...]]:
    return admin.execute(
        "select id, name, services, calendar_id, active from public.practitioners order by name"
    ).fetchall()


def everything(admin: psycopg.Connection) -> list[list[tuple[Any, ...]]]:
    """Every row the practitioner commands could change."""
    return [
        practitioner_rows(admin),
        admin.execute(
            "select practitioner_id, weekday, opens, closes from public.practitioner_hours order by 1, 2, 3"
        ).fetchall(),
        admin.execute("select id, practitioner_id, starts_at, status from public.appointments order by id").fetchall(),
    ]


def booked_with(admin: psycopg.Connection, reference: str) -> str | None:
    row = admin.execute(
        "select p.name from public.appointments a left join public.practitioners p on p.id = a.practitioner_id"
        " where a.reference = %s",
        (reference,),
    ).fetchone()
    assert row is not None
    return None if row[0] is None else str(row[0])


def test_add_list_change_and_take_back_practitioners(
    environment: Backend,
    admin: psycopg.Connection,
    gateway: psycopg.Connection,
    clinic: Clinic,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert listing(capsys, clinic) == "no practitioners: Riverside Clinic books as one diary\n"
    anika = add(
        capsys, clinic, "Dr Anika Patel", "--services", "check-up,  Consultation", "--hours", "mon-wed 09:00-13:00",
        "--hours", "thu 13:00-17:00",
    )  # fmt: skip
    tom = add(capsys, clinic, "Dr Tom Jones")
    assert practitioner_rows(admin) == [
        (anika, "Dr Anika Patel", ["Check-up", "Consultation"], None, True),  # spelt as the clinic spells them
        (tom, "Dr Tom Jones", None, None, True),
    ]
    assert listing(capsys, clinic) == (
        f"{anika}  Dr Anika Patel  active  0 booking(s) ahead\n"
        f"{INDENT}services: Check-up, Consultation\n"
        f"{INDENT}hours:    mon-wed 09:00-13:00, thu 13:00-17:00\n"
        f"{INDENT}calendar: the clinic's\n"
        f"{tom}  Dr Tom Jones  active  0 booking(s) ahead\n"
        f"{INDENT}services: all of the clinic's\n"
        f"{INDENT}hours:    the clinic's\n"
        f"{INDENT}calendar: the clinic's\n"
    )

    code, out, err = run(
        capsys, "change-practitioner", str(tom), "--name", "Dr Tom Jones-Smith", "--services", "Check-up",
        "--hours", "fri 10:00-12:00", "--hours", "mon,wed 14:00-16:00", "--calendar-id", "tom@example.com",
    )  # fmt: skip
    assert code == 0, err
    assert "changed: name, services, opening_hours, calendar_id" in out
    assert "make changes to events in tom@example.com" in out and "vapi-tools" in out
    assert practitioner_rows(admin)[1] == (tom, "Dr Tom Jones-Smith", ["Check-up"], "tom@example.com", True)
    tom_line = listing(capsys, clinic).split(f"{tom}  ")[1]
    assert "hours:    mon,wed 14:00-16:00, fri 10:00-12:00" in tom_line and "calendar: tom@example.com" in tom_line

    # The assistant books with him by a part of his name.
    friday = upcoming(5).isoformat()
    booked = Assistant(gateway, clinic.key).use(
        "book_appointment", {"start": f"{friday}T10:00", "patient_name": "Ada", "practitioner": "tom"}
    )
    assert booked.get("result", "").startswith("Booked: Check-up with Dr Tom Jones-Smith on "), booked

    code, out, err = run(
        capsys, "change-practitioner", str(tom), "--all-services", "--clinic-hours", "--clinic-calendar"
    )
    assert code == 0, err
    assert practitioner_rows(admin)[1] == (tom, "Dr Tom Jones-Smith", None, None, True)
    assert scalar_count(admin, "select count(*) from public.practitioner_hours where practitioner_id = %s", tom) == 0

    # Deactivated without bookings ahead, then taken back.
    code, out, err = run(capsys, "deactivate-practitioner", str(anika), "--clinic", str(clinic.id))
    assert code == 0, err
    assert out.startswith("Dr Anika Patel no longer takes bookings.\nNo bookings ahead.\n")
    assert f"{anika}  Dr Anika Patel  deactivated  0 booking(s) ahead" in listing(capsys, clinic)
    code, out, err = run(capsys, "change-practitioner", str(anika), "--reactivate")
    assert code == 0, err
    assert "changed: active" in out
    assert practitioner_rows(admin)[0] == (anika, "Dr Anika Patel", ["Check-up", "Consultation"], None, True)


def scalar_count(admin: psycopg.Connection, query: str, *params: Any) -> int:
    row = admin.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def test_deactivating_keeps_or_moves_each_booking_ahead(
    environment: Backend,
    admin: psycopg.Connection,
    gateway: psycopg.Connection,
    clinic: Clinic,
    capsys: pytest.CaptureFixture[str],
) -> None:
    add(capsys, clinic, "Dr Anika Patel")
    tom = add(capsys, clinic, "Dr Tom Jones")
    assistant = Assistant(gateway, clinic.key)
    day = upcoming(TUESDAY)
    free_colleague = assistant.book(f"{day}T10:00", "Ada", practitioner="Tom")
    no_colleague = assistant.book(f"{day}T11:00", "Bea", practitioner="Dr Jones")
    assistant.book(f"{day}T11:00", "Cy", practitioner="Anika")  # Anika is busy at 11:00
    date = f"{day:%a %d %b %Y}"

    code, out, err = run(capsys, "deactivate-practitioner", str(tom), "--clinic", str(clinic.id))
    assert code == 0, err
    assert out.splitlines()[:6] == [
        "Dr Tom Jones no longer takes bookings.",
        "Bookings ahead (Europe/London time):",
        f"  {free_colleague}  {date} 10:00  Check-up  with Dr Tom Jones  kept",
        f"  {no_colleague}  {date} 11:00  Check-up  with Dr Tom Jones  kept",
        "0 moved to a colleague free at that time, 2 kept with Dr Tom Jones.",
        "Kept bookings stay with Dr Tom Jones: the clinic must move or cancel them"
        " (their calendar is still synced while they have any).",
    ]
    assert f"deactivate-practitioner {tom} --clinic {clinic.id} --reassign" in out
    assert booked_with(admin, free_colleague) == booked_with(admin, no_colleague) == "Dr Tom Jones"
    assert f"{tom}  Dr Tom Jones  deactivated  2 booking(s) ahead" in listing(capsys, clinic)
    refused = assistant.use("book_appointment", {"start": f"{day}T14:00", "patient_name": "Di", "practitioner": "Tom"})
    assert "Dr Tom Jones no longer takes bookings" in refused.get("error", ""), refused

    # Again, reassigning: the 10:00 goes to Anika, free then; no one can take the 11:00.
    code, out, err = run(capsys, "deactivate-practitioner", str(tom), "--clinic", str(clinic.id), "--reassign")
    assert code == 0, err
    assert out.splitlines()[2:5] == [
        f"  {free_colleague}  {date} 10:00  Check-up  with Dr Anika Patel  moved",
        f"  {no_colleague}  {date} 11:00  Check-up  with Dr Tom Jones  kept",
        "1 moved to a colleague free at that time, 1 kept with Dr Tom Jones.",
    ]
    assert "--reassign" not in out
    assert booked_with(admin, free_colleague) == "Dr Anika Patel"
    assert booked_with(admin, no_colleague) == "Dr Tom Jones"


UNKNOWN = str(uuid.UUID(int=1))


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["add-practitioner", "--clinic", "{clinic}", "--name", "Dr Bo", "--services", "Whitening"], 1,
         'The clinic has no service "Whitening". Its services: Check-up, Consultation'),
        (["add-practitioner", "--clinic", "{clinic}", "--name", " dr ANIKA patel "], 1,
         'The clinic already has a practitioner called "dr ANIKA patel"'),
        (["add-practitioner", "--clinic", "{clinic}", "--name", "Dr Bo", "--hours", "mon 17:00-09:00"], 1,
         "closes (09:00) before it opens (17:00)"),
        (["add-practitioner", "--clinic", "{clinic}", "--name", "Dr Bo", "--hours", "mon-fri 09:00-17:00",
          "--hours", "mon 12:00-13:00"], 1, "Opening hours: two periods overlap on day 1"),
        (["add-practitioner", "--clinic", "{clinic}", "--name", "Dr Bo", "--hours", "weekdays 9-5"], 2,
         "are not like 'mon-fri 09:00-17:00'"),
        (["add-practitioner", "--clinic", "{clinic}", "--name", "Dr Bo", "--services", "Check-up,,"], 2,
         "are not like 'Check-up, Hygiene'"),
        (["add-practitioner", "--clinic", "{clinic}", "--name", "  "], 1, "1 to 100 printable characters"),
        (["add-practitioner", "--clinic", UNKNOWN, "--name", "Dr Bo"], 1, f"No clinic with id {UNKNOWN}"),
        (["change-practitioner", "{anika}", "--name", "DR TOM JONES"], 1,
         'The clinic already has a practitioner called "DR TOM JONES"'),
        (["change-practitioner", "{anika}", "--name", "Dr Anika Shah", "--services", "Whitening"], 1,
         'The clinic has no service "Whitening"'),
        (["change-practitioner", "{anika}", "--hours", "mon 25:00-26:00"], 1, "times are HH:MM"),
        (["change-practitioner", "{anika}"], 2, "nothing to change"),
        (["change-practitioner", UNKNOWN, "--name", "Dr Bo"], 1, f"No practitioner with id {UNKNOWN}"),
        (["deactivate-practitioner", UNKNOWN, "--clinic", "{clinic}"], 1, f"has no practitioner with id {UNKNOWN}"),
        (["deactivate-practitioner", "{anika}", "--clinic", UNKNOWN], 1, f"No clinic with id {UNKNOWN}"),
        (["practitioners", "--clinic", UNKNOWN], 1, f"No clinic with id {UNKNOWN}"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_a_sentence_and_changes_nothing(
    environment: Backend,
    admin: psycopg.Connection,
    clinic: Clinic,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    message: str,
) -> None:
    anika = add(capsys, clinic, "Dr Anika Patel", "--services", "Check-up", "--hours", "mon 09:00-12:00")
    add(capsys, clinic, "Dr Tom Jones")
    before = everything(admin)
    exit_code, out, err = run(capsys, *(arg.format(clinic=clinic.id, anika=anika) for arg in argv))
    assert (exit_code, out) == (code, "")
    assert message in err and err.count("\n") == 1, err  # one clean line
    assert everything(admin) == before


def test_a_practitioner_of_another_clinic_is_not_deactivated(
    environment: Backend, admin: psycopg.Connection, clinic: Clinic, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "add-clinic", "--name", "Harbour Dental")
    assert code == 0, err
    other = Clinic(uuid.UUID(printed("clinic id", out)), printed("clinic key", out))
    theirs = add(capsys, other, "Dr Anika Patel")
    before = everything(admin)
    code, out, err = run(capsys, "deactivate-practitioner", str(theirs), "--clinic", str(clinic.id))
    assert (code, out) == (1, "") and f"has no practitioner with id {theirs}" in err
    assert everything(admin) == before


def tools_of(capsys: pytest.CaptureFixture[str], clinic: Clinic) -> dict[str, dict[str, Any]]:
    code, out, err = run(capsys, "vapi-tools", "--clinic", str(clinic.id), "--clinic-key", clinic.key)
    assert code == 0, err
    return {tool["function"]["name"]: tool for tool in json.loads(out)}


def call_tool(server: dict[str, Any], name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    envelope = VapiCall().message(tool_call(name, arguments))
    response = httpx.post(server["url"], headers=server["headers"], json=envelope, timeout=10)
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    return dict(result)


def accepted_arguments(tool: dict[str, Any]) -> set[str]:
    """What the RPC says the tool takes, when given an argument it does not know."""
    refusal = call_tool(tool["server"], tool["function"]["name"], {"not_an_argument": "x"})
    return set(refusal["error"].split("This tool takes: ")[1].rstrip(".").split(", "))


def test_vapi_tools_name_practitioners_only_for_a_clinic_that_has_them(
    monkeypatch: pytest.MonkeyPatch,
    environment: Backend,
    rest: SupabaseRestStandIn,
    clinic: Clinic,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SUPABASE_URL", rest.url)
    monkeypatch.setenv("SUPABASE_ANON_KEY", rest.anon_key)
    without = tools_of(capsys, clinic)
    assert "ractitioner" not in json.dumps(without)  # exactly what it was before practitioners
    assert without["reschedule_appointment"]["function"]["parameters"]["required"] == ["new_start"]
    for tool in without.values():
        # The RPC takes `practitioner` from every clinic; only "anyone" means anything without practitioners.
        assert set(tool["function"]["parameters"]["properties"]) == accepted_arguments(tool) - {"practitioner"}

    anika = add(capsys, clinic, "Dr Anika Patel", "--services", "Check-up")
    tom = add(capsys, clinic, "Dr Tom Jones")
    with_them = tools_of(capsys, clinic)
    roster = "Practitioners: Dr Anika Patel (Check-up); Dr Tom Jones (Check-up, Consultation)."
    for name, tool in with_them.items():
        function = tool["function"]
        offered = name != "cancel_appointment"
        assert (roster in function["description"]) == offered, name
        assert ("practitioner" in function["parameters"]["properties"]) == offered, name
        assert set(function["parameters"]["properties"]) == accepted_arguments(tool), name
        assert function["description"].startswith(without[name]["function"]["description"])
    assert "Leave practitioner out for whoever is free." in with_them["book_appointment"]["function"]["description"]
    assert with_them["reschedule_appointment"]["function"]["parameters"]["required"] == []

    # As printed: book with Anika, then move the booking to Tom at the same time (no new_start).
    day = upcoming(TUESDAY).isoformat()
    booked = call_tool(
        with_them["book_appointment"]["server"],
        "book_appointment",
        {"start": f"{day}T10:00", "patient_name": "Ada", "practitioner": "Anika"},
    )
    assert booked.get("result", "").startswith("Booked: Check-up with Dr Anika Patel"), booked
    reference = booked["result"].rsplit("Reference ", 1)[1].rstrip(".")
    moved = call_tool(
        with_them["reschedule_appointment"]["server"],
        "reschedule_appointment",
        {"reference": reference, "practitioner": "Tom"},
    )
    assert moved.get("result", "").startswith("Moved: Check-up with Dr Anika Patel from "), moved
    assert f"to Dr Tom Jones on {upcoming(TUESDAY):%A %-d %B %Y} at 10:00 (reference {reference})" in moved["result"]

    # A deactivated practitioner is no longer offered.
    code, _, err = run(capsys, "deactivate-practitioner", str(anika), "--clinic", str(clinic.id))
    assert code == 0, err
    description = tools_of(capsys, clinic)["book_appointment"]["function"]["description"]
    assert "Practitioners: Dr Tom Jones (Check-up, Consultation)." in description and "Anika" not in description
    assert f"{tom}  Dr Tom Jones  active  1 booking(s) ahead" in listing(capsys, clinic)
