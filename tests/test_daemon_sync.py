"""End to end: Vapi booking -> database -> daemon -> the clinic's Google Calendar, exactly once.

Every test runs through both database paths (Supabase REST stand-in and direct PostgreSQL),
with the real supabase, google-api-python-client and google-auth libraries talking to the
stand-ins on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest

from daemon.calendar import event_id_for
from daemon.cli import main as daemon_main
from tests.conftest import Clinic
from tests.daemon_harness import (
    Backend,
    all_synced,
    appointment_events,
    connect_google,
    make_settings,
    running,
    settings_env,
    store_connection,
    sync_states,
    wait_until,
)
from tests.dates import LONDON, upcoming
from tests.standins.clinics import create_clinic, issue_key
from tests.standins.google import Fault, GoogleStandIn
from tests.standins.postgres import scalar
from tests.standins.vapi import Assistant, VapiCall

TUESDAY = 2


@pytest.fixture
def account(admin: psycopg.Connection, google: GoogleStandIn, clinic: Clinic) -> str:
    return connect_google(admin, google, clinic.id)


def next_in_month(month: int) -> dt.date:
    today = dt.datetime.now(LONDON).date()
    day = dt.date(today.year if today.month < month else today.year + 1, month, 12)
    return day + dt.timedelta(days=(TUESDAY - day.isoweekday()) % 7)


def posts(google: GoogleStandIn, status: int | None = None) -> int:
    return sum(
        1
        for r in google.requests()
        if r.method == "POST" and r.path.endswith("/events") and (status is None or r.status == status)
    )


def test_a_booking_lands_in_its_clinics_calendar_at_the_right_local_time(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    gateway: psycopg.Connection,
    assistant: Assistant,
    clinic: Clinic,
    account: str,
) -> None:
    other_id = create_clinic(admin, "Hillside Surgery", booking_horizon_days=400)
    other_account = connect_google(admin, google, other_id)
    winter, summer = next_in_month(1), next_in_month(7)
    assistant.book(f"{winter}T10:00", notes="Bring inhaler")
    assistant.book(f"{summer}T10:00", "John Roe", patient_phone="07700 900456")
    Assistant(gateway, issue_key(admin, other_id), VapiCall()).book(f"{winter}T10:00", "Sam Poe")

    with running(make_settings(backend, google)):
        wait_until(all_synced(admin), what="every appointment synced")

    ours = appointment_events(admin, google, account, clinic.id)
    theirs = appointment_events(admin, google, other_account, other_id)
    assert len(ours) == 2 and len(theirs) == 1
    starts = sorted((e["start"]["dateTime"], e["start"]["timeZone"], e["end"]["dateTime"]) for e in ours.values())
    assert starts == [
        (f"{winter}T10:00:00+00:00", "Europe/London", f"{winter}T10:30:00+00:00"),
        (f"{summer}T10:00:00+01:00", "Europe/London", f"{summer}T10:30:00+01:00"),
    ]
    rows = admin.execute(
        "select id, reference, calendar_event_id, calendar_event_link, synced_revision,"
        " last_sync_error from public.appointments where clinic_id = %s",
        (clinic.id,),
    ).fetchall()
    for appointment_id, reference, event_id, link, synced_revision, error in rows:
        event = ours[appointment_id]
        assert (event_id, link, synced_revision, error) == (event["id"], event["htmlLink"], 1, None)
        assert event["status"] == "confirmed"
        assert f"Reference: {reference}" in event["description"]
        assert event["extendedProperties"]["private"]["appointmentId"] == str(appointment_id)
    jane = next(e for e in ours.values() if "Jane Doe" in e["summary"])
    assert jane["summary"] == "Check-up: Jane Doe"
    assert "Phone: +447700900123" in jane["description"] and "Notes: Bring inhaler" in jane["description"]
    assert "Sam Poe" not in str(google.events(account)) and "Jane Doe" not in str(google.events(other_account))


def test_reschedule_and_cancel_reach_the_calendar(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    assistant: Assistant,
    account: str,
) -> None:
    day = upcoming(TUESDAY)
    reference = assistant.book(f"{day}T10:00")
    with running(make_settings(backend, google)):
        wait_until(all_synced(admin), what="the booking synced")
        assistant.use("reschedule_appointment", {"reference": reference, "new_start": f"{day}T15:30"})
        wait_until(
            lambda: scalar(admin, "select synced_revision from public.appointments") == 2, what="the reschedule synced"
        )
        [event] = google.events(account)
        assert (event["start"]["dateTime"], event["status"]) == (f"{day}T15:30:00+00:00", "confirmed")

        assistant.use("cancel_appointment", {"reference": reference})
        wait_until(
            lambda: scalar(admin, "select synced_revision from public.appointments") == 3,
            what="the cancellation synced",
        )
    [event] = google.events(account)
    assert event["status"] == "cancelled"
    assert posts(google) == 1
    assert sync_states(admin) == {"synced": 1}


@pytest.mark.parametrize("drops", [1, 2], ids=["dropped-once", "dropped-twice"])
def test_a_lost_response_after_google_created_the_event_does_not_duplicate_it(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    assistant: Assistant,
    clinic: Clinic,
    account: str,
    drops: int,
) -> None:
    assistant.book(f"{upcoming(TUESDAY)}T11:00")
    google.inject(Fault.drop_after_commit(), times=drops, method="POST")
    with running(make_settings(backend, google)):
        wait_until(all_synced(admin), what="the booking synced")
    [event] = appointment_events(admin, google, account, clinic.id).values()
    assert event["status"] == "confirmed"
    assert posts(google, status=200) == 0  # the creation's answer never arrived...
    assert posts(google, status=409) >= 1  # ...and the repeat was recognised, not duplicated


def test_an_expired_access_token_is_refreshed_and_the_push_retried(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    assistant: Assistant,
    clinic: Clinic,
    account: str,
) -> None:
    day = upcoming(TUESDAY)
    with running(make_settings(backend, google)):
        assistant.book(f"{day}T09:00")
        wait_until(all_synced(admin), what="the first booking synced")
        google.expire_access_tokens(account)
        assistant.book(f"{day}T09:30")
        wait_until(all_synced(admin), what="the second booking synced")
    assert len(appointment_events(admin, google, account, clinic.id)) == 2
    token_calls = [r.status for r in google.requests() if r.path == "/token"]
    assert token_calls == [200, 200]
    assert any(r.status == 401 for r in google.requests())
    assert scalar(admin, "select status from public.calendar_connections") == "active"


def test_a_revoked_grant_parks_only_that_clinic_and_reconnecting_drains_its_backlog(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    gateway: psycopg.Connection,
    assistant: Assistant,
    clinic: Clinic,
) -> None:
    refresh_token = google.add_account("desk@riverside.example")
    store_connection(admin, clinic.id, "desk@riverside.example", refresh_token)
    other_id = create_clinic(admin, "Hillside Surgery")
    other_account = connect_google(admin, google, other_id)
    google.revoke(refresh_token)  # e.g. the Google project was left in "Testing": 7-day tokens
    day = upcoming(TUESDAY)
    for clock in ("09:00", "10:00", "11:00"):
        assistant.book(f"{day}T{clock}")
    hillside = Assistant(gateway, issue_key(admin, other_id), VapiCall())
    for clock in ("09:00", "10:00"):
        hillside.book(f"{day}T{clock}")

    with running(make_settings(backend, google)):
        wait_until(lambda: sync_states(admin) == {"synced": 2, "parked": 3}, what="parked and synced")
        status, error = admin.execute(
            "select status, last_error from public.calendar_connections where clinic_id = %s", (clinic.id,)
        ).fetchone() or (None, None)
        assert status == "needs_reauth" and "invalid_grant" in str(error)
        assert {
            r[0]
            for r in admin.execute(
                "select last_sync_error from public.appointments where sync_state = 'parked'"
            ).fetchall()
        } != {None}
        assert len(google.events(other_account)) == 2

        new_refresh_token = google.issue_refresh_token("desk@riverside.example")
        store_connection(admin, clinic.id, "desk@riverside.example", new_refresh_token)  # the clinic reconnects
        wait_until(all_synced(admin), what="the parked backlog drained")
    assert len(appointment_events(admin, google, "desk@riverside.example", clinic.id)) == 3


def test_a_rate_limit_storm_delays_but_loses_nothing(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    assistant: Assistant,
    clinic: Clinic,
    account: str,
) -> None:
    day = upcoming(TUESDAY)
    for n in range(8):
        assistant.book(f"{day}T{9 + n:02d}:00", f"Patient {n}")
    google.inject(Fault.error(429, "rateLimitExceeded"), times=6)
    google.inject(Fault.error(403, "userRateLimitExceeded"), times=4)
    google.inject(Fault.error(503, "backendError"), times=4)
    with running(make_settings(backend, google)):
        wait_until(all_synced(admin), what="the storm weathered")
    assert len(appointment_events(admin, google, account, clinic.id)) == 8
    statuses = [r.status for r in google.requests() if r.path.endswith("/events")]
    assert statuses.count(429) == 6 and statuses.count(403) == 4 and statuses.count(503) == 4
    assert scalar(admin, "select max(sync_attempts) from public.appointments") > 1


def test_permanent_errors_are_visible_and_an_operator_can_retry_them(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    assistant: Assistant,
    clinic: Clinic,
    account: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    admin.execute("update public.clinics set calendar_id = 'no-such-calendar@group.calendar.google.com'")
    assistant.book(f"{upcoming(TUESDAY)}T10:00")
    with running(make_settings(backend, google)):
        wait_until(lambda: sync_states(admin) == {"failed": 1}, what="the failure recorded")
        error = scalar(admin, "select last_sync_error from public.appointments")
        assert "HTTP 404" in error and "calendar was not found" in error

        admin.execute("update public.clinics set calendar_id = 'primary'")
        for name, value in settings_env(backend, google).items():
            monkeypatch.setenv(name, value)
        assert daemon_main(["retry-failed", "--clinic", str(clinic.id)]) == 0
        wait_until(all_synced(admin), what="the retried booking synced")
    assert len(appointment_events(admin, google, account, clinic.id)) == 1


def test_a_bad_request_fails_with_its_reason(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    assistant: Assistant,
    account: str,
) -> None:
    assistant.book(f"{upcoming(TUESDAY)}T10:00")
    google.inject(Fault.error(400, "invalid"), method="POST")
    with running(make_settings(backend, google)):
        wait_until(lambda: sync_states(admin) == {"failed": 1}, what="the failure recorded")
    assert scalar(admin, "select last_sync_error from public.appointments") == (
        "Google calendar request failed: HTTP 400 invalid"
    )
    assert google.events(account) == []


def test_two_replicas_racing_on_one_backlog_push_each_booking_once(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    gateway: psycopg.Connection,
) -> None:
    accounts = {}
    for n in range(3):
        clinic_id = create_clinic(admin, f"Clinic {n}")
        accounts[clinic_id] = connect_google(admin, google, clinic_id)
        clinic_assistant = Assistant(gateway, issue_key(admin, clinic_id), VapiCall())
        for hour in range(9, 17):
            clinic_assistant.book(f"{upcoming(TUESDAY)}T{hour:02d}:00", f"P{n}-{hour}")
    google.latency = 0.01
    settings = make_settings(backend, google, sync_batch_size=5, sync_per_clinic_batch=2)
    with running(settings, owner="replica-a"), running(settings, owner="replica-b"):
        wait_until(all_synced(admin), timeout=30, what="the backlog drained")
    for clinic_id, account in accounts.items():
        assert len(appointment_events(admin, google, account, clinic_id)) == 8
    assert posts(google, status=200) == 24 and posts(google) == 24


def test_work_held_by_a_dead_replica_is_taken_over_after_its_lease(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    assistant: Assistant,
    clinic: Clinic,
    account: str,
) -> None:
    assistant.book(f"{upcoming(TUESDAY)}T10:00")
    dead = uuid.uuid4().hex
    admin.execute("select * from public.claim_appointments(%s, 10, 5)", (dead,))
    admin.execute("update public.appointments set lease_expires_at = now() + interval '1 second'")
    with running(make_settings(backend, google)):
        wait_until(all_synced(admin), what="the orphan synced")
    [event] = appointment_events(admin, google, account, clinic.id).values()
    assert event["id"] == event_id_for(scalar(admin, "select id from public.appointments"))
    assert scalar(admin, "select sync_attempts from public.appointments") == 2


@pytest.mark.parametrize("write_back_lost", [False, True], ids=["event-id-known", "event-id-lost"])
def test_a_reinstated_appointment_restores_its_cancelled_event_instead_of_duplicating_it(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    assistant: Assistant,
    clinic: Clinic,
    account: str,
    write_back_lost: bool,
) -> None:
    reference = assistant.book(f"{upcoming(TUESDAY)}T10:00")
    with running(make_settings(backend, google)):
        wait_until(all_synced(admin), what="the booking synced")
        assistant.use("cancel_appointment", {"reference": reference})
        wait_until(lambda: scalar(admin, "select synced_revision from public.appointments") == 2, what="cancelled")
        [event] = google.events(account)
        assert event["status"] == "cancelled"
        if write_back_lost:  # as if the daemon died before recording the event id
            admin.execute("update public.appointments set calendar_event_id = null")
        admin.execute("update public.appointments set status = 'booked', cancelled_at = null")  # staff reinstate it
        wait_until(lambda: scalar(admin, "select synced_revision from public.appointments") == 3, what="reinstated")
    [event] = appointment_events(admin, google, account, clinic.id).values()
    assert event["status"] == "confirmed"
    assert posts(google, status=200) == 1


def test_tokens_are_refreshed_ahead_of_expiry_without_any_booking(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    clinic: Clinic,
    account: str,
) -> None:
    assert scalar(admin, "select last_refreshed_at from public.calendar_connections") is None
    # The mirror would list the calendar (and refresh on the way); this is about the scheduled job alone.
    with running(make_settings(backend, google, token_refresh_interval_seconds=0.2, mirror_enabled=False)):
        wait_until(
            lambda: scalar(admin, "select last_refreshed_at from public.calendar_connections") is not None,
            what="the scheduled refresh",
        )
    row = admin.execute(
        "select access_token_encrypted, access_token_expires_at > now() + interval '50 minutes'"
        " from public.calendar_connections"
    ).fetchone()
    assert row is not None and row[0].startswith("gAAAAA") and row[1] is True
    assert [r.status for r in google.requests() if r.path == "/token"] == [200]
    assert not any(r.path.endswith("/events") for r in google.requests())
