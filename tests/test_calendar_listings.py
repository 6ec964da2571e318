"""The busy mirror reads Google as Google lists it: recurring series as their occurrences (moved and
cancelled ones included, across a change of the clocks), deletions listed with nothing but an id, and
a deleted booking's event Google refuses to bring back (the booking gets a new event, once)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from daemon.calendar import event_id_for
from tests.conftest import Clinic
from tests.daemon_harness import Backend, DaemonThread, make_settings, running, wait_until
from tests.dates import next_clock_change
from tests.standins.google import GoogleStandIn
from tests.standins.postgres import scalar
from tests.standins.receptionist import Receptionist
from tests.standins.vapi import Assistant
from tests.test_busy_mirror import FAST_MIRROR, account, appointment, free_times, mirrored_at, receptionist

__all__ = ["account", "receptionist"]  # the busy mirror's fixtures, used here too


@pytest.fixture
def daemon(backend: Backend, google: GoogleStandIn, account: str, admin: psycopg.Connection) -> Iterator[DaemonThread]:
    with running(make_settings(backend, google, **FAST_MIRROR)) as runner:
        wait_until(lambda: mirrored_at(admin) is not None, what="the first listing")
        yield runner


def busy_local(admin: psycopg.Connection) -> list[tuple[str, str]]:
    """Busy intervals as London wall-clock times, in order."""
    rows = admin.execute(
        "select to_char(starts_at at time zone 'Europe/London', 'YYYY-MM-DD HH24:MI'),"
        " to_char(ends_at at time zone 'Europe/London', 'YYYY-MM-DD HH24:MI')"
        " from public.calendar_busy order by starts_at"
    ).fetchall()
    return [(start, end) for start, end in rows]


def tuesday_before(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=(day.isoweekday() - 2) % 7 or 7)


def test_a_weekly_meeting_blocks_every_occurrence_across_the_clock_change(
    daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, receptionist: Receptionist
) -> None:
    first = tuesday_before(next_clock_change(forward=True)) - dt.timedelta(weeks=1)
    days = [first + dt.timedelta(weeks=n) for n in range(4)]  # two before the clocks go forward, two after
    receptionist.add_series(first, "16:00", "17:00", "RRULE:FREQ=WEEKLY;COUNT=4")
    wait_until(lambda: len(busy_local(admin)) == 4, what="four occurrences mirrored")
    assert busy_local(admin) == [(f"{day} 16:00", f"{day} 17:00") for day in days]
    for day in days:
        times = free_times(assistant, day)
        assert "15:30" in times and "16:00" not in times and "16:30" not in times, (day, times)
    assert "16:00" in free_times(assistant, days[-1] + dt.timedelta(weeks=1))  # the series has ended


def test_a_moved_and_a_cancelled_occurrence_are_read_as_such(
    daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, receptionist: Receptionist
) -> None:
    first = tuesday_before(next_clock_change(forward=True)) + dt.timedelta(weeks=2)
    series = receptionist.add_series(first, "10:00", "11:00", "RRULE:FREQ=WEEKLY;COUNT=3")
    wait_until(lambda: len(busy_local(admin)) == 3, what="three occurrences mirrored")
    second, third = receptionist.occurrences(series, first)[1:3]
    receptionist.move(second["id"], first + dt.timedelta(weeks=1), "14:00", "15:00")
    receptionist.delete(third["id"])
    expected = [(f"{first} 10:00", f"{first} 11:00"), (f"{first + dt.timedelta(weeks=1)} 14:00",
                f"{first + dt.timedelta(weeks=1)} 15:00")]  # fmt: skip
    wait_until(lambda: busy_local(admin) == expected, what="the exception and the cancellation mirrored")
    assert "10:00" in free_times(assistant, first + dt.timedelta(weeks=2))


def test_a_recurring_all_day_block_takes_each_of_its_days(
    daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, receptionist: Receptionist
) -> None:
    first = tuesday_before(next_clock_change(forward=True)) + dt.timedelta(days=1)  # a Wednesday
    receptionist.add_all_day_series(first, "RRULE:FREQ=WEEKLY;COUNT=2")
    wait_until(lambda: len(busy_local(admin)) == 2, what="both days mirrored")
    for day in (first, first + dt.timedelta(weeks=1)):
        assert free_times(assistant, day) == []
    assert free_times(assistant, first + dt.timedelta(weeks=2))


@pytest.mark.parametrize("refusal", ["forbidden", "conflict"])
def test_a_deleted_event_google_will_not_restore_gives_the_booking_a_new_event_once(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, assistant: Assistant,
    receptionist: Receptionist, account: str, clinic: Clinic, refusal: str,
) -> None:  # fmt: skip
    day = tuesday_before(next_clock_change(forward=True))
    reference = assistant.book(f"{day}T10:00")
    # The mirror is off: the caller reschedules before it could see the receptionist's delete.
    with running(make_settings(backend, google, mirror_enabled=False)):
        wait_until(lambda: appointment(admin, reference)["sync_state"] == "synced", what="the booking synced")
        row = appointment(admin, reference)
        receptionist.delete(row["calendar_event_id"])
        google.restore_refusal = refusal  # type: ignore[assignment]
        assert "result" in assistant.use(
            "reschedule_appointment", {"reference": reference, "new_start": f"{day}T11:00"}
        )
        wait_until(
            lambda: (
                appointment(admin, reference)["sync_state"] == "synced"
                and appointment(admin, reference)["local_start"] == "11:00"
            ),
            what="the moved booking in the calendar again",
        )
    appointment_id = uuid.UUID(str(row["id"]))
    events = {event["id"]: event for event in google.events(account)}
    old, new = event_id_for(appointment_id), event_id_for(appointment_id, 1)
    assert events[old]["status"] == "cancelled"  # Google kept it deleted
    assert events[new]["status"] == "confirmed" and events[new]["start"]["dateTime"].startswith(f"{day}T11:00")
    assert [e["id"] for e in events.values() if e["status"] == "confirmed"] == [new]
    stored = appointment(admin, reference)
    assert stored["calendar_event_id"] == new and stored["status"] == "booked"
    assert scalar(admin, "select event_generation from public.appointments") == 1
    assert [r.status for r in google.requests() if r.method == "PUT"].count(403 if refusal == "forbidden" else 409) == 1


def test_a_minimal_deletion_of_a_booking_cancels_it(
    daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, receptionist: Receptionist,
    google: GoogleStandIn,
) -> None:  # fmt: skip
    assert google.minimal_deletions  # Google guarantees only id and status for a deleted event
    day = tuesday_before(next_clock_change(forward=True))
    reference = assistant.book(f"{day}T10:00")
    wait_until(lambda: appointment(admin, reference)["sync_state"] == "synced", what="the booking synced")
    receptionist.delete(appointment(admin, reference)["calendar_event_id"])
    wait_until(lambda: appointment(admin, reference)["status"] == "cancelled", what="the deletion read back")
    assert "10:00" in free_times(assistant, day)
