"""Appointment rows for every writer: the sync queue, overlap rules, and optional contacts."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import dict_row

from tests.conftest import Clinic
from tests.standins.clinics import create_clinic
from tests.standins.postgres import scalar


def insert(admin: psycopg.Connection, clinic_id: uuid.UUID, start: str, minutes: int = 30, **extra: Any) -> uuid.UUID:
    columns = {
        "clinic_id": clinic_id,
        "reference": uuid.uuid4().hex[:8].upper(),
        "patient": '{"name": "Pat"}',
        "service": "Check-up",
        "source": "staff",
        **extra,
    }
    names = ", ".join(columns)
    values = ", ".join(["%s"] * len(columns))
    appointment_id: uuid.UUID = scalar(
        admin,
        f"insert into public.appointments ({names}, starts_at, ends_at)"
        f" values ({values}, %s::timestamptz, %s::timestamptz + make_interval(mins => %s)) returning id",
        [*columns.values(), start, start, minutes],
    )
    return appointment_id


def row(admin: psycopg.Connection, appointment_id: uuid.UUID) -> dict[str, Any]:
    found = (
        admin.cursor(row_factory=dict_row)
        .execute("select * from public.appointments where id = %s", (appointment_id,))
        .fetchone()
    )
    assert found is not None
    return found


def mark_synced(admin: psycopg.Connection, appointment_id: uuid.UUID) -> None:
    admin.execute(
        "update public.appointments set sync_state = 'synced', synced_revision = revision, synced_at = now(),"
        " calendar_event_id = 'a0b1c2d3e4' where id = %s",
        (appointment_id,),
    )


def test_a_new_row_always_waits_for_the_calendar(admin: psycopg.Connection, clinic: Clinic) -> None:
    appointment_id = insert(
        admin,
        clinic.id,
        "2030-01-08 10:00Z",
        sync_state="synced",
        revision=7,
        calendar_event_id="forged0001",
        synced_revision=7,
    )
    fresh = row(admin, appointment_id)
    assert (fresh["sync_state"], fresh["revision"], fresh["calendar_event_id"], fresh["synced_revision"]) == (
        "pending",
        1,
        None,
        None,
    )
    assert fresh["next_attempt_at"] is not None


@pytest.mark.parametrize(
    "change",
    [
        "starts_at = starts_at + interval '1 hour', ends_at = ends_at + interval '1 hour'",
        "status = 'cancelled', cancelled_at = now()",
        "notes = 'Wheelchair access'",
        'patient = \'{"name": "Pat Smith"}\'',
        "service = 'Consultation'",
    ],
)
def test_a_change_the_calendar_must_hear_about_requeues_a_synced_row(
    admin: psycopg.Connection, clinic: Clinic, change: str
) -> None:
    appointment_id = insert(admin, clinic.id, "2030-01-08 10:00Z")
    mark_synced(admin, appointment_id)
    admin.execute(
        "update public.appointments set sync_state = 'failed', last_sync_error = 'x', sync_attempts = 3 where id = %s",
        (appointment_id,),
    )
    admin.execute(f"update public.appointments set {change} where id = %s", (appointment_id,))
    changed = row(admin, appointment_id)
    assert (changed["sync_state"], changed["revision"], changed["sync_attempts"], changed["last_sync_error"]) == (
        "pending",
        2,
        0,
        None,
    )
    assert changed["calendar_event_id"] == "a0b1c2d3e4"


def test_sync_bookkeeping_alone_does_not_requeue(admin: psycopg.Connection, clinic: Clinic) -> None:
    appointment_id = insert(admin, clinic.id, "2030-01-08 10:00Z")
    changed_at = row(admin, appointment_id)["updated_at"]
    mark_synced(admin, appointment_id)
    synced = row(admin, appointment_id)
    assert (synced["sync_state"], synced["revision"], synced["updated_at"]) == ("synced", 1, changed_at)


def test_a_change_during_a_push_keeps_the_lease_and_raises_the_revision(
    admin: psycopg.Connection, clinic: Clinic
) -> None:
    appointment_id = insert(admin, clinic.id, "2030-01-08 10:00Z")
    admin.execute(
        "update public.appointments set sync_state = 'in_flight', lease_owner = 'replica-1',"
        " lease_expires_at = now() + interval '1 minute' where id = %s",
        (appointment_id,),
    )
    admin.execute("update public.appointments set notes = 'late change' where id = %s", (appointment_id,))
    changed = row(admin, appointment_id)
    assert (changed["sync_state"], changed["lease_owner"], changed["revision"]) == ("in_flight", "replica-1", 2)


def test_a_parked_row_stays_parked_until_its_clinic_reconnects(admin: psycopg.Connection, clinic: Clinic) -> None:
    appointment_id = insert(admin, clinic.id, "2030-01-08 10:00Z")
    admin.execute("update public.appointments set sync_state = 'parked' where id = %s", (appointment_id,))
    admin.execute(
        "update public.appointments set status = 'cancelled', cancelled_at = now() where id = %s", (appointment_id,)
    )
    assert (row(admin, appointment_id)["sync_state"], row(admin, appointment_id)["revision"]) == ("parked", 2)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("sync_state", "done"),
        ("calendar_event_id", "UPPERCASE1"),
        ("calendar_event_id", "abc"),
        ("status", "deleted"),
        ("reference", "ab-12"),
    ],
)
def test_invalid_sync_and_status_values_are_refused(
    admin: psycopg.Connection, clinic: Clinic, column: str, value: str
) -> None:
    appointment_id = insert(admin, clinic.id, "2030-01-08 10:00Z")
    with pytest.raises(errors.CheckViolation):
        admin.execute(f"update public.appointments set {column} = %s where id = %s", (value, appointment_id))


def test_in_flight_needs_a_lease_and_synced_needs_a_revision(admin: psycopg.Connection, clinic: Clinic) -> None:
    appointment_id = insert(admin, clinic.id, "2030-01-08 10:00Z")
    for change in ("sync_state = 'in_flight'", "sync_state = 'synced'", "lease_owner = 'r1', lease_expires_at = now()"):
        with pytest.raises(errors.CheckViolation):
            admin.execute(f"update public.appointments set {change} where id = %s", (appointment_id,))


def test_live_appointments_of_one_clinic_never_overlap_whoever_writes_them(
    admin: psycopg.Connection, clinic: Clinic
) -> None:
    first = insert(admin, clinic.id, "2030-01-08 10:00Z", minutes=60)
    with pytest.raises(errors.ExclusionViolation):
        insert(admin, clinic.id, "2030-01-08 10:30Z")
    insert(admin, clinic.id, "2030-01-08 11:00Z")  # back to back is fine
    other = create_clinic(admin, "Hillside Surgery")
    insert(admin, other, "2030-01-08 10:00Z")  # another clinic's diary is its own
    admin.execute("update public.appointments set status = 'cancelled', cancelled_at = now() where id = %s", (first,))
    insert(admin, clinic.id, "2030-01-08 10:00Z")  # a cancelled one frees its slot
    with pytest.raises(errors.ExclusionViolation):
        admin.execute("update public.appointments set status = 'booked', cancelled_at = null where id = %s", (first,))


def test_an_appointment_needs_no_contact_and_outlives_one(admin: psycopg.Connection, clinic: Clinic) -> None:
    contact_id = scalar(
        admin,
        "insert into public.contacts (clinic_id, full_name, phone) values (%s, 'Pat', '+447700900123') returning id",
        (clinic.id,),
    )
    without = insert(admin, clinic.id, "2030-01-08 09:00Z")
    linked = insert(admin, clinic.id, "2030-01-08 10:00Z", contact_id=contact_id)
    admin.execute("delete from public.contacts where id = %s", (contact_id,))
    assert row(admin, linked)["contact_id"] is None
    assert row(admin, linked)["patient"] == {"name": "Pat"}
    assert row(admin, without)["status"] == "booked"


def test_patient_details_must_be_an_object_with_a_name(admin: psycopg.Connection, clinic: Clinic) -> None:
    for patient in ('"Pat"', '{"phone": "+447700900123"}', '{"name": 5}', '{"name": ""}'):
        with pytest.raises(errors.CheckViolation):
            insert(admin, clinic.id, "2030-01-08 10:00Z", patient=patient)
