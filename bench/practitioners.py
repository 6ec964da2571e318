"""check_availability with practitioners: ten diaries in one clinic against the one diary of a clinic without them.

    .venv/bin/python -m bench.practitioners [--calls 200] [--days 20] [--booked-share 0.6] [--history-days 0]
                                            [--seed 1] [--functions]

(about 30 s with the defaults on 2 cores)

One fresh migrated database (a throwaway PostgreSQL, as the tests make it) holds two clinics alike
in everything but their practitioners: Europe/London, a 15-minute grid, 90 days' horizon, open
Mon-Fri 08:00-18:00 and Sat 09:00-13:00, five services (15 to 60 minutes).

- "10 practitioners": each with their own calendar id; four with hours of their own (part-time,
  split days, a hygienist's Tue-Sat), the rest the clinic's; services differing (three offer every
  service, the others two or three of them). Their diaries are filled for every open day of the
  horizon: about 60% of each practitioner's bookable time booked (services of theirs, back to back
  where chance has it, some cancelled rows too), a few older bookings without a practitioner (they
  block everyone), and busy rows in public.calendar_busy: in the clinic's calendar (a Monday team
  meeting, now and then training) and in each practitioner's own (admin hours, the odd day off).
  Every calendar has a fresh mirror row, so the stale checks read real rows (the clinics allow the mirror
  1440 minutes, so a long run does not see rows written once grow stale).
- "one diary": the clinic without practitioners, its one diary filled the same way, with the same
  clinic-calendar busy time.

--history-days N also fills the N days before today (a clinic's past bookings stay in the table).

The measured days are --days open days spread across the horizon. Each call is one
`public.vapi_tool_call(json)` with a whole Vapi envelope, made exactly as PostgREST makes it (its
schema cache read once): one transaction on an `authenticator` connection, the request settings
(role anon, request.headers with the clinic's x-clinic-key) in one set_config statement, then the
call. One connection, calls one after another (latency, not throughput); the three kinds of call
take turns, so background work lands on them alike. The kinds:

- one diary: check_availability {date, service?} at the clinic without practitioners (the baseline);
- anyone: check_availability {date, service?} with practitioner left out: free times per practitioner;
- named: check_availability {date, service, practitioner} naming one who works that day and offers the
  service, spelt as callers do ("Dr Hart", "amelia hart", "Amelia").

Latency = the client's wall time of the whole transaction (BEGIN .. COMMIT, unix socket). Every answer
is read: an answer that is no list of free times ("Free start times ..." / "No free times ...") counts
as an error. --functions then repeats each kind with track_functions = 'all' and prints the functions'
own time per call (pg_stat_user_functions; the clock reads slow the calls, so no latency from it).
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import platform
import random
import re
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from loguru import logger
from psycopg import sql
from psycopg.types.json import Jsonb

from daemon.config import DEFAULT_MIGRATIONS_DIR
from daemon.migrations import apply
from tests.dates import LONDON
from tests.standins.clinics import create_clinic, issue_key
from tests.standins.postgres import AUTHENTICATOR, MIGRATOR, ThrowawayPostgres, scalar
from tests.standins.postgrest import hoisted_settings, role_settings, set_request_context
from tests.standins.vapi import VapiCall, tool_call

TARGET_P99_MS = 20.0
SLOT_MINUTES = 15
HORIZON_DAYS = 90
WARMUP_CALLS = 10  # per kind, not measured: plans cached, buffers warm
KINDS = ("one diary", "anyone", "named")
KIND_NAMES = {
    "one diary": "one diary (no practitioners)",
    "anyone": "10 practitioners, anyone",
    "named": "10 practitioners, named",
}

# (ISO weekday, opens, closes)
CLINIC_HOURS = [*((day, "08:00", "18:00") for day in range(1, 6)), (6, "09:00", "13:00")]
SERVICES = (  # (name, minutes, is default)
    ("Check-up", 30, True),
    ("Consultation", 60, False),
    ("Physiotherapy", 45, False),
    ("Hygiene", 30, False),
    ("Vaccination", 15, False),
)
DURATIONS = {name: minutes for name, minutes, _ in SERVICES}


@dataclass(frozen=True)
class Practitioner:
    name: str
    services: tuple[str, ...] | None  # None: every service of the clinic
    hours: tuple[tuple[int, str, str], ...] | None  # None: the clinic's
    spoken: tuple[str, ...]  # how callers name them


PRACTITIONERS = (
    Practitioner("Dr Amelia Hart", None, None, ("Dr Hart", "amelia hart", "Amelia")),
    Practitioner("Dr Ben Okafor", ("Check-up", "Consultation"), None, ("Dr Okafor", "Ben Okafor", "ben")),
    Practitioner(
        "Dr Chloe Singh",
        ("Consultation", "Vaccination"),
        tuple((day, "09:00", "17:00") for day in range(1, 5)),
        ("Doctor Singh", "Chloe", "chloe singh"),
    ),
    Practitioner(
        "Daniel Reyes",
        ("Physiotherapy",),
        tuple(p for day in (1, 3, 5) for p in ((day, "08:00", "12:00"), (day, "13:00", "18:00"))),
        ("Daniel", "Mr Reyes", "daniel reyes"),
    ),
    Practitioner("Emma Walsh", ("Physiotherapy", "Check-up"), None, ("Emma", "Ms Walsh", "emma walsh")),
    Practitioner(
        "Fiona Grant",
        ("Hygiene",),
        (*((day, "09:00", "13:00") for day in range(2, 7)), *((day, "14:00", "17:00") for day in range(2, 6))),
        ("Fiona", "Mrs Grant", "fiona grant"),
    ),
    Practitioner("Dr George Patel", None, None, ("Dr Patel", "George", "george patel")),
    Practitioner("Hannah Kim", ("Vaccination", "Check-up"), None, ("Hannah", "Ms Kim", "hannah kim")),
    Practitioner(
        "Dr Isaac Novak", ("Consultation", "Check-up", "Vaccination"), None, ("Dr Novak", "Isaac", "isaac novak")
    ),
    Practitioner(
        "Dr Julia Moreau",
        None,
        tuple((day, "08:00", "13:00") for day in range(1, 6)),
        ("Dr Moreau", "Julia", "julia moreau"),
    ),
)

ANSWER = re.compile(r"^(Free start times on |No free times on )")
CLOCK = re.compile(r"\b\d{2}:\d{2}\b")


@dataclass(frozen=True)
class Options:
    calls: int = 200  # measured calls of each kind
    days: int = 20  # open days spread across the horizon
    booked_share: float = 0.6  # of each diary's bookable time
    seed: int = 1
    history_days: int = 0  # past days with bookings kept in the table (attended, as a clinic's history)
    functions: bool = False  # per-function own time, a separate pass with track_functions = 'all'


@dataclass
class Kind:
    name: str
    calls: int = 0
    errors: int = 0
    empty: int = 0  # "No free times ..." answers (real answers)
    times_listed: int = 0  # free start times in the answers, all told
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0  # the measured calls' wall time, all told
    error_samples: list[str] = field(default_factory=list)
    functions: list[tuple[str, float, float]] = field(default_factory=list)  # (function, calls/call, own ms/call)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)  # nearest rank
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class Diary:
    """What one seeded clinic holds (rows: all of them; minutes: on the measured days, over its diaries)."""

    appointments: int = 0  # booked rows, whole horizon
    cancelled: int = 0
    without_practitioner: int = 0
    busy_rows: int = 0
    open_minutes: int = 0  # bookable
    booked_minutes: int = 0
    busy_minutes: int = 0


@dataclass
class Result:
    options: Options
    server_version: str = ""
    measured_days: list[dt.date] = field(default_factory=list)
    seed_seconds: float = 0.0
    clinics: dict[str, Diary] = field(default_factory=dict)  # "one diary" / "practitioners"
    kinds: dict[str, Kind] = field(default_factory=dict)
    machine_busy: float = float("nan")  # share of all cores busy while measuring (this process and the server too)
    load_average: float = float("nan")  # 1-minute, when the measurement ended


# -- the diaries ---------------------------------------------------------------------------------


def minutes_of(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def periods_on(hours: Sequence[tuple[int, str, str]], weekday: int) -> list[tuple[int, int]]:
    return sorted((minutes_of(o), minutes_of(c)) for day, o, c in hours if day == weekday)


def open_days(first: dt.date, last: dt.date) -> list[dt.date]:
    days = []
    day = first
    while day <= last:
        if periods_on(CLINIC_HOURS, day.isoweekday()):
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def spread(days: Sequence[dt.date], count: int) -> list[dt.date]:
    """`count` of `days`, evenly spaced from the first to the last."""
    if count >= len(days):
        return list(days)
    if count <= 1:
        return [days[0]]
    return [days[round(n * (len(days) - 1) / (count - 1))] for n in range(count)]


def overlaps(start: int, end: int, blocked: Sequence[tuple[int, int]]) -> bool:
    return any(start < b_end and b_start < end for b_start, b_end in blocked)


def fill_day(
    rng: random.Random,
    periods: Sequence[tuple[int, int]],
    services: Sequence[str],
    blocked: Sequence[tuple[int, int]],
    chance: float,
) -> list[tuple[int, int, str]]:
    """Bookings (start, end minutes, service) for one diary's day: along the grid, at each free start a booking
    of one of `services` with probability `chance` (the grid moves on by its length), else the next slot."""
    booked = []
    for opens, closes in periods:
        at = opens
        while at + SLOT_MINUTES <= closes:
            if rng.random() < chance:
                first = rng.randrange(len(services))  # that service, else the next one that fits
                for service in (*services[first:], *services[:first]):
                    minutes = DURATIONS[service]
                    if at + minutes <= closes and not overlaps(at, at + minutes, blocked):
                        booked.append((at, at + minutes, service))
                        at += minutes
                        break
                else:
                    at += SLOT_MINUTES
                continue
            at += SLOT_MINUTES
    return booked


def covered(intervals: Sequence[tuple[int, int]], periods: Sequence[tuple[int, int]]) -> int:
    """Minutes of `periods` covered by the union of `intervals`."""
    return sum(1 for opens, closes in periods for m in range(opens, closes) if any(s <= m < e for s, e in intervals))


def instant(day: dt.date, minute: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(minute // 60, minute % 60), LONDON)


def chance_for(share: float, services: Sequence[str], periods: Sequence[tuple[int, int]]) -> float:
    """The per-slot booking probability that books about `share` of a free day, found by bisection on simulated
    days (a generator of its own: the diaries do not depend on it)."""
    low, high = 0.0, 1.0
    days = 80
    whole = sum(c - o for o, c in periods) * days
    for _ in range(10):
        chance = (low + high) / 2
        rng = random.Random(0)
        booked = sum(e - s for _ in range(days) for s, e, _ in fill_day(rng, periods, services, (), chance))
        low, high = (chance, high) if booked < share * whole else (low, chance)
    return (low + high) / 2


@dataclass
class Seeded:
    dbname: str
    baseline_key: str
    clinic_key: str
    clinic_id: uuid.UUID
    practitioner_ids: dict[str, uuid.UUID]
    days: list[dt.date]


class Seeder:
    """Writes both clinics' diaries as the admin (COPY): appointments, calendar_busy, calendar_mirrors."""

    def __init__(self, admin: psycopg.Connection, options: Options, today: dt.date, measured: Sequence[dt.date]):
        self.admin = admin
        self.options = options
        self.rng = random.Random(options.seed)
        self.days = open_days(today - dt.timedelta(days=options.history_days), today + dt.timedelta(days=HORIZON_DAYS))
        self.measured = set(measured)
        self.appointments: list[tuple[Any, ...]] = []
        self.busy: list[tuple[Any, ...]] = []
        self.references = itertools.count(1)
        self.chances: dict[tuple[tuple[str, ...], tuple[tuple[int, int], ...], float], float] = {}

    def chance(self, services: Sequence[str], periods: Sequence[tuple[int, int]], share: float) -> float:
        key = (tuple(services), tuple(periods), share)
        if key not in self.chances:
            self.chances[key] = chance_for(share, services, periods)
        return self.chances[key]

    def reference(self) -> str:
        n = next(self.references)
        digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        text = ""
        while n:
            n, r = divmod(n, 36)
            text = digits[r] + text
        return "B" + text.rjust(5, "0")

    def book(
        self, clinic_id: uuid.UUID, practitioner_id: uuid.UUID | None, day: dt.date, start: int, end: int, service: str
    ) -> None:
        n = len(self.appointments)
        patient = Jsonb({"name": f"Bench patient {n}", "phone": f"+4477009{n % 100000:05d}"})
        self.appointments.append(
            (clinic_id, self.reference(), patient, service, instant(day, start), instant(day, end), "booked", None,
             practitioner_id)
        )  # fmt: skip

    def cancelled(self, clinic_id: uuid.UUID, practitioner_id: uuid.UUID | None, day: dt.date, start: int) -> None:
        """A cancelled booking: a row in the table, no time taken."""
        n = len(self.appointments)
        patient = Jsonb({"name": f"Bench patient {n}", "phone": f"+4477009{n % 100000:05d}"})
        self.appointments.append(
            (clinic_id, self.reference(), patient, "Check-up", instant(day, start), instant(day, start + 30),
             "cancelled", instant(day, 0) - dt.timedelta(days=2), practitioner_id)
        )  # fmt: skip

    def busy_row(self, clinic_id: uuid.UUID, calendar_id: str, day: dt.date, start: int, end: int) -> None:
        self.busy.append((clinic_id, calendar_id, f"busy{uuid.uuid4().hex}", instant(day, start), instant(day, end)))

    def clinic_busy(self, day: dt.date) -> list[tuple[int, int]]:
        """The clinic calendar's busy time that day (blocks every diary): Monday's team meeting, some training;
        the same in both clinics."""
        rng = random.Random(f"{self.options.seed}-{day}")
        blocked = [(8 * 60, 9 * 60)] if day.isoweekday() == 1 else []
        if rng.random() < 0.15:
            start = rng.randrange(9 * 60, 12 * 60, SLOT_MINUTES)
            blocked.append((start, start + rng.choice((30, 60))))
        return blocked

    def fill(
        self,
        clinic_id: uuid.UUID,
        calendar_id: str,
        practitioners: Sequence[tuple[uuid.UUID, Practitioner, str]],
        summary: Diary,
    ) -> None:
        """Every open day of the horizon: the clinic calendar's busy time, then each diary (the practitioners',
        or the clinic's own when there are none) booked to about booked_share of its time."""
        diaries: list[tuple[uuid.UUID | None, Practitioner | None, str | None]] = (
            list(practitioners) if practitioners else [(None, None, None)]
        )
        for day in self.days:
            weekday = day.isoweekday()
            clinic_blocked = self.clinic_busy(day)
            for start, end in clinic_blocked:
                self.busy_row(clinic_id, calendar_id, day, start, end)
            legacy: list[tuple[int, int]] = []
            if practitioners and self.rng.random() < 0.2:  # booked before the clinic added practitioners
                start = self.rng.randrange(10 * 60, 16 * 60, SLOT_MINUTES) if weekday < 6 else 10 * 60
                legacy.append((start, start + 30))
                self.book(clinic_id, None, day, start, start + 30, "Check-up")
                summary.without_practitioner += 1
            for practitioner_id, practitioner, own_calendar in diaries:
                hours = practitioner.hours if practitioner and practitioner.hours else CLINIC_HOURS
                periods = periods_on(hours, weekday)
                if not periods:
                    continue
                own: list[tuple[int, int]] = []
                if own_calendar is not None:
                    if self.rng.random() < 0.03:  # a day off
                        own = [(periods[0][0], periods[-1][1])]
                    elif self.rng.random() < 0.35:  # an hour of admin
                        opens, closes = self.rng.choice(periods)
                        start = self.rng.randrange(opens, max(opens + 1, closes - 60), SLOT_MINUTES)
                        own = [(start, min(closes, start + 60))]
                    for start, end in own:
                        self.busy_row(clinic_id, own_calendar, day, start, end)
                services = practitioner.services if practitioner and practitioner.services else tuple(DURATIONS)
                # booked_share of the whole day: busy time in the way leaves that much more of the rest booked
                blocked = [*clinic_blocked, *legacy, *own]
                open_minutes = sum(c - o for o, c in periods)
                free = open_minutes - covered(blocked, periods)
                share = min(0.9, self.options.booked_share * open_minutes / max(free, 1))
                chance = self.chance(services, periods, round(share * 50) / 50)
                booked = fill_day(self.rng, periods, services, blocked, chance)
                for start, end, service in booked:
                    self.book(clinic_id, practitioner_id, day, start, end, service)
                    if self.rng.random() < 0.08:
                        self.cancelled(clinic_id, practitioner_id, day, start)
                if day in self.measured:
                    summary.open_minutes += open_minutes
                    summary.booked_minutes += covered([*((s, e) for s, e, _ in booked), *legacy], periods)
                    summary.busy_minutes += covered([*clinic_blocked, *own], periods)

    def write(self) -> None:
        with self.admin.cursor() as cur:
            columns = (
                "clinic_id, reference, patient, service, starts_at, ends_at, status, cancelled_at, practitioner_id"
            )
            with cur.copy(f"copy public.appointments ({columns}) from stdin") as copy:
                for row in self.appointments:
                    copy.write_row(row)
            with cur.copy(
                "copy public.calendar_busy (clinic_id, calendar_id, event_id, starts_at, ends_at) from stdin"
            ) as copy:
                for row in self.busy:
                    copy.write_row(row)


