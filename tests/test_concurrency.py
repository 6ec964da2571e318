"""Simultaneous calls: one slot, one booking; one toolCallId, one effect."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.conftest import Clinic, Database
from tests.dates import LONDON, upcoming
from tests.standins.clinics import create_clinic, issue_key
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
            [held] = scalar(holder, "select public.vapi_tool_call(%s::json)", (json.dumps(first),))["results"]
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


# --- crowds: many rounds of many callers racing for one slot -------------------------------------

ALWAYS_OPEN = {day: [("00:00", "24:00")] for day in range(1, 8)}
CROWD = 20
ROUNDS = 30
NEAREST = re.compile(r"^(\d\d:\d\d) on \w+ \d+ \w+ \d{4} is not available\. Nearest free times that day: \d\d:\d\d")


@dataclass
class Answer:
    item: dict[str, Any]
    seconds: float

    @property
    def won(self) -> bool:
        return "result" in self.item

    @property
    def clear(self) -> bool:
        """A refusal that names the nearest free times."""
        return NEAREST.match(self.item.get("error", "")) is not None


@dataclass
class RaceFigures:
    rounds: int
    rounds_with_one_winner: int
    losers: int
    losers_with_nearest_times: int
    other_answers: list[str]
    slowest_seconds: float

    def __str__(self) -> str:
        others = sorted(set(self.other_answers))
        return (
            f"{self.rounds_with_one_winner}/{self.rounds} rounds with exactly one winner; "
            f"{self.losers_with_nearest_times}/{self.losers} losers heard the nearest free times; "
            f"slowest answer {self.slowest_seconds:.2f}s; other answers: {others}"
        )


def crowd_race(database: Database, key: str, rounds: list[list[dict[str, Any]]]) -> list[list[Answer]]:
    """Each round, one caller per connection sends its message at the same moment (a barrier per round)."""
    callers = len(rounds[0])
    barrier = threading.Barrier(callers)

    def caller(n: int) -> list[Answer]:
        answers = []
        with database.connect(AUTHENTICATOR) as conn:
            for messages in rounds:
                barrier.wait(timeout=60)
                started = time.monotonic()
                item = send(conn, key, messages[n])
                answers.append(Answer(item, time.monotonic() - started))
        return answers

    with ThreadPoolExecutor(callers) as pool:
        by_caller = list(pool.map(caller, range(callers)))
    return [list(answers) for answers in zip(*by_caller, strict=True)]


def figures(by_round: list[list[Answer]]) -> RaceFigures:
    losers = [a for answers in by_round for a in answers if not a.won]
    return RaceFigures(
        rounds=len(by_round),
        rounds_with_one_winner=sum(sum(a.won for a in answers) == 1 for answers in by_round),
        losers=len(losers),
        losers_with_nearest_times=sum(a.clear for a in losers),
        other_answers=[a.item.get("error", "") for a in losers if not a.clear],
        slowest_seconds=max(a.seconds for answers in by_round for a in answers),
    )


@pytest.fixture
def open_clinic(admin: psycopg.Connection) -> Clinic:
    """Open round the clock, so rounds have slots to spare."""
    clinic_id = create_clinic(admin, "Night and Day Clinic", hours=ALWAYS_OPEN, booking_horizon_days=400)
    return Clinic(clinic_id, issue_key(admin, clinic_id))


def round_slot(n: int) -> tuple[dt.date, str]:
    """Round n's slot: a distinct half hour on days a fortnight ahead (48 a day)."""
    day = upcoming(TUESDAY, weeks_ahead=2) + dt.timedelta(days=n // 40)
    return day, f"{day}T{n % 40 // 2 + 2:02d}:{n % 2 * 30:02d}"


def booking(n: int, caller: int, start: str) -> dict[str, Any]:
    return VapiCall(customer_number=f"+4477009{n:03d}{caller:02d}").message(
        tool_call("book_appointment", {"start": start, "patient_name": f"Caller {caller} of round {n}"})
    )


def test_a_crowd_racing_for_one_slot_round_after_round_gets_one_booking_and_clear_refusals(
    database: Database, open_clinic: Clinic, admin: psycopg.Connection
) -> None:
    rounds = [[booking(n, c, round_slot(n)[1]) for c in range(CROWD)] for n in range(ROUNDS)]

    result = figures(crowd_race(database, open_clinic.key, rounds))

    print(f"\nbooking race, {CROWD} connections x {ROUNDS} rounds: {result}")
    assert (result.rounds_with_one_winner, result.losers_with_nearest_times) == (ROUNDS, ROUNDS * (CROWD - 1)), result
    assert scalar(admin, "select count(*) from public.appointments") == ROUNDS


def test_reschedules_racing_bookings_for_one_slot_get_one_winner_and_clear_refusals(
    database: Database, open_clinic: Clinic, admin: psycopg.Connection
) -> None:
    movers = CROWD // 2
    # Each mover has a booking of its own on a day of its own, away from the slots raced for.
    references = {}
    for n in range(ROUNDS):
        for c in range(movers):
            home = upcoming(TUESDAY, weeks_ahead=8) + dt.timedelta(days=n // 4)
            starts = dt.datetime.combine(home, dt.time(0), LONDON) + dt.timedelta(minutes=30 * (n % 4 * movers + c))
            references[n, c] = f"M{n:03d}{c:02d}"
            admin.execute(
                "insert into public.appointments (clinic_id, reference, patient, service, starts_at, ends_at)"
                " values (%s, %s, %s, 'Check-up', %s, %s)",
                (open_clinic.id, references[n, c], Jsonb({"name": "Mover"}), starts, starts + dt.timedelta(minutes=30)),
            )
    rounds = []
    for n in range(ROUNDS):
        start = round_slot(n)[1]
        moves = [
            VapiCall().message(tool_call("reschedule_appointment", {"reference": references[n, c], "new_start": start}))
            for c in range(movers)
        ]
        books = [booking(n, c, start) for c in range(CROWD - movers)]
        rounds.append([m for pair in zip(moves, books, strict=True) for m in pair])

    by_round = crowd_race(database, open_clinic.key, rounds)
    result = figures(by_round)

    print(f"\nreschedules racing bookings, {CROWD} connections x {ROUNDS} rounds: {result}")
    assert (result.rounds_with_one_winner, result.losers_with_nearest_times) == (ROUNDS, ROUNDS * (CROWD - 1)), result
    winners = [a.item["result"] for answers in by_round for a in answers if a.won]
    assert {w.split(":")[0] for w in winners} <= {"Booked", "Moved"}
    assert scalar(admin, "select count(*) from public.appointments") == ROUNDS * movers + sum(
        w.startswith("Booked") for w in winners
    )
