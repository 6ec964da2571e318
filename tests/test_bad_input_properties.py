"""Property tests: whatever arrives, the answer keeps the contract and bad input changes nothing."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Clinic
from tests.dates import upcoming
from tests.standins.postgres import scalar
from tests.standins.vapi import Assistant, VapiCall, tool_call

TUESDAY = 2
TABLES = ("appointments", "vapi_tool_calls", "contacts", "clinics", "clinic_services", "clinic_opening_hours")
TOOLS = ("check_availability", "book_appointment", "cancel_appointment", "reschedule_appointment")
BOOKING_ARGS = ("start", "patient_name", "patient_phone", "service", "notes")
MAX_LENGTH = {"patient_name": 100, "patient_phone": 30, "service": 80, "notes": 500}
VALID_START = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]([01]\d|2[0-3]):[0-5]\d(:00)?$")
CONTROL = [chr(c) for c in [*range(1, 32), 127]]

# What an HTTP JSON body can carry: UTF-8 without lone surrogates, U+0000 included (Vapi forwards
# transcripts; the function takes `json`, so a `\u0000` escape reaches it instead of failing first).
text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
plain_text = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="\x85"))
scalars = st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    scalars | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
not_text = st.recursive(
    st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)

# Ids are echoed as JSON values; PostgreSQL normalises how a float is written (3.6e16 comes back
# as 36028797018963970), so the exact-echo check uses ids without floats. Vapi's ids are strings.
ids = text | st.none() | st.booleans() | st.integers() | st.lists(text, max_size=2)

PROPERTY_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def snapshot(admin: psycopg.Connection) -> tuple[str, ...]:
    return tuple(
        scalar(admin, f"select coalesce(md5(string_agg(t::text, '|' order by t::text)), '') from public.{table} t")
        for table in TABLES
    )


def assert_well_formed(response: Any, calls: int | None = None) -> list[dict[str, Any]]:
    assert isinstance(response, dict) and isinstance(response["results"], list)
    if calls is not None:
        assert len(response["results"]) == calls
    for item in response["results"]:
        assert set(item) in ({"toolCallId", "result"}, {"toolCallId", "error"}), item
        message = item.get("result", item.get("error"))
        assert isinstance(message, str) and message and "\n" not in message and "\r" not in message
    if "error" in response:
        assert isinstance(response["error"], str) and "\n" not in response["error"]
    return list(response["results"])


@pytest.fixture
def busy_assistant(assistant: Assistant) -> Assistant:
    """An assistant whose clinic already has a booking, so cancel/reschedule have a target."""
    assistant.use("book_appointment", {"start": f"{upcoming(TUESDAY)}T10:00", "patient_name": "Jane Doe"})
    return assistant


@PROPERTY_SETTINGS
@given(body=json_values)
def test_any_json_body_gets_a_well_formed_answer_and_changes_nothing(
    busy_assistant: Assistant, admin: psycopg.Connection, body: Any
) -> None:
    before = snapshot(admin)
    assert_well_formed(busy_assistant.send(body))
    assert snapshot(admin) == before


@PROPERTY_SETTINGS
@given(
    items=st.lists(
        st.fixed_dictionaries(
            {
                "id": ids,
                "function": st.fixed_dictionaries({"name": st.sampled_from(TOOLS) | text, "arguments": json_values}),
            },
        )
        | ids,
        min_size=1,
        max_size=5,
    ),
    caller=st.none() | text,
)
def test_random_tool_calls_in_a_real_envelope_are_answered_one_by_one_and_change_nothing(
    busy_assistant: Assistant, admin: psycopg.Connection, items: list[Any], caller: str | None
) -> None:
    before = snapshot(admin)
    message = VapiCall(customer_number=caller).message(*items)
    results = assert_well_formed(busy_assistant.send(message), calls=len(items))
    for item, result in zip(items, results, strict=True):
        assert result["toolCallId"] == (item.get("id") if isinstance(item, dict) else None)
    assert snapshot(admin) == before


def _corrupt(draw: st.DrawFn, arguments: dict[str, Any]) -> dict[str, Any]:
    kinds = ["drop", "extra", "type", "long", "control", "nul", "start_text", "start_time", "off_grid", "phone"]
    kind = draw(st.sampled_from(kinds))
    corrupted = dict(arguments)
    if kind == "drop":
        del corrupted[draw(st.sampled_from(["start", "patient_name"]))]
    elif kind == "extra":
        corrupted[draw(text.filter(lambda k: k not in BOOKING_ARGS))] = draw(json_values)
    elif kind == "type":
        corrupted[draw(st.sampled_from(BOOKING_ARGS))] = draw(not_text)
    elif kind == "long":
        key = draw(st.sampled_from(sorted(MAX_LENGTH)))
        corrupted[key] = "x" * MAX_LENGTH[key] + draw(plain_text.filter(lambda t: t.strip() != "")) + "x"
    elif kind == "control":
        key = draw(st.sampled_from(sorted(MAX_LENGTH)))
        allowed_in_notes = {"\t", "\n"}
        bad = draw(st.sampled_from([c for c in CONTROL if key != "notes" or c not in allowed_in_notes]))
        value = str(corrupted.get(key, "Jane"))
        position = draw(st.integers(0, len(value)))
        corrupted[key] = value[:position] + bad + value[position:]
    elif kind == "nul":  # anywhere in any text argument, the key included
        key = draw(st.sampled_from(sorted(corrupted)))
        value = str(corrupted.pop(key))
        position = draw(st.integers(0, len(value)))
        if draw(st.booleans()):
            corrupted[key] = value[:position] + "\x00" + value[position:]
        else:
            corrupted[key[:1] + "\x00" + key[1:]] = value
    elif kind == "off_grid":
        corrupted["start"] = (
            f"{upcoming(TUESDAY)}T{draw(st.integers(9, 15)):02d}:{draw(st.sampled_from([1, 5, 10, 20, 44])):02d}"
        )
    elif kind == "start_text":
        corrupted["start"] = draw(text.filter(lambda t: not VALID_START.match(t.strip())))
    elif kind == "start_time":
        corrupted["start"] = draw(_unbookable_start())
    else:
        corrupted["patient_phone"] = draw(
            plain_text.filter(lambda t: any(ch.isalpha() for ch in t) or len(re.sub(r"\D", "", t)) < 7).filter(
                lambda t: t.strip() != ""
            )
        )
    return corrupted


def _unbookable_start() -> st.SearchStrategy[str]:
    tuesday = upcoming(TUESDAY)
    past = st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2025, 12, 31))
    sunday = st.builds(lambda h: dt.datetime.combine(upcoming(7), dt.time(h)), st.integers(0, 23))
    outside_hours = st.builds(
        lambda h: dt.datetime.combine(tuesday, dt.time(h)), st.integers(0, 8) | st.integers(17, 23)
    )
    too_far = st.builds(
        lambda d: dt.datetime.combine(tuesday + dt.timedelta(weeks=d), dt.time(10)), st.integers(60, 500)
    )
    return (past | sunday | outside_hours | too_far).map(lambda moment: moment.strftime("%Y-%m-%dT%H:%M"))


@st.composite
def bad_booking_arguments(draw: st.DrawFn) -> dict[str, Any]:
    valid = {
        "start": f"{upcoming(TUESDAY)}T14:00",
        "patient_name": "Jane Doe",
        "patient_phone": "07700 900123",
        "service": "Check-up",
        "notes": "First visit",
    }
    return _corrupt(draw, valid)


@PROPERTY_SETTINGS
@given(arguments=bad_booking_arguments(), as_string=st.booleans())
def test_bad_booking_arguments_are_refused_and_change_nothing(
    busy_assistant: Assistant, admin: psycopg.Connection, arguments: dict[str, Any], as_string: bool
) -> None:
    before = snapshot(admin)
    call = tool_call("book_appointment", arguments, as_string=as_string)
    [result] = assert_well_formed(busy_assistant.send(busy_assistant.call.message(call)), calls=1)
    assert "error" in result, (arguments, result)
    assert snapshot(admin) == before


def test_the_valid_base_of_the_corruptions_does_book(
    busy_assistant: Assistant, admin: psycopg.Connection, clinic: Clinic
) -> None:
    """The property above means something only if the uncorrupted arguments succeed."""
    result = busy_assistant.use(
        "book_appointment",
        {
            "start": f"{upcoming(TUESDAY)}T14:00",
            "patient_name": "Jane Doe",
            "patient_phone": "07700 900123",
            "service": "Check-up",
            "notes": "First visit",
        },
    )
    assert result["result"].startswith("Booked:")
    assert scalar(admin, "select count(*) from public.appointments where clinic_id = %s", (clinic.id,)) == 2