def add_practitioners(admin: psycopg.Connection, clinic_id: uuid.UUID) -> list[tuple[uuid.UUID, Practitioner, str]]:
    added = []
    for practitioner in PRACTITIONERS:
        calendar_id = re.sub(r"[^a-z]+", ".", practitioner.name.lower()).strip(".") + "@group.calendar.google.com"
        hours = (
            [{"weekday": day, "opens": o, "closes": c} for day, o, c in practitioner.hours]
            if practitioner.hours
            else None
        )
        practitioner_id = scalar(
            admin,
            "select public.add_practitioner(%s, %s, %s, %s, %s)",
            (
                clinic_id,
                practitioner.name,
                Jsonb(list(practitioner.services)) if practitioner.services else None,
                Jsonb(hours) if hours else None,
                calendar_id,
            ),
        )
        added.append((practitioner_id, practitioner, calendar_id))
    return added


def seed(pg: ThrowawayPostgres, options: Options, result: Result) -> Seeded:
    started = time.monotonic()
    dbname = f"bench_practitioners_{uuid.uuid4().hex[:8]}"
    pg.create_database(dbname)
    pg.bootstrap_supabase(dbname)
    apply(pg.dsn(dbname, MIGRATOR), DEFAULT_MIGRATIONS_DIR)
    today = dt.datetime.now(LONDON).date()
    # Measured: open days from tomorrow to the day before the horizon's last.
    measured = spread(
        open_days(today + dt.timedelta(days=1), today + dt.timedelta(days=HORIZON_DAYS - 1)), options.days
    )
    hours: dict[int, list[tuple[str, str]]] = {}
    for day, opens, closes in CLINIC_HOURS:
        hours.setdefault(day, []).append((opens, closes))
    with psycopg.connect(pg.dsn(dbname), autocommit=True) as admin:
        result.server_version = str(scalar(admin, "show server_version"))
        settings = {
            "slot_minutes": SLOT_MINUTES,
            "booking_horizon_days": HORIZON_DAYS,
            "time_zone": "Europe/London",
            "mirror_max_age_minutes": 1440,  # the mirror rows are written once: a long run must not see them age
        }
        baseline_id = create_clinic(admin, "Bench One Diary", hours=hours, services=SERVICES, **settings)
        clinic_id = create_clinic(admin, "Bench Practitioners", hours=hours, services=SERVICES, **settings)
        baseline_calendar = "one-diary@bench.example"
        clinic_calendar = "reception@bench.example"
        admin.execute("update public.clinics set calendar_id = %s where id = %s", (baseline_calendar, baseline_id))
        admin.execute("update public.clinics set calendar_id = %s where id = %s", (clinic_calendar, clinic_id))
        practitioners = add_practitioners(admin, clinic_id)

        seeder = Seeder(admin, options, today, measured)
        result.clinics["one diary"] = Diary()
        result.clinics["practitioners"] = Diary()
        seeder.fill(baseline_id, baseline_calendar, [], result.clinics["one diary"])
        seeder.fill(clinic_id, clinic_calendar, practitioners, result.clinics["practitioners"])
        seeder.write()
        # The mirror has just read every calendar: fresh rows, so the stale checks find rows to read.
        for owner, calendar_id in [
            (baseline_id, baseline_calendar),
            (clinic_id, clinic_calendar),
            *((clinic_id, calendar) for _, _, calendar in practitioners),
        ]:
            admin.execute(
                "insert into public.calendar_mirrors (clinic_id, calendar_id, sync_token, last_synced_at, "
                "last_full_sync_at) values (%s, %s, 'bench-token', now(), now())"
                " on conflict (clinic_id, calendar_id) do update set last_synced_at = now(), last_full_sync_at = now()",
                (owner, calendar_id),
            )
        for name, owner in (("one diary", baseline_id), ("practitioners", clinic_id)):
            summary = result.clinics[name]
            summary.appointments, summary.cancelled = admin.execute(
                "select count(*) filter (where status = 'booked'), count(*) filter (where status = 'cancelled')"
                " from public.appointments where clinic_id = %s",
                (owner,),
            ).fetchone() or (0, 0)
            summary.busy_rows = int(
                scalar(admin, "select count(*) from public.calendar_busy where clinic_id = %s", (owner,))
            )
        admin.execute("vacuum analyze")
        baseline_key = issue_key(admin, baseline_id, "bench")
        clinic_key = issue_key(admin, clinic_id, "bench")
    result.measured_days = measured
    result.seed_seconds = time.monotonic() - started
    return Seeded(dbname, baseline_key, clinic_key, clinic_id, {p.name: pid for pid, p, _ in practitioners}, measured)


