"""Vapi tool-call answers carry patient details: they are forgotten after a retention period."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from tests.conftest import Clinic, Database
from tests.daemon_harness import Backend, make_settings, running, wait_until
from tests.dates import upcoming
from tests.standins.google import GoogleStandIn
from tests.standins.postgres import AUTHENTICATOR, scalar
from tests.standins.postgrest import set_request_context
from tests.standins.vapi import Assistant

TUESDAY = 2


def age_tool_calls(admin: psycopg.Connection, clinic: Clinic, ages_in_days: dict[str, float]) -> None:
    """Store tool-call answers, as vapi_tool_call does, made the given number of days ago."""
    for tool_call_id, days in ages_in_days.items():
        admin.execute(
            "insert into public.vapi_tool_calls (clinic_id, tool_call_id, tool_name, request_hash, result, created_at)"
            " values (%s, %s, 'book_appointment', '\\x00', 'Booked: ... for Jane Doe.', now() - %s * interval '1 day')",
            (clinic.id, tool_call_id, days),
        )


def kept(admin: psycopg.Connection) -> list[str]:
    return [row[0] for row in admin.execute("select tool_call_id from public.vapi_tool_calls order by 1").fetchall()]


def purge(database: Database, older_than: str | None, limit: int = 10_000, role: str = "service_role") -> int:
    with database.connect(AUTHENTICATOR) as conn, conn.transaction():
        set_request_context(conn, role=role, path="/rpc/purge_vapi_tool_calls")
        return int(scalar(conn, "select public.purge_vapi_tool_calls(%s::interval, %s)", (older_than, limit)))


def test_purging_forgets_answers_older_than_asked_and_keeps_the_rest(
    database: Database, admin: psycopg.Connection, clinic: Clinic, assistant: Assistant
) -> None:
    assistant.book(f"{upcoming(TUESDAY)}T10:00")  # a real answer, made now
    age_tool_calls(admin, clinic, {"old-1": 45, "old-2": 31, "recent": 29, "yesterday": 1})

    assert purge(database, "30 days") == 2
    assert len(kept(admin)) == 3 and {"recent", "yesterday"} <= set(kept(admin))
    assert purge(database, "30 days") == 0


def test_purging_goes_in_batches_oldest_first(database: Database, admin: psycopg.Connection, clinic: Clinic) -> None:
    age_tool_calls(admin, clinic, {f"c{n}": 40 + n for n in range(5)})
    assert purge(database, "1 month", limit=2) == 2
    assert kept(admin) == ["c0", "c1", "c2"]
    assert purge(database, "1 month", limit=2) == 2
    assert purge(database, "1 month", limit=2) == 1


@pytest.mark.parametrize(
    ("older_than", "limit", "message"),
    [
        (None, 10, "p_older_than is required, e.g. '30 days'"),
        ("-30 days", 10, "p_older_than must be at least 1 day, not -30 days: Vapi may still retry a younger tool call"),
        ("0", 10, "p_older_than must be at least 1 day, not 00:00:00"),
        ("23 hours", 10, "p_older_than must be at least 1 day, not 23:00:00"),
        ("30 days", 0, "p_limit must be between 1 and 100000"),
        ("30 days", 1_000_000, "p_limit must be between 1 and 100000"),
    ],
)
def test_silly_retention_periods_are_refused_and_change_nothing(
    database: Database, admin: psycopg.Connection, clinic: Clinic, older_than: str | None, limit: int, message: str
) -> None:
    age_tool_calls(admin, clinic, {"old": 400, "new": 0.01})
    with pytest.raises(errors.RaiseException) as refused:
        purge(database, older_than, limit)
    assert refused.value.diag.message_primary is not None
    assert refused.value.diag.message_primary.startswith(message)
    assert kept(admin) == ["new", "old"]


def test_purging_is_for_the_service_role_only(database: Database, admin: psycopg.Connection, clinic: Clinic) -> None:
    age_tool_calls(admin, clinic, {"old": 400})
    for role in ("anon", "authenticated"):
        with pytest.raises(errors.InsufficientPrivilege):
            purge(database, "30 days", role=role)
    assert kept(admin) == ["old"]


def test_the_daemon_forgets_tool_calls_past_the_retention_setting(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic
) -> None:
    age_tool_calls(admin, clinic, {"old-1": 45, "old-2": 8.5, "recent": 6.5, "today": 0})

    with running(make_settings(backend, google, vapi_tool_call_retention_days=7)):
        wait_until(lambda: kept(admin) == ["recent", "today"], timeout=20, what="tool calls past 7 days forgotten")


def test_the_retention_setting_has_a_floor_of_a_day(backend: Backend, google: GoogleStandIn) -> None:
    assert make_settings(backend, google).vapi_tool_call_retention_days == 30
    with pytest.raises(ValueError, match="vapi_tool_call_retention_days"):
        make_settings(backend, google, vapi_tool_call_retention_days=0)
