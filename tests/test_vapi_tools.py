"""The Vapi tools through `vapi_tool_call`, called exactly as Supabase's REST gateway calls it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import Clinic, Database
from tests.dates import LONDON, upcoming
from tests.standins.postgres import AUTHENTICATOR, scalar
from tests.standins.postgrest import set_request_context
from tests.standins.supabase_rest import SupabaseRestStandIn
from tests.standins.vapi import Assistant, VapiCall, tool_call

TUESDAY = 2
SUNDAY = 7


def answer(item: dict[str, Any]) -> str:
    assert "error" not in item, item
    result = item["result"]
    assert isinstance(result, str) and "\n" not in result
    return result


def refusal(item: dict[str, Any]) -> str:
    assert "result" not in item, item
    error = item["error"]
    assert isinstance(error, str) and "\n" not in error
    return error


def appointments(admin: psycopg.Connection) -> list[dict[str, Any]]:
    cur = admin.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute("select * from public.appointments order by created_at").fetchall()


def london(day: dt.date, clock: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.fromisoformat(clock), LONDON)


# --- the envelope ---------------------------------------------------------------------


def test_results_come_back_in_call_order_with_ids_echoed(assistant: Assistant, admin: psycopg.Connection) -> None:
    day = upcoming(TUESDAY)
    calls = [
        tool_call("check_availability", {"date": day.isoformat()}),
        tool_call("book_appointment", {"start": f"{day}T10:00", "patient_name": "Jane Doe"}),
        tool_call("no_such_tool", {}),
        tool_call("book_appointment", {"start": f"{day}T10:00", "patient_name": "John Roe"}),
    ]
    response = assistant.send(assistant.call.message(*calls))

    assert [r["toolCallId"] for r in response["results"]] == [c["id"] for c in calls]
    availability, booked, unknown, taken = response["results"]
    assert "10:00" in answer(availability)
    assert answer(booked).startswith("Booked: Check-up on ")
    assert refusal(unknown).startswith('Unknown tool "no_such_tool"')
    assert "is not available" in refusal(taken)
    assert len(appointments(admin)) == 1


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(
            lambda c: {**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}},
            id="arguments-as-json-string",
        ),
        pytest.param(
            lambda c: {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]},
            id="flat-arguments",
        ),
        pytest.param(
            lambda c: {"id": c["id"], "name": c["function"]["name"], "parameters": c["function"]["arguments"]},
            id="flat-parameters",
        ),
    ],
)
def test_older_and_string_typed_call_shapes_are_accepted(
    assistant: Assistant, admin: psycopg.Connection, shape: Any
) -> None:
    day = upcoming(TUESDAY)
    call = shape(tool_call("book_appointment", {"start": f"{day}T09:00", "patient_name": "Jane Doe"}))
    [item] = assistant.send(assistant.call.message(call))["results"]
    assert item["toolCallId"] == call["id"]
    assert answer(item).startswith("Booked:")
    assert len(appointments(admin)) == 1


def test_tool_with_tool_call_list_alone_is_enough(assistant: Assistant) -> None:
    call = tool_call("check_availability", {"date": upcoming(TUESDAY).isoformat()})
    message = assistant.call.message(call)
    del message["message"]["toolCallList"]
    [item] = assistant.send(message)["results"]
    assert item["toolCallId"] == call["id"]
    assert answer(item).startswith("Free start times")


@pytest.mark.parametrize(
    ("body", "expected", "ids"),
    [
        ([1, 2], "The body must be a Vapi server message", []),
        ({"toolCallList": []}, "The body must be a Vapi server message", []),
        ({"message": "tool-calls"}, "The body must be a Vapi server message", []),
        ({"message": {"type": "tool-calls"}}, "The message has no toolCallList", []),
        # Calls without their "message" wrapper, or a list that is one call: their ids still get the answer.
        (
            {"toolCallList": [{"id": "a", "function": {"name": "check_availability"}}, {"id": "b"}]},
            "The body must be a Vapi server message",
            ["a", "b"],
        ),
        ({"message": {"toolCallList": {"id": "x"}}}, "The message has no toolCallList", ["x"]),
        ({"message": {"toolCalls": {"id": "y"}}}, "The message has no toolCallList", ["y"]),
        (
            {"message": {"toolCallList": [tool_call("check_availability", {}, call_id=f"c{n}") for n in range(21)]}},
            "Too many tool calls",
            [f"c{n}" for n in range(21)],
        ),
    ],
)
def test_a_malformed_envelope_answers_every_call_id_it_can_find_with_the_problem(
    assistant: Assistant, admin: psycopg.Connection, body: Any, expected: str, ids: list[str]
) -> None:
    response = assistant.send(body)
    assert response["error"].startswith(expected)
    assert [r["toolCallId"] for r in response["results"]] == ids
    assert all(refusal(r) == response["error"] for r in response["results"])
    assert appointments(admin) == []


def test_a_body_jsonb_cannot_hold_still_answers_every_call_id(assistant: Assistant, admin: psycopg.Connection) -> None:
    # Valid JSON (PostgREST passes it on), but 1e400000 is beyond PostgreSQL's numeric.
    calls = [tool_call("check_availability", {"date": upcoming(TUESDAY).isoformat()}), {"id": "c\u00002"}]
    body = json.dumps(assistant.call.message(*calls)).replace('"arguments": {', '"arguments": {"big": 1e400000, ', 1)
    with assistant.gateway.transaction():
        set_request_context(assistant.gateway, role="anon", path="/rpc/vapi_tool_call", headers=assistant.headers)
        response = scalar(assistant.gateway, "select public.vapi_tool_call(%s::json)", (body,))
    assert response["error"] == "The body could not be read: value overflows numeric format"
    assert response["results"] == [{"toolCallId": c["id"], "error": response["error"]} for c in calls]


def test_an_envelope_with_tool_calls_instead_of_a_tool_call_list_is_answered(
    assistant: Assistant, admin: psycopg.Connection
) -> None:
    day = upcoming(TUESDAY)
    calls = [
        tool_call("check_availability", {"date": day.isoformat()}),
        tool_call("book_appointment", {"start": f"{day}T10:00", "patient_name": "Jane Doe"}),
    ]
    message = assistant.call.message(*calls)
    del message["message"]["toolCallList"], message["message"]["toolWithToolCallList"]
    message["message"]["toolCalls"] = calls
    availability, booked = assistant.send(message)["results"]
    assert (availability["toolCallId"], booked["toolCallId"]) == (calls[0]["id"], calls[1]["id"])
    assert answer(availability).startswith("Free start times")
    assert answer(booked).startswith("Booked: Check-up")
    assert len(appointments(admin)) == 1


def test_a_call_without_id_or_with_bad_arguments_gets_its_own_error(assistant: Assistant) -> None:
    no_id = {"type": "function", "function": {"name": "check_availability", "arguments": {}}}
    bad_json = {"id": "c2", "function": {"name": "check_availability", "arguments": "{date: tomorrow"}}
    not_object = {"id": "c3", "function": {"name": "check_availability", "arguments": ["2026-12-01"]}}
    no_name = {"id": "c4", "function": {"arguments": {}}}
    results = assistant.send(assistant.call.message(no_id, bad_json, not_object, no_name))["results"]
    assert [r["toolCallId"] for r in results] == [None, "c2", "c3", "c4"]
    assert [refusal(r) for r in results] == [
        "This tool call has no usable id",
        "The tool call's arguments are not valid JSON",
        "The tool call's arguments must be a JSON object",
        "This tool call has no function name",
    ]


# --- who is calling -------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "ck_not-a-real-key"])
def test_a_missing_or_wrong_key_gets_nothing(
    gateway: psycopg.Connection, admin: psycopg.Connection, clinic: Clinic, key: str | None
) -> None:
    intruder = Assistant(gateway, key)
    day = upcoming(TUESDAY)
    response = intruder.send(
        intruder.call.message(
            tool_call("check_availability", {"date": day.isoformat()}),
            tool_call("book_appointment", {"start": f"{day}T10:00", "patient_name": "Jane Doe"}),
        )
    )
    errors = {refusal(r) for r in response["results"]}
    assert errors == {"Not authorised: this assistant's clinic key is missing, wrong or revoked"}
    assert appointments(admin) == []


def test_revoked_key_is_refused_and_rotation_can_keep_the_old_key_for_a_grace_period(
    gateway: psycopg.Connection, admin: psycopg.Connection, clinic: Clinic
) -> None:
    day = upcoming(TUESDAY)
    check = {"date": day.isoformat()}
    new_key = scalar(admin, "select public.rotate_clinic_key(%s, 'v2', interval '1 hour')", (clinic.id,))
    assert answer(Assistant(gateway, clinic.key).use("check_availability", check))
    assert answer(Assistant(gateway, new_key).use("check_availability", check))

    newest = scalar(admin, "select public.rotate_clinic_key(%s, 'v3')", (clinic.id,))
    for stale in (clinic.key, new_key):
        assert refusal(Assistant(gateway, stale).use("check_availability", check)).startswith("Not authorised")
    assert answer(Assistant(gateway, newest).use("check_availability", check))

    key_id = scalar(admin, "select id from public.clinic_api_keys where revoked_at is null")
    admin.execute("select public.revoke_clinic_key(%s)", (key_id,))
    assert refusal(Assistant(gateway, newest).use("check_availability", check)).startswith("Not authorised")


def test_keys_are_stored_only_as_hashes_and_use_is_recorded(
    admin: psycopg.Connection, assistant: Assistant, clinic: Clinic
) -> None:
    answer(assistant.use("check_availability", {"date": upcoming(TUESDAY).isoformat()}))
    row = admin.execute("select key_hash, key_prefix, last_used_at from public.clinic_api_keys").fetchone()
    assert row is not None
    key_hash, prefix, last_used = row

    assert bytes(key_hash) == hashlib.sha256(clinic.key.encode()).digest()
    assert clinic.key.startswith(prefix) and len(prefix) < len(clinic.key) // 3
    assert last_used is not None
    dump = scalar(admin, "select string_agg(t::text, '') from public.clinic_api_keys t")
    assert clinic.key not in dump


def test_the_assistant_org_id_must_match_the_key(
    gateway: psycopg.Connection, admin: psycopg.Connection, clinic: Clinic
) -> None:
    other = scalar(admin, "insert into public.clinics (name) values ('Other') returning id")
    check = {"date": upcoming(TUESDAY).isoformat()}
    wrong = Assistant(gateway, clinic.key, VapiCall(assistant_metadata={"org_id": str(other)}))
    assert refusal(wrong.use("check_availability", check)) == (
        "Not authorised: the assistant's org_id does not match its clinic key"
    )
    right = Assistant(gateway, clinic.key, VapiCall(assistant_metadata={"org_id": str(clinic.id)}))
    assert answer(right.use("check_availability", check))


# --- check_availability ---------------------------------------------------------------


def test_availability_lists_free_start_times_for_the_service(assistant: Assistant) -> None:
    day = upcoming(TUESDAY)
    answer(assistant.use("book_appointment", {"start": f"{day}T10:00", "patient_name": "Jane Doe"}))

    check_up = answer(assistant.use("check_availability", {"date": day.isoformat()}))
    assert check_up.startswith(f"Free start times on Tuesday {day.day} {day:%B %Y} for a 30-minute Check-up")
    slots = check_up.split(": ", 1)[1].rstrip(".").split(", ")
    assert slots[0] == "09:00" and slots[-1] == "16:30"
    # A 30-minute check-up at 09:45 would run into the 10:00 booking.
    assert "09:30" in slots and "09:45" not in slots and "10:00" not in slots and "10:30" in slots

    consultation = answer(assistant.use("check_availability", {"date": day.isoformat(), "service": "consultation"}))
    slots = consultation.split(": ", 1)[1].rstrip(".").split(", ")
    assert slots[:2] == ["09:00", "10:30"] and slots[-1] == "16:00"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"date": upcoming(SUNDAY).isoformat()}, "The clinic is closed on Sundays"),
        ({"date": "2020-01-07"}, "That date has already passed"),
        (
            {"date": (dt.date.today() + dt.timedelta(days=500)).isoformat()},
            "Bookings can be made at most 400 days ahead",
        ),
        ({"date": "2027-02-30"}, "date is not a real date"),
        ({"date": "next tuesday"}, "date must be a date like 2026-12-01"),
        ({"date": 20271201}, "date must be text"),
        ({}, "date is required"),
        (
            {"date": upcoming(TUESDAY).isoformat(), "service": "Massage"},
            'This clinic does not offer "Massage". It offers: Check-up, Consultation',
        ),
        ({"date": upcoming(TUESDAY).isoformat(), "doctor": "Who"}, "Unexpected argument(s): doctor."),
    ],
)
def test_availability_refusals(assistant: Assistant, arguments: dict[str, Any], expected: str) -> None:
    assert refusal(assistant.use("check_availability", arguments)).startswith(expected)


# --- book_appointment -----------------------------------------------------------------


def test_booking_stores_the_appointment_pending_for_the_calendar(
    assistant: Assistant, admin: psycopg.Connection, clinic: Clinic
) -> None:
    day = upcoming(TUESDAY)
    result = answer(
        assistant.use(
            "book_appointment",
            {
                "start": f"{day}T10:30",
                "patient_name": "Jane Doe",
                "service": "consultation",
                "notes": "First visit.\nBring referral letter.",
            },
        )
    )
    [row] = appointments(admin)
    assert result == (
        f"Booked: Consultation on Tuesday {day.day} {day:%B %Y} at 10:30 for Jane Doe. Reference {row['reference']}."
    )
    assert row["clinic_id"] == clinic.id
    assert row["starts_at"] == london(day, "10:30")
    assert row["ends_at"] == london(day, "11:30")
    assert row["patient"] == {"name": "Jane Doe", "phone": "+447700900123"}
    assert row["notes"] == "First visit.\nBring referral letter."
    assert row["contact_id"] is None
    assert (row["status"], row["source"], row["sync_state"], row["revision"]) == ("booked", "vapi", "pending", 1)
    assert row["vapi_call_id"] == assistant.call.call_id
    assert row["vapi_tool_call_id"].startswith("call_")


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("07700 900456", "+447700900456"),
        ("+44 (0)20 7946 0018".replace("(0)", ""), "+442079460018"),
        ("0033 1 23 45 67 89", "+33123456789"),
        ("447700900456", "+447700900456"),
    ],
)
def test_a_given_phone_number_is_stored_in_international_form(
    assistant: Assistant, admin: psycopg.Connection, given: str, stored: str
) -> None:
    day = upcoming(TUESDAY)
    answer(assistant.use("book_appointment", {"start": f"{day}T11:00", "patient_name": "Jo", "patient_phone": given}))
    assert appointments(admin)[0]["patient"]["phone"] == stored


def test_booking_without_any_phone_number_asks_for_one(
    gateway: psycopg.Connection, clinic: Clinic, admin: psycopg.Connection
) -> None:
    withheld = Assistant(gateway, clinic.key, VapiCall(customer_number=None))
    error = refusal(withheld.use("book_appointment", {"start": f"{upcoming(TUESDAY)}T11:00", "patient_name": "Jo"}))
    assert error.startswith("patient_phone is required")
    assert appointments(admin) == []


def _booking_refusals() -> list[Any]:
    day = upcoming(TUESDAY)
    base = {"start": f"{day}T10:00", "patient_name": "Jane Doe"}
    cases = [
        ({**base, "start": f"{day}T08:30"}, "That time is outside opening hours (Tuesday: 09:00-17:00)"),
        ({**base, "start": f"{day}T16:45", "service": "Consultation"}, "That time is outside opening hours"),
        ({**base, "start": f"{upcoming(SUNDAY)}T10:00"}, "The clinic is closed on Sundays"),
        ({**base, "start": "2021-06-01T10:00"}, "That time has already passed"),
        (
            {**base, "start": f"{dt.date.today() + dt.timedelta(days=450)}T10:00"},
            "Bookings can be made at most 400 days ahead",
        ),
        ({**base, "start": f"{day}T10:00:30"}, "start must be a clinic-local date and time like"),
        ({**base, "start": f"{day}T10:00Z"}, "start must be a clinic-local date and time like"),
        ({**base, "start": f"{day}T24:00"}, "start must be a clinic-local date and time like"),
        ({**base, "start": "2027-02-29T10:00"}, "start is not a real date"),
        ({**base, "patient_name": "   "}, "patient_name is required"),
        ({**base, "patient_name": ["Jane"]}, "patient_name must be text"),
        ({**base, "patient_name": "J" * 101}, "patient_name is too long (at most 100 characters)"),
        ({**base, "patient_name": "Jane\u0007Doe"}, "patient_name contains control characters"),
        ({**base, "patient_name": "Jane\nDoe"}, "patient_name contains control characters"),
        ({**base, "patient_phone": "call me maybe"}, "patient_phone does not look like a phone number"),
        ({**base, "patient_phone": "123"}, "patient_phone does not look like a phone number"),
        ({**base, "patient_phone": 7700900123}, "patient_phone must be text"),
        ({**base, "notes": "n" * 501}, "notes is too long (at most 500 characters)"),
        ({**base, "notes": "ok\u001b[31m"}, "notes contains control characters"),
        ({**base, "service": "Surgery"}, 'This clinic does not offer "Surgery"'),
        ({**base, "when": "now"}, "Unexpected argument(s): when."),
        ({"patient_name": "Jane"}, "start is required"),
    ]
    return [pytest.param(args, expected, id=expected[:40]) for args, expected in cases]


@pytest.mark.parametrize(("arguments", "expected"), _booking_refusals())
def test_booking_refusals_change_nothing(
    assistant: Assistant, admin: psycopg.Connection, arguments: dict[str, Any], expected: str
) -> None:
    assert refusal(assistant.use("book_appointment", arguments)).startswith(expected)
    assert appointments(admin) == []
    assert admin.execute("select count(*) from public.vapi_tool_calls").fetchone() == (0,)


def test_booking_needs_the_minimum_notice(admin: psycopg.Connection, gateway: psycopg.Connection) -> None:
    from tests.standins.clinics import create_clinic, issue_key

    always_open = {day: [("00:00", "24:00")] for day in range(1, 8)}
    clinic_id = create_clinic(admin, "Night Clinic", hours=always_open, min_notice_minutes=120)
    soon = (dt.datetime.now(LONDON) + dt.timedelta(minutes=60)).replace(second=0, microsecond=0)
    night = Assistant(gateway, issue_key(admin, clinic_id))
    error = refusal(night.use("book_appointment", {"start": f"{soon:%Y-%m-%dT%H:%M}", "patient_name": "Jo"}))
    assert error == "Bookings need at least 120 minutes' notice"


def test_sql_looking_text_is_stored_verbatim(assistant: Assistant, admin: psycopg.Connection) -> None:
    name = "Robert'); DROP TABLE appointments;--"
    notes = "1' OR '1'='1"
    answer(
        assistant.use("book_appointment", {"start": f"{upcoming(TUESDAY)}T09:00", "patient_name": name, "notes": notes})
    )
    [row] = appointments(admin)
    assert (row["patient"]["name"], row["notes"]) == (name, notes)


def test_a_retried_tool_call_books_once_and_answers_the_same(assistant: Assistant, admin: psycopg.Connection) -> None:
    arguments = {"start": f"{upcoming(TUESDAY)}T14:00", "patient_name": "Jane Doe"}
    first = assistant.use("book_appointment", arguments, call_id="call_retry_1")
    again = assistant.use("book_appointment", arguments, call_id="call_retry_1")
    assert answer(first) == answer(again)
    assert len(appointments(admin)) == 1

    different = assistant.use(
        "book_appointment", {**arguments, "start": arguments["start"][:-5] + "15:00"}, call_id="call_retry_1"
    )
    assert refusal(different) == "This toolCallId was already used for a different request"
    assert len(appointments(admin)) == 1


def test_a_refused_call_leaves_no_trace_so_its_id_stays_usable(assistant: Assistant, admin: psycopg.Connection) -> None:
    day = upcoming(TUESDAY)
    assert refusal(assistant.use("book_appointment", {"start": f"{day}T07:00", "patient_name": "Jo"}, call_id="c-1"))
    assert admin.execute("select count(*) from public.vapi_tool_calls").fetchone() == (0,)
    assert answer(assistant.use("book_appointment", {"start": f"{day}T09:00", "patient_name": "Jo"}, call_id="c-1"))
    assert len(appointments(admin)) == 1


# --- cancel_appointment and reschedule_appointment ------------------------------------


def test_cancel_by_reference_requeues_the_row_for_the_calendar(assistant: Assistant, admin: psycopg.Connection) -> None:
    day = upcoming(TUESDAY)
    reference = assistant.book(f"{day}T10:00")
    admin.execute(
        "update public.appointments set sync_state = 'synced', synced_revision = 1, "
        "calendar_event_id = 'abcde12345', synced_at = now()"
    )

    spoken = " ".join(reference.lower())  # "k 7 p 2 q x", as a caller might spell it
    result = answer(assistant.use("cancel_appointment", {"reference": spoken}))
    assert result == f"Cancelled: Check-up on Tuesday {day.day} {day:%B %Y} at 10:00 (reference {reference})."
    [row] = appointments(admin)
    assert (row["status"], row["sync_state"], row["revision"]) == ("cancelled", "pending", 2)
    assert row["cancelled_at"] is not None and row["calendar_event_id"] == "abcde12345"

    assert refusal(assistant.use("cancel_appointment", {"reference": reference})) == (
        f"The booking {reference} is already cancelled"
    )
    # The freed slot can be booked again.
    assistant.book(f"{day}T10:00")


def test_cancel_by_caller_number_needs_to_know_which_booking(assistant: Assistant, admin: psycopg.Connection) -> None:
    day = upcoming(TUESDAY)
    first = assistant.book(f"{day}T10:00")
    second = assistant.book(f"{day}T15:00")

    error = refusal(assistant.use("cancel_appointment", {}))
    assert error.startswith("There are 2 upcoming bookings for that phone number: ")
    assert first in error and second in error and error.endswith("Which one?")

    answer(assistant.use("cancel_appointment", {"start": f"{day}T15:00"}))
    statuses = {r["reference"]: r["status"] for r in appointments(admin)}
    assert statuses == {first: "booked", second: "cancelled"}
    assert answer(assistant.use("cancel_appointment", {})).startswith("Cancelled: Check-up")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"reference": "ZZZZZZ"}, "No booking has the reference ZZZZZZ"),
        ({"patient_phone": "07700 900999"}, "No upcoming booking was found for that phone number"),
        ({"reference": ["ABC"]}, "reference must be text"),
        ({"id": "00000000-0000-0000-0000-000000000000"}, "Unexpected argument(s): id."),
    ],
)
def test_cancel_refusals(
    assistant: Assistant, admin: psycopg.Connection, arguments: dict[str, Any], expected: str
) -> None:
    assistant.book(f"{upcoming(TUESDAY)}T10:00")
    assert refusal(assistant.use("cancel_appointment", arguments)).startswith(expected)
    assert [r["status"] for r in appointments(admin)] == ["booked"]


def test_reschedule_moves_the_booking_and_requeues_it(assistant: Assistant, admin: psycopg.Connection) -> None:
    day = upcoming(TUESDAY)
    reference = assistant.book(f"{day}T10:00", service="Consultation")
    admin.execute("update public.appointments set sync_state = 'synced', synced_revision = 1, synced_at = now()")

    later = day + dt.timedelta(days=1)
    result = answer(assistant.use("reschedule_appointment", {"reference": reference, "new_start": f"{later}T14:00"}))
    assert result == (
        f"Moved: Consultation from Tuesday {day.day} {day:%B %Y} at 10:00 to "
        f"Wednesday {later.day} {later:%B %Y} at 14:00 (reference {reference})."
    )
    [row] = appointments(admin)
    assert (row["starts_at"], row["ends_at"]) == (london(later, "14:00"), london(later, "15:00"))
    assert (row["sync_state"], row["revision"]) == ("pending", 2)


def test_reschedule_refusals_leave_the_booking_where_it_was(assistant: Assistant, admin: psycopg.Connection) -> None:
    day = upcoming(TUESDAY)
    reference = assistant.book(f"{day}T10:00")
    assistant.book(f"{day}T11:00", patient_phone="07700 900555")

    for new_start, expected in [
        (f"{day}T11:15", f"11:15 on Tuesday {day.day} {day:%B %Y} is not available. Nearest free times that day: "),
        (f"{day}T10:00", f"The booking {reference} is already at that time"),
        (f"{day}T17:00", "That time is outside opening hours"),
        ("tomorrow at ten", "new_start must be a clinic-local date and time"),
    ]:
        error = refusal(assistant.use("reschedule_appointment", {"reference": reference, "new_start": new_start}))
        assert error.startswith(expected)
    # Moving into its own old slot's neighbourhood is fine: it does not collide with itself.
    answer(assistant.use("reschedule_appointment", {"reference": reference, "new_start": f"{day}T10:15"}))
    starts = sorted(r["starts_at"] for r in appointments(admin))
    assert starts == [london(day, "10:15"), london(day, "11:00")]


# --- the slot grid --------------------------------------------------------------------


def test_a_start_off_the_slot_grid_is_refused_with_the_nearest_grid_times(
    assistant: Assistant, admin: psycopg.Connection
) -> None:
    day = upcoming(TUESDAY)
    on = f"on Tuesday {day.day} {day:%B %Y}"
    error = refusal(assistant.use("book_appointment", {"start": f"{day}T14:05", "patient_name": "Jane Doe"}))
    assert error == (
        f"14:05 {on} is not a start time the clinic offers (appointments start every 15 minutes)."
        " Nearest free times that day: 13:30, 13:45, 14:00, 14:15, 14:30, 14:45"
    )
    assert appointments(admin) == []
    assert admin.execute("select count(*) from public.vapi_tool_calls").fetchone() == (0,)

    reference = assistant.book(f"{day}T10:00")
    error = refusal(assistant.use("reschedule_appointment", {"reference": reference, "new_start": f"{day}T10:20"}))
    # The booking's own time counts as free for its move.
    assert error == (
        f"10:20 {on} is not a start time the clinic offers (appointments start every 15 minutes)."
        " Nearest free times that day: 09:45, 10:00, 10:15, 10:30, 10:45, 11:00"
    )
    assert [r["starts_at"] for r in appointments(admin)] == [london(day, "10:00")]
    answer(assistant.use("reschedule_appointment", {"reference": reference, "new_start": f"{day}T10:15"}))


def test_the_grid_runs_from_each_opening_time(admin: psycopg.Connection, gateway: psycopg.Connection) -> None:
    from tests.standins.clinics import create_clinic, issue_key

    hours = {2: [("09:10", "12:00"), ("13:05", "17:00")]}
    clinic_id = create_clinic(admin, "Odd Hours", hours=hours, slot_minutes=20, booking_horizon_days=400)
    odd = Assistant(gateway, issue_key(admin, clinic_id))
    day = upcoming(TUESDAY)
    assert odd.book(f"{day}T09:30") and odd.book(f"{day}T13:25")
    error = refusal(odd.use("book_appointment", {"start": f"{day}T13:10", "patient_name": "Jo"}))
    assert error.startswith("13:10 on Tuesday") and "(appointments start every 20 minutes)" in error
    # 13:05 and 13:45 would overlap the 13:25 booking.
    assert error.endswith("Nearest free times that day: 11:10, 11:30, 14:05, 14:25, 14:45, 15:05")


# --- NUL characters (Vapi forwards transcripts, which can hold any character) --------


def transcript_with_nul(message: dict[str, Any]) -> dict[str, Any]:
    message["message"]["artifact"] = {"messages": [{"role": "user", "message": "book me in\u0000please"}]}
    return message


def test_a_nul_outside_the_tool_calls_changes_nothing(assistant: Assistant, admin: psycopg.Connection) -> None:
    call = tool_call("book_appointment", {"start": f"{upcoming(TUESDAY)}T10:00", "patient_name": "Jane Doe"})
    [item] = assistant.send(transcript_with_nul(assistant.call.message(call)))["results"]
    assert answer(item).startswith("Booked: Check-up")
    assert len(appointments(admin)) == 1


def test_a_call_with_a_nul_is_refused_on_its_own_and_its_id_echoed_exactly(
    assistant: Assistant, admin: psycopg.Connection
) -> None:
    day = upcoming(TUESDAY)
    calls = [
        tool_call("book_appointment", {"start": f"{day}T10:00", "patient_name": "Ja\u0000ne"}),
        tool_call("book_appointment", {"start": f"{day}T11:00", "patient_name": "Jo"}, call_id="call_\u0000_1"),
        tool_call("book_appointment", {"start": f"{day}T12:00", "patient_name": "Back\\\u0000slash"}),
        # Not a NUL: an escaped backslash followed by the text "u0000".
        tool_call("book_appointment", {"start": f"{day}T13:00", "patient_name": "Jo \\u0000"}),
    ]
    results = assistant.send(transcript_with_nul(assistant.call.message(*calls)))["results"]
    assert [r["toolCallId"] for r in results] == [c["id"] for c in calls]
    nul = "This tool call contains a NUL character (U+0000), which cannot be stored, so nothing was done"
    assert [refusal(r) for r in results[:3]] == [nul] * 3
    assert answer(results[3]).startswith("Booked: Check-up")
    assert [r["patient"]["name"] for r in appointments(admin)] == ["Jo \\u0000"]


def test_bodies_with_nul_characters_get_http_200_through_the_gateway(
    rest: SupabaseRestStandIn, clinic: Clinic, admin: psycopg.Connection
) -> None:
    day = upcoming(TUESDAY)
    headers = {"apikey": rest.anon_key, "Authorization": f"Bearer {rest.anon_key}", "x-clinic-key": clinic.key}
    url = f"{rest.url}/rest/v1/rpc/vapi_tool_call"
    booking = tool_call("book_appointment", {"start": f"{day}T10:00", "patient_name": "Jane Doe"})
    with_nul = tool_call("book_appointment", {"start": f"{day}T11:00", "patient_name": "Jo", "notes": "a\u0000b"})

    reply = httpx.post(url, json=transcript_with_nul(VapiCall().message(booking, with_nul)), headers=headers)

    assert reply.status_code == 200, reply.text
    booked, refused = reply.json()["results"]
    assert answer(booked).startswith("Booked:") and refusal(refused).startswith("This tool call contains a NUL")
    assert len(appointments(admin)) == 1


# --- answering within Supabase's timeouts (anon: statement_timeout 3 s) ------------------------


BUSY = "The diary is busy right now and nothing was changed. Please try again in a moment"


def gateway_post(rest: SupabaseRestStandIn, key: str, message: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{rest.url}/rest/v1/rpc/vapi_tool_call",
        json=message,
        headers={"apikey": rest.anon_key, "Authorization": f"Bearer {rest.anon_key}", "x-clinic-key": key},
        timeout=30,
    )


@contextmanager
def vapi_call_in_progress(database: Database, key: str, message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A Vapi request that has run but not committed yet (PostgREST mid-request, or stuck)."""
    with database.connect(AUTHENTICATOR) as holder, holder.transaction():
        set_request_context(holder, role="anon", path="/rpc/vapi_tool_call", headers={"x-clinic-key": key})
        answered = scalar(holder, "select public.vapi_tool_call(%s::json)", (json.dumps(message),))
        yield dict(answered["results"][0])


