"""Booking-to-calendar latency: from a booking's commit to Google receiving its insert.

    .venv/bin/python -m bench.feed_latency [--bookings 200] [--rate 20] [--clinics 10] [--sweep-seconds 1]
                                           [--paths postgres,supabase] [--keys new|legacy]

Bookings go through `vapi_tool_call` at a steady rate (as PostgREST runs it); the daemon runs
in this process against the local Google stand-in (no added latency) and pushes them. Latency
per booking = the stand-in's `created` stamp of the event minus the moment the booking's
transaction had committed. Measured twice per database path: with the change feed, and with
the feed off so only the timer sweep (every --sweep-seconds) finds work. The Supabase path's
feed is Realtime's Broadcast from Database (ids only, on a private topic); the daemon holds the
project's secret key (`--keys new`, the default) or its legacy service_role JWT key, on a
project whose legacy keys are switched off with `new`. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from loguru import logger

from daemon.calendar import event_id_for
from daemon.config import DEFAULT_MIGRATIONS_DIR
from daemon.feed import FeedState
from daemon.migrations import apply
from tests.daemon_harness import Backend, DaemonThread, connect_google, make_settings, wait_until
from tests.dates import upcoming
from tests.standins.clinics import create_clinic, issue_key
from tests.standins.google import GoogleStandIn
from tests.standins.postgres import AUTHENTICATOR, MIGRATOR, ThrowawayPostgres
from tests.standins.realtime import RealtimeStandIn
from tests.standins.supabase_rest import SupabaseRestStandIn
from tests.standins.vapi import Assistant, VapiCall

ALWAYS_OPEN = {day: [("00:00", "24:00")] for day in range(1, 8)}


@dataclass
class Run:
    path: str
    mode: str
    latencies_ms: list[float]

    def row(self) -> str:
        ordered = sorted(self.latencies_ms)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return (
            f"{self.path:<10}{self.mode:<16}{len(ordered):>9}{statistics.median(ordered):>10.1f}"
            f"{p99:>10.1f}{ordered[-1]:>10.1f}"
        )


@contextmanager
def database(pg: ThrowawayPostgres, name: str) -> Iterator[str]:
    pg.create_database(name)
    pg.bootstrap_supabase(name)
    apply(pg.dsn(name, MIGRATOR), DEFAULT_MIGRATIONS_DIR)
    try:
        yield name
    finally:
        pg.drop_database(name)


@contextmanager
def backend_for(path: str, pg: ThrowawayPostgres, dbname: str, keys: str) -> Iterator[Backend]:
    if path == "postgres":
        yield Backend("postgres", {"DATABASE_URL": pg.dsn(dbname, MIGRATOR)}, feed=True)
        return
    legacy = keys == "legacy"
    with (
        SupabaseRestStandIn(pg.dsn(dbname, AUTHENTICATOR), legacy_keys=legacy) as rest,
        RealtimeStandIn(pg.dsn(dbname), legacy_keys=legacy) as realtime,
    ):
        yield Backend(
            "supabase",
            {
                "SUPABASE_URL": rest.url,
                "SUPABASE_SERVICE_ROLE_KEY": rest.service_role_key if legacy else rest.secret_key,
                "SUPABASE_REALTIME_URL": realtime.url,
            },
            feed=True,
        )


def measure(
    pg: ThrowawayPostgres, path: str, feed: bool, bookings: int, rate: float, sweep: float, clinics: int, keys: str
) -> Run:
    with (
        database(pg, f"bench_{path}_{int(feed)}") as dbname,
        GoogleStandIn() as google,
        psycopg.connect(pg.dsn(dbname), autocommit=True) as admin,
        psycopg.connect(pg.dsn(dbname, AUTHENTICATOR), autocommit=True) as gateway,
        backend_for(path, pg, dbname, keys) as backend,
    ):
        accounts, assistants = [], []
        for n in range(clinics):  # spread over clinics: one clinic alone is held to Google's 10 requests/s
            clinic_id = create_clinic(admin, f"Bench Clinic {n}", hours=ALWAYS_OPEN, booking_horizon_days=730)
            accounts.append(connect_google(admin, google, clinic_id))
            assistants.append(Assistant(gateway, issue_key(admin, clinic_id), VapiCall()))
        overrides = {"sync_poll_seconds": 30} if feed else {"sync_poll_seconds": sweep}
        runner = DaemonThread(make_settings(backend, google, feed_enabled=feed, **overrides)).start()
        try:
            if feed:
                wait_until(
                    lambda: runner.daemon.feed is not None and runner.daemon.feed.state is FeedState.SUBSCRIBED,
                    what="the feed",
                )
            committed = book_steadily(assistants, admin, bookings, rate)
            wait_until(
                lambda: sum(len(google.events(a)) for a in accounts) == bookings, timeout=120, what="every event"
            )
        finally:
            runner.stop()
        created = {
            e["id"]: dt.datetime.fromisoformat(e["created"].replace("Z", "+00:00")).timestamp()
            for account in accounts
            for e in google.events(account)
        }
        latencies = [(created[event_id_for(appointment)] - at) * 1000 for appointment, at in committed.items()]
        return Run(path, "feed" if feed else f"sweep ({sweep:g} s)", latencies)


def book_steadily(
    assistants: list[Assistant], admin: psycopg.Connection, count: int, rate: float
) -> dict[uuid.UUID, float]:
    """Book `count` appointments at `rate` per second, round-robin over the clinics' assistants;
    return when each one's transaction committed."""
    day = upcoming(3, weeks_ahead=4)
    committed: dict[uuid.UUID, float] = {}
    start = time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        assistant = assistants[n % len(assistants)]
        minutes = 30 * (n // len(assistants))  # back to back 30-minute check-ups, round the clock
        clock = f"{day + dt.timedelta(days=minutes // 1440)}T{(minutes % 1440) // 60:02d}:{minutes % 60:02d}"
        reference = assistant.book(clock, f"Bench {n}")
        at = time.time()  # the RPC returns after its transaction committed
        row = admin.execute("select id from public.appointments where reference = %s", (reference,)).fetchone()
        assert row is not None
        committed[row[0]] = at
    return committed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bookings", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="bookings per second")
    parser.add_argument("--sweep-seconds", type=float, default=1.0, help="the timer, when the feed is off")
    parser.add_argument("--clinics", type=int, default=10)
    parser.add_argument("--paths", default="postgres,supabase")
    parser.add_argument("--keys", choices=("new", "legacy"), default="new", help="the Supabase path's API keys")
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    runs = []
    with ThrowawayPostgres() as pg:
        for path in args.paths.split(","):
            for feed in (True, False):
                runs.append(
                    measure(pg, path, feed, args.bookings, args.rate, args.sweep_seconds, args.clinics, args.keys)
                )
    print(
        f"\nbooking commit -> Google insert, {args.bookings} bookings at {args.rate:g}/s over {args.clinics} clinics, "
        f"{os.cpu_count()} cores, Google stand-in without added latency, Supabase {args.keys} API keys"
    )
    print(f"{'path':<10}{'mode':<16}{'bookings':>9}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for run in runs:
        print(run.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
