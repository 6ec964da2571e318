"""Simultaneous calls: one slot, one booking; one toolCallId, one effect."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tests.conftest import Clinic, Database
from tests.dates import upcoming
from tests.standins.postgres import AUTHENTICATOR, scalar
from tests.standins.postgrest import rpc, set_request_context
from tests.standins.vapi import VapiCall, tool_call

TUESDAY = 2


def wait_until_blocked(admin: psycopg.Connection, pid: int, timeout: float = 10.0) -> None:
    """Wait (bounded) until backend `pid` is waiting on a lock held by another transaction."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scalar(admin, "select wait_event_type = 'Lock' from pg_stat_activity where pid = %s", (pid,)):
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} never blocked")


def send(conn: psycopg.Connection, key: str, message: dict[str, Any]) -> dict[str, Any]:
    [item] = rpc(conn, "vapi_tool_call", message, headers={"x-clinic-key": key})["results"]
    return dict(item)


def first_holds_second_waits(
    database: Database, key: str, first: dict[str, Any], second: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `first` in an open transaction, start `second` on another connection, check that it
    waits for the first, then commit the first and collect both answers."""
    with (
        database.connect(AUTHENTICATOR) as holder,
        database.connect(AUTHENTICATOR) as waiter,
        database.connect() as admin,
        ThreadPoolExecutor(1) as pool,
    ):
        with holder.transaction():
            set_request_context(holder, role="anon", path="/rpc/vapi_tool_call", headers={"x-clinic-key": key})
            [held] = scalar(holder, "select public.vapi_tool_call(%s)", (Jsonb(first),))["results"]
            waiting: Future[dict[str, Any]] = pool.submit(send, waiter, key, second)
            wait_until_blocked(admin, waiter.info.backend_pid)
            assert not waiting.done()
        return dict(held), waiting.result(timeout=10)


def test_two_simultaneous_bookings_of_one_slot_give_one_booking_and_one_clear_refusal(
    database: Database, clinic: Clinic, admin: psycopg.Connection
) -> None:
    start = f"{upcoming(TUESDAY)}T10:00"
    jane = VapiCall(customer_number="+447700900001").message(
        tool_call("book_appointment", {"start": start, "patient_name": "Jane"})
    )
    john = VapiCall(customer_number="+447700900002").message(
        tool_call("book_appointment", {"start": start, "patient_name": "John"})
    )
    held, waited = first_holds_second_waits(database, clinic.key, jane, john)

    assert held["result"].startswith("Booked: Check-up")
    assert waited["error"].startswith("10:00 on Tuesday") and "is not available" in waited["error"]
    assert admin.execute("select patient ->> 'name' from public.appointments").fetchall() == [("Jane",)]


def test_a_concurrent_retry_of_one_tool_call_waits_and_gets_the_same_answer(
    database: Database, clinic: Clinic, admin: psycopg.Connection
) -> None:
    message = VapiCall().message(
        tool_call(
            "book_appointment", {"start": f"{upcoming(TUESDAY)}T11:00", "patient_name": "Jane"}, call_id="call_dup"
        )
    )
    held, retried = first_holds_second_waits(database, clinic.key, message, message)

    assert held["result"].startswith("Booked:")
    assert retried == held
    assert scalar(admin, "select count(*) from public.appointments") == 1


def test_a_crowd_racing_for_one_slot_yields_exactly_one_booking(
    database: Database, clinic: Clinic, admin: psycopg.Connection
) -> None:
    start = f"{upcoming(TUESDAY)}T15:00"
    callers = 8
    barrier = threading.Barrier(callers)

    def race(n: int) -> dict[str, Any]:
        with database.connect(AUTHENTICATOR) as conn:
            message = VapiCall(customer_number=f"+4477009001{n:02d}").message(
                tool_call("book_appointment", {"start": start, "patient_name": f"Caller {n}"})
            )
            barrier.wait(timeout=10)
            return send(conn, clinic.key, message)

    with ThreadPoolExecutor(callers) as pool:
        answers = list(pool.map(race, range(callers)))

    assert sum("result" in a for a in answers) == 1
    assert all("is not available" in a["error"] for a in answers if "error" in a)
    assert scalar(admin, "select count(*) from public.appointments") == 1
