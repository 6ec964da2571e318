"""Throughput, latency, CPU and memory of the sync daemon, against the floor, on both database paths.

    .venv/bin/python -m bench.throughput [--clinics 50] [--backlog 10000] [--rate 100] [--steady-seconds 30]
                                         [--latency-ms 0,100] [--paths postgres,supabase] [--quick]
                                         [--requests-per-minute 100000] [--daemon-env NAME=VALUE ...]
                                         [--profile DIR] [--source DIR]

For each Google latency (the stand-in's delay before it answers any calendar request):
- the floor (bench/floor.py, a process of its own): the least work syncing takes, no framework;
- the daemon (`python -m daemon`, a process of its own) on each database path: first it drains the
  backlog (rows made before it started), then, once it is quiet, bookings arrive through
  `vapi_tool_call` at --rate for --steady-seconds.

Every run gets a fresh copy of one template database: K clinics, each with its key, and the
backlog, made once through `vapi_tool_call` exactly as PostgREST calls it (several authenticator
connections in parallel). Google accounts and connections are made per run, at a fresh stand-in.
The Google stand-in and the load run in this process; the Supabase path's REST and Realtime
stand-ins in one of their own (bench/supabase_standins.py), so Google answers every run alike.

Figures: drain rate = backlog / (first Google insert .. last row written back as synced); the
floor's and the daemon's are measured the same way, so their ratio is fair. CPU seconds per 1,000
appointments = the process's utime+stime (/proc) across 10%..90% of its drain (and across the
steady phase); peak RSS = VmHWM; RSS also at 10/50/90/100% of the drain. Latency = the stand-in's
record of when it created the event minus the moment the booking's RPC returned (committed);
pipeline overhead = that minus the stand-in's own delay. Also: the daemon's database function
calls (pg_stat_user_functions) and what it logged. Prints a table; asserts nothing.

--profile DIR records each daemon's drain with py-spy (a dev tool: `.venv/bin/pip install py-spy`;
BENCH_PY_SPY_FLAGS replaces its default `--gil`); --source DIR measures another tree's daemon and
migrations (a before/after comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import psycopg
from loguru import logger
from psycopg import sql

from daemon.calendar import event_id_for
from daemon.config import DEFAULT_MIGRATIONS_DIR, Settings
from daemon.migrations import apply
from tests.daemon_harness import ROOT, Backend, settings_env, store_connection
from tests.dates import next_clock_change, upcoming
from tests.standins.clinics import create_clinic, issue_key
from tests.standins.google import API_PATH, GoogleStandIn
from tests.standins.postgres import AUTHENTICATOR, MIGRATOR, ThrowawayPostgres, scalar
from tests.standins.vapi import Assistant, VapiCall

ALWAYS_OPEN = {day: [("00:00", "24:00")] for day in range(1, 8)}
SLOT_MINUTES = 30
PATHS = ("postgres", "supabase")
PATH_NAMES = {"postgres": "direct PostgreSQL", "supabase": "Supabase REST"}
SAMPLE_SECONDS = 0.05
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Options:
    clinics: int = 50
    backlog: int = 10_000
    rate: float = 100.0  # steady bookings per second
    steady_seconds: float = 30.0
    latencies_ms: tuple[float, ...] = (0.0, 100.0)
    paths: tuple[str, ...] = PATHS
    # Google's quota, the same everywhere: the stand-in's per-account limit, the daemon's
    # GOOGLE_REQUESTS_PER_MINUTE and the floor's sliding window. The default keeps it out of the way.
    requests_per_minute: int = 100_000
    booking_connections: int = 4
    floor: bool = True
    floor_batch: int = 8
    daemon_env: tuple[tuple[str, str], ...] = ()  # extra settings for the daemon, e.g. (("SYNC_WORKERS", "32"),)
    profile_dir: str | None = None  # record the daemon's drain with py-spy (collapsed stacks) into this folder
    # Another source tree (its daemon/ and supabase/migrations/) to measure instead of this one: before/after.
    source: str | None = None
    timeout: float = 600.0


@dataclass
class Sample:
    at: float  # time.time()
    synced: int
    cpu: float  # the watched process's utime + stime, seconds
    rss_mb: float


@dataclass
class Drain:
    count: int
    seconds: float
    cpu_per_1000: float
    peak_rss_mb: float
    rss_mb: dict[int, float]  # at 10, 50, 90 and 100% of the drain

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class Steady:
    bookings: int
    achieved_rate: float
    latencies_ms: list[float]
    google_latency_ms: float
    cpu_per_1000: float
    committed_at: list[float] = field(default_factory=list)  # time.time() of each booking, as latencies_ms
    settle_seconds: float = 0.0  # how long the daemon took to go quiet after the drain

    def percentile(self, p: float, *, overhead: bool = False) -> float:
        ordered = sorted(self.latencies_ms)  # nearest rank
        value = ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]
        return value - self.google_latency_ms if overhead else value


@dataclass
class Run:
    system: str  # "floor" or "daemon"
    path: str  # "postgres" / "supabase"; the floor always goes straight to PostgreSQL
    latency_ms: float
    drain: Drain
    steady: Steady | None = None
    appointments: int = 0
    events: int = 0  # events at the stand-in, over every account
    inserts: int = 0  # events.insert requests the stand-in answered
    not_ok: int = 0  # calendar answers other than 200
    database_calls: dict[str, int] = field(default_factory=dict)  # the daemon's function calls, whole run
    log: list[str] = field(default_factory=list)  # what the daemon logged (at WARNING and above)
    deadlocks: int = 0  # PostgreSQL's count for the run's database
    bench_cpu_per_1000: float = float("nan")  # the stand-ins' processes (and the load) during the drain
    machine_busy: float = float("nan")  # share of all cores busy during the drain

    @property
    def exactly_once(self) -> bool:
        return self.appointments == self.events == self.inserts and self.not_ok == 0


@dataclass
class Seeded:
    template: str
    clinic_ids: list[uuid.UUID]
    keys: list[str]
    first_day: dt.date
    backlog_seconds: float
    backlog: int


@dataclass
class Result:
    options: Options
    runs: list[Run] = field(default_factory=list)
    seeded: Seeded | None = None
    daemon_settings: dict[str, Any] = field(default_factory=dict)


# -- the processes we watch -------------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    with open("/proc/stat") as stat:
        numbers = [int(n) for n in stat.readline().split()[1:]]
    idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)
    return sum(numbers) - idle, sum(numbers)


class Watch:
    """Samples a process's CPU and RSS and the count of synced rows until a target is reached."""

    def __init__(
        self, pid: int, admin: psycopg.Connection, alive: Callable[[], bool], standins: Sequence[int] = ()
    ) -> None:
        self.pid = pid
        self.standins = [os.getpid(), *standins]  # the processes serving the stand-ins (this one too)
        self.admin = admin
        self.alive = alive
        self.samples: list[Sample] = []

    def synced(self) -> int:
        return int(scalar(self.admin, "select count(*) from public.appointments where sync_state = 'synced'"))

    def sample(self) -> Sample:
        rss, _ = process_memory_mb(self.pid)
        if not rss and self.samples:  # an ended process (not yet reaped) shows no RSS: its last one stands
            rss = self.samples[-1].rss_mb
        sample = Sample(time.time(), self.synced(), process_cpu(self.pid), rss)
        self.samples.append(sample)
        return sample

    def quiet(self, window: float = 1.0, busy: float = 0.1, timeout: float = 60.0) -> float:
        """Wait until the process and the stand-ins' processes each used under `busy` of a core over `window`
        seconds: the work a drain leaves behind is done (the busy mirror reading back every calendar, the
        Realtime stand-in working off the drain's change notifications). Returns how long that took."""
        started = time.monotonic()
        cpu = [process_cpu(pid) for pid in (self.pid, *self.standins)]
        while time.monotonic() - started < timeout:
            time.sleep(window)
            now = [process_cpu(pid) for pid in (self.pid, *self.standins)]
            if all(b - a < busy * window for a, b in zip(cpu, now, strict=True)):
                break
            cpu = now
        return time.monotonic() - started

    def until(self, target: int, timeout: float, what: str) -> Sample:
        deadline = time.monotonic() + timeout
        while True:
            sample = self.sample()  # first: a process seen ended is reaped, and its /proc entry goes
            alive = self.alive()
            if sample.synced >= target:
                return sample
            if not alive:
                if self.synced() >= target:  # it finished just after the sample
                    sample.synced = target
                    return sample
                raise RuntimeError(f"{what}: the process ended early")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: {sample.synced} of {target} synced after {timeout:g}s")
            time.sleep(SAMPLE_SECONDS)


