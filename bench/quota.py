"""Google's quotas with the shared budget: fairness, peak windows, and the drain rate against the floor.

    .venv/bin/python -m bench.quota [--scenario fairness,peaks,drain]

Three measurements, each on a fresh migrated database, against the Google stand-in (which enforces
sliding 60 s windows per account and per project, as Google does) and the real daemon with its
production settings, change feed included (in this process; several replicas are several daemons):

- fairness: one clinic with a 1,000-booking backlog draining, Google answering in 100 ms; meanwhile
  three small clinics book 10 each, one every half second. Figure: each small booking's commit ->
  its insert arriving at Google (p50, p99, max; target p99 <= 2 s).
- peaks: 30 clinics (one with 300 bookings, 29 with 15), the busy mirror listing every 10 s, limits
  scaled down to 60 requests/min per account and 300 per project (so that a run of two minutes
  crosses several windows), with 1 and then 3 replicas. Figures: the most requests of one account
  and of the project in any 60 s window (target <= the limits), and how many Google refused.
- drain: one clinic, 1,500 bookings, the daemon's default per-account budget (500/min; the stand-in
  enforces Google's 600), Google at 100 ms, the mirror off (the floor lists nothing either); against
  bench/floor.py under the same 500/min sliding window. Figure: the daemon's drain rate / the floor's
  (target >= 0.95).

Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.throughput import access_token
from daemon.config import DEFAULT_MIGRATIONS_DIR, Settings
from daemon.migrations import apply
from tests.daemon_harness import ROOT, Backend, DaemonThread, connect_google, make_settings, wait_until
from tests.standins.clinics import create_clinic
from tests.standins.google import API_PATH, GoogleStandIn
from tests.standins.postgres import MIGRATOR, ThrowawayPostgres, scalar
from tests.test_sync_queue import add_appointments

SCENARIOS = ("fairness", "peaks", "drain")
LATENCY = 0.1  # Google answering in 100 ms


def production(**overrides: Any) -> dict[str, Any]:
    """The daemon's own defaults where the test harness sets fast test timings, plus `overrides`."""
    defaults = Settings.model_fields
    names = (
        "sync_poll_seconds",
        "sync_lease_seconds",
        "google_timeout_seconds",
        "sync_backoff_base_seconds",
        "sync_backoff_cap_seconds",
        "google_rate_limit_hold_seconds",
        "feed_probe_seconds",
        "feed_probe_timeout_seconds",
        "backlog_metrics_seconds",
    )
    return {"log_level": "WARNING", **{name: defaults[name].default for name in names}, **overrides}


@contextlib.contextmanager
def fresh_database(pg: ThrowawayPostgres) -> Iterator[tuple[str, psycopg.Connection]]:
    name = f"bench_quota_{uuid.uuid4().hex[:8]}"
    pg.create_database(name)
    pg.bootstrap_supabase(name)
    apply(pg.dsn(name, MIGRATOR), DEFAULT_MIGRATIONS_DIR)
    try:
        with psycopg.connect(pg.dsn(name), autocommit=True) as admin:
            yield pg.dsn(name, MIGRATOR), admin
    finally:
        pg.drop_database(name)


def clinic(admin: psycopg.Connection, google: GoogleStandIn, name: str, bookings: int) -> tuple[uuid.UUID, str]:
    clinic_id = create_clinic(admin, name)
    account = connect_google(admin, google, clinic_id)
    if bookings:
        add_appointments(admin, clinic_id, bookings)
    return clinic_id, account


def synced(admin: psycopg.Connection, clinic_id: uuid.UUID | None = None) -> int:
    query = "select count(*) from public.appointments where sync_state = 'synced'"
    if clinic_id is None:
        return int(scalar(admin, query))
    return int(scalar(admin, query + " and clinic_id = %s", (clinic_id,)))


@contextlib.contextmanager
def replicas(settings: Settings | Sequence[Settings], count: int = 1) -> Iterator[list[DaemonThread]]:
    """`count` daemons with the same settings, or one per given settings."""
    each = [settings] * count if isinstance(settings, Settings) else list(settings)
    runners = [DaemonThread(one, owner=f"bench-replica-{n}").start() for n, one in enumerate(each)]
    try:
        yield runners
    finally:
        for runner in runners:
            runner.stop(timeout=60)


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


@dataclass
class Fairness:
    latencies: list[float]
    big_synced_meanwhile: int

    def lines(self) -> list[str]:
        ms = [1000 * v for v in self.latencies]
        return [
            f"fairness: {len(ms)} small-clinic bookings while a 1,000-booking backlog drained (Google at 100 ms):",
            f"  commit -> insert at Google: p50 {percentile(ms, 50):.0f} ms, p99 {percentile(ms, 99):.0f} ms,"
            f" max {max(ms):.0f} ms (target p99 <= 2,000 ms)",
            f"  the big clinic synced {self.big_synced_meanwhile} meanwhile",
        ]


