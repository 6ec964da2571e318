"""Google's quotas, held by replicas of the real daemon against a Google stand-in that enforces them on
sliding 60 s windows (per account and per project, counting every calendar request of every kind)."""

from __future__ import annotations

import contextlib
import time
import uuid

import psycopg

from tests.conftest import Database
from tests.daemon_harness import Backend, connect_google, make_settings, running, wait_until
from tests.standins.clinics import create_clinic
from tests.standins.google import API_PATH, GoogleStandIn, RecordedRequest
from tests.standins.postgres import MIGRATOR, scalar
from tests.test_sync_queue import add_appointments

# The busy mirror lists every calendar often, so its requests compete with the pushes for the budget.
BUSY = {"mirror_interval_seconds": 0.5, "mirror_after_push_seconds": 0.1, "sync_poll_seconds": 0.2}


def direct(database: Database) -> Backend:
    return Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)})


def clinic_with_account(admin: psycopg.Connection, google: GoogleStandIn, name: str) -> tuple[uuid.UUID, str]:
    clinic_id = create_clinic(admin, name)
    return clinic_id, connect_google(admin, google, clinic_id)


def synced(admin: psycopg.Connection, clinic_id: uuid.UUID) -> int:
    return int(
        scalar(
            admin,
            "select count(*) from public.appointments where clinic_id = %s and sync_state = 'synced'",
            (clinic_id,),
        )
    )


def throttled_accounts(admin: psycopg.Connection) -> int:
    return int(scalar(admin, "select (public.google_budget_snapshot(1, 1) ->> 'throttled')::int"))


def held_back(admin: psycopg.Connection, account_limit: int, project_limit: int) -> int:
    query = "select (public.google_budget_snapshot(%s, %s) ->> 'held_back_clinics')::int"
    return int(scalar(admin, query, (account_limit, project_limit)))


def calendar_requests(google: GoogleStandIn, account: str | None = None) -> list[RecordedRequest]:
    """Calendar API requests (not the token endpoint's), of one account or all."""
    return [r for r in google.requests() if r.path.startswith(API_PATH) and account in (None, r.account)]


def refusals(google: GoogleStandIn) -> int:
    return sum(1 for r in calendar_requests(google) if r.status == 403)


def test_three_replicas_and_a_burst_at_one_clinic_stay_within_the_account_limit(
    database: Database, admin: psycopg.Connection, google: GoogleStandIn
) -> None:
    google.requests_per_minute = 40  # Google enforces exactly what the daemon is told
    busy, account = clinic_with_account(admin, google, "Busy Clinic")
    add_appointments(admin, busy, 150)
    settings = make_settings(direct(database), google, google_requests_per_minute=40, **BUSY)
    with contextlib.ExitStack() as stack:
        runners = [stack.enter_context(running(settings, owner=f"replica-{n}")) for n in range(3)]
        # Held back: the account's window is full, so nothing of the clinic is claimed any more.
        wait_until(lambda: held_back(admin, 40, 9000) == 1, what="the busy clinic held back for its account's budget")
        # Every replica's metrics say so, from the shared budget.
        for runner in runners:
            wait_until(
                lambda: "calendar_sync_clinics_held_back 1.0" in runner.daemon.metrics.render().decode(),  # noqa: B023
                what="the held-back clinic in the metrics",
            )
        exposition = runners[0].daemon.metrics.render().decode()
        assert f'calendar_sync_google_requests_in_window{{account="{account}",budget="account"}} 40.0' in exposition
    # Pushes and the mirror's listings together (every kind of request) never exceed the limit.
    assert google.peak_requests(account) <= 40
    assert refusals(google) == 0  # and Google never had to refuse one
    listings = sum(1 for r in calendar_requests(google, account) if r.method == "GET")
    assert synced(admin, busy) + listings >= 36  # the budget went to Google, little of it unused
    assert scalar(admin, "select count(*) from public.appointments where sync_state = 'failed'") == 0