def test_a_call_kept_waiting_past_its_budget_hears_the_diary_is_busy_not_http_500(
    rest: SupabaseRestStandIn, database: Database, clinic: Clinic, admin: psycopg.Connection
) -> None:
    day = upcoming(TUESDAY)
    first = VapiCall().message(tool_call("book_appointment", {"start": f"{day}T10:00", "patient_name": "Jane"}))
    second = VapiCall(customer_number="+447700900999").message(
        tool_call("book_appointment", {"start": f"{day}T15:00", "patient_name": "John"}),
        tool_call("check_availability", {"date": day.isoformat()}),
    )
    with vapi_call_in_progress(database, clinic.key, first) as held:
        assert answer(held).startswith("Booked:")
        reply = gateway_post(rest, clinic.key, second)
    assert reply.status_code == 200, reply.text  # not PostgREST's 500 for a statement cancelled at 3 s
    # The budget went on waiting for the diary; the calls not started by then are not started at all.
    assert [refusal(r) for r in reply.json()["results"]] == [BUSY, BUSY]
    assert [r["patient"]["name"] for r in appointments(admin)] == ["Jane"]
    assert admin.execute("select count(*) from public.vapi_tool_calls").fetchone() == (1,)
    assert answer(gateway_post(rest, clinic.key, second).json()["results"][0]).startswith("Booked:")