def fairness(pg: ThrowawayPostgres) -> Fairness:
    with fresh_database(pg) as (dsn, admin), GoogleStandIn(latency=LATENCY) as google:
        big, _ = clinic(admin, google, "Big Clinic", 1000)
        small = [clinic(admin, google, f"Small Clinic {n}", 0) for n in range(3)]
        settings = make_settings(Backend("postgres", {"DATABASE_URL": dsn}, feed=True), google, **production())
        committed: dict[str, list[float]] = {account: [] for _, account in small}
        with replicas(settings, 1):
            wait_until(lambda: synced(admin, big) >= 50, timeout=60, what="the big backlog draining")
            before = synced(admin, big)
            for day in range(10):
                for clinic_id, account in small:
                    add_appointments(admin, clinic_id, 1, day=f"2030-02-{day + 1:02d}")
                    committed[account].append(time.monotonic())
                time.sleep(0.5)
            wait_until(
                lambda: all(synced(admin, clinic_id) == 10 for clinic_id, _ in small),
                timeout=120,
                what="the small clinics' bookings",
            )
            meanwhile = synced(admin, big) - before
        latencies = []
        for account, commits in committed.items():
            inserts = sorted(r.at for r in google.requests() if r.account == account and r.method == "POST"
                             and r.path.startswith(API_PATH))  # fmt: skip
            latencies += [insert - commit for commit, insert in zip(commits, inserts, strict=True)]
        return Fairness(latencies, meanwhile)


@dataclass
class Peaks:
    replicas: int
    account_peak: int
    project_peak: int
    refused: int
    requests: int
    synced: int

    def line(self) -> str:
        return (
            f"  {self.replicas} replica(s): peak per account {self.account_peak}/60, per project"
            f" {self.project_peak}/300 in any 60 s; {self.requests} requests, {self.refused} refused by Google;"
            f" {self.synced} synced"
        )


def peaks(pg: ThrowawayPostgres, count: int, seconds: float) -> Peaks:
    with (
        fresh_database(pg) as (dsn, admin),
        GoogleStandIn(latency=LATENCY, requests_per_minute=60, project_requests_per_minute=300) as google,
    ):
        accounts = [clinic(admin, google, "Busy Clinic", 300)[1]]
        accounts += [clinic(admin, google, f"Clinic {n:02d}", 15)[1] for n in range(29)]
        settings = make_settings(
            Backend("postgres", {"DATABASE_URL": dsn}, feed=True),
            google,
            **production(
                google_requests_per_minute=60, google_project_requests_per_minute=300, mirror_interval_seconds=10
            ),
        )
        with replicas(settings, count):
            time.sleep(seconds)
        calendar = [r for r in google.requests() if r.path.startswith(API_PATH)]
        return Peaks(
            count,
            max(google.peak_requests(account) for account in accounts),
            google.peak_requests(),
            sum(1 for r in calendar if r.status in (403, 429)),
            len(calendar),
            synced(admin),
        )


@dataclass
class DrainFigures:
    daemon_seconds: float
    floor_seconds: float
    count: int

    def lines(self) -> list[str]:
        daemon_rate, floor_rate = self.count / self.daemon_seconds, self.count / self.floor_seconds
        return [
            f"drain: {self.count} bookings at one clinic, 500 requests/min per account, Google at 100 ms:",
            f"  daemon {self.daemon_seconds:.1f} s ({60 * daemon_rate:.0f}/min), floor {self.floor_seconds:.1f} s"
            f" ({60 * floor_rate:.0f}/min): {daemon_rate / floor_rate:.3f}x the floor (target >= 0.95)",
        ]


def drain(pg: ThrowawayPostgres, count: int) -> DrainFigures:
    with fresh_database(pg) as (dsn, admin), GoogleStandIn(latency=LATENCY) as google:
        clinic(admin, google, "Clinic", count)
        settings = make_settings(
            Backend("postgres", {"DATABASE_URL": dsn}, feed=True), google, **production(mirror_enabled=False)
        )
        started = time.monotonic()
        with replicas(settings, 1):
            wait_until(lambda: synced(admin) == count, timeout=20 * 60, what="the daemon's drain")
            daemon_seconds = time.monotonic() - started
    with fresh_database(pg) as (dsn, admin), GoogleStandIn(latency=LATENCY) as google:
        clinic_id = create_clinic(admin, "Clinic")
        refresh_token = google.add_account("floor@example.com")
        add_appointments(admin, clinic_id, count)
        config = {
            "dsn": dsn,
            "api_endpoint": google.api_endpoint,
            "tokens": {str(clinic_id): access_token(google, refresh_token)},
            "calendars": {str(clinic_id): ["primary", "Europe/London"]},
            "workers": Settings.model_fields["sync_workers"].default,
            "batch": 8,
            "requests_per_minute": Settings.model_fields["google_requests_per_minute"].default,
            "expect": count,
        }
        done = subprocess.run(
            [sys.executable, "-m", "bench.floor"],
            cwd=ROOT,
            input=json.dumps(config),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ},
            timeout=20 * 60,
        )
        floor = json.loads(done.stdout.strip().splitlines()[-1])
        return DrainFigures(daemon_seconds, float(floor["seconds"]), count)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default=",".join(SCENARIOS), help="which to run, comma-separated")
    parser.add_argument("--peak-seconds", type=float, default=130.0, help="how long each peaks run lasts")
    parser.add_argument("--drain", type=int, default=1500, help="bookings in the drain measurement")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.scenario.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    lines = [f"bench.quota on {os.cpu_count()} cores"]
    with ThrowawayPostgres() as pg:
        if "fairness" in chosen:
            lines += fairness(pg).lines()
        if "peaks" in chosen:
            lines.append(f"peaks ({args.peak_seconds:.0f} s each, the busy mirror listing every 10 s):")
            lines += [peaks(pg, count, args.peak_seconds).line() for count in (1, 3)]
        if "drain" in chosen:
            lines += drain(pg, args.drain).lines()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