# -- the calls -----------------------------------------------------------------------------------


def works_on(practitioner: Practitioner, day: dt.date) -> bool:
    return bool(periods_on(practitioner.hours or CLINIC_HOURS, day.isoweekday()))


def requests(kind: str, seeded: Seeded, count: int, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """`count` (clinic key, check_availability arguments) of one kind, round the measured days."""
    services: list[str | None] = [None, *DURATIONS]  # None: the clinic's default, service left out
    made: list[tuple[str, dict[str, Any]]] = []
    if kind in ("one diary", "anyone"):
        key = seeded.baseline_key if kind == "one diary" else seeded.clinic_key
        for n in range(count):
            day = seeded.days[n % len(seeded.days)]
            service = services[(n // len(seeded.days)) % len(services)]
            made.append((key, {"date": day.isoformat(), **({"service": service} if service else {})}))
        return made
    pairs = [(day, p) for day in seeded.days for p in PRACTITIONERS if works_on(p, day)]
    rng.shuffle(pairs)
    for n in range(count):
        day, practitioner = pairs[n % len(pairs)]
        offered = practitioner.services or tuple(DURATIONS)
        arguments = {
            "date": day.isoformat(),
            "service": offered[n % len(offered)],
            "practitioner": practitioner.spoken[n % len(practitioner.spoken)],
        }
        made.append((seeded.clinic_key, arguments))
    return made


class Gateway:
    """One `authenticator` connection calling vapi_tool_call as PostgREST does, its schema cache read once."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        row = self.conn.execute(
            "select p.proconfig from pg_catalog.pg_proc p"
            " where p.oid = 'public.vapi_tool_call(json)'::regprocedure and p.provolatile = 'v'"
        ).fetchone()
        assert row is not None, "vapi_tool_call(json) is not VOLATILE: PostgREST would call it read-only"
        self.function_settings = hoisted_settings(row[0])
        self.role_settings = role_settings(self.conn).get("anon", {})
        self.call = VapiCall()

    def close(self) -> None:
        self.conn.close()

    def check(self, key: str, arguments: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """One POST /rest/v1/rpc/vapi_tool_call: (the tool call's result item, seconds)."""
        item = tool_call("check_availability", arguments)
        body = json.dumps(self.call.message(item), ensure_ascii=False)
        headers = {"apikey": "anon-key", "content-type": "application/json", "x-clinic-key": key}
        started = time.perf_counter()
        with self.conn.transaction():
            set_request_context(
                self.conn,
                role="anon",
                path="/rpc/vapi_tool_call",
                headers=headers,
                settings=self.role_settings,
                function_settings=self.function_settings,
            )
            row = self.conn.execute("select public.vapi_tool_call(%s::json)", (body,)).fetchone()
        seconds = time.perf_counter() - started
        assert row is not None
        [result] = row[0]["results"]
        return dict(result), seconds


def record(kind: Kind, item: dict[str, Any]) -> None:
    kind.calls += 1
    answer = item.get("result")
    if "error" in item or not isinstance(answer, str) or not ANSWER.match(answer):
        kind.errors += 1
        if len(kind.error_samples) < 3:
            kind.error_samples.append(str(item.get("error", answer))[:200])
        return
    if answer.startswith("No free times"):
        kind.empty += 1
        return
    kind.times_listed += len(CLOCK.findall(answer.split(": ", 1)[1]))


def measure(pg: ThrowawayPostgres, seeded: Seeded, options: Options, result: Result) -> None:
    rng = random.Random(options.seed)
    plans = {kind: requests(kind, seeded, WARMUP_CALLS + options.calls, rng) for kind in KINDS}
    result.kinds = {kind: Kind(kind) for kind in KINDS}
    gateway = Gateway(pg.dsn(seeded.dbname, AUTHENTICATOR))
    ticks = machine_ticks()
    try:
        for n in range(WARMUP_CALLS + options.calls):
            for kind in KINDS:  # taking turns
                key, arguments = plans[kind][n]
                item, seconds = gateway.check(key, arguments)
                if n < WARMUP_CALLS:
                    continue
                figures = result.kinds[kind]
                record(figures, item)
                figures.latencies_ms.append(seconds * 1000)
                figures.seconds += seconds
    finally:
        gateway.close()
    busy, total = (after - before for after, before in zip(machine_ticks(), ticks, strict=True))
    result.machine_busy = busy / total if total else float("nan")
    result.load_average = os.getloadavg()[0]


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    with open("/proc/stat") as stat:
        numbers = [int(n) for n in stat.readline().split()[1:]]
    idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)
    return sum(numbers) - idle, sum(numbers)


def profile_functions(pg: ThrowawayPostgres, seeded: Seeded, options: Options, result: Result) -> None:
    """Each kind alone on a connection of its own with track_functions = 'all': the functions' calls and own
    time per check_availability (the backend's counts reach pg_stat_user_functions when it ends)."""
    calls = max(1, min(options.calls, 100))
    with psycopg.connect(pg.dsn(), autocommit=True) as superuser:
        superuser.execute(
            sql.SQL("alter database {} set track_functions = 'all'").format(sql.Identifier(seeded.dbname))
        )
    rng = random.Random(options.seed + 1)
    try:
        with psycopg.connect(pg.dsn(seeded.dbname), autocommit=True) as admin:
            for kind in KINDS:
                plan = requests(kind, seeded, WARMUP_CALLS + calls, rng)
                gateway = Gateway(pg.dsn(seeded.dbname, AUTHENTICATOR))
                try:
                    for key, arguments in plan[:WARMUP_CALLS]:
                        gateway.check(key, arguments)
                finally:
                    gateway.close()
                time.sleep(0.2)  # let the warm-up's backend report before the reset
                admin.execute("select pg_stat_reset()")
                gateway = Gateway(pg.dsn(seeded.dbname, AUTHENTICATOR))
                try:
                    for key, arguments in plan[WARMUP_CALLS:]:
                        gateway.check(key, arguments)
                finally:
                    gateway.close()
                rows: list[tuple[str, int, float]] = []
                for _ in range(50):  # the ended backend's counts arrive shortly
                    time.sleep(0.1)
                    admin.execute("select pg_stat_clear_snapshot()")
                    rows = admin.execute(
                        "select schemaname || '.' || funcname, calls, self_time from pg_stat_user_functions"
                        " where funcname = 'vapi_tool_call'"
                    ).fetchall()
                    if rows and rows[0][1] >= calls:
                        break
                rows = admin.execute(
                    "select schemaname || '.' || funcname, sum(calls), sum(self_time) from pg_stat_user_functions"
                    " group by 1 order by 3 desc"
                ).fetchall()
                result.kinds[kind].functions = [(name, n / calls, ms / calls) for name, n, ms in rows]
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as superuser:
            superuser.execute(sql.SQL("alter database {} reset track_functions").format(sql.Identifier(seeded.dbname)))


def run_bench(options: Options, pg: ThrowawayPostgres | None = None) -> Result:
    """Seed a fresh database, then measure; needs a cluster (one is started when none is given)."""
    if pg is None:
        with ThrowawayPostgres() as cluster:
            return run_bench(options, cluster)
    result = Result(options)
    seeded = seed(pg, options, result)
    try:
        measure(pg, seeded, options, result)
        if options.functions:
            profile_functions(pg, seeded, options, result)
    finally:
        pg.drop_database(seeded.dbname)
    return result


# -- the report ----------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown CPU"


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def report(result: Result) -> str:
    options = result.options
    days = result.measured_days
    one, many = result.clinics["one diary"], result.clinics["practitioners"]
    lines = [
        "",
        f"machine: {os.cpu_count()} cores ({_cpu_model()}), Python {platform.python_version()}, "
        f"PostgreSQL {result.server_version}; server and this process share the cores; while measuring "
        f"{result.machine_busy:.0%} of all cores were busy (load average {result.load_average:.1f}: more than "
        "about 1 means other work competed)",
        f"clinics: Europe/London, {SLOT_MINUTES}-minute grid, {HORIZON_DAYS} days' horizon, Mon-Fri 08-18 + Sat 09-13, "
        f"{len(SERVICES)} services ({min(DURATIONS.values())}-{max(DURATIONS.values())} min); "
        f"{len(PRACTITIONERS)} practitioners (own calendars; "
        f"{sum(1 for p in PRACTITIONERS if p.hours)} with own hours; "
        f"{sum(1 for p in PRACTITIONERS if p.services is None)} offer every service) against one diary",
        f"diaries (whole horizon{f' and {options.history_days} days past' if options.history_days else ''}, "
        f"seeded in {result.seed_seconds:.1f} s): practitioners: {many.appointments:,} booked "
        f"({many.without_practitioner} without a practitioner), {many.cancelled:,} cancelled, "
        f"{many.busy_rows:,} calendar_busy rows over {len(PRACTITIONERS) + 1} calendars; "
        f"one diary: {one.appointments:,} booked, {one.cancelled:,} cancelled, {one.busy_rows:,} busy rows",
        f"measured days: {len(days)} open days from {days[0]} to {days[-1]}; of the diaries' bookable time those "
        f"days: practitioners {_share(many.booked_minutes, many.open_minutes)} booked + "
        f"{_share(many.busy_minutes, many.open_minutes)} busy, one diary {_share(one.booked_minutes, one.open_minutes)}"
        f" booked + {_share(one.busy_minutes, one.open_minutes)} busy",
        f"calls: {options.calls} of each kind (+{WARMUP_CALLS} warm-up), taking turns, one authenticator connection, "
        "sequential; each a PostgREST transaction (set_config as anon with x-clinic-key, then vapi_tool_call)",
        "",
    ]
    header = ["check_availability", "calls", "errors", "none free", "times/answer", "p50 ms", "p95 ms", "p99 ms",
              "max ms", "calls/s"]  # fmt: skip
    rows = [header]
    for kind in result.kinds.values():
        answers = kind.calls - kind.errors
        rows.append([
            KIND_NAMES[kind.name],
            str(kind.calls),
            str(kind.errors),
            str(kind.empty),
            f"{kind.times_listed / answers:.1f}" if answers else "-",
            *(f"{kind.percentile(p):.1f}" for p in (50, 95, 99)),
            f"{max(kind.latencies_ms, default=float('nan')):.1f}",
            f"{kind.rate:.0f}",
        ])  # fmt: skip
    widths = [max(len(row[n]) for row in rows) for n in range(len(header))]
    table = ["  ".join(c.ljust(w) if n == 0 else c.rjust(w) for n, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]  # fmt: skip
    lines += [table[0], "-" * len(table[0]), *table[1:]]
    lines += [
        "",
        "none free: real answers with no free time that day; times/answer: free start times listed per answer "
        "(anyone: over every practitioner); latency: BEGIN .. COMMIT at the client",
        "",
        f"target p99 <= {TARGET_P99_MS:g} ms:",
    ]
    baseline = result.kinds.get("one diary")
    for kind in result.kinds.values():
        p99 = kind.percentile(99)
        versus = f" ({p99 / baseline.percentile(99):.1f} x one diary)" if baseline and kind is not baseline else ""
        verdict = "met" if p99 <= TARGET_P99_MS else "MISSED"
        lines.append(f"  {KIND_NAMES[kind.name]}: p99 {p99:.1f} ms{versus}: {verdict}")
    for kind in result.kinds.values():
        if kind.error_samples:
            lines += ["", f"errors ({KIND_NAMES[kind.name]}, first of {kind.errors}):"]
            lines += [f"  {sample}" for sample in kind.error_samples]
    if any(kind.functions for kind in result.kinds.values()):
        lines += ["", "functions' own time per check_availability (track_functions = 'all', a pass of its own):"]
        for kind in result.kinds.values():
            shown = [f for f in kind.functions if f[2] >= 0.05][:10]
            total = sum(f[2] for f in kind.functions)
            lines.append(f"  {KIND_NAMES[kind.name]} (all functions {total:.1f} ms):")
            lines += [f"    {ms:7.2f} ms  {n:8.1f} calls  {name}" for name, n, ms in shown]
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=Options.calls, help="measured calls of each kind")
    parser.add_argument("--days", type=int, default=Options.days, help="open days measured, spread over the horizon")
    parser.add_argument("--booked-share", type=float, default=Options.booked_share,
                        help="share of each diary's time booked (about)")  # fmt: skip
    parser.add_argument("--history-days", type=int, default=Options.history_days,
                        help="also fill this many past days (a clinic's history stays in the table)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=Options.seed, help="for the diaries and the order of calls")
    parser.add_argument("--functions", action="store_true", help="also print each SQL function's own time per call")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.days < 1 or args.history_days < 0 or not 0 < args.booked_share < 1:
        parser.error("--calls and --days must be at least 1, --history-days at least 0, --booked-share in (0, 1)")
    return replace(
        Options(), calls=args.calls, days=args.days, booked_share=args.booked_share, seed=args.seed,
        history_days=args.history_days, functions=args.functions,
    )  # fmt: skip


@contextlib.contextmanager
def _timed() -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"\n(the benchmark took {time.monotonic() - started:.0f} s)")


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    with _timed():
        print(report(run_bench(options)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
