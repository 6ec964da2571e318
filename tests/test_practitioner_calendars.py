"""Practitioners' calendars, through the daemon on both database paths: each booking in its
practitioner's calendar, a move between practitioners moving the event exactly once (a crash in the
middle included), and a practitioner's own Google events blocking only them."""

from __future__ import annotations

import datetime as dt
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from daemon.calendar import event_id_for
from tests.conftest import Clinic
from tests.daemon_harness import (
    Backend,
    connect_google,
    daemon_process,
    make_settings,
    running,
    settings_env,
    wait_until,
)
from tests.dates import upcoming
from tests.standins.google import Fault, GoogleStandIn
from tests.standins.postgres import scalar
from tests.standins.receptionist import Receptionist
from tests.standins.vapi import Assistant, reference_of
from tests.test_practitioners import JONES, LEE, MORNINGS, PATEL, add_practitioner, day_text, times_with

TUESDAY = 2
PATEL_CALENDAR, JONES_CALENDAR = "patel@example.com", "jones@example.com"
FAST = {"mirror_interval_seconds": 0.3, "mirror_after_push_seconds": 0.1, "sync_poll_seconds": 0.2}


@dataclass
class Practice:
    clinic: Clinic
    account: str
    assistant: Assistant
    admin: psycopg.Connection
    google: GoogleStandIn

    def book(self, clock: str, practitioner: str, service: str = "Check-up") -> uuid.UUID:
        item = self.assistant.use(
            "book_appointment",
            {"start": f"{upcoming(TUESDAY)}T{clock}", "patient_name": "Jo", "practitioner": practitioner,
             "service": service},
        )  # fmt: skip
        assert "result" in item, item
        return self.appointment(reference_of(item["result"]))

    def appointment(self, reference: str) -> uuid.UUID:
        found = scalar(self.admin, "select id from public.appointments where reference = %s", (reference,))
        return uuid.UUID(str(found))

    def events(self, calendar: str, appointment: uuid.UUID) -> list[str]:
        """The statuses of the appointment's events in one calendar (none, confirmed, or cancelled)."""
        event_id = event_id_for(appointment)
        return [e["status"] for e in self.google.events(self.account, calendar) if e["id"] == event_id]

    def holder(self, appointment: uuid.UUID) -> tuple[str, str | None, str]:
        row = self.admin.execute(
            "select a.sync_state, a.event_calendar_id, a.status from public.appointments a where a.id = %s",
            (appointment,),
        ).fetchone()
        assert row is not None
        return row

    def synced(self) -> bool:
        return scalar(self.admin, "select bool_and(sync_state = 'synced') from public.appointments") is True


@pytest.fixture
def practice(admin: psycopg.Connection, gateway: psycopg.Connection, google: GoogleStandIn,
             clinic: Clinic) -> Practice:  # fmt: skip
    account = connect_google(admin, google, clinic.id)
    google.add_account(account, [PATEL_CALENDAR, JONES_CALENDAR])
    add_practitioner(admin, clinic.id, PATEL, calendar_id=PATEL_CALENDAR)
    add_practitioner(admin, clinic.id, JONES, services=["Check-up"], hours=MORNINGS, calendar_id=JONES_CALENDAR)
    add_practitioner(admin, clinic.id, LEE, services=["Consultation"])  # the clinic's calendar
    return Practice(clinic, account, Assistant(gateway, clinic.key), admin, google)


def listed_since(admin: psycopg.Connection, calendar: str, since: dt.datetime) -> bool:
    last = scalar(admin, "select last_synced_at from public.calendar_mirrors where calendar_id = %s", (calendar,))
    return last is not None and last > since


def test_each_booking_goes_to_its_practitioners_calendar_and_moves_with_it(
    backend: Backend, practice: Practice, admin: psycopg.Connection
) -> None:
    patel = practice.book("10:00", "Patel")
    jones = practice.book("10:00", "Jones")
    lee = practice.book("10:00", "Lee", service="Consultation")
    with running(make_settings(backend, practice.google, **FAST)):
        wait_until(practice.synced, what="all three synced")
        assert practice.events(PATEL_CALENDAR, patel) == ["confirmed"]
        assert practice.events(JONES_CALENDAR, jones) == ["confirmed"]
        assert practice.events("primary", lee) == ["confirmed"]
        assert [practice.events(c, patel) for c in ("primary", JONES_CALENDAR)] == [[], []]
        assert practice.holder(patel) == ("synced", PATEL_CALENDAR, "booked")

        reference = scalar(admin, "select reference from public.appointments where id = %s", (patel,))
        moved = practice.assistant.use("reschedule_appointment", {"reference": reference, "new_start":
                                       f"{upcoming(TUESDAY)}T11:00", "practitioner": "Jones"})  # fmt: skip
        assert f"to {JONES} on" in moved["result"]
        wait_until(lambda: practice.holder(patel) == ("synced", JONES_CALENDAR, "booked"), what="the move")
        moved_at = dt.datetime.now(dt.UTC)
        assert practice.events(JONES_CALENDAR, patel) == ["confirmed"]
        assert practice.events(PATEL_CALENDAR, patel) == ["cancelled"]
        jones_events = practice.google.events(practice.account, JONES_CALENDAR)
        [event] = [e for e in jones_events if e["id"] == event_id_for(patel)]
        assert f"With: {JONES}" in event["description"]
        # The mirror reads the deletion the move left in Patel's calendar: not a cancellation.
        wait_until(lambda: listed_since(admin, PATEL_CALENDAR, moved_at), what="Patel's calendar listed again")
        assert practice.holder(patel) == ("synced", JONES_CALENDAR, "booked")