def drain_figures(
    watch: Watch, admin: psycopg.Connection, google: GoogleStandIn, accounts: Sequence[str], count: int, latency: float
) -> Drain:
    """From the samples of a finished drain of `count` rows (the only rows synced so far)."""
    created = [
        dt.datetime.fromisoformat(e["created"].replace("Z", "+00:00")).timestamp()
        for account in accounts
        for e in google.events(account)
    ]
    first_insert = min(created) - latency  # when the first insert reached the stand-in
    last_synced = scalar(admin, "select max(synced_at) from public.appointments").timestamp()

    samples = watch.samples

    def at(share: float) -> Sample:
        return next(s for s in samples if s.synced >= share * count)

    low, high = at(0.1), at(0.9)
    if high.synced > low.synced and high.cpu > low.cpu:
        cpu = (high.cpu - low.cpu) / (high.synced - low.synced) * 1000
    else:  # too quick to sample in between: the whole run
        cpu = (samples[-1].cpu - samples[0].cpu) / count * 1000
    try:
        _, peak = process_memory_mb(watch.pid)
    except OSError:  # the floor may have ended already
        peak = max(s.rss_mb for s in samples)
    return Drain(
        count=count,
        seconds=last_synced - first_insert,
        cpu_per_1000=cpu,
        peak_rss_mb=peak,
        rss_mb={p: at(p / 100).rss_mb for p in (10, 50, 90, 100)},
    )


