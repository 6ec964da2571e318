"""The calendar as the truth (migration calendar_truth), in SQL: our events known by their id in
whatever form Google lists them, new event ids after a refused restore, and one replica listing a
calendar at a time."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from daemon.calendar import appointment_of, event_id_for
from daemon.mirror import compact
from tests.conftest import Clinic, Database
from tests.standins.postgres import AUTHENTICATOR, scalar
from tests.test_sync_queue import add_appointments, as_service, connect_google


@pytest.fixture
def service(database: Database) -> Any:
    with database.connect(AUTHENTICATOR) as conn:
        yield conn


def synced_appointment(admin: psycopg.Connection, clinic: Clinic, generation: int = 0) -> uuid.UUID:
    """A booking whose event (of that generation) Google confirmed."""
    connect_google(admin, clinic.id)
    [appointment] = add_appointments(admin, clinic.id, 1)
    admin.execute(
        "update public.appointments set sync_state = 'synced', synced_revision = revision, synced_at = now(),"
        " next_attempt_at = null, event_generation = %s, calendar_event_id = %s where id = %s",
        (generation, event_id_for(appointment, generation), appointment),
    )
    return appointment


def apply(admin: psycopg.Connection, clinic: Clinic, events: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = scalar(
        admin,
        "select public.apply_calendar_changes(%s, %s, 'token', false)",
        (clinic.id, Jsonb([compact(event) for event in events])),
    )
    return summary


def status(admin: psycopg.Connection, appointment: uuid.UUID) -> tuple[str, str, str | None]:
    row = admin.execute(
        "select status, sync_state, change_reason from public.appointments where id = %s", (appointment,)
    ).fetchone()
    assert row is not None
    return row


def test_every_id_we_ever_used_names_its_appointment() -> None:
    appointment = uuid.uuid4()
    for generation in (0, 1, 7, 1000):
        event_id = event_id_for(appointment, generation)
        assert appointment_of(event_id) == appointment
        assert 5 <= len(event_id) <= 1024 and set(event_id) <= set("0123456789abcdefghijklmnopqrstuv")
    assert len({event_id_for(appointment, g) for g in range(50)}) == 50
    # A recurring series' instance, an id Google made up, a truncated or widened one: not ours.
    assert appointment_of(f"{event_id_for(appointment)}_20270215T160000Z") is None
    assert appointment_of("4fbc2c6e8d") is None
    assert appointment_of(event_id_for(appointment) + "0") is None  # generations never start with 0
    assert appointment_of(event_id_for(appointment).upper()) is None


def test_a_deletion_listed_with_only_id_and_status_cancels_the_booking(
    admin: psycopg.Connection, clinic: Clinic
) -> None:
    appointment = synced_appointment(admin, clinic)
    summary = apply(admin, clinic, [{"id": event_id_for(appointment), "status": "cancelled"}])
    assert summary["cancelled"] == 1
    assert status(admin, appointment) == ("cancelled", "synced", "deleted in Google Calendar")
    assert scalar(admin, "select count(*) from public.calendar_busy") == 0  # ours, never busy time


def test_a_minimal_deletion_of_an_earlier_generation_changes_nothing(admin: psycopg.Connection, clinic: Clinic) -> None:
    appointment = synced_appointment(admin, clinic, generation=2)
    summary = apply(admin, clinic, [{"id": event_id_for(appointment, 1), "status": "cancelled"}])
    assert summary["cancelled"] == 0
    assert status(admin, appointment) == ("booked", "synced", None)
    assert scalar(admin, "select count(*) from public.calendar_busy") == 0


def test_a_minimal_deletion_while_a_change_of_ours_waits_leaves_the_booking_to_the_push(
    admin: psycopg.Connection, clinic: Clinic
) -> None:
    appointment = synced_appointment(admin, clinic)
    # The caller rescheduled before the mirror saw the receptionist's delete: the push puts it back.
    admin.execute("update public.appointments set starts_at = starts_at + interval '1 day',"
                  " ends_at = ends_at + interval '1 day' where id = %s", (appointment,))  # fmt: skip
    apply(admin, clinic, [{"id": event_id_for(appointment), "status": "cancelled"}])
    assert status(admin, appointment)[:2] == ("booked", "pending")


def test_a_new_event_id_only_under_the_lease_and_kept_across_attempts(
    service: psycopg.Connection, admin: psycopg.Connection, clinic: Clinic
) -> None:
    appointment = synced_appointment(admin, clinic)
    admin.execute("update public.appointments set sync_state = 'pending', next_attempt_at = now() where id = %s",
                  (appointment,))  # fmt: skip
    [claim] = as_service(service, "claim_appointments", p_owner="r1", p_limit=1)
    assert claim["event_generation"] == 0
    assert as_service(service, "next_event_generation", p_appointment_id=appointment, p_owner="r2") is None
    assert as_service(service, "next_event_generation", p_appointment_id=appointment, p_owner="r1") == 1
    row = admin.execute(
        "select event_generation, calendar_event_id from public.appointments where id = %s", (appointment,)
    ).fetchone()
    assert row == (1, None)
    # The lease expires before the insert: whoever claims it next pushes under the same new id.
    admin.execute("update public.appointments set lease_expires_at = now() - interval '1 second'")
    [again] = as_service(service, "claim_appointments", p_owner="r2", p_limit=1)
    assert again["event_generation"] == 1


def test_a_crashed_replicas_mirror_lease_is_taken_over(service: psycopg.Connection, admin: psycopg.Connection,
                                                       clinic: Clinic) -> None:  # fmt: skip
    connect_google(admin, clinic.id)

    def claim(owner: str) -> list[Any]:
        rows: list[Any] = as_service(
            service, "claim_mirror_targets", p_owner=owner, p_lease_seconds=30, p_interval_seconds=60
        )
        return rows

    assert [row["clinic_id"] for row in claim("crashed")] == [str(clinic.id)]
    assert claim("survivor") == []  # leased, not yet expired
    admin.execute("update public.calendar_mirrors set lease_expires_at = now() - interval '1 second'")
    assert [row["clinic_id"] for row in claim("survivor")] == [str(clinic.id)]
    # The crashed replica's late result does not end the survivor's lease.
    scalar(admin, "select public.apply_calendar_changes(%s, '[]', 't', true, 'crashed')", (clinic.id,))
    assert scalar(admin, "select lease_owner from public.calendar_mirrors") == "survivor"
