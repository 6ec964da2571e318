"""The cheaper claim and the batched write-back (migration claim_performance; Store.complete)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from daemon.store import Claim, LeaseResult, Store, StoreError
from tests.conftest import Clinic, Database
from tests.standins.clinics import create_clinic
from tests.standins.postgres import AUTHENTICATOR
from tests.standins.postgrest import set_request_context
from tests.test_sync_queue import add_appointments, as_service, connect_google


@pytest.fixture
def service(database: Database) -> Any:
    with database.connect(AUTHENTICATOR) as conn:
        yield conn


def test_a_claim_takes_the_earliest_due_rows_of_every_clinic_up_to_the_per_clinic_cap(
    service: psycopg.Connection, admin: psycopg.Connection, clinic: Clinic
) -> None:
    clinics = [clinic.id, *(create_clinic(admin, f"Clinic {n}") for n in range(4))]
    due: list[tuple[dt.datetime, uuid.UUID, uuid.UUID]] = []  # (due at, appointment, clinic)
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for n, clinic_id in enumerate(clinics):
        connect_google(admin, clinic_id)
        for k, appointment in enumerate(add_appointments(admin, clinic_id, 2 + 3 * n)):
            at = base + dt.timedelta(minutes=7 * k + n)  # clinics interleave in time
            admin.execute("update public.appointments set next_attempt_at = %s where id = %s", (at, appointment))
            due.append((at, appointment, clinic_id))
    not_yet = add_appointments(admin, clinics[0], 1, day="2030-02-01")
    admin.execute("update public.appointments set next_attempt_at = now() + interval '1 hour' where id = %s", not_yet)
    # A crashed replica's expired lease is due again, counted against its clinic's cap as before.
    crashed = due.pop(0)
    admin.execute(
        "update public.appointments set sync_state = 'in_flight', lease_owner = 'crashed',"
        " lease_expires_at = now() - interval '1 second' where id = %s",
        (crashed[1],),
    )
    due.append(crashed)

    taken: list[uuid.UUID] = []
    per_clinic: dict[uuid.UUID, int] = {}
    for _, appointment, clinic_id in sorted(due):
        if per_clinic.get(clinic_id, 0) < 3 and len(taken) < 9:
            taken.append(appointment)
            per_clinic[clinic_id] = per_clinic.get(clinic_id, 0) + 1

    claims = as_service(service, "claim_appointments", p_owner="r", p_limit=9, p_per_clinic=3)
    assert sorted(uuid.UUID(c["appointment_id"]) for c in claims) == sorted(taken)
    # What is left comes next, and nothing not yet due comes at all.
    rest = as_service(service, "claim_appointments", p_owner="r", p_limit=1000, p_per_clinic=1000)
    assert len(rest) == len(due) - len(taken)
    assert str(not_yet[0]) not in {c["appointment_id"] for c in rest}


def test_completing_many_at_once_follows_the_rules_of_completing_one(
    service: psycopg.Connection, admin: psycopg.Connection, clinic: Clinic
) -> None:
    connect_google(admin, clinic.id)
    synced, changed, stolen = add_appointments(admin, clinic.id, 3)
    as_service(service, "claim_appointments", p_owner="r1", p_limit=10)
    admin.execute("update public.appointments set notes = 'moved to the afternoon' where id = %s", (changed,))
    admin.execute("update public.appointments set lease_owner = 'r2' where id = %s", (stolen,))

    items = [
        {"appointment_id": str(a), "owner": "r1", "revision": 1, "event_id": f"event{n}0000", "event_link": "l"}
        for n, a in enumerate((synced, changed, stolen))
    ]
    rows = as_service(service, "complete_appointment_syncs", p_completions=Jsonb(items))
    assert rows == [
        {"appointment_id": str(synced), "state": "synced"},
        {"appointment_id": str(changed), "state": "pending"},
        {"appointment_id": str(stolen), "state": "lease_lost"},
    ]
    found = {
        row[0]: row[1:]
        for row in admin.execute(
            "select id, sync_state, calendar_event_id, synced_revision, lease_owner from public.appointments"
        )
    }
    assert found[synced] == ("synced", "event00000", 1, None)
    assert found[changed] == ("pending", "event10000", 1, None)  # goes round again for revision 2
    assert found[stolen] == ("in_flight", None, None, "r2")


def test_completing_many_is_for_the_service_role_only(database: Database) -> None:
    with database.connect(AUTHENTICATOR) as conn:
        for role in ("anon", "authenticated"):
            with pytest.raises(errors.InsufficientPrivilege), conn.transaction():
                set_request_context(conn, role=role, path="/rpc/complete_appointment_syncs")
                conn.execute("select * from public.complete_appointment_syncs('[]')")


# --- Store.complete: concurrent completions share calls -------------------------------------------


class DatabaseSaid(Exception):
    """Stands for a psycopg error the database answered with."""

    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


class CountingStore(Store):
    """Answers complete_appointment_syncs as the database would when every lease is held, after failing the
    first `failures` batches with `sqlstate` (None: the database cannot be reached)."""

    def __init__(self, failures: int = 0, sqlstate: str | None = "40P01") -> None:
        self.batches: list[int] = []
        self.singles = 0
        self.failures = failures
        self.sqlstate = sqlstate

    async def call(self, function: str, params: Mapping[str, Any]) -> Any:
        assert function == "complete_appointment_sync"
        self.singles += 1
        return "synced"

    async def call_rows(self, function: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        assert function == "complete_appointment_syncs"
        items = params["p_completions"].value
        await asyncio.sleep(0.01)  # a round trip, during which more completions arrive
        if self.failures and (len(items) > 1 or self.sqlstate != "23514"):  # the refusal: of a batch
            self.failures -= 1
            raise StoreError(f"database: {self.sqlstate}") from DatabaseSaid(self.sqlstate)
        self.batches.append(len(items))
        return [{"appointment_id": item["appointment_id"], "state": "synced"} for item in items]

    async def close(self) -> None:
        pass


def claim() -> Claim:
    now = dt.datetime.now(dt.UTC)
    return Claim(
        uuid.uuid4(), uuid.uuid4(), 1, "booked", "ABC123", {"name": "Pat"}, "Check-up", None, now, now, None, 1, now,
        "Europe/London", "primary",
    )  # fmt: skip


async def complete_many(store: Store, count: int) -> list[LeaseResult | BaseException]:
    async def one(n: int) -> LeaseResult:
        await asyncio.sleep(0.001 * n)
        return await store.complete(claim(), "r1", "abcde12345", None)

    return list(await asyncio.gather(*(one(n) for n in range(count)), return_exceptions=True))


def test_completions_arriving_together_share_calls() -> None:
    store = CountingStore()
    assert asyncio.run(complete_many(store, 40)) == ["synced"] * 40
    assert sum(store.batches) == 40 and store.batches[0] == 1 and len(store.batches) < 10


def test_a_batch_that_deadlocked_is_tried_again() -> None:
    store = CountingStore(failures=1, sqlstate="40P01")
    assert asyncio.run(complete_many(store, 5)) == ["synced"] * 5
    assert sum(store.batches) == 5 and store.singles == 0


def test_a_batch_the_database_refused_is_recorded_one_by_one() -> None:
    store = CountingStore(failures=1, sqlstate="23514")
    assert asyncio.run(complete_many(store, 5)) == ["synced"] * 5
    assert store.singles + sum(store.batches) == 5 and store.singles >= 1


def test_while_the_database_is_unreachable_every_waiting_caller_hears_it_at_once() -> None:
    store = CountingStore(failures=100, sqlstate=None)
    outcomes = asyncio.run(complete_many(store, 6))
    assert all(isinstance(outcome, StoreError) for outcome in outcomes)
    assert store.failures == 99  # one call failed; the completions queued behind it were not tried again
