"""The sync queue's SQL functions, called as the daemon calls them (service_role over REST)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from tests.conftest import Clinic, Database
from tests.standins.clinics import create_clinic
from tests.standins.postgres import AUTHENTICATOR, scalar
from tests.standins.postgrest import set_request_context

FERNET_LIKE = "gAAAAABnX" + "B" * 100 + "=="


@pytest.fixture
def service(database: Database) -> Iterator[psycopg.Connection]:
    with database.connect(AUTHENTICATOR) as conn:
        yield conn


def as_service(conn: psycopg.Connection, function: str, **params: Any) -> Any:
    """Call public.<function>(named params) as PostgREST would for the service role; JSON result."""
    names = ", ".join(f"{name} => %s" for name in params)
    values = [Jsonb(v) if isinstance(v, dict) else v for v in params.values()]
    with conn.transaction():
        set_request_context(conn, role="service_role", path=f"/rpc/{function}")
        returns_set = scalar(conn, "select proretset from pg_proc where proname = %s", (function,))
        if returns_set:
            query = f"select coalesce(json_agg(t), '[]') from (select * from public.{function}({names})) t"
            return scalar(conn, query, values)
        return scalar(conn, f"select to_json(public.{function}({names}))", values)


def connect_google(admin: psycopg.Connection, clinic_id: uuid.UUID, status: str = "active") -> None:
    admin.execute(
        "insert into public.calendar_connections (clinic_id, refresh_token_encrypted, status) values (%s, %s, %s)",
        (clinic_id, FERNET_LIKE, status),
    )


def add_appointments(
    admin: psycopg.Connection, clinic_id: uuid.UUID, count: int, day: str = "2030-01-08"
) -> list[uuid.UUID]:
    ids = []
    for n in range(count):
        ids.append(
            scalar(
                admin,
                "insert into public.appointments (clinic_id, reference, patient, service, starts_at, ends_at)"
                " values (%s, %s, '{\"name\": \"Pat\"}', 'Check-up', %s::timestamptz + make_interval(mins => 30 * %s),"
                " %s::timestamptz + make_interval(mins => 30 * %s + 30)) returning id",
                (clinic_id, f"R{uuid.uuid4().hex[:7].upper()}", f"{day} 08:00Z", n, f"{day} 08:00Z", n),
            )
        )
    return ids


def states(admin: psycopg.Connection) -> dict[str, int]:
    rows = admin.execute("select sync_state, count(*) from public.appointments group by 1").fetchall()
    return {state: count for state, count in rows}


@pytest.fixture
def connected(admin: psycopg.Connection, clinic: Clinic) -> Clinic:
    connect_google(admin, clinic.id)
    return clinic


def test_claim_leases_due_rows_with_what_a_push_needs(
    service: psycopg.Connection, admin: psycopg.Connection, connected: Clinic
) -> None:
    [appointment] = add_appointments(admin, connected.id, 1)
    [claim] = as_service(service, "claim_appointments", p_owner="replica-1", p_limit=10)
    assert claim["appointment_id"] == str(appointment)
    assert (claim["time_zone"], claim["calendar_id"], claim["revision"], claim["sync_attempts"]) == (
        "Europe/London",
        "primary",
        1,
        1,
    )
    assert claim["patient"] == {"name": "Pat"}
    row = admin.execute("select sync_state, lease_owner, lease_expires_at > now() from public.appointments").fetchone()
    assert row == ("in_flight", "replica-1", True)
    assert as_service(service, "claim_appointments", p_owner="replica-2", p_limit=10) == []


def test_claim_is_fair_between_clinics(
    service: psycopg.Connection, admin: psycopg.Connection, connected: Clinic
) -> None:
    quiet = create_clinic(admin, "Quiet Clinic")
    connect_google(admin, quiet)
    add_appointments(admin, connected.id, 30)
    add_appointments(admin, quiet, 2)
    claims = as_service(service, "claim_appointments", p_owner="r", p_limit=12, p_per_clinic=10)
    per_clinic: dict[str, int] = {}
    for claim in claims:
        per_clinic[claim["clinic_id"]] = per_clinic.get(claim["clinic_id"], 0) + 1
    assert per_clinic == {str(connected.id): 10, str(quiet): 2}


def test_two_replicas_never_claim_the_same_row(
    database: Database, admin: psycopg.Connection, connected: Clinic
) -> None:
    add_appointments(admin, connected.id, 20)
    with database.connect(AUTHENTICATOR) as first, database.connect(AUTHENTICATOR) as second:
        with first.transaction():
            set_request_context(first, role="service_role", path="/rpc/claim_appointments")
            held = scalar(first, "select json_agg(t) from public.claim_appointments('r1', 8, 60, 20) t")
            # While r1's claim is uncommitted, r2 skips the locked rows instead of waiting.
            taken = as_service(second, "claim_appointments", p_owner="r2", p_limit=50, p_per_clinic=50)
        assert len(held) == 8 and len(taken) == 12
        assert not {c["appointment_id"] for c in held} & {c["appointment_id"] for c in taken}


def test_an_expired_lease_is_claimable_and_the_old_owner_loses_it(
    service: psycopg.Connection, admin: psycopg.Connection, connected: Clinic
) -> None:
    [appointment] = add_appointments(admin, connected.id, 1)
    as_service(service, "claim_appointments", p_owner="crashed", p_limit=1)
    admin.execute("update public.appointments set lease_expires_at = now() - interval '1 second'")
    [claim] = as_service(service, "claim_appointments", p_owner="survivor", p_limit=1)
    assert claim["sync_attempts"] == 2

    assert (
        as_service(
            service,
            "complete_appointment_sync",
            p_appointment_id=appointment,
            p_owner="crashed",
            p_revision=1,
            p_event_id="abcde12345",
        )
        == "lease_lost"
    )
    assert (
        as_service(
            service,
            "complete_appointment_sync",
            p_appointment_id=appointment,
            p_owner="survivor",
            p_revision=1,
            p_event_id="abcde12345",
            p_event_link="https://cal/x",
        )
        == "synced"
    )
    row = admin.execute(
        "select sync_state, calendar_event_id, calendar_event_link, synced_revision, lease_owner"
        " from public.appointments"
    ).fetchone()
    assert row == ("synced", "abcde12345", "https://cal/x", 1, None)


def test_a_change_while_in_flight_sends_the_row_round_again(
    service: psycopg.Connection, admin: psycopg.Connection, connected: Clinic
) -> None:
    [appointment] = add_appointments(admin, connected.id, 1)
    as_service(service, "claim_appointments", p_owner="r", p_limit=1)
    admin.execute("update public.appointments set notes = 'moved to room 2'")
    assert (
        as_service(
            service,
            "complete_appointment_sync",
            p_appointment_id=appointment,
            p_owner="r",
            p_revision=1,
            p_event_id="abcde12345",
        )
        == "pending"
    )
    row = admin.execute("select revision, synced_revision, calendar_event_id from public.appointments").fetchone()
    assert row == (2, 1, "abcde12345")
    [again] = as_service(service, "claim_appointments", p_owner="r", p_limit=1)
    assert (again["revision"], again["calendar_event_id"]) == (2, "abcde12345")


def test_parking_after_the_clinic_reconnected_retries_instead(
    service: psycopg.Connection, admin: psycopg.Connection, connected: Clinic
) -> None:
    """The push failed with the old grant, but a new one was saved meanwhile: nothing would unpark it later."""
    [appointment] = add_appointments(admin, connected.id, 1)
    as_service(service, "claim_appointments", p_owner="r", p_limit=1)
    state = as_service(
        service,
        "end_appointment_attempt",
        p_appointment_id=appointment,
        p_owner="r",
        p_state="parked",
        p_error="invalid_grant",
    )
    assert state == "pending"
    [claim] = as_service(service, "claim_appointments", p_owner="r", p_limit=1)
    assert claim["appointment_id"] == str(appointment)


def test_retry_fail_and_park_record_the_reason(
    service: psycopg.Connection, admin: psycopg.Connection, connected: Clinic
) -> None:
    first, second, third = add_appointments(admin, connected.id, 3)
    as_service(service, "claim_appointments", p_owner="r", p_limit=3)
    # What the daemon records first when Google says invalid_grant.
    as_service(service, "record_token_failure", p_clinic_id=connected.id, p_error="invalid_grant", p_needs_reauth=True)
    outcomes = [
        (first, "pending", "Google: HTTP 503", 30),
        (second, "failed", "Google: HTTP 400 invalid", 0),
        (third, "parked", "invalid_grant", 0),
    ]
    for appointment, state, error, delay in outcomes:
        assert (
            as_service(
                service,
                "end_appointment_attempt",
                p_appointment_id=appointment,
                p_owner="r",
                p_state=state,
                p_error=error,
                p_delay_seconds=delay,
            )
            == state
        )
    rows = {
        id_: rest
        for id_, *rest in admin.execute(
            "select id, sync_state, last_sync_error, next_attempt_at > now() + interval '20 s' from public.appointments"
        ).fetchall()
    }
    assert rows[first] == ["pending", "Google: HTTP 503", True]
    assert rows[second] == ["failed", "Google: HTTP 400 invalid", None]
    assert rows[third] == ["parked", "invalid_grant", None]
    assert as_service(service, "claim_appointments", p_owner="r", p_limit=3) == []  # not due yet, nor claimable

    as_service(  # the clinic reconnects: its parked row comes back, and a failed one on request
        service,
        "save_calendar_connection",
        p_clinic_id=connected.id,
        p_google_account="a@example.com",
        p_refresh_token_encrypted=FERNET_LIKE,
        p_scopes=[],
    )
    assert as_service(service, "retry_failed_appointments", p_clinic_id=connected.id) == 1
    claims = as_service(service, "claim_appointments", p_owner="r", p_limit=3)
    assert {claim["appointment_id"] for claim in claims} == {str(second), str(third)}


def test_bad_arguments_are_refused(service: psycopg.Connection) -> None:
    for params in ({"p_owner": ""}, {"p_owner": "r", "p_limit": 0}, {"p_owner": "r", "p_lease_seconds": 1}):
        with pytest.raises(errors.RaiseException):
            as_service(service, "claim_appointments", **params)
    for state, delay in (("synced", 0), ("pending", -1), ("pending", 86401)):
        with pytest.raises(errors.RaiseException):
            as_service(
                service,
                "end_appointment_attempt",
                p_appointment_id=uuid.uuid4(),
                p_owner="r",
                p_state=state,
                p_error="x",
                p_delay_seconds=delay,
            )


def test_release_hands_back_what_a_stopping_replica_holds(
    service: psycopg.Connection, admin: psycopg.Connection, connected: Clinic
) -> None:
    add_appointments(admin, connected.id, 4)
    as_service(service, "claim_appointments", p_owner="leaving", p_limit=3)
    assert as_service(service, "release_appointment_leases", p_owner="leaving") == 3
    assert states(admin) == {"pending": 4}
    assert scalar(admin, "select max(sync_attempts) from public.appointments") == 0


def test_clinics_without_an_active_connection_park_and_resume_on_reconnect(
    service: psycopg.Connection, admin: psycopg.Connection, clinic: Clinic
) -> None:
    add_appointments(admin, clinic.id, 3)
    assert as_service(service, "claim_appointments", p_owner="r", p_limit=10) == []
    assert states(admin) == {"parked": 3}
    assert scalar(admin, "select min(last_sync_error) from public.appointments") == (
        "Waiting for the clinic to connect Google Calendar"
    )

    as_service(
        service,
        "save_calendar_connection",
        p_clinic_id=clinic.id,
        p_google_account="desk@clinic.example",
        p_refresh_token_encrypted=FERNET_LIKE,
        p_scopes=["https://www.googleapis.com/auth/calendar.events"],
    )
    assert states(admin) == {"pending": 3}
    assert len(as_service(service, "claim_appointments", p_owner="r", p_limit=10)) == 3


def test_a_dead_grant_parks_the_clinics_queue_and_reconnecting_resumes_it(
    service: psycopg.Connection, admin: psycopg.Connection, connected: Clinic
) -> None:
    other = create_clinic(admin, "Other Clinic")
    connect_google(admin, other)
    add_appointments(admin, connected.id, 2)
    add_appointments(admin, other, 2)
    assert (
        as_service(
            service,
            "record_token_failure",
            p_clinic_id=connected.id,
            p_error="invalid_grant: Token has been expired or revoked.",
            p_needs_reauth=True,
        )
        == "needs_reauth"
    )
    parked = admin.execute(
        "select clinic_id, sync_state, last_sync_error from public.appointments where sync_state = 'parked'"
    ).fetchall()
    assert {clinic_id for clinic_id, _, _ in parked} == {connected.id} and len(parked) == 2
    assert "invalid_grant" in parked[0][2]
    assert {c["clinic_id"] for c in as_service(service, "claim_appointments", p_owner="r", p_limit=10)} == {str(other)}

    assert [c["clinic_id"] for c in as_service(service, "calendar_connections_to_refresh")] == [str(other)]
    as_service(
        service,
        "save_calendar_connection",
        p_clinic_id=connected.id,
        p_google_account="desk@x.example",
        p_refresh_token_encrypted=FERNET_LIKE,
        p_scopes=[],
    )
    assert scalar(admin, "select count(*) from public.appointments where sync_state = 'pending'") == 2


def test_token_refresh_bookkeeping(service: psycopg.Connection, admin: psycopg.Connection, connected: Clinic) -> None:
    assert (
        as_service(
            service,
            "record_token_refresh",
            p_clinic_id=connected.id,
            p_access_token_encrypted=FERNET_LIKE,
            p_access_token_expires_at="2099-01-01T00:00:00Z",
        )
        == "active"
    )
    assert as_service(service, "calendar_connections_to_refresh", p_within_seconds=600) == []
    assert (
        as_service(service, "record_token_failure", p_clinic_id=connected.id, p_error="timeout", p_needs_reauth=False)
        == "active"
    )
    [tokens] = as_service(service, "calendar_connection_tokens", p_clinic_id=connected.id)
    assert tokens["status"] == "active" and tokens["access_token_encrypted"] == FERNET_LIKE
    with pytest.raises(errors.CheckViolation):
        as_service(
            service,
            "record_token_refresh",
            p_clinic_id=connected.id,
            p_access_token_encrypted="ya29.plain",
            p_access_token_expires_at="2099-01-01T00:00:00Z",
        )


def test_queue_functions_are_for_the_service_role_only(database: Database) -> None:
    with database.connect(AUTHENTICATOR) as conn:
        for role in ("anon", "authenticated"):
            with pytest.raises(errors.InsufficientPrivilege), conn.transaction():
                set_request_context(conn, role=role, path="/rpc/claim_appointments")
                conn.execute("select * from public.claim_appointments('intruder')")