def test_a_call_that_needs_no_turn_is_answered_while_another_request_holds_the_key(
    rest: SupabaseRestStandIn, database: Database, clinic: Clinic
) -> None:
    day = upcoming(TUESDAY)
    booking = VapiCall().message(tool_call("book_appointment", {"start": f"{day}T10:00", "patient_name": "Jane"}))
    check = VapiCall().message(tool_call("check_availability", {"date": day.isoformat()}))
    # The first use of a key stamps its last use, so the request in progress holds the key's row.
    with vapi_call_in_progress(database, clinic.key, booking):
        reply = gateway_post(rest, clinic.key, check)
    assert reply.status_code == 200, reply.text
    assert answer(reply.json()["results"][0]).startswith("Free start times")


def test_a_retry_while_the_first_attempt_is_still_running_hears_busy_and_books_nothing(
    rest: SupabaseRestStandIn, database: Database, clinic: Clinic, admin: psycopg.Connection
) -> None:
    message = VapiCall().message(
        tool_call("book_appointment", {"start": f"{upcoming(TUESDAY)}T10:00", "patient_name": "Jane"}, call_id="c-9")
    )
    with vapi_call_in_progress(database, clinic.key, message) as held:
        reply = gateway_post(rest, clinic.key, message)
    assert reply.status_code == 200, reply.text
    assert refusal(reply.json()["results"][0]) == BUSY
    # Once the first attempt committed, the retry gets its answer.
    assert gateway_post(rest, clinic.key, message).json()["results"][0] == held
    assert len(appointments(admin)) == 1


