"""Clinic-local time: GMT and BST, the hour that never happens and the hour that happens twice."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import psycopg
import pytest

from tests.dates import LONDON, next_clock_change
from tests.standins.clinics import create_clinic, issue_key
from tests.standins.postgres import scalar
from tests.standins.vapi import Assistant

UTC = dt.UTC
ALWAYS_OPEN = {day: [("00:00", "24:00")] for day in range(1, 8)}


@pytest.fixture
def night_clinic(admin: psycopg.Connection, gateway: psycopg.Connection) -> Assistant:
    """A clinic open round the clock, so the small hours of a clock change can be booked."""
    clinic_id = create_clinic(admin, "Night Clinic", hours=ALWAYS_OPEN, booking_horizon_days=400)
    return Assistant(gateway, issue_key(admin, clinic_id))


def booked_start(admin: psycopg.Connection) -> dt.datetime:
    start: dt.datetime = scalar(admin, "select starts_at from public.appointments order by created_at desc limit 1")
    return start.astimezone(UTC)


def next_date_in_month(month: int) -> dt.date:
    today = dt.datetime.now(LONDON).date()
    year = today.year if today.month < month else today.year + 1
    return dt.date(year, month, 14)


@pytest.mark.parametrize(("month", "utc_hour"), [(1, 10), (7, 9)], ids=["winter-GMT", "summer-BST"])
def test_local_ten_oclock_is_stored_as_the_right_instant(
    admin: psycopg.Connection, night_clinic: Assistant, month: int, utc_hour: int
) -> None:
    day = next_date_in_month(month)
    result = night_clinic.use("book_appointment", {"start": f"{day}T10:00", "patient_name": "Jo"})["result"]
    assert " at 10:00 for Jo." in result
    assert booked_start(admin) == dt.datetime.combine(day, dt.time(utc_hour), UTC)


@pytest.mark.parametrize("clock", ["01:00", "01:30", "01:59"])
def test_a_time_in_the_skipped_hour_is_refused(admin: psycopg.Connection, night_clinic: Assistant, clock: str) -> None:
    spring = next_clock_change(forward=True)
    error = night_clinic.use("book_appointment", {"start": f"{spring}T{clock}", "patient_name": "Jo"})["error"]
    assert error == f"{spring} {clock} does not exist in London: clocks go forward"
    assert scalar(admin, "select count(*) from public.appointments") == 0


def test_the_hours_around_the_skipped_one_are_bookable(admin: psycopg.Connection, night_clinic: Assistant) -> None:
    spring = next_clock_change(forward=True)
    night_clinic.use("book_appointment", {"start": f"{spring}T00:30", "patient_name": "Jo"})
    assert booked_start(admin) == dt.datetime.combine(spring, dt.time(0, 30), UTC)
    # 00:30 GMT plus 30 minutes ends at 02:00 BST: the 02:00 slot is free, 01:xx is never offered.
    slots = night_clinic.use("check_availability", {"date": spring.isoformat()})["result"]
    times = slots.split(": ", 1)[1].rstrip(".").split(", ")
    assert not any(t.startswith("01:") for t in times)
    assert "00:30" not in times and "02:00" in times
    night_clinic.use("book_appointment", {"start": f"{spring}T02:00", "patient_name": "Jo"})
    assert booked_start(admin) == dt.datetime.combine(spring, dt.time(1, 0), UTC)


def test_a_time_that_happens_twice_means_the_first_and_says_so(
    admin: psycopg.Connection, night_clinic: Assistant
) -> None:
    autumn = next_clock_change(forward=False)
    result = night_clinic.use("book_appointment", {"start": f"{autumn}T01:30", "patient_name": "Jo"})["result"]
    assert " at 01:30 (the first of the two times the clock shows that hour, before the clocks go back)" in result
    first_0130_bst = dt.datetime.combine(autumn, dt.time(0, 30), UTC)
    assert booked_start(admin) == first_0130_bst

    # 01:15 (first occurrence, 00:15 UTC) runs into it, so the instants really are BST ones.
    clash = night_clinic.use("book_appointment", {"start": f"{autumn}T01:15", "patient_name": "Al"})["error"]
    assert clash.startswith(f"01:15 on {autumn:%A} {autumn.day} {autumn:%B %Y} is not available")
    # An unambiguous time after the change is GMT.
    night_clinic.use("book_appointment", {"start": f"{autumn}T03:00", "patient_name": "Al"})
    assert booked_start(admin) == dt.datetime.combine(autumn, dt.time(3, 0), UTC)


def test_rescheduling_into_the_skipped_hour_is_refused(admin: psycopg.Connection, night_clinic: Assistant) -> None:
    spring = next_clock_change(forward=True)
    reference = night_clinic.book(f"{spring}T09:00", "Jo")
    error = night_clinic.use("reschedule_appointment", {"reference": reference, "new_start": f"{spring}T01:30"})
    assert error["error"] == f"{spring} 01:30 does not exist in London: clocks go forward"
    assert booked_start(admin) == dt.datetime.combine(spring, dt.time(8, 0), UTC)


def test_other_time_zones_follow_their_own_rules(admin: psycopg.Connection, gateway: psycopg.Connection) -> None:
    new_york = ZoneInfo("America/New_York")
    clinic_id = create_clinic(
        admin,
        "Hudson Clinic",
        hours=ALWAYS_OPEN,
        time_zone="America/New_York",
        phone_country_code="1",
        booking_horizon_days=400,
    )
    hudson = Assistant(gateway, issue_key(admin, clinic_id))
    day = next_date_in_month(1)
    hudson.use("book_appointment", {"start": f"{day}T10:00", "patient_name": "Jo", "patient_phone": "212 555 0100"})
    assert booked_start(admin) == dt.datetime.combine(day, dt.time(10), new_york).astimezone(UTC)
    assert scalar(admin, "select patient ->> 'phone' from public.appointments") == "+12125550100"

    spring = dt.date(day.year, 3, 8)
    spring += dt.timedelta(days=(7 - spring.isoweekday()) % 7)  # second Sunday of March
    error = hudson.use("book_appointment", {"start": f"{spring}T02:30", "patient_name": "Jo"})["error"]
    assert error == f"{spring} 02:30 does not exist in New York: clocks go forward"


def test_an_unknown_time_zone_cannot_be_configured(admin: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        admin.execute("insert into public.clinics (name, time_zone) values ('X', 'GMT+1 locked')")
