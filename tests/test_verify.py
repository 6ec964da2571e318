"""`clinic-sync verify`: passes on a ready deployment, and fails the right check, by name, for each
broken condition; the round trip books through the Vapi RPC and leaves nothing behind."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from rich.console import Console

from daemon.cli import main
from daemon.config import Settings
from daemon.crypto import TokenCipher
from daemon.verify import (
    Report,
    Status,
    VerifyOptions,
    ipv6_only_hint,
    print_report,
    run_checks,
    transaction_pooler,
)
from tests.conftest import Clinic, Database
from tests.daemon_harness import TOKEN_KEY, Backend, connect_google, make_settings, running, settings_env
from tests.dates import upcoming
from tests.standins.clinics import create_clinic
from tests.standins.google import GoogleStandIn
from tests.standins.postgres import MIGRATOR, scalar
from tests.standins.realtime import RealtimeStandIn
from tests.standins.service import free_port
from tests.standins.supabase_rest import SupabaseRestStandIn

QUICK = VerifyOptions(feed_timeout_seconds=5.0)


@pytest.fixture
def realtime(database: Database) -> Iterator[RealtimeStandIn]:
    with RealtimeStandIn(database.dsn()) as standin:
        yield standin


def supabase_backend(rest: SupabaseRestStandIn, realtime_url: str) -> Backend:
    return Backend(
        "supabase",
        {
            "SUPABASE_URL": rest.url,
            "SUPABASE_SERVICE_ROLE_KEY": rest.service_role_key,
            "SUPABASE_ANON_KEY": rest.anon_key,
            "SUPABASE_REALTIME_URL": realtime_url,
        },
        feed=True,
    )


@pytest.fixture(params=["supabase", "postgres"])
def backend(
    request: pytest.FixtureRequest, database: Database, rest: SupabaseRestStandIn, realtime: RealtimeStandIn
) -> Backend:
    if request.param == "postgres":
        return Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)}, feed=True)
    return supabase_backend(rest, realtime.url)


@pytest.fixture
def connected(admin: psycopg.Connection, google: GoogleStandIn, clinic: Clinic) -> str:
    """A connected clinic whose (empty) calendar the daemon has mirrored just now."""
    account = connect_google(admin, google, clinic.id)
    admin.execute("select public.apply_calendar_changes(%s, '[]', null, true)", (clinic.id,))
    return account


def verify(settings: Settings, options: VerifyOptions = QUICK) -> Report:
    return asyncio.run(run_checks(settings, options))


def statuses(report: Report) -> dict[str, Status]:
    return {check.name: check.status for check in report.checks}


def the(report: Report, name: str) -> Any:
    [check] = [c for c in report.checks if c.name == name]
    return check


def test_a_ready_deployment_passes(backend: Backend, google: GoogleStandIn, connected: str) -> None:
    report = verify(make_settings(backend, google))
    assert report.passed, report.checks
    assert statuses(report) == {
        "database": Status.OK,
        "migrations": Status.OK,
        "row-level security": Status.OK,
        "doorbell": Status.OK,
        "change feed": Status.OK,
        "google: Riverside Clinic": Status.OK,
        "backlog": Status.OK,
    }
    assert connected in the(report, "google: Riverside Clinic").detail
    kind = "Realtime" if backend.name == "supabase" else "LISTEN/NOTIFY"
    assert the(report, "change feed").detail.startswith(f"{kind} subscribed")

    console = Console(file=io.StringIO(), width=200)
    print_report(report, as_json=True, console=console)
    document = json.loads(console.file.getvalue())  # type: ignore[attr-defined]
    assert document["passed"] is True
    assert [c["name"] for c in document["checks"]][:2] == ["database", "migrations"]


Breakage = Callable[[psycopg.Connection, GoogleStandIn, Clinic, str], None]


def drop_last_migration(admin: psycopg.Connection, *_: Any) -> None:
    admin.execute("delete from supabase_migrations.schema_migrations where version = '20261124000600'")


def disable_rls(admin: psycopg.Connection, *_: Any) -> None:
    admin.execute("alter table public.contacts disable row level security")


def grant_anon(admin: psycopg.Connection, *_: Any) -> None:
    admin.execute("grant select on public.appointments to anon")


def add_unconnected_clinic(admin: psycopg.Connection, *_: Any) -> None:
    create_clinic(admin, "Hillside Surgery")


def revoke_grant(admin: psycopg.Connection, google: GoogleStandIn, *_: Any) -> None:
    stored = scalar(admin, "select refresh_token_encrypted from public.calendar_connections")
    google.revoke(TokenCipher(TOKEN_KEY).decrypt(stored))


def lose_calendar(admin: psycopg.Connection, *_: Any) -> None:
    admin.execute("update public.clinics set calendar_id = 'gone@group.calendar.google.com'")


def stale_backlog(admin: psycopg.Connection, google: GoogleStandIn, clinic: Clinic, account: str) -> None:
    book(admin, clinic)
    admin.execute("update public.appointments set updated_at = now() - interval '1 hour'")


def stale_mirror(admin: psycopg.Connection, *_: Any) -> None:
    admin.execute("update public.calendar_mirrors set last_synced_at = now() - interval '1 hour'")


def unmirrored(admin: psycopg.Connection, *_: Any) -> None:
    admin.execute("delete from public.calendar_mirrors")


def unlisted_practitioner_calendar(admin: psycopg.Connection, google: GoogleStandIn, clinic: Clinic, _: str) -> None:
    admin.execute("select public.add_practitioner(%s, 'Dr Patel', null, null, 'unshared@example.com')", (clinic.id,))
    admin.execute(
        "insert into public.calendar_mirrors (clinic_id, calendar_id, last_error)"
        " values (%s, 'unshared@example.com', 'Google calendar listing failed: HTTP 404 notFound')",
        (clinic.id,),
    )


def failed_rows(admin: psycopg.Connection, google: GoogleStandIn, clinic: Clinic, account: str) -> None:
    book(admin, clinic)
    admin.execute("update public.appointments set sync_state = 'failed', last_sync_error = 'Google said no'")


def book(admin: psycopg.Connection, clinic: Clinic) -> None:
    start = f"{upcoming(2).isoformat()} 10:00 Europe/London"
    admin.execute(
        "insert into public.appointments (clinic_id, reference, patient, service, starts_at, ends_at)"
        " values (%s, 'ABC123', '{\"name\": \"Zelda\"}', 'Check-up', %s::timestamptz,"
        " %s::timestamptz + interval '30 minutes')",
        (clinic.id, start, start),
    )


@pytest.mark.parametrize(
    ("breakage", "check", "status", "detail"),
    [
        (drop_last_migration, "migrations", Status.FAIL, "1 not applied: 20261124000600"),
        (disable_rls, "row-level security", Status.FAIL, "RLS disabled on contacts"),
        (grant_anon, "row-level security", Status.FAIL, "anon holds appointments: SELECT"),
        (add_unconnected_clinic, "google: Hillside Surgery", Status.FAIL, "not connected (clinic-sync connect-google"),
        (revoke_grant, "google: Riverside Clinic", Status.FAIL, "needs re-authorisation"),
        (lose_calendar, "google: Riverside Clinic", Status.FAIL, "HTTP 404"),
        (stale_backlog, "backlog", Status.FAIL, "is the daemon running?"),
        (failed_rows, "backlog", Status.WARN, "1 failed"),
        (stale_mirror, "google: Riverside Clinic", Status.FAIL, "the assistant offers no times until it is fresh"),
        (unmirrored, "google: Riverside Clinic", Status.WARN, "has not been mirrored yet (is the daemon running?)"),
        (
            unlisted_practitioner_calendar,
            "google: Riverside Clinic",
            Status.FAIL,
            "a calendar of the clinic has never been listed: Google calendar listing failed: HTTP 404",
        ),
    ],
)
def test_each_broken_condition_fails_its_check(
    database: Database,
    admin: psycopg.Connection,
    google: GoogleStandIn,
    clinic: Clinic,
    connected: str,
    breakage: Breakage,
    check: str,
    status: Status,
    detail: str,
) -> None:
    breakage(admin, google, clinic, connected)
    backend = Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)}, feed=True)
    report = verify(make_settings(backend, google))
    found = the(report, check)
    assert found.status is status and detail in found.detail, found
    others = [c for c in report.checks if c.name != check]
    assert all(c.status is Status.OK for c in others), others
    assert report.passed is (status is not Status.FAIL)


def test_supabase_path_needs_a_live_realtime(
    admin: psycopg.Connection, google: GoogleStandIn, rest: SupabaseRestStandIn, connected: str
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    report = verify(make_settings(supabase_backend(rest, closed), google), VerifyOptions(feed_timeout_seconds=1.0))
    assert not report.passed
    assert the(report, "change feed").status is Status.FAIL
    assert "not subscribed within 1s" in the(report, "change feed").detail


def test_the_doorbell_check_names_a_missing_trigger_and_whole_rows_in_realtime(
    admin: psycopg.Connection,
    google: GoogleStandIn,
    rest: SupabaseRestStandIn,
    realtime: RealtimeStandIn,
    database: Database,
    connected: str,
) -> None:
    supabase = make_settings(supabase_backend(rest, realtime.url), google)
    direct = make_settings(Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)}, feed=True), google)
    assert the(verify(supabase), "doorbell").status is Status.OK

    # Postgres Changes would send whole rows again: a warning on either path.
    admin.execute("alter publication supabase_realtime add table public.appointments")
    for settings in (supabase, direct):
        doorbell = the(verify(settings), "doorbell")
        assert doorbell.status is Status.WARN and "patient details included" in doorbell.detail, doorbell
    admin.execute("alter publication supabase_realtime drop table public.appointments")

    # Each path fails without its own trigger, and does not need the other's.
    admin.execute("alter table public.appointments disable trigger appointments_broadcast_calendar_sync")
    report = verify(supabase)
    assert (
        the(report, "doorbell").status is Status.FAIL
        and "appointments_broadcast_calendar_sync" in the(report, "doorbell").detail
    )
    assert not report.passed
    assert the(verify(direct), "doorbell").status is Status.OK
    admin.execute("alter table public.appointments enable trigger appointments_broadcast_calendar_sync")
    admin.execute("drop trigger appointments_notify_calendar_sync on public.appointments")
    assert the(verify(direct), "doorbell").status is Status.FAIL
    assert the(verify(supabase), "doorbell").status is Status.OK


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres.abcdefghijklmnopqrst:pw@aws-0-eu-west-2.pooler.supabase.com:6543/postgres",
        "postgresql://postgres:pw@db.abcdefghijklmnopqrst.supabase.co:6543/postgres",
        "host=127.0.0.1 port=6543 dbname=postgres user=postgres",
    ],
)
def test_a_transaction_mode_pooler_on_the_direct_path_fails_with_the_reason(google: GoogleStandIn, url: str) -> None:
    report = verify(make_settings(Backend("postgres", {"DATABASE_URL": url}, feed=True), google))
    database = the(report, "database")
    assert database.status is Status.FAIL and not report.passed
    assert "transaction-mode pooler" in database.detail and "LISTEN/NOTIFY" in database.detail
    assert "port 5432" in database.detail and "pw" not in database.detail
    assert {c.status for c in report.checks[1:]} == {Status.SKIP}


def test_the_session_mode_pooler_is_fine_and_the_supabase_path_only_warns(
    google: GoogleStandIn, rest: SupabaseRestStandIn, realtime: RealtimeStandIn, database: Database, connected: str
) -> None:
    pooler = "postgresql://postgres.abcdefghijklmnopqrst:pw@aws-0-eu-west-2.pooler.supabase.com:6543/postgres"
    backend = supabase_backend(rest, realtime.url)
    report = verify(make_settings(Backend(backend.name, {**backend.env, "DATABASE_URL": pooler}, feed=True), google))
    assert (
        the(report, "database url").status is Status.WARN
        and "clinic-sync migrate" in the(report, "database url").detail
    )
    assert report.passed  # the daemon itself does not use DATABASE_URL on the Supabase path
    session = database.dsn(MIGRATOR)  # what a session-mode or direct connection looks like: port 5432 or any other
    report = verify(make_settings(Backend("postgres", {"DATABASE_URL": session}, feed=True), google))
    assert report.passed and "database url" not in statuses(report)


def test_an_unreachable_direct_host_names_its_ipv6_only_address() -> None:
    assert "only an IPv6 address" in ipv6_only_hint(
        "postgresql://postgres:pw@db.abcdefghijklmnopqrst.supabase.co:5432/postgres"
    )
    assert ipv6_only_hint("postgresql://postgres.abc:pw@aws-0-eu-west-2.pooler.supabase.com:5432/postgres") == ""
    assert transaction_pooler("postgresql://postgres.abc:pw@aws-0-eu-west-2.pooler.supabase.com:5432/postgres") is None


def test_an_unreachable_database_fails_and_skips_the_rest(google: GoogleStandIn) -> None:
    backend = Backend("postgres", {"DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"})
    report = verify(make_settings(backend, google), VerifyOptions(connect_timeout_seconds=1))
    assert the(report, "database").status is Status.FAIL
    assert "no connection within 1s" in the(report, "database").detail
    assert {c.status for c in report.checks[1:]} == {Status.SKIP}
    assert not report.passed


def test_cli_exit_code_and_json(
    monkeypatch: pytest.MonkeyPatch,
    database: Database,
    admin: psycopg.Connection,
    google: GoogleStandIn,
    connected: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)}, feed=True)
    for name, value in settings_env(backend, google).items():
        monkeypatch.setenv(name, value)
    assert main(["verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True

    admin.execute("grant select on public.appointments to anon")
    assert main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "fail row-level security: anon holds appointments: SELECT" in out and "not ready" in out

    assert main(["verify", "--round-trip"]) == 2
    assert "--round-trip needs --clinic" in capsys.readouterr().err


def test_round_trip_books_through_vapi_reaches_google_and_cleans_up(
    admin: psycopg.Connection,
    google: GoogleStandIn,
    rest: SupabaseRestStandIn,
    realtime: RealtimeStandIn,
    clinic: Clinic,
    connected: str,
) -> None:
    settings = make_settings(supabase_backend(rest, realtime.url), google)
    keys_before = scalar(admin, "select count(*) from public.clinic_api_keys")
    with running(settings):
        report = verify(settings, VerifyOptions(round_trip_clinic=clinic.id, budget_seconds=20))
    trip = the(report, "round trip")
    assert trip.status is Status.OK, trip
    assert trip.data["latency_seconds"] < 20
    assert scalar(admin, "select count(*) from public.appointments") == 0  # removed after its event was
    [event] = google.events(connected)
    assert event["status"] == "cancelled" and event["summary"].endswith("Readiness Check")
    assert scalar(admin, "select count(*) from public.clinic_api_keys") == keys_before + 1
    assert scalar(admin, "select count(*) from public.clinic_api_keys where revoked_at is null") == keys_before


def test_round_trip_without_a_daemon_fails_and_still_cancels(
    admin: psycopg.Connection,
    google: GoogleStandIn,
    rest: SupabaseRestStandIn,
    realtime: RealtimeStandIn,
    clinic: Clinic,
    connected: str,
) -> None:
    settings = make_settings(supabase_backend(rest, realtime.url), google)
    report = verify(settings, VerifyOptions(round_trip_clinic=clinic.id, budget_seconds=1))
    trip = the(report, "round trip")
    assert trip.status is Status.FAIL and "not in the calendar after 1s: is the daemon running?" in trip.detail
    assert not report.passed
    rows = admin.execute("select status from public.appointments").fetchall()
    assert rows == [("cancelled",)]  # nothing left that a patient could be told is booked
    assert scalar(admin, "select count(*) from public.clinic_api_keys where revoked_at is null") == 1


def test_round_trip_needs_the_vapi_path(
    database: Database, google: GoogleStandIn, clinic: Clinic, connected: str
) -> None:
    backend = Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)}, feed=True)
    report = verify(make_settings(backend, google), VerifyOptions(round_trip_clinic=clinic.id, feed_timeout_seconds=5))
    trip = the(report, "round trip")
    assert trip.status is Status.FAIL and "needs SUPABASE_URL and SUPABASE_ANON_KEY" in trip.detail
