"""The shared Google budget and fair claiming, in SQL (migration google_budget), called as the daemon
calls it: as the service role, through PostgREST's request context."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from daemon.budget import GoogleBudget
from daemon.domain.google_budget import BudgetExhausted, BudgetLimits
from daemon.store import PostgresStore
from tests.conftest import Clinic, Database
from tests.standins.clinics import create_clinic
from tests.standins.postgres import AUTHENTICATOR, MIGRATOR, scalar
from tests.standins.postgrest import set_request_context
from tests.test_sync_queue import add_appointments, as_service, connect_google

LIMITS = {"p_account_limit": 5, "p_project_limit": 100}


@pytest.fixture
def service(database: Database) -> Any:
    with database.connect(AUTHENTICATOR) as conn:
        yield conn


def clinic_with_backlog(admin: psycopg.Connection, name: str, count: int, account: str | None = None) -> uuid.UUID:
    clinic_id = create_clinic(admin, name)
    connect_google(admin, clinic_id)
    if account is not None:
        admin.execute(
            "update public.calendar_connections set google_account = %s where clinic_id = %s", (account, clinic_id)
        )
    add_appointments(admin, clinic_id, count)
    return clinic_id


def claim(service: psycopg.Connection, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = as_service(service, "claim_appointments", p_owner="r1", **params)
    return rows


def by_clinic(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(row["clinic_id"]) for row in rows)


def spent(admin: psycopg.Connection, key: str) -> int:
    return int(
        scalar(admin, "select coalesce(sum(requests), 0) from private.google_requests where budget_key = %s", (key,))
    )


def test_claims_go_round_the_clinics_instead_of_draining_the_oldest_backlog_first(
    service: psycopg.Connection, admin: psycopg.Connection
) -> None:
    busy = clinic_with_backlog(admin, "Busy Clinic", 40)
    admin.execute("update public.appointments set next_attempt_at = now() - interval '1 hour'")  # older work
    small = [clinic_with_backlog(admin, f"Small Clinic {n}", 3) for n in range(3)]
    rows = claim(service, p_limit=8, p_per_clinic=10)
    # Rank within each clinic first: every clinic's oldest row, then every clinic's second, ...
    assert by_clinic(rows) == {str(busy): 2, **{str(s): 2 for s in small}}


def test_a_clinic_is_claimed_only_as_far_as_its_account_has_budget(
    service: psycopg.Connection, admin: psycopg.Connection
) -> None:
    busy = clinic_with_backlog(admin, "Busy Clinic", 20, account="Busy@Example.com")
    quiet = clinic_with_backlog(admin, "Quiet Clinic", 2, account="quiet@example.com")
    first = claim(service, p_limit=50, p_per_clinic=50, **LIMITS)
    assert by_clinic(first) == {str(busy): 5, str(quiet): 2}
    assert {row["budget_key"] for row in first} == {"busy@example.com", "quiet@example.com"}
    assert spent(admin, "busy@example.com") == 5
    # The busy account's window is full: it is not claimed again (its rows stay pending, no lease held).
    assert claim(service, p_limit=50, p_per_clinic=50, **LIMITS) == []
    assert (
        scalar(
            admin, "select count(*) from public.appointments where clinic_id = %s and sync_state = 'pending'", (busy,)
        )
        == 15
    )


def test_clinics_sharing_a_google_account_share_its_budget(
    service: psycopg.Connection, admin: psycopg.Connection
) -> None:
    one = clinic_with_backlog(admin, "North Clinic", 10, account="agency@example.com")
    two = clinic_with_backlog(admin, "South Clinic", 10, account="agency@example.com")
    rows = claim(service, p_limit=50, p_per_clinic=50, **LIMITS)
    assert sum(by_clinic(rows).values()) == 5 and set(by_clinic(rows)) == {str(one), str(two)}


def test_the_project_budget_caps_every_account_together(service: psycopg.Connection, admin: psycopg.Connection) -> None:
    for n in range(4):
        clinic_with_backlog(admin, f"Clinic {n}", 5, account=f"clinic{n}@example.com")
    rows = claim(service, p_limit=100, p_per_clinic=50, p_account_limit=50, p_project_limit=7)
    assert len(rows) == 7
    assert max(by_clinic(rows).values()) - min(by_clinic(rows).values()) <= 1  # spread, not one clinic first


def test_the_window_slides_over_sixty_seconds(service: psycopg.Connection, admin: psycopg.Connection) -> None:
    clinic_with_backlog(admin, "Clinic", 10, account="a@example.com")

    def reserved(seconds_ago: float, requests: int) -> None:
        admin.execute("delete from private.google_requests")
        admin.execute(
            "insert into private.google_requests (budget_key, reserved_at, usable_until, requests)"
            " values ('a@example.com', now() - make_interval(secs => %s + 2), now() - make_interval(secs => %s), %s)",
            (seconds_ago, seconds_ago, requests),
        )

    reserved(58, 4)  # its requests may share a window with one sent now
    assert len(claim(service, p_limit=10, p_per_clinic=10, **LIMITS)) == 1
    admin.execute("update public.appointments set sync_state = 'pending', next_attempt_at = now(), lease_owner = null")
    reserved(62, 5)  # out of every window that can hold a request sent now
    assert len(claim(service, p_limit=10, p_per_clinic=10, **LIMITS)) == 5


def test_requests_given_back_are_budget_again(service: psycopg.Connection, admin: psycopg.Connection) -> None:
    clinic_with_backlog(admin, "Clinic", 10, account="a@example.com")
    first = claim(service, p_limit=10, p_per_clinic=10, **LIMITS)
    assert len(first) == 5 and len({row["budget_entry"] for row in first}) == 1
    returns = Jsonb([{"entry": first[0]["budget_entry"], "requests": 2}])
    assert len(claim(service, p_limit=10, p_per_clinic=10, p_returns=returns, **LIMITS)) == 2
    assert spent(admin, "a@example.com") == 5


def test_two_replicas_claiming_at_once_never_share_out_more_than_the_budget(
    database: Database, admin: psycopg.Connection
) -> None:
    for n in range(3):
        clinic_with_backlog(admin, f"Clinic {n}", 30, account="shared@example.com")
    taken: list[int] = []
    barrier = threading.Barrier(6)

    def replica(owner: str) -> None:
        with database.connect(AUTHENTICATOR) as conn:
            barrier.wait(timeout=10)
            for _ in range(5):
                rows = as_service(
                    conn,
                    "claim_appointments",
                    p_owner=owner,
                    p_limit=4,
                    p_per_clinic=4,
                    p_account_limit=20,
                    p_project_limit=1000,
                )
                taken.append(len(rows))

    threads = [threading.Thread(target=replica, args=(f"r{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(taken) == 20
    assert spent(admin, "shared@example.com") == 20


def test_a_throttled_account_is_held_back_for_every_replica(
    service: psycopg.Connection, admin: psycopg.Connection
) -> None:
    limited = clinic_with_backlog(admin, "Limited Clinic", 3, account="limited@example.com")
    other = clinic_with_backlog(admin, "Other Clinic", 3, account="other@example.com")
    as_service(
        service,
        "throttle_google_requests",
        p_clinic_id=limited,
        p_seconds=30,
        p_max_seconds=60,
        p_reason="userRateLimitExceeded",
    )
    assert by_clinic(claim(service, p_limit=10, **LIMITS)) == {str(other): 3}
    waiting = as_service(service, "reserve_google_requests", p_clinic_id=limited, p_requests=1, **LIMITS)
    assert waiting[0]["granted"] == 0 and 25 < waiting[0]["retry_after_seconds"] <= 30

    # Another clinic on the same account is held back too; the throttle ends for every replica at once.
    sibling = clinic_with_backlog(admin, "Sibling Clinic", 2, account="limited@example.com")
    assert claim(service, p_limit=10, **LIMITS) == []
    admin.execute("update private.google_throttles set throttled_until = now() - interval '1 second'")
    assert by_clinic(claim(service, p_limit=10, **LIMITS)) == {str(limited): 3, str(sibling): 2}


def test_reservations_on_demand_grant_what_is_left_and_say_when_to_ask_again(
    service: psycopg.Connection, admin: psycopg.Connection, clinic: Clinic
) -> None:
    connect_google(admin, clinic.id)

    def reserve(requests: int) -> dict[str, Any]:
        [row] = as_service(service, "reserve_google_requests", p_clinic_id=clinic.id, p_requests=requests, **LIMITS)
        return dict(row)

    assert reserve(3)["granted"] == 3
    partial = reserve(3)
    assert partial["granted"] == 2 and partial["entry"] is not None
    spent_out = reserve(1)
    assert spent_out["granted"] == 0 and spent_out["entry"] is None
    assert 55 < spent_out["retry_after_seconds"] <= 62


def test_no_budget_arguments_means_no_budget(service: psycopg.Connection, admin: psycopg.Connection) -> None:
    clinic_with_backlog(admin, "Clinic", 12, account="a@example.com")
    rows = claim(service, p_limit=50, p_per_clinic=50)
    assert len(rows) == 12 and {row["budget_entry"] for row in rows} == {None}
    assert scalar(admin, "select count(*) from private.google_requests") == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"p_account_limit": 5}, "give both"),
        ({"p_account_limit": 0, "p_project_limit": 5}, "per-account limit must be 1 to 100000"),
        ({"p_account_limit": 5, "p_project_limit": 5, "p_hold_seconds": 0}, "hold must be 0.1 to 60"),
        ({"p_account_limit": 5, "p_project_limit": 5, "p_returns": {"entry": 1}}, "returns must be a JSON array"),
    ],
)
def test_bad_budget_arguments_are_refused_and_change_nothing(
    service: psycopg.Connection, admin: psycopg.Connection, params: dict[str, Any], message: str
) -> None:
    clinic_with_backlog(admin, "Clinic", 2, account="a@example.com")
    with pytest.raises(errors.RaiseException, match=message):
        claim(service, p_limit=5, **params)
    assert scalar(admin, "select count(*) from public.appointments where sync_state = 'pending'") == 2
    assert scalar(admin, "select count(*) from private.google_requests") == 0


def test_the_snapshot_names_the_busiest_accounts_and_the_clinics_held_back(
    service: psycopg.Connection, admin: psycopg.Connection
) -> None:
    clinic_with_backlog(admin, "Busy Clinic", 20, account="busy@example.com")
    clinic_with_backlog(admin, "Quiet Clinic", 1, account="quiet@example.com")
    claim(service, p_limit=50, p_per_clinic=50, **LIMITS)
    snapshot = as_service(service, "google_budget_snapshot", p_account_limit=5, p_project_limit=100, p_top=1)
    assert snapshot == {
        "project_used": 6,
        "project_limit": 100,
        "account_limit": 5,
        "accounts": [{"key": "busy@example.com", "used": 5}],
        "throttled": 0,
        "held_back_clinics": 1,
        "next_budget_seconds": snapshot["next_budget_seconds"],
    }
    assert 55 < snapshot["next_budget_seconds"] <= 62


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_the_budget_is_the_service_roles_alone(database: Database, clinic: Clinic, role: str) -> None:
    with database.connect(AUTHENTICATOR) as conn:
        for call in (
            "select * from public.reserve_google_requests(%s, 1, 5, 5)",
            "select public.throttle_google_requests(%s, 5, 10, 'x')",
        ):
            with pytest.raises(errors.InsufficientPrivilege), conn.transaction():
                set_request_context(conn, role=role, path="/rpc/reserve_google_requests")
                conn.execute(call, (clinic.id,))
        with pytest.raises(errors.InsufficientPrivilege), conn.transaction():
            set_request_context(conn, role=role, path="/rpc/google_budget_snapshot")
            conn.execute("select public.google_budget_snapshot(5, 5)")


def test_refusals_that_keep_coming_double_the_accounts_hold(
    service: psycopg.Connection, admin: psycopg.Connection
) -> None:
    limited = clinic_with_backlog(admin, "Limited Clinic", 1, account="limited@example.com")

    def refused() -> float:
        as_service(
            service, "throttle_google_requests", p_clinic_id=limited, p_seconds=5, p_max_seconds=12, p_reason="x"
        )
        return float(scalar(admin, "select hold_seconds from private.google_throttles"))

    def hold_ended(seconds_ago: int) -> None:
        admin.execute(
            "update private.google_throttles set throttled_until = now() - make_interval(secs => %s)", (seconds_ago,)
        )

    assert refused() == 5
    assert refused() == 5  # refusals of requests already in flight when it was held back
    hold_ended(1)
    assert refused() == 10  # refused again right after the hold: Google still counts a full window
    hold_ended(1)
    assert refused() == 12  # at most the maximum
    hold_ended(61)
    assert refused() == 5  # a refusal long after starts over
    with pytest.raises(errors.RaiseException, match="at most the maximum"):
        as_service(
            service, "throttle_google_requests", p_clinic_id=limited, p_seconds=20, p_max_seconds=12, p_reason="x"
        )


def test_requests_reserved_on_demand_from_many_threads_each_go_to_the_thread_that_asked(
    database: Database, admin: psycopg.Connection
) -> None:
    """Worker threads spending for one clinic at once: each reservation serves the thread that made it (one
    thread must not take another's on its way back), and every request is counted once."""
    clinic_id = clinic_with_backlog(admin, "Clinic", 0, account="busy@example.com")
    refused: list[BudgetExhausted] = []

    async def scenario() -> None:
        store = PostgresStore(database.dsn(MIGRATOR))
        await store.open()
        budget = GoogleBudget(store, BudgetLimits(1000, 1000), asyncio.get_running_loop())

        def worker() -> None:
            for _ in range(25):
                try:
                    budget.spend(clinic_id)
                except BudgetExhausted as error:
                    refused.append(error)

        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(pool, worker) for _ in range(8)))
        finally:
            await store.close()

    asyncio.run(scenario())
    assert refused == []
    assert spent(admin, "busy@example.com") == 200