# -- the database ---------------------------------------------------------------------------------


def slot_time(first_day: dt.date, slot: int) -> str:
    """The clinic-local start of a clinic's `slot`-th back-to-back half hour from `first_day`, round the clock."""
    minutes = SLOT_MINUTES * slot
    day = first_day + dt.timedelta(days=minutes // 1440)
    return f"{day}T{(minutes % 1440) // 60:02d}:{minutes % 60:02d}"


def first_quiet_day(days: int) -> dt.date:
    """A Wednesday at least four weeks ahead with no clock change in the `days` from it."""
    changes = [next_clock_change(forward) for forward in (True, False)]
    day = upcoming(3, weeks_ahead=4)
    while any(day <= change <= day + dt.timedelta(days=days) for change in changes):
        day += dt.timedelta(weeks=1)
    return day


def book_many(
    dsn: str,
    clinic_keys: Sequence[str],
    first_day: dt.date,
    numbers: range,
    connections: int,
    rate: float | None = None,
    slot_offset: int = 0,
) -> list[tuple[int, str, float]]:
    """Book appointment number n (n in `numbers`) for clinic n % K at that clinic's slot n // K
    (+ slot_offset), through `vapi_tool_call` on `connections` authenticator connections, as fast
    as they go or at `rate` per second. Returns (clinic index, reference, when the RPC returned)."""
    booked: list[tuple[int, str, float]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = time.monotonic()

    def worker(offset: int) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as gateway:
                assistants = [Assistant(gateway, key, VapiCall()) for key in clinic_keys]
                for position in range(offset, len(numbers), connections):
                    n = numbers[position]
                    if rate is not None:
                        time.sleep(max(0.0, start + position / rate - time.monotonic()))
                    clinic = n % len(clinic_keys)
                    reference = assistants[clinic].book(
                        slot_time(first_day, slot_offset + n // len(clinic_keys)), f"Bench patient {n}"
                    )
                    at = time.time()  # the RPC returns once its transaction committed
                    with lock:
                        booked.append((clinic, reference, at))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(c,), name=f"booking-{c}") for c in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return booked


def seed_template(pg: ThrowawayPostgres, options: Options) -> Seeded:
    """Migrations, K clinics with keys, and the backlog booked through vapi_tool_call."""
    template = f"bench_template_{uuid.uuid4().hex[:8]}"
    pg.create_database(template)
    pg.bootstrap_supabase(template)
    apply(
        pg.dsn(template, MIGRATOR),
        Path(options.source) / "supabase" / "migrations" if options.source else DEFAULT_MIGRATIONS_DIR,
    )
    per_clinic = -(-(options.backlog + round(options.rate * options.steady_seconds)) // options.clinics)
    first_day = first_quiet_day(SLOT_MINUTES * per_clinic // 1440 + 2)
    with psycopg.connect(pg.dsn(template), autocommit=True) as admin:
        clinic_ids = [
            create_clinic(admin, f"Bench Clinic {n}", hours=ALWAYS_OPEN, booking_horizon_days=730)
            for n in range(options.clinics)
        ]
        keys = [issue_key(admin, clinic_id) for clinic_id in clinic_ids]
    started = time.monotonic()
    book_many(pg.dsn(template, AUTHENTICATOR), keys, first_day, range(options.backlog), options.booking_connections)
    seconds = time.monotonic() - started
    with psycopg.connect(pg.dsn(template), autocommit=True) as admin:
        admin.execute("vacuum analyze")
    return Seeded(template, clinic_ids, keys, first_day, seconds, options.backlog)


@contextmanager
def copy_of(pg: ThrowawayPostgres, seeded: Seeded, name: str) -> Iterator[str]:
    pg.create_database(name, template=seeded.template)
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:  # count calls per function (pg_stat_user_functions)
        conn.execute(sql.SQL("alter database {} set track_functions = 'all'").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        pg.drop_database(name)


def connect_accounts(admin: psycopg.Connection, google: GoogleStandIn, clinic_ids: Sequence[uuid.UUID]) -> list[str]:
    """An account at the stand-in and a stored connection per clinic; returns their refresh tokens."""
    refresh_tokens = []
    for n, clinic_id in enumerate(clinic_ids):
        refresh_token = google.add_account(account_of(n))
        store_connection(admin, clinic_id, account_of(n), refresh_token)
        refresh_tokens.append(refresh_token)
    return refresh_tokens


def account_of(n: int) -> str:
    return f"bench-clinic-{n}@example.com"


SYNC_FUNCTIONS = ("claim_appointments", "complete_appointment_syncs", "complete_appointment_sync")
NOT_THE_DAEMONS = ("vapi_tool_call", "save_calendar_connection")  # the bench's own calls


def function_calls(admin: psycopg.Connection) -> dict[str, int]:
    """Calls of the public functions the daemon uses, since the database was made (read once the daemon is
    gone, so every session has reported its counts): the sync queue's by name, the rest as `other`."""
    calls: dict[str, int] = {}
    for name, count in admin.execute(
        "select funcname, sum(calls) from pg_stat_user_functions where schemaname = 'public' group by funcname"
    ):
        if name not in NOT_THE_DAEMONS:
            key = name if name in SYNC_FUNCTIONS else "other"
            calls[key] = calls.get(key, 0) + int(count)
    return calls


def deadlocks(admin: psycopg.Connection) -> int:
    return int(scalar(admin, "select deadlocks from pg_stat_database where datname = current_database()"))


def calendar_counts(google: GoogleStandIn, accounts: Sequence[str]) -> tuple[int, int, int]:
    """(events stored, inserts answered, calendar answers other than 200)."""
    requests = [r for r in google.requests() if r.path.startswith(API_PATH)]
    inserts = sum(1 for r in requests if r.method == "POST" and r.path.endswith("/events") and r.status == 200)
    not_ok = sum(1 for r in requests if r.status != 200)
    return sum(len(google.events(a)) for a in accounts), inserts, not_ok


# -- the floor --------------------------------------------------------------------------------------


def access_token(google: GoogleStandIn, refresh_token: str) -> str:
    form = urllib.parse.urlencode(
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": google.client_id,
            "client_secret": google.client_secret,
        }
    ).encode()
    with urllib.request.urlopen(google.token_uri, form, timeout=10) as response:
        return str(json.load(response)["access_token"])


def run_floor(pg: ThrowawayPostgres, seeded: Seeded, options: Options, latency: float, workers: int) -> Run:
    with (
        copy_of(pg, seeded, f"bench_floor_{uuid.uuid4().hex[:8]}") as dbname,
        GoogleStandIn(
            latency=latency,
            requests_per_minute=options.requests_per_minute,
            project_requests_per_minute=project_quota(options),
        ) as google,
        psycopg.connect(pg.dsn(dbname), autocommit=True) as admin,
    ):
        refresh_tokens = connect_accounts(admin, google, seeded.clinic_ids)
        calendars = {
            str(clinic_id): [calendar_id, zone]
            for clinic_id, calendar_id, zone in admin.execute("select id, calendar_id, time_zone from public.clinics")
        }
        config = {
            "dsn": pg.dsn(dbname, MIGRATOR),
            "api_endpoint": google.api_endpoint,
            "tokens": {str(c): access_token(google, t) for c, t in zip(seeded.clinic_ids, refresh_tokens, strict=True)},
            "calendars": calendars,
            "workers": workers,
            "batch": options.floor_batch,
            "requests_per_minute": options.requests_per_minute,
            "expect": seeded.backlog,
        }
        with tempfile.TemporaryFile() as output:
            bench_cpu, ticks = process_cpu(os.getpid()), machine_ticks()
            busy = float("nan")
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.floor"], cwd=ROOT, stdin=subprocess.PIPE, stdout=output, stderr=output
            )
            assert process.stdin is not None
            process.stdin.write(json.dumps(config).encode())
            process.stdin.close()
            watch = Watch(process.pid, admin, lambda: process.poll() is None)
            try:
                watch.until(seeded.backlog, options.timeout, "the floor")
                bench_cpu, busy = process_cpu(os.getpid()) - bench_cpu, _ticks_since(ticks)
                drain = drain_figures(watch, admin, google, _accounts(seeded), seeded.backlog, latency)
                process.wait(timeout=30)
                output.seek(0)
                # The floor counts its own CPU from its first claim to its exit (exact, however short the run),
                # and its peak RSS (the process is gone before its /proc entry can be read).
                told = json.loads(output.read().splitlines()[-1])
                drain.cpu_per_1000 = told["cpu_seconds"] / seeded.backlog * 1000
                drain.peak_rss_mb = max(told["peak_rss_mb"], drain.peak_rss_mb)
            except BaseException:
                _show_output(output, "floor")
                raise
            finally:
                _end(process)
        events, inserts, not_ok = calendar_counts(google, _accounts(seeded))
        return Run(
            "floor",
            "postgres",
            latency * 1000,
            drain,
            appointments=seeded.backlog,
            events=events,
            inserts=inserts,
            not_ok=not_ok,
            bench_cpu_per_1000=bench_cpu / seeded.backlog * 1000,
            machine_busy=busy,
        )


def _ticks_since(before: tuple[int, int]) -> float:
    busy, total = machine_ticks()
    return (busy - before[0]) / max(1, total - before[1])


def _accounts(seeded: Seeded) -> list[str]:
    return [account_of(n) for n in range(len(seeded.clinic_ids))]


def _show_output(output: IO[bytes], what: str) -> None:
    output.seek(0)
    tail = output.read().decode(errors="replace")[-4000:]
    print(f"--- {what} output (tail) ---\n{tail}", file=sys.stderr)


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the daemon -------------------------------------------------------------------------------------


def project_quota(options: Options) -> int:
    """The per-project quota everywhere: out of the way, unless every clinic's quota together is lower."""
    return max(options.requests_per_minute * options.clinics, 10_000)


def daemon_overrides(options: Options) -> dict[str, str]:
    """Production settings except where the bench must decide: quiet logs, any free metrics port."""
    defaults = Settings.model_fields
    overrides: dict[str, Any] = {
        "log_level": "WARNING",
        "metrics_port": 0,
        "google_requests_per_minute": options.requests_per_minute,
        # A pipeline measurement: the project's quota out of the way too (bench/quota.py measures the budget).
        "google_project_requests_per_minute": project_quota(options),
        # settings_env() sets test timings; put back the production defaults.
        "sync_poll_seconds": defaults["sync_poll_seconds"].default,
        "sync_lease_seconds": defaults["sync_lease_seconds"].default,
        "google_timeout_seconds": defaults["google_timeout_seconds"].default,
        "feed_probe_seconds": defaults["feed_probe_seconds"].default,
        "feed_probe_timeout_seconds": defaults["feed_probe_timeout_seconds"].default,
        "backlog_metrics_seconds": defaults["backlog_metrics_seconds"].default,
        # Explicit, so the floor's thread count and the daemon's workers agree whatever tree is measured.
        "sync_workers": defaults["sync_workers"].default,
        "sync_backoff_base_seconds": defaults["sync_backoff_base_seconds"].default,
        "sync_backoff_cap_seconds": defaults["sync_backoff_cap_seconds"].default,
    }
    overrides.update({name.lower(): value for name, value in options.daemon_env})
    return {name.upper(): str(value) for name, value in overrides.items()}


def effective_settings(options: Options) -> dict[str, Any]:
    """The tuning the daemon runs with (defaults unless --daemon-env says otherwise)."""
    chosen = {name.lower(): value for name, value in options.daemon_env}
    names = ("sync_workers", "sync_batch_size", "sync_per_clinic_batch", "sync_coalesce_seconds", "sync_poll_seconds")
    values = {name: chosen.get(name, Settings.model_fields[name].default) for name in names}
    values["google_requests_per_minute"] = options.requests_per_minute
    return values


@dataclass
class ServedPath:
    """A database path as the daemon sees it, and the processes serving it besides PostgreSQL."""

    backend: Backend
    standin_pids: list[int] = field(default_factory=list)

    def standin_cpu(self) -> float:
        """CPU seconds of this process (the Google stand-in, the load) and the path's stand-in process."""
        return process_cpu(os.getpid()) + sum(process_cpu(pid) for pid in self.standin_pids)


@contextmanager
def backend_for(path: str, pg: ThrowawayPostgres, dbname: str) -> Iterator[ServedPath]:
    if path == "postgres":
        yield ServedPath(Backend("postgres", {"DATABASE_URL": pg.dsn(dbname, MIGRATOR)}, feed=True))
        return
    # The REST and Realtime stand-ins run in a process of their own (bench/supabase_standins.py).
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.supabase_standins", pg.dsn(dbname, AUTHENTICATOR), pg.dsn(dbname)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        served = json.loads(process.stdout.readline() or "null")
        if served is None:
            raise RuntimeError("the Supabase stand-ins did not start")
        env = {
            "SUPABASE_URL": served["url"],
            "SUPABASE_SERVICE_ROLE_KEY": served["service_role_key"],
            "SUPABASE_REALTIME_URL": served["realtime_url"],
        }
        yield ServedPath(Backend("supabase", env, feed=True), [process.pid])
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def run_daemon(pg: ThrowawayPostgres, seeded: Seeded, options: Options, latency: float, path: str) -> Run:
    steady_count = round(options.rate * options.steady_seconds)
    with (
        copy_of(pg, seeded, f"bench_{path}_{uuid.uuid4().hex[:8]}") as dbname,
        GoogleStandIn(
            latency=latency,
            requests_per_minute=options.requests_per_minute,
            project_requests_per_minute=project_quota(options),
        ) as google,
        psycopg.connect(pg.dsn(dbname), autocommit=True) as admin,
    ):
        connect_accounts(admin, google, seeded.clinic_ids)
        with backend_for(path, pg, dbname) as served, tempfile.TemporaryFile() as output:
            env = settings_env(served.backend, google, **daemon_overrides(options))
            bench_cpu, ticks = served.standin_cpu(), machine_ticks()
            busy = float("nan")
            process = subprocess.Popen(
                [sys.executable, "-m", "daemon"],
                cwd=options.source or ROOT,
                env={**os.environ, **env},
                stdout=output,
                stderr=output,
            )
            watch = Watch(process.pid, admin, lambda: process.poll() is None, served.standin_pids)
            profiler = start_profiler(options, process.pid, f"{path}-{latency * 1000:.0f}ms")
            try:
                watch.until(seeded.backlog, options.timeout, f"the daemon ({path}) draining the backlog")
                bench_cpu, busy = served.standin_cpu() - bench_cpu, _ticks_since(ticks)
                stop_profiler(profiler)
                drain = drain_figures(watch, admin, google, _accounts(seeded), seeded.backlog, latency)
                steady = None
                if steady_count:
                    steady = measure_steady(
                        pg.dsn(dbname, AUTHENTICATOR), google, seeded, options, watch, latency, steady_count
                    )
                # the drain's peak, or the steady phase's if that was higher
                drain.peak_rss_mb = process_memory_mb(process.pid)[1]
            except BaseException:
                _show_output(output, f"daemon ({path})")
                raise
            finally:
                if profiler is not None and profiler.poll() is None:
                    stop_profiler(profiler)
                _end(process)
            if process.returncode != 0:
                _show_output(output, f"daemon ({path})")
            output.seek(0)
            log = output.read().decode(errors="replace").splitlines()
        events, inserts, not_ok = calendar_counts(google, _accounts(seeded))
        return Run(
            "daemon",
            path,
            latency * 1000,
            drain,
            steady,
            appointments=seeded.backlog + steady_count,
            events=events,
            inserts=inserts,
            not_ok=not_ok,
            database_calls=function_calls(admin),
            deadlocks=deadlocks(admin),
            log=log,
            bench_cpu_per_1000=bench_cpu / seeded.backlog * 1000,
            machine_busy=busy,
        )


def start_profiler(options: Options, pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """py-spy sampling every thread of the daemon (a dev tool: `pip install py-spy`), if asked for."""
    if options.profile_dir is None:
        return None
    Path(options.profile_dir).mkdir(parents=True, exist_ok=True)
    target = Path(options.profile_dir) / f"daemon-{name}.txt"
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        raise SystemExit("--profile needs py-spy (a dev tool, not a dependency): .venv/bin/pip install py-spy")
    command = [str(py_spy), "record", "--pid", str(pid), "--rate", "250"]
    command += ["--format", "raw", "--nonblocking", "--output", str(target)]
    command += os.environ.get("BENCH_PY_SPY_FLAGS", "--gil").split()  # --gil: where CPU goes
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        profiler.wait(timeout=60)


def measure_steady(
    dsn: str, google: GoogleStandIn, seeded: Seeded, options: Options, watch: Watch, latency: float, count: int
) -> Steady:
    """Bookings through vapi_tool_call at the steady rate while the daemon runs, and their latency."""
    settle = watch.quiet()
    before = watch.sample()
    started = time.monotonic()
    booked = book_many(
        dsn,
        seeded.keys,
        seeded.first_day,
        range(seeded.backlog, seeded.backlog + count),
        options.booking_connections,
        rate=options.rate,
    )
    achieved = count / (time.monotonic() - started)
    after = watch.until(seeded.backlog + count, 120.0, "the daemon syncing the steady bookings")
    ids = {
        (clinic_id, reference): appointment_id
        for appointment_id, clinic_id, reference in watch.admin.execute(
            "select id, clinic_id, reference from public.appointments"
        )
    }
    created = {
        e["id"]: dt.datetime.fromisoformat(e["created"].replace("Z", "+00:00")).timestamp()
        for account in _accounts(seeded)
        for e in google.events(account)
    }
    latencies = [
        (created[event_id_for(ids[(seeded.clinic_ids[clinic], reference)])] - at) * 1000
        for clinic, reference, at in booked
    ]
    return Steady(
        bookings=count,
        achieved_rate=achieved,
        latencies_ms=latencies,
        google_latency_ms=latency * 1000,
        cpu_per_1000=(after.cpu - before.cpu) / count * 1000,
        committed_at=[at for _, _, at in booked],
        settle_seconds=settle,
    )


# -- the whole benchmark ----------------------------------------------------------------------------


def run_bench(options: Options, pg: ThrowawayPostgres | None = None) -> Result:
    """Seed once, then per Google latency: the floor, and the daemon on each path. Needs a cluster
    (one is started when none is given)."""
    if pg is None:
        with ThrowawayPostgres() as cluster:
            return run_bench(options, cluster)
    result = Result(options, daemon_settings=effective_settings(options))
    seeded = result.seeded = seed_template(pg, options)
    try:
        for latency_ms in options.latencies_ms:
            latency = latency_ms / 1000
            if options.floor:
                result.runs.append(run_floor(pg, seeded, options, latency, result.daemon_settings["sync_workers"]))
            for path in options.paths:
                result.runs.append(run_daemon(pg, seeded, options, latency, path))
    finally:
        pg.drop_database(seeded.template)
    return result


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown CPU"


def _ratio(ratio: float) -> str:
    """Two decimals, rounded down, so a ratio shown as 0.50 has reached half."""
    return f"{math.floor(ratio * 100) / 100:.2f}"


def _settled(result: Result) -> str:
    waits = sorted(round(run.steady.settle_seconds) for run in result.runs if run.steady is not None)
    if not waits:
        return "-"
    return f"{waits[0]} s" if waits[0] == waits[-1] else f"{waits[0]}-{waits[-1]} s"


def report(result: Result) -> str:
    options, seeded, tuned = result.options, result.seeded, result.daemon_settings
    assert seeded is not None
    lines = [
        "",
        f"machine: {os.cpu_count()} cores ({_cpu_model()}), Python {platform.python_version()}, {platform.system()}",
        f"daemon (`python -m daemon`, own process): SYNC_WORKERS={tuned['sync_workers']}, "
        f"SYNC_BATCH_SIZE={tuned['sync_batch_size']}, SYNC_PER_CLINIC_BATCH={tuned['sync_per_clinic_batch']}, "
        f"SYNC_COALESCE_SECONDS={tuned['sync_coalesce_seconds']}, SYNC_POLL_SECONDS={tuned['sync_poll_seconds']}, "
        "change feed on, LOG_LEVEL=WARNING, metrics on"
        + (f"; source tree {options.source}" if options.source else "")
        + "".join(f"; {k.upper()}={v}" for k, v in options.daemon_env if k.lower() not in tuned),
        f"floor (bench/floor.py, own process): {tuned['sync_workers']} threads (= SYNC_WORKERS), each one psycopg "
        f"connection + one keep-alive http.client connection, claims of {options.floor_batch}, one UPDATE write-back "
        "per claim",
        f"Google quota: {options.requests_per_minute:,} requests/min per clinic, the same in the stand-in, the "
        "daemon's GOOGLE_REQUESTS_PER_MINUTE and the floor's sliding window"
        + (" (raised out of the way: a pipeline measurement)" if options.requests_per_minute > 600 else ""),
        f"backlog: {seeded.backlog:,} bookings over {options.clinics} clinics, made once through vapi_tool_call "
        f"(as PostgREST calls it, {options.booking_connections} authenticator connections, "
        f"{seeded.backlog / max(seeded.backlog_seconds, 1e-9):.0f}/s) into a template database copied for every run; "
        "the process starts with the backlog waiting",
        f"steady: {options.rate:g} bookings/s through vapi_tool_call for {options.steady_seconds:g} s "
        f"({options.booking_connections} connections), same daemon process, once it is quiet after the drain "
        f"(took {_settled(result)}: the mirror reads back the calendars, the Realtime stand-in catches up)",
        f"note: {os.cpu_count()} cores shared by the measured process, PostgreSQL, this process (the Google "
        "stand-in, the load) and, on the Supabase path, a process with the REST and Realtime stand-ins; the "
        "floor is measured under the same conditions as the daemon; the "
        "Supabase REST stand-in is our Python imitation of PostgREST, so its overhead counts against that path",
        "",
    ]
    header = [
        "Google", "system", "drain/s", "x floor", "cpu s/1k", "bench", "busy", "RSS MB @10/50/90/100%", "peak MB",
        "steady/s", "p50 ms", "p95 ms", "p99 ms", "ovh p99", "cpu s/1k", "once",
    ]  # fmt: skip
    rows = [header]
    floors = {r.latency_ms: r for r in result.runs if r.system == "floor"}
    for run in result.runs:
        floor = floors.get(run.latency_ms)
        drain = run.drain
        row = [
            f"{run.latency_ms:.0f} ms",
            "floor" if run.system == "floor" else f"daemon, {PATH_NAMES[run.path]}",
            f"{drain.rate:.0f}",
            _ratio(drain.rate / floor.drain.rate) if floor and run is not floor else "-",
            f"{drain.cpu_per_1000:.2f}",
            f"{run.bench_cpu_per_1000:.2f}",
            f"{run.machine_busy:.0%}",
            "/".join(f"{drain.rss_mb[p]:.0f}" for p in (10, 50, 90, 100)),
            f"{drain.peak_rss_mb:.0f}",
        ]
        if run.steady is not None:
            steady = run.steady
            row += [f"{steady.achieved_rate:.1f}"]
            row += [f"{steady.percentile(p):.1f}" for p in (50, 95, 99)]
            row += [f"{steady.percentile(99, overhead=True):.1f}", f"{steady.cpu_per_1000:.2f}"]
        else:
            row += ["-"] * 6
        rows.append([*row, "yes" if run.exactly_once else "NO"])
    widths = [max(len(row[n]) for row in rows) for n in range(len(header))]
    table = [
        "  ".join(
            cell.ljust(w) if n == 1 else cell.rjust(w) for n, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines += [table[0], "-" * len(table[0]), *table[1:]]
    lines += [
        "",
        "drain/s: backlog / (first Google insert .. last write-back); x floor: the daemon's drain rate over the "
        "floor's at the same Google latency; cpu s/1k: the measured process's CPU seconds per 1,000 appointments "
        "(10-90% of the drain; last column: the steady phase); bench: the stand-ins' processes' CPU s/1k during the "
        "drain; busy: all cores during the drain; p50/p95/p99: booking commit -> Google insert, ms; "
        "ovh p99: p99 minus the stand-in's delay; once: every booking reached the stand-in exactly once",
        "",
        "database function calls per 1,000 appointments (the daemon's, whole run; other: the busy mirror, tokens, "
        "backlog metrics):",
    ]
    for run in result.runs:
        if run.database_calls:
            calls = ", ".join(
                f"{name} {count / run.appointments * 1000:.0f}" for name, count in sorted(run.database_calls.items())
            )
            lines.append(f"  {run.latency_ms:.0f} ms, {PATH_NAMES[run.path]}: {calls}; deadlocks {run.deadlocks}")
    for run in result.runs:
        if run.log:
            lines += ["", f"the daemon logged ({run.latency_ms:.0f} ms, {PATH_NAMES[run.path]}; {len(run.log)} lines):"]
            lines += [f"  {line[:200]}" for line in run.log[:5]]
            lines += ["  ..."] if len(run.log) > 5 else []
    lines += [
        "",
        "targets:",
    ]
    for run in result.runs:
        if run.system != "daemon":
            continue
        what = f"  {run.latency_ms:.0f} ms, {PATH_NAMES[run.path]}:"
        verdicts = []
        if run.steady is not None:
            overhead = run.steady.percentile(99, overhead=True)
            verdicts.append(
                f"overhead p99 {overhead:.1f} ms at {run.steady.achieved_rate:.0f}/s "
                f"{'<' if overhead < 100 else '>='} 100 ms: {'met' if overhead < 100 else 'MISSED'}"
            )
        floor = floors.get(run.latency_ms)
        if floor is not None:
            ratio = run.drain.rate / floor.drain.rate
            verdicts.append(f"drain {_ratio(ratio)} x floor: {'met' if ratio >= 0.5 else 'MISSED'}")
        # Flat: under 10% growth over the second half of the drain (the first half fills the worker threads'
        # clients, the database pool and the allocator's arenas; a 30,000 backlog shows where that levels off).
        start, half, end = (run.drain.rss_mb[p] for p in (10, 50, 100))
        flat = end - half <= 0.1 * half
        verdicts.append(
            f"RSS {start:.0f} / {half:.0f} / {end:.0f} MB at 10 / 50 / 100% of the drain: "
            + ("flat" if flat else "GROWING")
        )
        lines.append(f"{what} " + "; ".join(verdicts))
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clinics", type=int)
    parser.add_argument("--backlog", type=int)
    parser.add_argument("--rate", type=float, help="steady bookings per second (100)")
    parser.add_argument("--steady-seconds", type=float)
    parser.add_argument("--latency-ms", default="0,100", help="the Google stand-in's delays to measure with")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--quick", action="store_true", help="5 clinics, 500 backlog, 4 s steady: under a minute")
    parser.add_argument("--requests-per-minute", type=int, default=Options.requests_per_minute,
                        help="Google's per-clinic quota everywhere (Google's default: 600)")  # fmt: skip
    parser.add_argument("--floor-batch", type=int, default=Options.floor_batch)
    parser.add_argument("--booking-connections", type=int, default=Options.booking_connections)
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--profile", metavar="DIR", help="record each daemon's drain with py-spy into DIR")
    parser.add_argument("--source", metavar="DIR", help="measure the daemon and migrations of another source tree "
                        "(settings default as in this one: give others with --daemon-env)")  # fmt: skip
    parser.add_argument("--daemon-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a daemon setting, e.g. SYNC_WORKERS=32 (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    base = Options(clinics=5, backlog=500, steady_seconds=4.0) if args.quick else Options()
    paths = tuple(p for p in args.paths.split(",") if p)
    unknown = set(paths) - set(PATHS)
    if unknown:
        parser.error(f"unknown path(s): {', '.join(sorted(unknown))}")
    settings = []
    for item in args.daemon_env:
        name, equals, value = item.partition("=")
        if not equals:
            parser.error(f"--daemon-env wants NAME=VALUE, not {item!r}")
        settings.append((name, value))
    return replace(
        base,
        clinics=args.clinics if args.clinics is not None else base.clinics,
        backlog=args.backlog if args.backlog is not None else base.backlog,
        rate=args.rate if args.rate is not None else base.rate,
        steady_seconds=args.steady_seconds if args.steady_seconds is not None else base.steady_seconds,
        latencies_ms=tuple(float(v) for v in args.latency_ms.split(",") if v),
        paths=paths,
        requests_per_minute=args.requests_per_minute,
        floor_batch=args.floor_batch,
        booking_connections=args.booking_connections,
        floor=not args.no_floor,
        daemon_env=tuple(settings),
        profile_dir=args.profile,
        source=args.source,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    started = time.monotonic()
    result = run_bench(options)
    print(report(result))
    print(f"\n(the benchmark took {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
