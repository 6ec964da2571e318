"""The cheaper claim and the batched write-back (migration claim_performance; CompletionWriter)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from daemon.domain.sync_queue import Claim, LeaseResult
from daemon.store import PostgresStore, Store, StoreError, SupabaseStore
from daemon.writeback import CompletionWriter
from tests.conftest import Clinic, Database
from tests.standins.clinics import create_clinic
from tests.standins.postgres import AUTHENTICATOR, MIGRATOR
from tests.standins.postgrest import set_request_context
from tests.standins.supabase_rest import SupabaseRestStandIn
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


# --- CompletionWriter: concurrent completions share calls (real database, both paths) ---------------


@pytest.fixture
def connected(admin: psycopg.Connection, clinic: Clinic) -> Clinic:
    connect_google(admin, clinic.id)
    return clinic


class CountingPostgresStore(PostgresStore):
    """The real direct-PostgreSQL store, counting the batches it sends (a spy: every call goes through)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.batches: list[int] = []
        self.singles = 0

    async def call_rows(self, function: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        if function == "complete_appointment_syncs":
            self.batches.append(len(params["p_completions"].value))
            self.singles += len(params["p_completions"].value) == 1  # one by one, after a refused batch
        return await super().call_rows(function, params)


async def claim_and_complete(store: Store, count: int, event_id: Callable[[int], str]) -> list[Any]:
    claims = await store.claim("r1", count, 60, count)
    assert len(claims) == count
    writer = CompletionWriter(store)

    async def one(n: int, claim: Claim) -> LeaseResult:
        return await writer.complete(claim, "r1", event_id(n), None)  # all at once, as a burst of pushes ends

    try:
        return list(await asyncio.gather(*(one(n, c) for n, c in enumerate(claims)), return_exceptions=True))
    finally:
        await store.close()


def states(admin: psycopg.Connection) -> dict[str, int]:
    rows = admin.execute("select sync_state, count(*) from public.appointments group by 1").fetchall()
    return {state: count for state, count in rows}


def test_completions_arriving_together_share_calls(
    database: Database, admin: psycopg.Connection, connected: Clinic
) -> None:
    add_appointments(admin, connected.id, 40)
    store = CountingPostgresStore(database.dsn(MIGRATOR))

    async def run() -> list[Any]:
        await store.open()
        return await claim_and_complete(store, 40, lambda n: f"abcde{n:05d}")

    assert asyncio.run(run()) == ["synced"] * 40
    assert sum(store.batches) == 40 and len(store.batches) <= 2, store.batches  # not 40 round trips
    assert states(admin) == {"synced": 40}


def test_a_batch_the_database_refused_is_recorded_one_by_one(
    database: Database, admin: psycopg.Connection, connected: Clinic
) -> None:
    add_appointments(admin, connected.id, 6)
    store = CountingPostgresStore(database.dsn(MIGRATOR))

    async def run() -> list[Any]:
        await store.open()
        # One event id Google would never give (the column's check refuses it): only that one fails.
        return await claim_and_complete(store, 6, lambda n: "NOT-AN-EVENT-ID" if n == 3 else f"abcde{n:05d}")

    outcomes = asyncio.run(run())
    assert [type(o).__name__ for o in outcomes] == ["str"] * 3 + ["StoreError"] + ["str"] * 2
    assert store.singles >= 1
    assert states(admin) == {"synced": 5, "in_flight": 1}  # the refused one waits for its lease to expire


def test_while_the_gateway_is_unreachable_every_waiting_caller_hears_it(
    database: Database, admin: psycopg.Connection, connected: Clinic
) -> None:
    add_appointments(admin, connected.id, 6)

    async def run() -> list[Any]:
        with SupabaseRestStandIn(database.dsn(AUTHENTICATOR)) as rest:
            store = SupabaseStore(rest.url, rest.service_role_key)
            await store.open()
            claims = await store.claim("r1", 6, 60, 6)
            writer = CompletionWriter(store)
            rest.stop()
            try:
                return list(
                    await asyncio.gather(
                        *(writer.complete(c, "r1", f"abcde{n:05d}", None) for n, c in enumerate(claims)),
                        return_exceptions=True,
                    )
                )
            finally:
                await store.close()

    outcomes = asyncio.run(run())
    assert len(outcomes) == 6 and all(isinstance(o, StoreError) for o in outcomes)
    assert states(admin) == {"in_flight": 6}  # nothing recorded; the leases expire and the pushes repeat
