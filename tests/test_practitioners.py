"""Practitioners through `vapi_tool_call`: several diaries in one clinic, on both ways Vapi reaches it
(the gateway's SQL call as PostgREST makes it, and HTTP through the Supabase REST stand-in)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.conftest import Database
from tests.dates import LONDON, next_clock_change, upcoming
from tests.standins.clinics import create_clinic, issue_key
from tests.standins.postgres import AUTHENTICATOR, scalar
from tests.standins.supabase_rest import SupabaseRestStandIn
from tests.standins.vapi import Assistant, reference_of

TUESDAY = 2
PATEL, JONES, LEE = "Dr Anika Patel", "Dr Tom Jones", "Sam Lee"
MORNINGS = [{"weekday": day, "opens": "09:00", "closes": "13:00"} for day in range(1, 6)]


class RestAssistant(Assistant):
    """The same assistant, over HTTP through the REST gateway stand-in."""

    def __init__(self, rest: SupabaseRestStandIn, clinic_key: str) -> None:
        super().__init__(None, clinic_key)
        self.rest = rest

    def send(self, body: Any) -> Any:
        headers = {"apikey": self.rest.anon_key, "Authorization": f"Bearer {self.rest.anon_key}"}
        reply = httpx.post(
            f"{self.rest.url}/rest/v1/rpc/vapi_tool_call", json=body, headers=self.headers | headers, timeout=30
        )
        assert reply.status_code == 200, reply.text
        return reply.json()


@dataclass
class Practice:
    """A clinic with three practitioners: Patel (everything, own calendar), Jones (check-ups, mornings,
    own calendar) and Lee (consultations, the clinic's calendar and hours)."""

    id: uuid.UUID
    assistant: Assistant
    admin: psycopg.Connection
    practitioners: dict[str, uuid.UUID]

    def add(self, name: str, **options: Any) -> uuid.UUID:
        practitioner = add_practitioner(self.admin, self.id, name, **options)
        self.practitioners[name] = practitioner
        return practitioner

    def answer(self, tool: str, **arguments: str) -> str:
        item = self.assistant.use(tool, arguments)
        assert "error" not in item, item
        return str(item["result"])

    def refusal(self, tool: str, **arguments: str) -> str:
        item = self.assistant.use(tool, arguments)
        assert "result" not in item, item
        return str(item["error"])

    def booked_with(self) -> dict[str, str | None]:
        """Each booked appointment's reference and its practitioner's name."""
        rows = self.admin.execute(
            "select a.reference, p.name from public.appointments a"
            " left join public.practitioners p on p.id = a.practitioner_id"
            " where a.clinic_id = %s and a.status = 'booked' order by a.starts_at, p.name",
            (self.id,),
        ).fetchall()
        return {reference: name for reference, name in rows}


def add_practitioner(
    admin: psycopg.Connection,
    clinic_id: uuid.UUID,
    name: str,
    *,
    services: list[str] | None = None,
    hours: list[dict[str, Any]] | None = None,
    calendar_id: str | None = None,
) -> uuid.UUID:
    return uuid.UUID(
        str(
            scalar(
                admin,
                "select public.add_practitioner(%s, %s, %s, %s, %s)",
                (clinic_id, name, services and Jsonb(services), hours and Jsonb(hours), calendar_id),
            )
        )
    )


@pytest.fixture(params=["gateway", "rest"])
def practice(request: pytest.FixtureRequest, admin: psycopg.Connection, gateway: psycopg.Connection,
             database: Database) -> Iterator[Practice]:  # fmt: skip
    clinic_id = create_clinic(admin, "Riverside Practice", booking_horizon_days=400)
    key = issue_key(admin, clinic_id)
    if request.param == "gateway":
        assistant: Assistant = Assistant(gateway, key)
        rest = None
    else:
        rest = SupabaseRestStandIn(database.dsn(AUTHENTICATOR)).__enter__()
        assistant = RestAssistant(rest, key)
    practice = Practice(clinic_id, assistant, admin, {})
    practice.add(PATEL, calendar_id="patel@example.com")
    practice.add(JONES, services=["Check-up"], hours=MORNINGS, calendar_id="jones@example.com")
    practice.add(LEE, services=["Consultation"])
    try:
        yield practice
    finally:
        if rest is not None:
            rest.__exit__(None, None, None)


def day_text(day: dt.date) -> str:
    return f"{day:%A} {day.day} {day:%B %Y}"


def times_with(answer: str, name: str) -> list[str]:
    """The free times an availability answer gives for one practitioner."""
    part = answer.split(f"{name}: ", 1)[1]
    return part.split(";", 1)[0].split(". ", 1)[0].rstrip(".").split(", ")


# --- one booking per practitioner at a time --------------------------------------------------------


def test_two_practitioners_are_booked_at_the_same_time(practice: Practice) -> None:
    day = upcoming(TUESDAY)
    patel = practice.answer("book_appointment", start=f"{day}T10:00", patient_name="Jo", practitioner="Dr Patel")
    jones = practice.answer("book_appointment", start=f"{day}T10:00", patient_name="Al", practitioner="tom jones")

    assert patel.startswith(f"Booked: Check-up with {PATEL} on {day_text(day)} at 10:00 for Jo. Reference ")
    assert jones.startswith(f"Booked: Check-up with {JONES} on {day_text(day)} at 10:00 for Al. Reference ")
    again = practice.refusal("book_appointment", start=f"{day}T10:00", patient_name="Bo", practitioner="Patel")
    assert again.startswith(f"10:00 on {day_text(day)} is not available with {PATEL}. Nearest free times that day: ")
    anyone = practice.refusal("book_appointment", start=f"{day}T10:00", patient_name="Bo")
    assert anyone.startswith(f"10:00 on {day_text(day)} is not available with anyone. Nearest free times that day: ")
    assert sorted(name for name in practice.booked_with().values() if name) == [PATEL, JONES]


def test_racing_callers_get_one_booking_per_practitioner(practice: Practice, database: Database) -> None:
    day = upcoming(TUESDAY)
    key = practice.assistant.clinic_key
    assert key is not None
    barrier = threading.Barrier(6)
    answers: list[dict[str, Any]] = []

    def book(practitioner: str, patient: str) -> None:
        with database.connect(AUTHENTICATOR) as conn:
            assistant = Assistant(conn, key)
            barrier.wait(timeout=10)
            answers.append(
                assistant.use(
                    "book_appointment",
                    {"start": f"{day}T11:00", "patient_name": patient, "practitioner": practitioner},
                )
            )

    threads = [
        threading.Thread(target=book, args=(who, f"Caller {n}"))
        for n, who in enumerate(["Patel", "Patel", "Jones", "Jones", "Patel", "Jones"])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum("result" in a for a in answers) == 2 and len(answers) == 6
    assert all("is not available with" in a["error"] for a in answers if "error" in a)
    assert sorted(name or "" for name in practice.booked_with().values()) == [PATEL, JONES]


# --- anyone ---------------------------------------------------------------------------------------


def test_anyone_is_spread_fairly_among_those_free(practice: Practice) -> None:
    day = upcoming(TUESDAY)
    chosen = []
    for clock in ("09:00", "09:30", "10:00", "10:30"):
        answer = practice.answer("book_appointment", start=f"{day}T{clock}", patient_name="Jo", practitioner="anyone")
        chosen.append(PATEL if f"with {PATEL} " in answer else JONES if f"with {JONES} " in answer else answer)
    # Fewest that day first; on a tie the one booked least recently; Lee offers no check-ups.
    assert chosen == [PATEL, JONES, PATEL, JONES]

    # Patel is taken at 11:00: anyone then means Jones, though Jones has as many that day.
    practice.answer("book_appointment", start=f"{day}T11:00", patient_name="Al", practitioner="Patel")
    answer = practice.answer("book_appointment", start=f"{day}T11:00", patient_name="Bo")
    assert f"Check-up with {JONES} on" in answer
    # After 13:00 only Patel works.
    assert f"with {PATEL} on" in practice.answer("book_appointment", start=f"{day}T14:00", patient_name="Cy")
    # Only Lee offers consultations.
    consultation = practice.answer("book_appointment", start=f"{day}T09:00", patient_name="Di", service="Consultation")
    assert consultation.startswith(f"Booked: Consultation with {LEE} on")


# --- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("said", ["Dr Patel", "PATEL", "anika", "Dr. Anika Patel", "doctor anika patel", " patel "])
def test_names_are_matched_forgivingly(practice: Practice, said: str) -> None:
    day = upcoming(TUESDAY)
    answer = practice.answer("check_availability", date=day.isoformat(), practitioner=said)
    assert answer.startswith(f"Free start times on {day_text(day)} for a 30-minute Check-up with {PATEL} (")


def test_unknown_and_ambiguous_names_get_the_list_of_practitioners(practice: Practice) -> None:
    day = upcoming(TUESDAY)
    roster = f"{PATEL}; {JONES} (Check-up); {LEE} (Consultation)"
    unknown = practice.refusal("book_appointment", start=f"{day}T10:00", patient_name="Jo", practitioner="Dr Smith")
    assert unknown == f'No practitioner here is called "Dr Smith". The practitioners are: {roster}'
    practice.add("Dr Raj Patel")
    ambiguous = practice.refusal("check_availability", date=day.isoformat(), practitioner="Patel")
    assert ambiguous == f'"Patel" could be {PATEL}, Dr Raj Patel. Which one?'
    assert practice.booked_with() == {}


def test_a_service_the_practitioner_does_not_offer_is_refused(practice: Practice) -> None:
    day = upcoming(TUESDAY)
    refused = practice.refusal("check_availability", date=day.isoformat(), service="consultation", practitioner="Jones")
    assert refused == f"{JONES} does not offer Consultation. {JONES} offers: Check-up"


# --- availability ---------------------------------------------------------------------------------


def test_availability_follows_each_practitioners_hours(practice: Practice) -> None:
    day = upcoming(TUESDAY)
    jones = practice.answer("check_availability", date=day.isoformat(), practitioner="Jones")
    times = jones.split(": ", 1)[1].rstrip(".").split(", ")
    assert times[0] == "09:00" and times[-1] == "12:30"  # 09:00-13:00, 30 minutes each
    everyone = practice.answer("check_availability", date=day.isoformat())
    assert everyone.startswith(f"Free start times on {day_text(day)} for a 30-minute Check-up (London time), by")
    assert times_with(everyone, PATEL)[-1] == "16:30" and times_with(everyone, JONES)[-1] == "12:30"
    assert LEE not in everyone  # no check-ups
    saturday = upcoming(6)
    closed = practice.refusal("check_availability", date=saturday.isoformat(), practitioner="Jones")
    assert closed == f"{JONES} does not see patients on Saturdays"


def test_busy_time_in_a_practitioners_calendar_blocks_only_them(practice: Practice) -> None:
    day = upcoming(TUESDAY)

    def busy(calendar: str, event: str, start: str, end: str) -> None:
        practice.admin.execute(
            "insert into public.calendar_busy (clinic_id, calendar_id, event_id, starts_at, ends_at)"
            " values (%s, %s, %s, %s, %s)",
            (practice.id, calendar, event, at(day, start), at(day, end)),
        )

    busy("patel@example.com", "lunch", "12:00", "13:00")
    busy("primary", "staff-meeting", "09:00", "09:30")  # the clinic's calendar: everyone
    everyone = practice.answer("check_availability", date=day.isoformat())
    assert "12:00" not in times_with(everyone, PATEL) and "12:00" in times_with(everyone, JONES)
    assert "09:00" not in times_with(everyone, PATEL) and "09:00" not in times_with(everyone, JONES)
    refused = practice.refusal("book_appointment", start=f"{day}T12:00", patient_name="Jo", practitioner="Patel")
    assert refused.startswith(f"12:00 on {day_text(day)} is not available with {PATEL}")
    assert f"with {JONES} on" in practice.answer("book_appointment", start=f"{day}T12:00", patient_name="Jo")


def test_bookings_made_before_practitioners_block_every_practitioner(
    admin: psycopg.Connection, gateway: psycopg.Connection
) -> None:
    clinic_id = create_clinic(admin, "Growing Clinic", booking_horizon_days=400)
    assistant = Assistant(gateway, issue_key(admin, clinic_id))
    day = upcoming(TUESDAY)
    assistant.book(f"{day}T10:00", "Jo")
    add_practitioner(admin, clinic_id, PATEL)
    add_practitioner(admin, clinic_id, JONES)
    answer = assistant.use("check_availability", {"date": day.isoformat()})["result"]
    assert "10:00" not in times_with(answer, PATEL) and "10:00" not in times_with(answer, JONES)
    refused = assistant.use("book_appointment", {"start": f"{day}T10:00", "patient_name": "Al",
                                                 "practitioner": "Jones"})  # fmt: skip
    assert refused["error"].startswith(f"10:00 on {day_text(day)} is not available with {JONES}")


def test_a_clinic_without_practitioners_answers_as_before(practice: Practice, admin: psycopg.Connection,
                                                          gateway: psycopg.Connection) -> None:  # fmt: skip
    clinic_id = create_clinic(admin, "Solo Clinic", booking_horizon_days=400)
    assistant = Assistant(gateway, issue_key(admin, clinic_id))
    day = upcoming(TUESDAY)
    plain = assistant.use("check_availability", {"date": day.isoformat()})["result"]
    assert plain.startswith(f"Free start times on {day_text(day)} for a 30-minute Check-up (London time): 09:00, ")
    either = assistant.use("check_availability", {"date": day.isoformat(), "practitioner": "no preference"})
    assert either["result"] == plain
    named = assistant.use("check_availability", {"date": day.isoformat(), "practitioner": "Dr Who"})
    assert named["error"] == "This clinic does not book with a particular practitioner: leave practitioner out"
    booked = assistant.use("book_appointment", {"start": f"{day}T10:00", "patient_name": "Jo"})["result"]
    assert booked.startswith(f"Booked: Check-up on {day_text(day)} at 10:00 for Jo. Reference ")
    assert scalar(admin, "select practitioner_id from public.appointments where clinic_id = %s", (clinic_id,)) is None


# --- rescheduling ---------------------------------------------------------------------------------


def test_rescheduling_keeps_the_practitioner_unless_asked(practice: Practice) -> None:
    day = upcoming(TUESDAY)
    reference = reference_of(
        practice.answer("book_appointment", start=f"{day}T10:00", patient_name="Jo", practitioner="Patel")
    )
    later = practice.answer("reschedule_appointment", reference=reference, new_start=f"{day}T11:00")
    assert later == (
        f"Moved: Check-up with {PATEL} from {day_text(day)} at 10:00 to {day_text(day)} at 11:00"
        f" (reference {reference})."
    )
    switched = practice.answer("reschedule_appointment", reference=reference, practitioner="Dr Jones")
    assert switched == (
        f"Moved: Check-up with {PATEL} from {day_text(day)} at 11:00 to {JONES} on {day_text(day)} at 11:00"
        f" (reference {reference})."
    )
    assert practice.booked_with() == {reference: JONES}
    same = practice.refusal("reschedule_appointment", reference=reference, practitioner="Jones")
    assert same == f"The booking {reference} is already at that time with {JONES}"
    # Jones works mornings only: a move to the afternoon keeping Jones is refused with the reason.
    afternoon = practice.refusal("reschedule_appointment", reference=reference, new_start=f"{day}T15:00")
    assert afternoon == f"That time is outside {JONES}'s hours (Tuesday: 09:00-13:00)"
    assert practice.booked_with() == {reference: JONES}


# --- deactivation ---------------------------------------------------------------------------------


def deactivate(admin: psycopg.Connection, practitioner: uuid.UUID, reassign: bool) -> list[tuple[str, str, str]]:
    rows = admin.execute(
        "select reference, practitioner_name, outcome from public.deactivate_practitioner(%s, %s)",
        (practitioner, reassign),
    ).fetchall()
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("reassign", [False, True], ids=["kept", "reassigned"])
def test_a_deactivated_practitioner_takes_no_bookings_and_theirs_are_kept_or_moved(
    practice: Practice, reassign: bool
) -> None:
    day = upcoming(TUESDAY)
    refs = {}
    for clock in ("10:00", "11:00", "14:00"):
        refs[clock] = reference_of(practice.answer(
            "book_appointment", start=f"{day}T{clock}", patient_name="Jo", practitioner="Patel"))  # fmt: skip
    practice.answer("book_appointment", start=f"{day}T10:00", patient_name="Al", practitioner="Jones")

    outcome = deactivate(practice.admin, practice.practitioners[PATEL], reassign)

    # 10:00: Jones is booked; 14:00: Jones does not work afternoons. 11:00 moves when asked to.
    assert outcome == [
        (refs["10:00"], PATEL, "kept"),
        (refs["11:00"], JONES if reassign else PATEL, "moved" if reassign else "kept"),
        (refs["14:00"], PATEL, "kept"),
    ]
    assert practice.booked_with()[refs["11:00"]] == (JONES if reassign else PATEL)
    named = practice.refusal("check_availability", date=day.isoformat(), practitioner="Dr Patel")
    assert named.startswith(f"{PATEL} no longer takes bookings. The practitioners are: {JONES} (Check-up); ")
    assert PATEL not in practice.answer("check_availability", date=day.isoformat())
    # A kept booking can still be moved: without a practitioner named it goes to whoever is free.
    moved = practice.answer("reschedule_appointment", reference=refs["14:00"], new_start=f"{day}T12:00")
    assert f"to {JONES} on {day_text(day)} at 12:00" in moved
    # Their calendar is still read while they have bookings ahead.
    calendars = scalar(practice.admin, "select array_agg(c order by c) from private.clinic_calendars(%s) c",
                       (practice.id,))  # fmt: skip
    assert calendars == ["jones@example.com", "patel@example.com", "primary"]


# --- clock changes, per practitioner --------------------------------------------------------------


def at(day: dt.date, clock: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.fromisoformat(clock), LONDON)


def test_every_clock_change_rule_holds_for_a_practitioners_own_hours(practice: Practice) -> None:
    all_night = [{"weekday": day, "opens": "00:00", "closes": "24:00"} for day in range(1, 8)]
    practice.add("Dr Night Owl", hours=all_night)
    spring, autumn = next_clock_change(forward=True), next_clock_change(forward=False)

    skipped = practice.refusal("book_appointment", start=f"{spring}T01:30", patient_name="Jo", practitioner="Owl")
    assert skipped == f"{spring} 01:30 does not exist in London: clocks go forward"
    booked = practice.answer("book_appointment", start=f"{spring}T00:30", patient_name="Jo", practitioner="Owl")
    assert "with Dr Night Owl" in booked
    slots = practice.answer("check_availability", date=spring.isoformat(), practitioner="Night Owl")
    times = slots.split(": ", 1)[1].rstrip(".").split(", ")
    assert not any(t.startswith("01:") for t in times) and "00:30" not in times and "02:00" in times
    assert scalar(practice.admin, "select starts_at from public.appointments") == dt.datetime(
        spring.year, spring.month, spring.day, 0, 30, tzinfo=dt.UTC
    )

    twice = practice.answer("book_appointment", start=f"{autumn}T01:30", patient_name="Al", practitioner="Owl")
    assert " at 01:30 (the first of the two times the clock shows that hour, before the clocks go back)" in twice
    first = scalar(practice.admin, "select max(starts_at) from public.appointments")
    assert first == dt.datetime(autumn.year, autumn.month, autumn.day, 0, 30, tzinfo=dt.UTC)
    # The others keep the clinic's hours on those days (a Sunday: closed).
    assert practice.refusal("check_availability", date=spring.isoformat(), practitioner="Patel") == (
        f"{PATEL} does not see patients on Sundays"
    )


def test_a_practitioners_calendar_that_cannot_be_read_keeps_only_them_from_being_offered(practice: Practice) -> None:
    day = upcoming(TUESDAY)
    practice.admin.execute(
        "insert into public.calendar_mirrors (clinic_id, calendar_id, last_synced_at, last_error) values"
        " (%s, 'primary', now(), null), (%s, 'jones@example.com', now(), null),"
        " (%s, 'patel@example.com', null, 'Google calendar listing failed: HTTP 404 notFound')",
        (practice.id, practice.id, practice.id),
    )
    stale = practice.refusal("check_availability", date=day.isoformat(), practitioner="Patel")
    assert stale.startswith("The clinic's calendar cannot be checked right now, so no time can be confirmed.")
    everyone = practice.answer("check_availability", date=day.isoformat())
    assert PATEL not in everyone and times_with(everyone, JONES)[0] == "09:00"
    assert f"with {JONES}" in practice.answer("book_appointment", start=f"{day}T09:00", patient_name="Jo")
    # Listed at last: offered again.
    practice.admin.execute("update public.calendar_mirrors set last_synced_at = now(), last_error = null")
    assert PATEL in practice.answer("check_availability", date=day.isoformat())


def test_operators_manage_practitioners_through_the_rest_gateway(
    rest: SupabaseRestStandIn, admin: psycopg.Connection, gateway: psycopg.Connection
) -> None:
    """The service role (the CLI on the Supabase path) reaches every function the operator commands use."""
    clinic_id = create_clinic(admin, "Gateway Clinic", booking_horizon_days=400)
    assistant = Assistant(gateway, issue_key(admin, clinic_id))
    headers = {"apikey": rest.service_role_key, "Authorization": f"Bearer {rest.service_role_key}"}

    def rpc(function: str, **params: Any) -> Any:
        reply = httpx.post(f"{rest.url}/rest/v1/rpc/{function}", json=params, headers=headers, timeout=30)
        assert reply.status_code in (200, 204), reply.text  # 204: a function returning void
        return reply.json() if reply.status_code == 200 else None

    patel = rpc("add_practitioner", p_clinic_id=str(clinic_id), p_name=PATEL, p_services=["check-up"])
    rpc("add_practitioner", p_clinic_id=str(clinic_id), p_name=JONES, p_opening_hours=MORNINGS)
    rpc("change_practitioner", p_practitioner_id=patel, p_changes={"calendar_id": "patel@example.com"})
    day = upcoming(TUESDAY)
    reference = assistant.book(f"{day}T10:00", "Jo", practitioner="Patel")
    [row] = rpc("deactivate_practitioner", p_practitioner_id=patel, p_reassign=True)
    assert (row["reference"], row["practitioner_name"], row["outcome"]) == (reference, JONES, "moved")
    listed = {p["name"]: p for p in rpc("clinic_practitioners", p_clinic_id=str(clinic_id))}
    assert listed[PATEL]["active"] is False and listed[PATEL]["services"] == ["Check-up"]
    assert listed[JONES]["upcoming_bookings"] == 1
    bad = httpx.post(f"{rest.url}/rest/v1/rpc/add_practitioner", headers=headers, timeout=30,
                     json={"p_clinic_id": str(clinic_id), "p_name": "Dr Lee", "p_services": ["Massage"]})  # fmt: skip
    assert bad.status_code == 400, bad.text
    assert 'The clinic has no service "Massage"' in bad.json()["message"]
    assert scalar(admin, "select count(*) from public.practitioners where clinic_id = %s", (clinic_id,)) == 2


def test_when_no_offering_practitioners_calendar_can_be_read_the_caller_hears_so(practice: Practice) -> None:
    """Not "no free times": nothing can be confirmed until the calendars are read."""
    day = upcoming(TUESDAY)
    practice.admin.execute(
        "insert into public.calendar_mirrors (clinic_id, calendar_id, last_synced_at, last_error) values"
        " (%s, 'primary', now(), null),"
        " (%s, 'jones@example.com', null, 'Google calendar listing failed: HTTP 404 notFound'),"
        " (%s, 'patel@example.com', null, 'Google calendar listing failed: HTTP 404 notFound')",
        (practice.id, practice.id, practice.id),
    )
    stale = practice.refusal("check_availability", date=day.isoformat())
    assert stale.startswith("The clinic's calendar cannot be checked right now, so no time can be confirmed.")
    booking = practice.refusal("book_appointment", start=f"{day}T10:00", patient_name="Jo")
    assert booking == stale