def test_a_booking_row_held_by_another_transaction_makes_a_cancel_busy_within_the_budget(
    rest: SupabaseRestStandIn, database: Database, assistant: Assistant, clinic: Clinic, admin: psycopg.Connection
) -> None:
    reference = assistant.book(f"{upcoming(TUESDAY)}T10:00")
    cancel = VapiCall().message(tool_call("cancel_appointment", {"reference": reference}))
    with database.connect() as daemon, daemon.transaction():  # e.g. the daemon writing back an event id
        daemon.execute("select 1 from public.appointments where reference = %s for update", (reference,))
        reply = gateway_post(rest, clinic.key, cancel)
        # The same through the rpc helper (PostgREST's role settings applied, without HTTP).
        [direct] = assistant.send(cancel)["results"]
    assert reply.status_code == 200, reply.text
    assert refusal(reply.json()["results"][0]) == BUSY and refusal(direct) == BUSY
    assert [r["status"] for r in appointments(admin)] == ["booked"]
    assert answer(gateway_post(rest, clinic.key, cancel).json()["results"][0]).startswith("Cancelled:")


def test_every_kind_of_envelope_gets_http_200_with_an_answer_per_call_through_the_gateway(
    rest: SupabaseRestStandIn, clinic: Clinic, admin: psycopg.Connection
) -> None:
    day = upcoming(TUESDAY)
    off_grid = tool_call("book_appointment", {"start": f"{day}T14:05", "patient_name": "Jane Doe"})
    tool_calls = VapiCall().message(off_grid)
    tool_calls["message"]["toolCalls"] = tool_calls["message"].pop("toolCallList")
    del tool_calls["message"]["toolWithToolCallList"]
    crowded = VapiCall().message(*[tool_call("check_availability", {}) for _ in range(21)])
    bare = {"toolCallList": [tool_call("check_availability", {})]}  # no "message" wrapper

    for body, problem in [(tool_calls, None), (crowded, "Too many tool calls"), (bare, "The body must be")]:
        reply = gateway_post(rest, clinic.key, body)
        assert reply.status_code == 200, reply.text
        calls = body.get("message", body)
        ids = [c["id"] for c in calls.get("toolCallList") or calls.get("toolCalls")]
        assert [r["toolCallId"] for r in reply.json()["results"]] == ids
        if problem:
            assert all(refusal(r).startswith(problem) for r in reply.json()["results"])
    [refused] = gateway_post(rest, clinic.key, tool_calls).json()["results"]
    assert refusal(refused).startswith("14:05 on Tuesday") and "Nearest free times that day: 13:30" in refused["error"]
    assert appointments(admin) == []
