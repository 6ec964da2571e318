"""What reading the calendars back costs, and how fast a change in Google reaches the assistant.

    .venv/bin/python -m bench.push [--clinics 20] [--window 125]

Against the Google stand-in (push notifications POSTed to the daemon's public listener) and the real
daemon (in this process; several replicas are several daemons), production settings otherwise:

- idle cost: every calendar connected, nothing booked; once the daemon has settled (first listings
  made, channels confirmed), every Google request of every kind for `--window` seconds, per clinic per
  hour; with polling (MIRROR_INTERVAL_SECONDS, 30 s) and with push, each with 1 and 3 replicas.
  With push the hourly safety net is compressed 60x (a listing a minute, and channels renewed 60x as
  often) and the figure scaled back: requests per clinic per real hour (target <= 2).
- change latency: a receptionist adds an event in each clinic's Google calendar at once; the time from
  Google's answer to `check_availability` (through vapi_tool_call, as Vapi calls it) no longer offering
  that time, p50/p99, with push and with polling (target with push: p99 <= 2 s).

Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from bench.quota import fresh_database, percentile, production, replicas
from tests.daemon_harness import Backend, connect_google, make_settings, wait_until
from tests.dates import upcoming
from tests.standins.clinics import create_clinic, issue_key
from tests.standins.google import API_PATH, GoogleStandIn
from tests.standins.postgres import AUTHENTICATOR, ThrowawayPostgres, scalar
from tests.standins.receptionist import Receptionist
from tests.standins.service import free_port
from tests.standins.vapi import Assistant
from tests.test_busy_mirror import free_times

COMPRESSION = 60  # push runs: the safety net and channel lifetimes this many times shorter


def push_settings(compressed: bool) -> dict[str, Any]:
    port = free_port()
    factor = COMPRESSION if compressed else 1
    return {
        "public_url": f"https://127.0.0.1:{port}",
        "public_host": "127.0.0.1",
        "public_port": port,
        "mirror_safety_net_seconds": 3600 / factor,
        "channel_ttl_seconds": max(60, 7 * 86400 // factor),
        "channel_renew_before_seconds": 86400 // factor,
        "channel_check_seconds": 1,
    }


@contextlib.contextmanager
def clinics(
    pg: ThrowawayPostgres, google: GoogleStandIn, count: int
) -> Iterator[tuple[str, psycopg.Connection, list[Any]]]:
    with fresh_database(pg) as (dsn, admin):
        made = []
        for n in range(count):
            clinic_id = create_clinic(admin, f"Clinic {n:02d}", booking_horizon_days=400)
            made.append((clinic_id, connect_google(admin, google, clinic_id), issue_key(admin, clinic_id)))
        yield dsn, admin, made


def settled(admin: psycopg.Connection, count: int, push: bool) -> bool:
    listed = scalar(admin, "select count(*) from public.calendar_mirrors where last_synced_at is not null")
    if not push:
        return bool(listed == count)
    live = scalar(
        admin, "select count(*) from public.calendar_channels where retired_at is null and confirmed_at is not null"
    )
    return bool(listed == count and live == count)


def calendar_requests(google: GoogleStandIn, since: float) -> int:
    return sum(1 for r in google.requests() if r.path.startswith(API_PATH) and r.at >= since)


def idle_cost(pg: ThrowawayPostgres, count: int, push: bool, replica_count: int, window: float) -> float:
    with GoogleStandIn() as google, clinics(pg, google, count) as (dsn, admin, _):
        overrides = production(**(push_settings(compressed=True) if push else {}))
        settings = make_settings(Backend("postgres", {"DATABASE_URL": dsn}, feed=True), google, **overrides)
        # Each replica listens on a port of its own; PUBLIC_URL leads to the first (a load balancer's choice).
        everyone = [
            settings,
            *(settings.model_copy(update={"public_port": free_port()}) for _ in range(replica_count - 1)),
        ]
        with replicas(everyone):
            wait_until(lambda: settled(admin, count, push), timeout=120, what="the daemon settled")
            started = time.monotonic()
            time.sleep(window)
            made = calendar_requests(google, started)
        per_hour = made / count / window * 3600
        return per_hour / COMPRESSION if push else per_hour


def change_latency(pg: ThrowawayPostgres, count: int, push: bool) -> list[float]:
    with GoogleStandIn() as google, clinics(pg, google, count) as (dsn, admin, made):
        overrides = production(**(push_settings(compressed=False) if push else {}))
        settings = make_settings(Backend("postgres", {"DATABASE_URL": dsn}, feed=True), google, **overrides)
        day = upcoming(2)
        with replicas(settings, 1), psycopg.connect(pg.dsn(dsn_name(dsn), AUTHENTICATOR), autocommit=True) as gateway:
            wait_until(lambda: settled(admin, count, push), timeout=120, what="the daemon settled")
            assistants = [Assistant(gateway, key) for _, _, key in made]
            staff = [Receptionist(google, account) for _, account, _ in made]
            changed: dict[int, float] = {}
            lock = threading.Lock()

            def change(n: int) -> None:
                staff[n].add(day, "12:00", "13:00")
                with lock:
                    changed[n] = time.monotonic()

            threads = [threading.Thread(target=change, args=(n,)) for n in range(count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seen: dict[int, float] = {}
            deadline = time.monotonic() + 120
            while len(seen) < count and time.monotonic() < deadline:
                for n, assistant in enumerate(assistants):
                    if n not in seen and "12:00" not in free_times(assistant, day):
                        seen[n] = time.monotonic()
                time.sleep(0.02)
            for person in staff:
                person.close()
        return [seen[n] - changed[n] for n in seen]


def dsn_name(dsn: str) -> str:
    return next(part.split("=", 1)[1] for part in dsn.split() if part.startswith("dbname="))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clinics", type=int, default=20)
    parser.add_argument("--window", type=float, default=125.0, help="seconds of idling measured per run")
    args = parser.parse_args(argv)
    lines = [f"bench.push on {os.cpu_count()} cores, {args.clinics} clinics"]
    with ThrowawayPostgres() as pg:
        lines.append("idle: Google requests per clinic per hour (every kind: listings, watch, stop)")
        for push in (False, True):
            for count in (1, 3):
                cost = idle_cost(pg, args.clinics, push, count, args.window)
                mode = "push (safety net hourly)" if push else "polling every 30 s"
                lines.append(f"  {mode:<26} {count} replica(s): {cost:7.2f}")
        lines.append("a change in Google -> check_availability no longer offers it")
        for push in (True, False):
            latencies = [1000 * v for v in change_latency(pg, args.clinics, push)]
            mode = "push" if push else "polling every 30 s"
            lines.append(
                f"  {mode:<26} p50 {percentile(latencies, 50):7.0f} ms, p99 {percentile(latencies, 99):7.0f} ms"
                f" ({len(latencies)} changes)"
                if latencies
                else f"  {mode:<26} no change reached the assistant"
            )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
