"""The change feed: a booking wakes the daemon at once, outages lose nothing, floods coalesce.

The timer sweep is set to a minute here, so anything synced within seconds was picked up by the
feed (a change, or the sweep that follows every (re)subscription), never by the timer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from daemon.feed import FEED_APPLICATION_NAME, FeedState
from tests.conftest import Clinic, Database
from tests.daemon_harness import (
    Backend,
    DaemonThread,
    all_synced,
    connect_google,
    make_settings,
    running,
    sync_states,
    wait_until,
)
from tests.dates import upcoming
from tests.standins.google import GoogleStandIn
from tests.standins.postgres import MIGRATOR, scalar
from tests.standins.vapi import Assistant

TUESDAY = 2
NO_TIMER = {"sync_poll_seconds": 60}


@pytest.fixture
def backend(database: Database) -> Backend:
    return Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)}, feed=True)


@pytest.fixture
def connected(admin: psycopg.Connection, google: GoogleStandIn, clinic: Clinic) -> Clinic:
    connect_google(admin, google, clinic.id)
    return clinic


def book(assistant: Assistant, clock: str) -> None:
    result = assistant.use("book_appointment", {"start": f"{upcoming(TUESDAY)}T{clock}", "patient_name": "Jo"})
    assert "result" in result, result


@pytest.fixture
def daemon(backend: Backend, google: GoogleStandIn) -> Iterator[DaemonThread]:
    with running(make_settings(backend, google, **NO_TIMER)) as runner:
        wait_until(
            lambda: runner.daemon.feed is not None and runner.daemon.feed.state is FeedState.SUBSCRIBED,
            what="the feed subscribed",
        )
        yield runner


def test_a_booking_wakes_the_daemon_without_waiting_for_the_timer(
    daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, connected: Clinic
) -> None:
    started = time.monotonic()
    book(assistant, "10:00")
    wait_until(all_synced(admin), timeout=5, what="the booking synced by the doorbell")
    assert time.monotonic() - started < 5  # the timer would have taken a minute
    assert daemon.daemon.feed is not None and daemon.daemon.feed.last_change_at is not None


def test_bookings_made_while_the_listener_is_down_are_synced_after_it_reconnects(
    daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, connected: Clinic
) -> None:
    feed = daemon.daemon.feed
    assert feed is not None and feed.subscriptions == 1
    killed = scalar(
        admin,
        "select count(pg_terminate_backend(pid)) from pg_stat_activity where application_name = %s",
        (FEED_APPLICATION_NAME,),
    )
    assert killed == 1
    book(assistant, "10:00")  # nobody is listening: this notification is lost
    book(assistant, "11:00")
    wait_until(lambda: feed.subscriptions == 2, what="the feed resubscribed")
    wait_until(all_synced(admin), timeout=5, what="the sweep after resubscribing")
    assert sync_states(admin) == {"synced": 2}


def test_a_flood_of_changes_does_not_make_a_flood_of_claims(
    daemon: DaemonThread, admin: psycopg.Connection, connected: Clinic
) -> None:
    before = daemon.daemon.claims
    started = time.monotonic()
    with admin.pipeline(), admin.cursor() as cursor:
        for n in range(200):  # 200 separate commits (autocommit), pipelined: a burst of doorbells
            cursor.execute(
                "insert into public.appointments (clinic_id, reference, patient, service, starts_at, ends_at)"
                " values (%s, %s, '{\"name\": \"Pat\"}', 'Check-up', '2031-01-07 08:00Z'::timestamptz"
                " + make_interval(mins => 30 * %s), '2031-01-07 08:30Z'::timestamptz + make_interval(mins => 30 * %s))",
                (connected.id, f"F{n:05d}", n, n),
            )
    burst = time.monotonic() - started
    wait_until(all_synced(admin), timeout=30, what="the flood synced")
    claims = daemon.daemon.claims - before
    # Doorbells that ring while a claim runs, or within the coalescing window, merge into one
    # more claim; the rest is the backlog taken in batches of at least half the workers (8).
    assert claims <= 200 / 8 + 5, (claims, f"burst took {burst:.3f}s")
