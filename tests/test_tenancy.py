"""Tenant isolation and Supabase role rules, checked the way PostgREST would exercise them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from tests.conftest import Clinic
from tests.dates import upcoming
from tests.standins.clinics import create_clinic, issue_key
from tests.standins.postgres import scalar
from tests.standins.postgrest import set_request_context
from tests.standins.vapi import Assistant, VapiCall

TUESDAY = 2
FERNET_LIKE = "gAAAAABnX" + "A" * 100 + "=="


@pytest.fixture
def other_clinic(admin: psycopg.Connection) -> Clinic:
    clinic_id = create_clinic(admin, "Hillside Surgery", booking_horizon_days=400)
    return Clinic(clinic_id, issue_key(admin, clinic_id))


def book(gateway: psycopg.Connection, clinic: Clinic, start: str, caller: str = "+447700900123") -> str:
    return Assistant(gateway, clinic.key, VapiCall(customer_number=caller)).book(start, "Pat Example")


@contextmanager
def acting_as(
    conn: psycopg.Connection, role: str, *, headers: dict[str, str] | None = None, claims: dict[str, str] | None = None
) -> Iterator[psycopg.Connection]:
    """Inside a transaction that is rolled back: `role`, with request settings as PostgREST sets them."""
    with conn.transaction(force_rollback=True):
        if role in ("anon", "authenticated", "service_role"):
            set_request_context(conn, role=role, path="/rpc/test", headers=headers, claims=claims)
        else:
            conn.execute("select set_config('request.headers', %s, true)", (json.dumps(headers or {}),))
            conn.execute(f"set local role {role}")
        yield conn


def public_tables(admin: psycopg.Connection) -> list[str]:
    rows = admin.execute(
        "select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm', 'f') order by 1"
    ).fetchall()
    return [name for (name,) in rows]


def test_rls_is_enabled_on_every_public_table(admin: psycopg.Connection) -> None:
    tables = public_tables(admin)
    assert "appointments" in tables and len(tables) >= 9
    without_rls = admin.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relrowsecurity"
    ).fetchall()
    assert without_rls == []


def test_anon_holds_no_privilege_on_any_table_or_column(admin: psycopg.Connection) -> None:
    for table in public_tables(admin):
        for privilege in ("select", "insert", "update", "delete", "truncate", "references", "trigger"):
            assert not scalar(admin, "select has_table_privilege('anon', %s, %s)", (table, privilege)), table
        for privilege in ("select", "insert", "update", "references"):
            assert not scalar(admin, "select has_any_column_privilege('anon', %s, %s)", (table, privilege)), table


def test_anon_may_execute_only_the_vapi_entry_point(admin: psycopg.Connection) -> None:
    callable_by_anon = admin.execute(
        "select n.nspname || '.' || p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname in ('public', 'private') and has_function_privilege('anon', p.oid, 'execute')"
    ).fetchall()
    assert callable_by_anon == [("public.vapi_tool_call",)]


def test_anon_reading_a_table_is_refused(gateway: psycopg.Connection, clinic: Clinic) -> None:
    with pytest.raises(errors.InsufficientPrivilege), acting_as(gateway, "anon", headers={"x-clinic-key": clinic.key}):
        gateway.execute("select * from public.appointments")


def test_key_management_is_for_the_service_role_only(gateway: psycopg.Connection, clinic: Clinic) -> None:
    for role in ("anon", "authenticated"):
        with pytest.raises(errors.InsufficientPrivilege), acting_as(gateway, role):
            gateway.execute("select public.issue_clinic_key(%s)", (clinic.id,))
    with acting_as(gateway, "service_role"):
        assert scalar(gateway, "select public.issue_clinic_key(%s)", (clinic.id,)).startswith("ck_")


def test_tools_cannot_reach_another_clinics_booking_by_reference_or_phone(
    gateway: psycopg.Connection, admin: psycopg.Connection, clinic: Clinic, other_clinic: Clinic
) -> None:
    day = upcoming(TUESDAY)
    theirs = book(gateway, other_clinic, f"{day}T10:00", caller="+447700900777")

    ours = Assistant(gateway, clinic.key, VapiCall(customer_number="+447700900777"))
    assert ours.use("cancel_appointment", {"reference": theirs})["error"] == f"No booking has the reference {theirs}"
    assert ours.use("reschedule_appointment", {"reference": theirs, "new_start": f"{day}T11:00"})["error"] == (
        f"No booking has the reference {theirs}"
    )
    assert ours.use("cancel_appointment", {})["error"] == "No upcoming booking was found for that phone number"
    # Their 10:00 booking does not make our 10:00 busy.
    assert "10:00" in ours.use("check_availability", {"date": day.isoformat()})["result"]
    assert ours.use("book_appointment", {"start": f"{day}T10:00", "patient_name": "Sam"})["result"].startswith("Booked")

    their_row = admin.execute(
        "select status, starts_at, revision from public.appointments where clinic_id = %s", (other_clinic.id,)
    ).fetchall()
    assert [(status, revision) for status, _, revision in their_row] == [("booked", 1)]


def test_the_tool_role_is_confined_by_rls_even_when_it_knows_the_id(
    gateway: psycopg.Connection, admin: psycopg.Connection, clinic: Clinic, other_clinic: Clinic
) -> None:
    """What a buggy tool body could do: plain SQL as `vapi_clinic` with our key in the request."""
    book(gateway, other_clinic, f"{upcoming(TUESDAY)}T10:00")
    their_id = scalar(admin, "select id from public.appointments where clinic_id = %s", (other_clinic.id,))
    our_key = {"x-clinic-key": clinic.key}

    with acting_as(admin, "vapi_clinic", headers=our_key) as conn:
        assert scalar(conn, "select count(*) from public.appointments where id = %s", (their_id,)) == 0
        assert scalar(conn, "select count(*) from public.clinics") == 1
        cursor = conn.execute(
            "update public.appointments set status = 'cancelled', cancelled_at = now() where id = %s", (their_id,)
        )
        assert cursor.rowcount == 0
    with pytest.raises(errors.InsufficientPrivilege), acting_as(admin, "vapi_clinic", headers=our_key) as conn:
        conn.execute(
            "insert into public.appointments (clinic_id, reference, patient, service, starts_at, ends_at)"
            " values (%s, 'ABCDEF', '{\"name\": \"x\"}', 'Check-up', now() + interval '1 day',"
            " now() + interval '25 hours')",
            (other_clinic.id,),
        )
    for secret_table in ("clinic_api_keys", "calendar_connections", "contacts"):
        with pytest.raises(errors.InsufficientPrivilege), acting_as(admin, "vapi_clinic", headers=our_key) as conn:
            conn.execute(f"select * from public.{secret_table}")
    # With no key at all the role sees nothing.
    with acting_as(admin, "vapi_clinic") as conn:
        assert scalar(conn, "select count(*) from public.appointments") == 0
    assert scalar(admin, "select status from public.appointments where id = %s", (their_id,)) == "booked"


def test_staff_see_only_the_clinics_they_belong_to(
    gateway: psycopg.Connection, admin: psycopg.Connection, clinic: Clinic, other_clinic: Clinic
) -> None:
    day = upcoming(TUESDAY)
    book(gateway, clinic, f"{day}T10:00")
    book(gateway, other_clinic, f"{day}T10:00")
    staff = uuid.uuid4()
    admin.execute("insert into auth.users (id, email) values (%s, 'reception@riverside.example')", (staff,))
    admin.execute("insert into public.clinic_members (clinic_id, user_id) values (%s, %s)", (clinic.id, staff))
    for clinic_id in (clinic.id, other_clinic.id):
        admin.execute(
            "insert into public.calendar_connections (clinic_id, refresh_token_encrypted, status)"
            " values (%s, %s, 'needs_reauth')",
            (clinic_id, FERNET_LIKE),
        )

    claims = {"sub": str(staff)}
    with acting_as(gateway, "authenticated", claims=claims) as conn:
        assert scalar(conn, "select array_agg(id) from public.clinics") == [clinic.id]
        assert scalar(conn, "select array_agg(distinct clinic_id) from public.appointments") == [clinic.id]
        assert scalar(conn, "select array_agg(status) from public.calendar_connections") == ["needs_reauth"]
    with pytest.raises(errors.InsufficientPrivilege), acting_as(gateway, "authenticated", claims=claims) as conn:
        conn.execute("select refresh_token_encrypted from public.calendar_connections")
    with pytest.raises(errors.InsufficientPrivilege), acting_as(gateway, "authenticated", claims=claims) as conn:
        conn.execute("update public.appointments set notes = 'x'")

    stranger = {"sub": str(uuid.uuid4())}
    with acting_as(gateway, "authenticated", claims=stranger) as conn:
        assert scalar(conn, "select count(*) from public.clinics") == 0
        assert scalar(conn, "select count(*) from public.appointments") == 0

    with acting_as(gateway, "service_role") as conn:
        assert scalar(conn, "select count(*) from public.appointments") == 2


@pytest.mark.parametrize(
    "token",
    ["1//0gLx-refresh-token-in-plain-text", "ya29.a0AfH6SM-access-token", "gAAAAA not base64!", ""],
)
def test_plain_google_tokens_cannot_be_stored(admin: psycopg.Connection, clinic: Clinic, token: str) -> None:
    with pytest.raises(errors.CheckViolation):
        admin.execute(
            "insert into public.calendar_connections (clinic_id, refresh_token_encrypted) values (%s, %s)",
            (clinic.id, token),
        )
    with pytest.raises(errors.CheckViolation):
        admin.execute(
            "insert into public.calendar_connections (clinic_id, refresh_token_encrypted, access_token_encrypted)"
            " values (%s, %s, %s)",
            (clinic.id, FERNET_LIKE, token),
        )


def test_a_clinic_sees_only_its_own_calendar_busy_time(admin: psycopg.Connection, clinic: Clinic) -> None:
    other = create_clinic(admin, "Hillside Surgery")
    for owner, event in ((clinic.id, "ours"), (other, "theirs")):
        listing = [
            {"id": event, "status": "confirmed", "updated": "2026-01-01T00:00:00Z",
             "start": {"dateTime": "2030-01-08T09:00:00Z"}, "end": {"dateTime": "2030-01-08T10:00:00Z"}}
        ]  # fmt: skip
        admin.execute("select public.apply_calendar_changes(%s, %s, null, true)", (owner, Jsonb(listing)))
    with acting_as(admin, "vapi_clinic", headers={"x-clinic-key": clinic.key}) as conn:
        assert conn.execute("select clinic_id from public.calendar_busy").fetchall() == [(clinic.id,)]
        assert conn.execute("select clinic_id from public.calendar_mirrors").fetchall() == [(clinic.id,)]
    with (
        pytest.raises(errors.InsufficientPrivilege),
        acting_as(admin, "vapi_clinic", headers={"x-clinic-key": clinic.key}) as conn,
    ):
        conn.execute("select event_id from public.calendar_busy")  # not even its own events' ids