@pytest.mark.parametrize(("method", "calendar"), [("POST", JONES_CALENDAR), ("DELETE", PATEL_CALENDAR)],
                         ids=["killed-after-the-insert", "killed-after-the-delete"])  # fmt: skip
def test_a_move_between_practitioners_survives_a_crash_in_the_middle(
    backend: Backend, practice: Practice, admin: psycopg.Connection, method: str, calendar: str, tmp_path: Path
) -> None:
    appointment = practice.book("10:00", "Patel")
    env = settings_env(backend, practice.google, **FAST)
    log = tmp_path / "daemon.log"
    with log.open("ab") as output:
        process = daemon_process(env, output)
    try:
        wait_until(practice.synced, what="the booking in Patel's calendar")
        # Google carries out the step, then the answer never reaches the daemon before it dies.
        practice.google.inject(Fault.delay(8.0), method=method, path_contains=calendar)
        reference = scalar(admin, "select reference from public.appointments where id = %s", (appointment,))
        answer = practice.assistant.use("reschedule_appointment", {"reference": reference, "practitioner": "Jones"})
        assert "result" in answer, answer
        wait_until(
            lambda: any(r.fault is not None and r.status == 0 for r in practice.google.requests()),
            what=f"the {method} to {calendar} hanging",
        )
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert practice.holder(appointment)[:2] == ("in_flight", PATEL_CALENDAR)  # the move was not recorded
    # The mirror leases every calendar that is due (for 120 s) and then lists them one by one: the kill may land
    # in between (more often on a loaded machine), and the calendars the dead daemon held are listed by no one
    # until their leases run out. End them, as two minutes would (the listings checked below need them).
    admin.execute("update public.calendar_mirrors set lease_expires_at = now() where lease_expires_at > now()")

    with log.open("ab") as output:
        survivor = daemon_process(env, output)
    try:
        wait_until(lambda: practice.holder(appointment) == ("synced", JONES_CALENDAR, "booked"), timeout=30,
                   what="the move finished by the next daemon")  # fmt: skip
        finished = dt.datetime.now(dt.UTC)
        wait_until(lambda: listed_since(admin, PATEL_CALENDAR, finished), what="Patel's calendar listed again")
        wait_until(lambda: listed_since(admin, JONES_CALENDAR, finished), what="Jones's calendar listed again")
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(timeout=30)
    assert survivor.returncode == 0, log.read_text()[-3000:]
    # Exactly one event, in Jones's calendar; none in the clinic's; the booking stands.
    assert practice.events(JONES_CALENDAR, appointment) == ["confirmed"]
    assert practice.events(PATEL_CALENDAR, appointment) == ["cancelled"]
    assert practice.events("primary", appointment) == []
    assert practice.holder(appointment) == ("synced", JONES_CALENDAR, "booked")
    assert scalar(admin, "select count(*) from public.calendar_busy") == 0  # our events are never busy time


@pytest.fixture
def receptionist(google: GoogleStandIn, practice: Practice) -> Iterator[Receptionist]:
    person = Receptionist(google, practice.account)
    yield person
    person.close()


def test_a_practitioners_lunch_in_google_blocks_only_them(
    backend: Backend, practice: Practice, receptionist: Receptionist, admin: psycopg.Connection
) -> None:
    day = upcoming(TUESDAY)
    with running(make_settings(backend, practice.google, **FAST)):
        wait_until(lambda: scalar(admin, "select count(*) from public.calendar_mirrors where last_synced_at"
                                         " is not null") == 3, what="three calendars mirrored")  # fmt: skip
        receptionist.add(day, "12:00", "13:00", calendar_id=PATEL_CALENDAR)
        receptionist.add(day, "09:00", "09:30", calendar_id="primary")  # the clinic's: everyone
        wait_until(lambda: scalar(admin, "select count(*) from public.calendar_busy") == 2, what="both mirrored")

    answer = practice.assistant.use("check_availability", {"date": day.isoformat()})["result"]
    assert "12:00" not in times_with(answer, PATEL) and "12:00" in times_with(answer, JONES)
    assert "09:00" not in times_with(answer, PATEL) and "09:00" not in times_with(answer, JONES)
    refused = practice.assistant.use("book_appointment", {"start": f"{day}T12:00", "patient_name": "Jo",
                                                          "practitioner": "Patel"})  # fmt: skip
    assert refused["error"].startswith(f"12:00 on {day_text(day)} is not available with {PATEL}")
    assert f"with {JONES}" in practice.assistant.use(
        "book_appointment", {"start": f"{day}T12:00", "patient_name": "Jo"})["result"]  # fmt: skip