def test_three_replicas_and_sixty_clinics_stay_within_the_project_limit(
    database: Database, admin: psycopg.Connection, google: GoogleStandIn
) -> None:
    google.project_requests_per_minute = 60
    clinics = [clinic_with_account(admin, google, f"Clinic {n:02d}")[0] for n in range(60)]
    for clinic_id in clinics:
        add_appointments(admin, clinic_id, 2)
    settings = make_settings(direct(database), google, google_project_requests_per_minute=60, **BUSY)
    with contextlib.ExitStack() as stack:
        for n in range(3):
            stack.enter_context(running(settings, owner=f"replica-{n}"))
        wait_until(lambda: held_back(admin, 500, 60) > 0, what="clinics held back for the project's budget")
    assert google.peak_requests() <= 60
    assert refusals(google) == 0
    assert scalar(admin, "select count(*) from public.appointments where sync_state = 'synced'") >= 30


def test_small_clinics_reach_google_at_once_while_a_big_backlog_drains_at_its_quota(
    database: Database, admin: psycopg.Connection, google: GoogleStandIn
) -> None:
    google.latency = 0.1  # Google answering in 100 ms
    google.requests_per_minute = 100
    big, big_account = clinic_with_account(admin, google, "Big Clinic")
    small = [clinic_with_account(admin, google, f"Small Clinic {n}") for n in range(3)]
    add_appointments(admin, big, 400)
    settings = make_settings(direct(database), google, google_requests_per_minute=100, mirror_enabled=False)
    with running(settings):
        wait_until(lambda: synced(admin, big) >= 30, what="the big backlog draining")
        booked_at = time.monotonic()
        for clinic_id, _ in small:
            add_appointments(admin, clinic_id, 10)
        wait_until(
            lambda: all(synced(admin, clinic_id) == 10 for clinic_id, _ in small),
            timeout=30,
            what="the small clinics' bookings in their calendars",
        )
        wait_until(lambda: synced(admin, big) >= 95, what="the big clinic's quota spent")
    for _, account in small:
        inserts = [r.at for r in calendar_requests(google, account) if r.method == "POST"]
        assert len(inserts) == 10
        assert max(inserts) - booked_at <= 2.0, f"{account}: {max(inserts) - booked_at:.2f}s"
    assert google.peak_requests(big_account) <= 100
    assert refusals(google) == 0


def test_a_rate_limit_answer_holds_the_account_back_for_every_replica(
    database: Database, admin: psycopg.Connection, google: GoogleStandIn
) -> None:
    google.requests_per_minute = 10  # Google allows less than the daemon was told
    limited, limited_account = clinic_with_account(admin, google, "Limited Clinic")
    steady, _ = clinic_with_account(admin, google, "Steady Clinic")
    add_appointments(admin, limited, 60)
    add_appointments(admin, steady, 5)
    settings = make_settings(
        direct(database),
        google,
        google_requests_per_minute=100,
        mirror_enabled=False,
        google_rate_limit_hold_seconds=10,
    )
    with contextlib.ExitStack() as stack:
        runners = [stack.enter_context(running(settings, owner=f"replica-{n}")) for n in range(3)]
        wait_until(lambda: throttled_accounts(admin) == 1, what="the account throttled in the database")
        first_refusal = min(r.at for r in calendar_requests(google, limited_account) if r.status == 403)
        # Every replica keeps claiming (the limited clinic's refused rows are due again within half a second,
        # the steady clinic's are all synced) while the account is held back.
        claims = [runner.daemon.claims for runner in runners]
        wait_until(
            lambda: all(r.daemon.claims >= n + 15 for r, n in zip(runners, claims, strict=True)),
            what="fifteen more claims by every replica",
        )
    late = [r for r in calendar_requests(google, limited_account) if r.at > first_refusal + 1.0]
    assert late == []  # after the first refusal (and what was already in flight), nobody asked again
    assert synced(admin, steady) == 5
    assert scalar(admin, "select reason from private.google_throttles") == "userRateLimitExceeded"
    assert scalar(admin, "select count(*) from public.appointments where sync_state = 'failed'") == 0
