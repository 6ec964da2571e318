"""The calendar as a source of truth: staff events in Google block the assistant's slots, and
changes made to our events in Google flow back onto the appointments."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from daemon.crypto import TokenCipher
from daemon.wiring import open_store
from tests.conftest import Clinic
from tests.daemon_harness import TOKEN_KEY, Backend, DaemonThread, connect_google, make_settings, running, wait_until
from tests.dates import LONDON, upcoming
from tests.standins.clinics import create_clinic
from tests.standins.google import Fault, GoogleStandIn
from tests.standins.postgres import scalar
from tests.standins.receptionist import Receptionist
from tests.standins.vapi import Assistant

TUESDAY = 2
FAST_MIRROR = {"mirror_interval_seconds": 0.3, "mirror_after_push_seconds": 0.1, "sync_poll_seconds": 0.2}


@pytest.fixture
def account(admin: psycopg.Connection, google: GoogleStandIn, clinic: Clinic) -> str:
    return connect_google(admin, google, clinic.id)


@pytest.fixture
def receptionist(google: GoogleStandIn, account: str) -> Iterator[Receptionist]:
    person = Receptionist(google, account)
    yield person
    person.close()


@pytest.fixture
def daemon(backend: Backend, google: GoogleStandIn, account: str, admin: psycopg.Connection) -> Iterator[DaemonThread]:
    with running(make_settings(backend, google, **FAST_MIRROR)) as runner:
        wait_until(lambda: mirrored_at(admin) is not None, what="the first mirror")
        yield runner


def mirrored_at(admin: psycopg.Connection) -> dt.datetime | None:
    value: dt.datetime | None = scalar(admin, "select max(last_synced_at) from public.calendar_mirrors")
    return value


def mirrored_after(admin: psycopg.Connection, moment: dt.datetime) -> None:
    """Wait for a mirror run that started after `moment` (so it saw what happened before)."""
    wait_until(lambda: (mirrored_at(admin) or moment) > moment, what="a fresh mirror")


def now(admin: psycopg.Connection) -> dt.datetime:
    value: dt.datetime = scalar(admin, "select now()")
    return value


def free_times(assistant: Assistant, day: dt.date) -> list[str]:
    answer = assistant.use("check_availability", {"date": day.isoformat()})
    assert "result" in answer, answer
    text = str(answer["result"])
    return text.rpartition("): ")[2].rstrip(".").split(", ") if text.startswith("Free") else []


def busy(admin: psycopg.Connection) -> list[tuple[str, str]]:
    rows = admin.execute(
        "select to_char(starts_at at time zone 'Europe/London', 'HH24:MI'),"
        " to_char(ends_at at time zone 'Europe/London', 'HH24:MI') from public.calendar_busy order by starts_at"
    ).fetchall()
    return [(a, b) for a, b in rows]


def test_a_staff_event_blocks_its_slots_and_deleting_it_frees_them(
    daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, receptionist: Receptionist
) -> None:
    day = upcoming(TUESDAY)
    lunch = receptionist.add(day, "12:00", "13:00")
    receptionist.add(day, "14:00", "15:00", transparency="transparent", summary="Reminder: order gloves")
    wait_until(lambda: busy(admin) == [("12:00", "13:00")], what="the lunch mirrored (the reminder is not busy)")

    times = free_times(assistant, day)
    assert "11:30" in times and "13:00" in times and "14:00" in times
    assert not {"11:45", "12:00", "12:15", "12:30", "12:45"} & set(times)  # 30 minutes would reach into lunch
    refused = assistant.use("book_appointment", {"start": f"{day}T12:15", "patient_name": "Ada"})
    assert "12:15 on" in refused["error"] and "is not available" in refused["error"] and "13:00" in refused["error"]
    assert scalar(admin, "select count(*) from public.appointments") == 0

    receptionist.delete(lunch)
    wait_until(lambda: busy(admin) == [], what="the lunch freed")
    assert "12:15" in free_times(assistant, day)
    assert assistant.book(f"{day}T12:15")


def test_an_all_day_event_blocks_the_whole_day(
    daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, receptionist: Receptionist
) -> None:
    day = upcoming(TUESDAY)
    next_day = day + dt.timedelta(days=1)
    receptionist.add_all_day(day, next_day)
    wait_until(lambda: busy(admin) == [("00:00", "00:00")], what="the all-day event mirrored")
    assert free_times(assistant, day) == []
    assert free_times(assistant, day + dt.timedelta(days=1))  # Wednesday is unaffected


def test_an_appointment_deleted_in_google_is_cancelled(
    daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, receptionist: Receptionist,
    google: GoogleStandIn, account: str,
) -> None:  # fmt: skip
    day = upcoming(TUESDAY)
    reference = assistant.book(f"{day}T10:00")
    wait_until(lambda: appointment(admin, reference)["sync_state"] == "synced", what="the booking synced")
    event_id = appointment(admin, reference)["calendar_event_id"]
    assert "10:00" not in free_times(assistant, day)

    receptionist.delete(event_id)
    wait_until(lambda: appointment(admin, reference)["status"] == "cancelled", what="the cancellation flowed back")
    row = appointment(admin, reference)
    assert row["change_reason"] == "deleted in Google Calendar" and row["sync_state"] == "synced"
    assert busy(admin) == []  # our own event never counts as busy time
    assert "10:00" in free_times(assistant, day)
    moment = now(admin)
    mirrored_after(admin, moment)
    [event] = google.events(account)
    assert event["status"] == "cancelled"  # the daemon did not put it back


def test_an_appointment_moved_in_google_moves_and_stays_moved(
    daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, receptionist: Receptionist,
    google: GoogleStandIn, account: str,
) -> None:  # fmt: skip
    day = upcoming(TUESDAY)
    reference = assistant.book(f"{day}T10:00")
    wait_until(lambda: appointment(admin, reference)["sync_state"] == "synced", what="the booking synced")
    receptionist.move(appointment(admin, reference)["calendar_event_id"], day, "15:00", "15:30")
    wait_until(lambda: appointment(admin, reference)["local_start"] == "15:00", what="the move flowed back")
    row = appointment(admin, reference)
    assert row["change_reason"] == "moved in Google Calendar" and row["sync_state"] == "synced"
    times = free_times(assistant, day)
    assert "10:00" in times and "15:00" not in times
    updates_before = sum(r.method == "PUT" for r in google.requests())
    mirrored_after(admin, now(admin))
    assert sum(r.method == "PUT" for r in google.requests()) == updates_before  # no tug of war
    [event] = google.events(account)
    assert dt.datetime.fromisoformat(event["start"]["dateTime"]).astimezone(LONDON).strftime("%H:%M") == "15:00"


def test_a_move_in_google_onto_another_booking_is_put_back(
    daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, receptionist: Receptionist,
    google: GoogleStandIn, account: str,
) -> None:  # fmt: skip
    day = upcoming(TUESDAY)
    first, second = assistant.book(f"{day}T10:00"), assistant.book(f"{day}T11:00")
    wait_until(lambda: {appointment(admin, r)["sync_state"] for r in (first, second)} == {"synced"}, what="synced")
    receptionist.move(appointment(admin, first)["calendar_event_id"], day, "11:00", "11:30")

    def put_back() -> bool:
        event = next(e for e in google.events(account) if e["id"] == appointment(admin, first)["calendar_event_id"])
        return dt.datetime.fromisoformat(event["start"]["dateTime"]).astimezone(LONDON).strftime("%H:%M") == "10:00"

    wait_until(put_back, what="the event put back at the booked time")
    assert appointment(admin, first)["local_start"] == "10:00"
    assert appointment(admin, first)["status"] == "booked"


def test_an_expired_sync_token_means_a_full_resync_without_duplicates(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, assistant: Assistant,
    receptionist: Receptionist, account: str,
) -> None:  # fmt: skip
    day = upcoming(TUESDAY)
    staff = [receptionist.add(day, f"{hour:02d}:00", f"{hour:02d}:20") for hour in range(9, 17)]
    with running(make_settings(backend, google, mirror_page_size=3, **FAST_MIRROR)) as runner:
        wait_until(lambda: len(busy(admin)) == 8, what="eight staff events mirrored over three pages")
        first_full = scalar(admin, "select last_full_sync_at from public.calendar_mirrors")
        google.expire_sync_tokens()
        receptionist.delete(staff[0])
        extra = receptionist.add(day + dt.timedelta(days=1), "09:00", "09:30")
        wait_until(
            lambda: scalar(admin, "select last_full_sync_at from public.calendar_mirrors") > first_full,
            what="a full resync after the 410",
        )
        wait_until(lambda: len(busy(admin)) == 8, what="seven of the first day and one of the next")
        ids = [row[0] for row in admin.execute("select event_id from public.calendar_busy").fetchall()]
        assert sorted(ids) == sorted([*staff[1:], extra])
        # The run is counted after its listing is recorded: on a loaded machine the count may trail the row.
        def full_runs() -> float:
            registry = runner.daemon.metrics.registry
            return registry.get_sample_value("calendar_sync_mirror_runs_total", {"kind": "full"}) or 0

        wait_until(lambda: full_runs() >= 2, what="two full listings counted")
    assert any(r.status == 410 for r in google.requests())


def test_a_stale_mirror_makes_the_assistant_take_a_message(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, assistant: Assistant,
    clinic: Clinic, account: str,
) -> None:  # fmt: skip
    day = upcoming(TUESDAY)
    reference = assistant.book(f"{day}T10:00")
    admin.execute(
        "select public.apply_calendar_changes(%s, '[]', null, true)", (clinic.id,)
    )  # the mirror ran once, then stopped
    admin.execute("update public.calendar_mirrors set last_synced_at = now() - interval '11 minutes'")
    for name, arguments in (
        ("check_availability", {"date": day.isoformat()}),
        ("book_appointment", {"start": f"{day}T11:00", "patient_name": "Ada"}),
        ("reschedule_appointment", {"reference": reference, "new_start": f"{day}T12:00"}),
    ):
        refused = assistant.use(name, arguments)
        assert "calendar cannot be checked right now" in refused["error"], (name, refused)
    assert scalar(admin, "select count(*) from public.appointments") == 1
    assert "result" in assistant.use("cancel_appointment", {"reference": reference})  # cancelling is always safe

    with running(make_settings(backend, google, **FAST_MIRROR)):
        wait_until(lambda: "result" in assistant.use("check_availability", {"date": day.isoformat()}), what="fresh")


def test_busy_time_is_per_clinic(
    daemon: DaemonThread, admin: psycopg.Connection, receptionist: Receptionist, gateway: psycopg.Connection,
) -> None:  # fmt: skip
    from tests.standins.clinics import create_clinic, issue_key

    day = upcoming(TUESDAY)
    other = create_clinic(admin, "Hillside Surgery")
    receptionist.add(day, "09:00", "17:00")
    wait_until(lambda: len(busy(admin)) == 1, what="Riverside's whole day blocked")
    assert "09:00" in free_times(Assistant(gateway, issue_key(admin, other)), day)


def appointment(admin: psycopg.Connection, reference: str) -> dict[str, Any]:
    row = admin.execute(
        "select id, status, sync_state, calendar_event_id, change_reason,"
        " to_char(starts_at at time zone 'Europe/London', 'HH24:MI')"
        " from public.appointments where reference = %s",
        (reference,),
    ).fetchone()
    assert row is not None
    keys = ("id", "status", "sync_state", "calendar_event_id", "change_reason", "local_start")
    return dict(zip(keys, [uuid.UUID(str(row[0])), *row[1:]], strict=True))


def test_a_failing_listing_is_recorded_and_the_next_round_recovers(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, receptionist: Receptionist
) -> None:
    receptionist.add(upcoming(TUESDAY), "12:00", "13:00")
    google.inject(Fault.error(503, "backendError"), times=3, method="GET", path_contains="/events")
    with running(make_settings(backend, google, **FAST_MIRROR)):
        wait_until(
            lambda: scalar(admin, "select max(last_error) from public.calendar_mirrors") is not None,
            what="the failure recorded",
        )
        assert "HTTP 503" in scalar(admin, "select max(last_error) from public.calendar_mirrors")
        wait_until(lambda: busy(admin) == [("12:00", "13:00")], what="a later round succeeded")
    assert scalar(admin, "select max(last_error) from public.calendar_mirrors") is None


def test_a_dead_grant_stops_the_mirror_visibly(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, account: str
) -> None:
    stored = scalar(admin, "select refresh_token_encrypted from public.calendar_connections")
    google.revoke(TokenCipher(TOKEN_KEY).decrypt(stored))
    with running(make_settings(backend, google, **FAST_MIRROR)):
        wait_until(
            lambda: scalar(admin, "select status from public.calendar_connections") == "needs_reauth",
            what="the dead grant noticed by the mirror",
        )
    # No active connection: nothing to mirror, and freshness is reported for connected clinics only.
    assert scalar(admin, "select count(*) from public.claim_mirror_targets('probe', 60, 1)") == 0


def test_one_replica_lists_a_calendar_at_a_time_and_a_notification_meanwhile_lists_it_again(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic, account: str
) -> None:
    other = create_clinic(admin, "Hillside Clinic")
    connect_google(admin, google, other)
    unconnected = create_clinic(admin, "Lakeside Clinic")

    async def scenario() -> dict[str, Any]:
        store = await open_store(make_settings(backend, google))
        try:
            seen: dict[str, Any] = {}
            seen["r1 one"] = await store.claim_mirror_targets("r1", 60, 30, clinic_id=clinic.id)
            seen["r2 due"] = await store.claim_mirror_targets("r2", 60, 30)
            seen["r2 one"] = await store.claim_mirror_targets("r2", 60, 30, clinic_id=clinic.id)
            seen["unconnected"] = await store.claim_mirror_targets("r2", 60, 30, clinic_id=unconnected)
            admin.execute("update public.calendar_mirrors set notified_at = now() where clinic_id = %s", (clinic.id,))
            seen["r1 applied"] = await store.apply_calendar_changes(clinic.id, [], "token-1", True, "r1")
            seen["r2 after"] = await store.claim_mirror_targets("r2", 60, 30, clinic_id=clinic.id)
            seen["r2 applied"] = await store.apply_calendar_changes(clinic.id, [], "token-2", False, "r2")
            seen["due again"] = await store.claim_mirror_targets("r3", 60, 30)
            return seen
        finally:
            await store.close()

    seen = asyncio.run(scenario())
    assert [(t.clinic_id, t.calendar_id, t.time_zone, t.sync_token) for t in seen["r1 one"]] == [
        (clinic.id, "primary", "Europe/London", None)
    ]
    assert [t.clinic_id for t in seen["r2 due"]] == [other]  # the other replica's calendar is left alone
    assert seen["r2 one"] == [] and seen["unconnected"] == []
    assert seen["r1 applied"].again  # notified while r1 was listing: list it once more
    assert [(t.clinic_id, t.sync_token) for t in seen["r2 after"]] == [(clinic.id, "token-1")]
    assert not seen["r2 applied"].again
    assert [t.clinic_id for t in seen["due again"]] == []  # listed just now, and r2 still holds the other


def test_apply_calendar_changes_refuses_bad_input_and_changes_nothing(
    admin: psycopg.Connection, clinic: Clinic
) -> None:
    with pytest.raises(psycopg.errors.RaiseException, match="p_events must be a JSON array"):
        admin.execute("select public.apply_calendar_changes(%s, '{}', null, false)", (clinic.id,))
    with pytest.raises(psycopg.errors.RaiseException, match="No clinic with id"):
        admin.execute("select public.apply_calendar_changes(%s, '[]', null, false)", (uuid.uuid4(),))
    assert scalar(admin, "select count(*) from public.calendar_mirrors") == 0


def test_a_late_landing_write_of_ours_is_not_taken_for_a_move_in_google(
    daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, google: GoogleStandIn, account: str
) -> None:
    """Google carries out an update after the daemon gave up on it and pushed a newer one: the event
    ends at the older time, but it says which revision it is, so the mirror puts the newer one back."""
    day = upcoming(TUESDAY)
    reference = assistant.book(f"{day}T10:00")
    wait_until(lambda: appointment(admin, reference)["sync_state"] == "synced", what="the booking synced")
    google.inject(Fault.late(3.0), times=1, method="PUT")  # the harness gives up on Google after 2 s
    assistant.use("reschedule_appointment", {"reference": reference, "new_start": f"{day}T11:00"})
    started = time.monotonic()
    wait_until(lambda: any(r.method == "PUT" for r in google.requests()), what="the 11:00 update sent")
    assistant.use("reschedule_appointment", {"reference": reference, "new_start": f"{day}T12:00"})

    def settled() -> bool:
        row = appointment(admin, reference)
        [event] = google.events(account)
        start = dt.datetime.fromisoformat(event["start"]["dateTime"]).astimezone(LONDON).strftime("%H:%M")
        revision = event["extendedProperties"]["private"]["revision"]
        return (
            time.monotonic() > started + 3.5  # the late 11:00 write has landed by now
            and row["sync_state"] == "synced"
            and start == "12:00"
            and revision == str(scalar(admin, "select synced_revision from public.appointments"))
        )

    wait_until(settled, what="Google back at 12:00 after the late write")
    row = appointment(admin, reference)
    assert row["local_start"] == "12:00" and row["change_reason"] is None
    assert scalar(admin, "select synced_revision from public.appointments") >= 4  # put back: a revision more
