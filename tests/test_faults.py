"""The fault suite: the whole pipeline under the failures it exists to survive, each scenario ending in
one check of every appointment against its clinic's Google Calendar.

Several clinics (each its own Google account and time zone) get a backlog booked through the Vapi RPC
and as batch SQL, with reschedules and cancellations mixed in before and during the drain, so inserts,
updates and deletes all meet the fault. Then `assert_calendar_matches_database`: for every row exactly one
event (id derived from the appointment id) in its own clinic's calendar and nothing else there, at the
row's instants in the clinic's zone, the event id on the row, the latest revision synced, nothing pending.

Random choices (kill points, faults, which rows change) come from one seed, printed and named in the
failure messages; `FAULT_SEED=<n>` replays a run's choices (thread timing still varies).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import class_row

from daemon.calendar import event_id_for
from daemon.config import DEFAULT_MIGRATIONS_DIR
from daemon.crypto import TokenCipher
from daemon.feed import FeedState
from daemon.migrations import apply
from tests.conftest import Database
from tests.daemon_harness import (
    TOKEN_KEY,
    Backend,
    DaemonThread,
    connect_google,
    daemon_process,
    make_settings,
    running,
    settings_env,
    store_connection,
    sync_states,
    wait_until,
)
from tests.dates import upcoming
from tests.standins.clinics import create_clinic, issue_key
from tests.standins.google import Fault, GoogleStandIn
from tests.standins.postgres import AUTHENTICATOR, MIGRATOR, SUPERUSER, ThrowawayPostgres, scalar
from tests.standins.realtime import RealtimeStandIn
from tests.standins.supabase_rest import SupabaseRestStandIn
from tests.standins.vapi import Assistant, VapiCall

# One clinic per zone: GMT/BST, a negative offset, a half-hour offset, the other hemisphere's summer time.
ZONES = ("Europe/London", "America/New_York", "Asia/Kolkata", "Australia/Sydney")
MONDAY = 1
# Generous bounds: other suites share this 2-core machine.
DRAIN_TIMEOUT = 90.0


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"FAULT_SEED={value}")  # pytest shows it with a failure's captured output
    return value


@pytest.fixture
def direct(database: Database) -> Backend:
    """The direct PostgreSQL path with its LISTEN/NOTIFY doorbell, as deployed."""
    return Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)}, feed=True)


# --- clinics and their backlog ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    """A clinic with its own Google account (whose primary calendar it uses) and its assistant's key."""

    id: uuid.UUID
    zone: str
    account: str
    key: str


def make_tenants(admin: psycopg.Connection, google: GoogleStandIn, count: int = 4) -> list[Tenant]:
    tenants = []
    for n in range(count):
        zone = ZONES[n % len(ZONES)]
        clinic_id = create_clinic(admin, f"Clinic {n}", time_zone=zone, booking_horizon_days=400)
        account = connect_google(admin, google, clinic_id, f"clinic{n}@example.com")
        tenants.append(Tenant(clinic_id, zone, account, issue_key(admin, clinic_id)))
    return tenants


def vapi_slots() -> Iterator[str]:
    """Free local start times, in order: weekdays from two weeks ahead, 09:00 to 16:30 every half hour."""
    day = upcoming(MONDAY, weeks_ahead=2)
    while True:
        if day.isoweekday() <= 5:
            for half_hours in range(16):
                hour, minute = divmod(9 * 60 + 30 * half_hours, 60)
                yield f"{day}T{hour:02d}:{minute:02d}"
        day += dt.timedelta(days=1)


class Diary:
    """Which times are taken and which bookings were changed, shared by every Backlog of one test."""

    def __init__(self, tenants: Sequence[Tenant]) -> None:
        self.slots = {t.id: vapi_slots() for t in tenants}
        self.sql_numbers = {t.id: itertools.count() for t in tenants}
        self.sql_base = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) + dt.timedelta(days=200)
        self.changed: set[uuid.UUID] = set()


class Backlog:
    """Makes bookings and changes them, each its own commit: through the Vapi RPC as a clinic's assistant
    does, and as batch SQL (the owner writing rows directly, as an import would). SQL bookings start on
    the hour, 200 days out, and last 30 minutes, so moving one by half an hour never overlaps another.
    `on()` gives one on other connections (another thread, or after a database restart), same diary."""

    def __init__(
        self,
        admin: psycopg.Connection,
        gateway: psycopg.Connection,
        tenants: Sequence[Tenant],
        rng: random.Random,
        diary: Diary | None = None,
    ) -> None:
        self._admin = admin
        self._gateway = gateway
        self._rng = rng
        self.tenants = list(tenants)
        self._assistants = {t.id: Assistant(gateway, t.key, VapiCall()) for t in tenants}
        diary = diary or Diary(tenants)
        self._diary = diary
        self._slots = diary.slots
        self._sql_numbers = diary.sql_numbers
        self._sql_base = diary.sql_base
        self._changed = diary.changed
        self.made = 0  # bookings and changes so far

    def on(self, admin: psycopg.Connection, gateway: psycopg.Connection, rng: random.Random | None = None) -> Backlog:
        return Backlog(admin, gateway, self.tenants, rng or self._rng, self._diary)

    def book_vapi(self, tenant: Tenant, count: int = 1) -> None:
        for _ in range(count):
            self._assistants[tenant.id].book(next(self._slots[tenant.id]), f"Patient {self.made}")
            self.made += 1

    def book_sql(self, tenant: Tenant, count: int = 1) -> None:
        numbers = [next(self._sql_numbers[tenant.id]) for _ in range(count)]
        self._admin.execute(
            "insert into public.appointments (clinic_id, reference, patient, service, starts_at, ends_at, source)"
            " select %s, 'S' || lpad(n::text, 5, '0'), jsonb_build_object('name', 'Batch ' || n), 'Check-up',"
            " %s + make_interval(hours => n), %s + make_interval(hours => n, mins => 30), 'api'"
            " from unnest(%s::int[]) as n",
            (tenant.id, self._sql_base, self._sql_base, numbers),
        )
        self.made += count

    def book_each(self, vapi: int, sql: int) -> None:
        for tenant in self.tenants:
            self.book_vapi(tenant, vapi)
            self.book_sql(tenant, sql)

    def change(self, count: int, *, state: str | None = None, how: str | None = None) -> int:
        """Reschedule or cancel (at random, or `how`) up to `count` live bookings not changed before, of any
        sync state or only of `state`: "synced" makes the change an update or a delete at Google, "in_flight"
        makes it race with a push of the previous revision. Returns how many changed."""
        rows = self._admin.execute(
            "select id, reference, source, clinic_id from public.appointments"
            " where status = 'booked' and starts_at > now() + interval '1 day'"
            " and sync_state = coalesce(%s, sync_state) order by clinic_id, reference",
            (state,),
        ).fetchall()
        candidates = [row for row in rows if row[0] not in self._changed]
        chosen = self._rng.sample(candidates, min(count, len(candidates)))
        for appointment_id, reference, source, clinic_id in chosen:
            self._changed.add(appointment_id)
            cancel = how == "cancel" if how else self._rng.random() < 0.5
            if source == "vapi":
                assistant = self._assistants[clinic_id]
                if cancel:
                    result = assistant.use("cancel_appointment", {"reference": reference})
                else:
                    new_start = next(self._slots[clinic_id])
                    result = assistant.use("reschedule_appointment", {"reference": reference, "new_start": new_start})
                assert "result" in result, result
            elif cancel:
                self._admin.execute(
                    "update public.appointments set status = 'cancelled', cancelled_at = now() where id = %s",
                    (appointment_id,),
                )
            else:
                self._admin.execute(
                    "update public.appointments set starts_at = starts_at + interval '30 minutes',"
                    " ends_at = ends_at + interval '30 minutes' where id = %s",
                    (appointment_id,),
                )
            self.made += 1
        return len(chosen)


# --- the invariant ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """What the invariant reads of an appointment."""

    id: uuid.UUID
    status: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    sync_state: str
    calendar_event_id: str | None
    revision: int
    synced_revision: int | None
    lease_owner: str | None
    last_sync_error: str | None


def calendar_problems(admin: psycopg.Connection, google: GoogleStandIn, tenant: Tenant) -> list[str]:
    """Everything wrong between one clinic's rows and its calendar (empty when they match)."""
    zone = str(scalar(admin, "select time_zone from public.clinics where id = %s", (tenant.id,)))
    events = {event["id"]: event for event in google.events(tenant.account)}
    with admin.cursor(row_factory=class_row(Row)) as cursor:
        rows = cursor.execute(
            "select id, status, starts_at, ends_at, sync_state, calendar_event_id, revision, synced_revision,"
            " lease_owner, last_sync_error from public.appointments where clinic_id = %s order by reference",
            (tenant.id,),
        ).fetchall()
    problems: list[str] = []
    expected: set[str] = set()
    for row in rows:
        event_id = event_id_for(row.id)
        where = f"{tenant.account} appointment {row.id} ({row.status})"
        if (row.sync_state, row.synced_revision, row.lease_owner) != ("synced", row.revision, None):
            problems.append(
                f"{where}: {row.sync_state}, revision {row.revision}, synced {row.synced_revision},"
                f" lease {row.lease_owner}, error {row.last_sync_error}"
            )
        if row.calendar_event_id != event_id:
            problems.append(f"{where}: calendar_event_id {row.calendar_event_id!r}, expected {event_id!r}")
        event = events.get(event_id)
        if row.status == "cancelled":
            # Never pushed while booked: its deletion met 404 and nothing was created. Otherwise deleted.
            if event is not None:
                expected.add(event_id)
                if event["status"] != "cancelled":
                    problems.append(f"{where}: its event is {event['status']}")
            continue
        expected.add(event_id)
        if event is None:
            problems.append(f"{where}: no event")
            continue
        if event["status"] != "confirmed":
            problems.append(f"{where}: its event is {event['status']}")
        for side, instant in (("start", row.starts_at), ("end", row.ends_at)):
            when = event.get(side) or {}
            sent = dt.datetime.fromisoformat(str(when.get("dateTime")))
            local_offset = sent.astimezone(ZoneInfo(zone)).utcoffset()
            if sent != instant or when.get("timeZone") != zone or sent.utcoffset() != local_offset:
                problems.append(f"{where}: {side} {when}, expected {instant.astimezone(ZoneInfo(zone))} in {zone}")
        if (event.get("extendedProperties") or {}).get("private", {}).get("appointmentId") != str(row.id):
            problems.append(f"{where}: the event names another appointment")
    problems += [
        f"{tenant.account}: event {event_id} belongs to no appointment" for event_id in events.keys() - expected
    ]
    return problems


def assert_calendar_matches_database(
    admin: psycopg.Connection, google: GoogleStandIn, tenants: Iterable[Tenant], *, seed: int
) -> None:
    """For every appointment of these clinics, booked or cancelled: exactly one event, `event_id_for(id)`, in
    its clinic's calendar and no other event there; a booked row's event confirmed at the row's instants
    with the clinic's zone (offset included); a cancelled row's event cancelled, or absent when it was
    cancelled before ever being pushed; the event id on the row; the latest revision synced, no lease."""
    problems = [problem for tenant in tenants for problem in calendar_problems(admin, google, tenant)]
    assert not problems, f"FAULT_SEED={seed}: {len(problems)} problem(s):\n" + "\n".join(problems[:30])


def assert_every_push_kind(google: GoogleStandIn, *, seed: int) -> None:
    """Google confirmed inserts, updates and deletes: the invariant was tested on all three."""
    confirmed = {(r.method, r.status) for r in google.requests() if "/events" in r.path}
    assert {("POST", 200), ("PUT", 200), ("DELETE", 204)} <= confirmed, (seed, confirmed)


def count_where(admin: psycopg.Connection, condition: str, params: Sequence[Any] = ()) -> int:
    return int(scalar(admin, f"select count(*) from public.appointments where {condition}", params))


def synced_count(admin: psycopg.Connection) -> int:
    return count_where(admin, "sync_state = 'synced'")


def drained(admin: psycopg.Connection) -> Callable[[], bool]:
    """Everything synced at its latest revision (a change made during a push re-queues the row). A `failed`
    row never gets there by itself: fail at once, with its reason, instead of waiting out the bound."""

    def check() -> bool:
        failed = admin.execute(
            "select id, last_sync_error from public.appointments where sync_state = 'failed' limit 5"
        ).fetchall()
        assert not failed, f"appointments failed: {failed}"
        return count_where(admin, "sync_state <> 'synced' or synced_revision <> revision") == 0

    return check


def metric(runner: DaemonThread, name: str) -> float:
    for family in text_string_to_metric_families(runner.daemon.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise KeyError(name)


# --- 1. SIGKILL at random points ------------------------------------------------------------------------------


def test_a_daemon_killed_at_random_points_while_a_backlog_drains_loses_and_duplicates_nothing(
    direct: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    gateway: psycopg.Connection,
    seed: int,
    tmp_path: Path,
) -> None:
    rng = random.Random(seed)
    tenants = make_tenants(admin, google)
    backlog = Backlog(admin, gateway, tenants, rng)
    backlog.book_each(vapi=6, sql=19)
    backlog.change(6)  # before any push: a cancellation never reaches Google, a move is simply inserted there
    total = count_where(admin, "true")
    # Every answer leaves 0.1 s after Google did the work: with 4 workers a few seconds of draining, and a kill
    # mid-push mostly lands after Google acted and before the row recorded it.
    google.chaos(1.0, [Fault.delay(0.1)], seed=seed)
    env = settings_env(direct, google, sync_workers=4, sync_batch_size=4)
    # Kill once the drain has reached these points (some random share of the backlog), then after 0-300 ms.
    targets = sorted(rng.sample(range(5, total - 30), 3))
    orphaned = []
    log = tmp_path / "daemon.log"
    for kill, target in enumerate(targets):
        with log.open("ab") as output:
            process = daemon_process(env, output)
        try:
            wait_until(
                lambda: synced_count(admin) >= target,  # noqa: B023 -- used before the loop moves on
                timeout=DRAIN_TIMEOUT,
                what=f"kill {kill}: {target} synced (FAULT_SEED={seed})",
            )
            backlog.change(2, state="synced")  # updates and deletes, pushed by this process or the next
            backlog.change(1, state="in_flight")  # a newer revision than the push the kill may interrupt
            time.sleep(rng.uniform(0.0, 0.3))  # jitter: where exactly the kill lands
        finally:
            process.kill()
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        orphaned.append(count_where(admin, "sync_state = 'in_flight'"))

    with log.open("ab") as output:
        survivor = daemon_process(env, output)
    try:
        wait_until(drained(admin), timeout=DRAIN_TIMEOUT, what=f"the backlog drained (FAULT_SEED={seed})")
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(timeout=30)
    assert survivor.returncode == 0, log.read_text()[-3000:]
    # The kills hit pushes in flight (left under a dead replica's lease), not only quiet moments, and some
    # after Google had created the event: the next push met its own earlier insert.
    assert sum(orphaned) > 0, (seed, orphaned)
    assert any(r.method == "POST" and r.status == 409 for r in google.requests()), seed
    assert_calendar_matches_database(admin, google, tenants, seed=seed)
    assert_every_push_kind(google, seed=seed)


# --- 2. Replicas ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_draining_one_backlog_push_every_change_once(
    direct: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    gateway: psycopg.Connection,
    seed: int,
    replicas: int,
) -> None:
    rng = random.Random(seed)
    tenants = make_tenants(admin, google)
    backlog = Backlog(admin, gateway, tenants, rng)
    backlog.book_each(vapi=5, sql=20)
    backlog.change(4)
    total = count_where(admin, "true")
    google.latency = 0.05
    # Small batches and a per-clinic cap: the replicas' claims interleave all the way through.
    settings = make_settings(direct, google, sync_batch_size=5, sync_per_clinic_batch=2, sync_workers=8)
    with contextlib.ExitStack() as stack:
        runners = [stack.enter_context(running(settings, owner=f"replica-{n}")) for n in range(replicas)]
        wait_until(lambda: synced_count(admin) >= total // 3, timeout=DRAIN_TIMEOUT, what=f"FAULT_SEED={seed}")
        in_flight = 0

        def changed_in_flight() -> bool:
            """Changes bookings while another revision is being pushed; on a loaded machine a look may fall
            between two claims with nothing in flight, so look again (until the backlog has drained)."""
            nonlocal in_flight
            in_flight = backlog.change(4, state="in_flight")
            return in_flight > 0 or drained(admin)()

        wait_until(changed_in_flight, timeout=DRAIN_TIMEOUT, what=f"rows in flight to change (FAULT_SEED={seed})")
        backlog.change(8, state="synced")
        for tenant in tenants:
            backlog.book_vapi(tenant)
        wait_until(drained(admin), timeout=DRAIN_TIMEOUT, what=f"the backlog drained (FAULT_SEED={seed})")
        claimed = [metric(runner, "calendar_sync_claimed_appointments_total") for runner in runners]
    assert all(count > 0 for count in claimed), (seed, claimed)  # every replica took part
    assert in_flight > 0, seed
    assert_calendar_matches_database(admin, google, tenants, seed=seed)
    assert_every_push_kind(google, seed=seed)


# --- 3. A hostile Google ------------------------------------------------------------------------------------

HOSTILE = {
    Fault.error(500, "backendError"): 2.0,
    Fault.error(503, "backendError"): 2.0,
    Fault.error(503, "backendError", retry_after=1): 1.0,
    Fault.error(429, "rateLimitExceeded"): 2.0,
    Fault.error(429, "rateLimitExceeded", retry_after=1): 1.0,
    Fault.error(403, "userRateLimitExceeded"): 1.0,
    Fault.drop_after_commit(): 3.0,
    Fault.delay(3.0): 0.2,  # longer than GOOGLE_TIMEOUT_SECONDS (2): the client gives up, Google did it
}


def test_a_hostile_google_delays_but_neither_loses_nor_duplicates(
    direct: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    gateway: psycopg.Connection,
    seed: int,
) -> None:
    rng = random.Random(seed)
    tenants = make_tenants(admin, google)
    backlog = Backlog(admin, gateway, tenants, rng)
    backlog.book_each(vapi=5, sql=15)
    total = count_where(admin, "true")
    held = Fault.delay(3.0)
    google.inject(held, times=2, method="POST")  # the first two inserts: done at Google, answered too late
    google.chaos(0.3, HOSTILE, seed=seed)
    # 30% of requests failing: allow many attempts, so no row gives up (`failed`) on bad luck alone.
    with running(make_settings(direct, google, sync_max_attempts=60, sync_workers=4)):
        # Move the bookings whose inserts Google holds: their retry meets an event at the old time (409),
        # which must be updated, not taken for the booking.
        wait_until(lambda: sum(r.fault == held for r in google.requests()) >= 2, what="two inserts held")
        assert backlog.change(4, state="in_flight", how="reschedule") >= 2, seed
        wait_until(lambda: synced_count(admin) >= total // 3, timeout=DRAIN_TIMEOUT, what=f"FAULT_SEED={seed}")
        backlog.change(8, state="synced")
        backlog.change(4, state="in_flight")
        backlog.change(4)
        wait_until(drained(admin), timeout=DRAIN_TIMEOUT, what=f"the backlog drained (FAULT_SEED={seed})")
    google.calm()

    faults = [r.fault for r in google.requests() if r.fault is not None]
    kinds = {(fault.kind, fault.status) for fault in faults}
    assert {("http", 500), ("http", 503), ("http", 429), ("drop_after_commit", 0), ("delay", 0)} <= kinds, seed
    assert len(faults) >= 30, (seed, len(faults))
    assert count_where(admin, "sync_attempts > 1") > 0, seed
    assert_calendar_matches_database(admin, google, tenants, seed=seed)
    assert_every_push_kind(google, seed=seed)


# --- 4. PostgreSQL restarted -----------------------------------------------------------------------------------


@pytest.fixture
def own_cluster() -> Iterator[ThrowawayPostgres]:
    """A cluster of this test's own, to stop and start (the session's is shared with every other test)."""
    with ThrowawayPostgres() as pg:
        pg.create_database("clinics")
        pg.bootstrap_supabase("clinics")
        apply(pg.dsn("clinics", MIGRATOR), DEFAULT_MIGRATIONS_DIR)
        yield pg


def connect(cluster: ThrowawayPostgres, user: str = SUPERUSER) -> psycopg.Connection:
    return psycopg.connect(cluster.dsn("clinics", user), autocommit=True)


def readiness(runner: DaemonThread) -> int:
    health = runner.daemon.health
    if health is None:
        return 0
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"http://127.0.0.1:{health.port}/readyz", timeout=5).status_code
    return 0


def test_postgres_restarted_under_a_running_daemon_is_survived(
    own_cluster: ThrowawayPostgres, google: GoogleStandIn, seed: int
) -> None:
    rng = random.Random(seed)
    backend = Backend("postgres", {"DATABASE_URL": own_cluster.dsn("clinics", MIGRATOR)}, feed=True)
    with connect(own_cluster) as admin, connect(own_cluster, AUTHENTICATOR) as gateway:
        tenants = make_tenants(admin, google)
        backlog = Backlog(admin, gateway, tenants, rng)
        backlog.book_each(vapi=5, sql=15)
        backlog.change(4)
        total = count_where(admin, "true")
    google.latency = 0.1
    with running(make_settings(backend, google, sync_workers=4, sync_batch_size=4)) as runner:
        with connect(own_cluster) as admin:
            wait_until(lambda: synced_count(admin) >= total // 4, timeout=DRAIN_TIMEOUT, what=f"FAULT_SEED={seed}")
            wait_until(lambda: readiness(runner) == 200, what="ready before the restart")
        feed = runner.daemon.feed
        assert feed is not None
        own_cluster.stop_server()
        try:
            # Within seconds (a call waits 5 s for a pooled connection), not after the pool's 30 s default.
            wait_until(lambda: readiness(runner) == 503, timeout=20, what="not ready while the database is down")
            wait_until(lambda: feed.state is FeedState.DOWN, timeout=30, what="the feed down")
        finally:
            own_cluster.start_server()
        wait_until(lambda: readiness(runner) == 200, timeout=60, what="ready again after the restart")
        wait_until(lambda: feed.state is FeedState.SUBSCRIBED and feed.subscriptions >= 2, timeout=60, what="LISTEN")
        with connect(own_cluster) as admin, connect(own_cluster, AUTHENTICATOR) as gateway:
            backlog = backlog.on(admin, gateway)  # new sessions: the old ones died with the server
            backlog.book_each(vapi=1, sql=2)
            backlog.change(6, state="synced")
            wait_until(drained(admin), timeout=DRAIN_TIMEOUT, what=f"the backlog drained (FAULT_SEED={seed})")
    with connect(own_cluster) as admin:
        assert_calendar_matches_database(admin, google, tenants, seed=seed)
    assert_every_push_kind(google, seed=seed)


# --- 5. Realtime dropped and restarted during a burst ------------------------------------------------------


class Booker(threading.Thread):
    """Keeps bookings and changes coming (jittered 0-40 ms apart) until stopped, on connections of its own."""

    def __init__(self, database: Database, backlog: Backlog, seed: int) -> None:
        super().__init__(name="booker", daemon=True)
        self._database = database
        self._backlog = backlog
        self._rng = random.Random(seed + 1)
        self._halt = threading.Event()
        self.made = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self._database.connect() as admin, self._database.connect(AUTHENTICATOR) as gateway:
                backlog = self._backlog.on(admin, gateway, self._rng)
                while not self._halt.is_set():
                    tenant = self._rng.choice(backlog.tenants)
                    draw = self._rng.random()
                    if draw < 0.5:
                        backlog.book_vapi(tenant)
                    elif draw < 0.85:
                        backlog.book_sql(tenant)
                    else:
                        backlog.change(1, state="synced")
                    self.made = backlog.made
                    self._halt.wait(self._rng.uniform(0.0, 0.04))
        except BaseException as error:
            self.error = error

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)
        assert not self.is_alive(), "the booker did not stop"
        if self.error is not None:
            raise self.error

    def wait_for(self, more: int, what: str) -> None:
        """Until `more` further bookings or changes are made."""
        target = self.made + more
        wait_until(lambda: self.made >= target or self.error is not None, timeout=60, what=what)
        assert self.error is None, self.error


DROPS = 6


def test_realtime_dropped_and_restarted_during_a_burst_loses_nothing(
    database: Database, google: GoogleStandIn, admin: psycopg.Connection, gateway: psycopg.Connection, seed: int
) -> None:
    rng = random.Random(seed)
    tenants = make_tenants(admin, google)
    backlog = Backlog(admin, gateway, tenants, rng)
    backlog.book_each(vapi=3, sql=7)
    with (
        RealtimeStandIn(database.dsn()) as realtime,
        SupabaseRestStandIn(database.dsn(AUTHENTICATOR)) as rest,
    ):
        backend = Backend(
            "supabase",
            {
                "SUPABASE_URL": rest.url,
                "SUPABASE_SERVICE_ROLE_KEY": rest.service_role_key,
                "SUPABASE_REALTIME_URL": realtime.url,
            },
            feed=True,
        )
        # No timer worth the name: only the feed's doorbells and the sweep after each (re)subscription deliver.
        settings = make_settings(backend, google, sync_poll_seconds=600, google_requests_per_minute=100_000)
        with running(settings) as runner:
            wait_until(lambda: runner.daemon.feed is not None, what="the daemon started")
            feed = runner.daemon.feed
            assert feed is not None

            def subscribed(times: int) -> Callable[[], bool]:
                return lambda: feed.state is FeedState.SUBSCRIBED and feed.subscriptions >= times

            wait_until(subscribed(1), what="the feed subscribed")
            booker = Booker(database, backlog, seed)  # the main thread leaves `backlog` alone meanwhile
            booker.start()
            try:
                booker.wait_for(10, "bookings before the outages")
                for drop in range(1, DROPS + 1):
                    realtime.drop_connections()  # the TCP connection dies without a word
                    booker.wait_for(3, "bookings while the feed rebuilds")
                    # Each blip is met by the first step of the backoff, however many came before: one that
                    # never reset would wait 8-16 s by the sixth.
                    wait_until(subscribed(1 + drop), timeout=8, what=f"resubscribed after drop {drop}")
                realtime.stop()  # Realtime goes away for a while: nothing committed meanwhile is ever delivered
                try:
                    booker.wait_for(10, "bookings while Realtime is down")
                    booker.stop()  # the burst ends while Realtime is down: no later doorbell sweeps for it
                finally:
                    realtime.start()
            finally:
                booker.stop()
            wait_until(subscribed(DROPS + 2), timeout=60, what="resubscribed after the restart")
            wait_until(drained(admin), timeout=DRAIN_TIMEOUT, what=f"the sweep after the restart (FAULT_SEED={seed})")
            # The doorbell rings again after the restart.
            for tenant in tenants:
                backlog.book_vapi(tenant)
            backlog.change(4, state="synced")
            wait_until(drained(admin), timeout=DRAIN_TIMEOUT, what=f"changes after the restart (FAULT_SEED={seed})")
    assert_calendar_matches_database(admin, google, tenants, seed=seed)
    assert_every_push_kind(google, seed=seed)


# --- 6. A clinic's grant revoked mid-burst ---------------------------------------------------------------------


def test_a_grant_revoked_mid_burst_parks_only_its_clinic_and_reconnecting_drains_it(
    direct: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    gateway: psycopg.Connection,
    seed: int,
) -> None:
    rng = random.Random(seed)
    tenants = make_tenants(admin, google)
    victim = rng.choice(tenants)
    others = [tenant for tenant in tenants if tenant != victim]
    backlog = Backlog(admin, gateway, tenants, rng)
    backlog.book_each(vapi=5, sql=15)
    backlog.change(4)
    total = count_where(admin, "true")
    google.latency = 0.05
    with running(make_settings(direct, google, sync_workers=4, sync_batch_size=4)):
        wait_until(lambda: synced_count(admin) >= total // 4, timeout=DRAIN_TIMEOUT, what=f"FAULT_SEED={seed}")
        refresh_token = TokenCipher(TOKEN_KEY).decrypt(
            scalar(
                admin,
                "select refresh_token_encrypted from public.calendar_connections where clinic_id = %s",
                (victim.id,),
            )
        )
        google.revoke(refresh_token)  # e.g. the user removed the app's access in their Google account
        google.expire_access_tokens(victim.account)  # so the revocation bites at once, not in an hour
        backlog.change(4, state="synced")
        for tenant in tenants:
            backlog.book_vapi(tenant, 2)  # the burst goes on, for the victim too

        def settled() -> bool:
            return (
                scalar(admin, "select status from public.calendar_connections where clinic_id = %s", (victim.id,))
                == "needs_reauth"
                and count_where(admin, "clinic_id = %s and sync_state not in ('synced', 'parked')", (victim.id,)) == 0
                and count_where(
                    admin, "clinic_id <> %s and (sync_state <> 'synced' or synced_revision <> revision)", (victim.id,)
                )
                == 0
            )

        wait_until(settled, timeout=DRAIN_TIMEOUT, what=f"the victim parked, the others drained (FAULT_SEED={seed})")
        parked = count_where(admin, "clinic_id = %s and sync_state = 'parked'", (victim.id,))
        assert parked >= 2, (seed, parked)  # at least its bookings made after the revocation wait
        assert count_where(admin, "sync_state = 'parked' and clinic_id <> %s", (victim.id,)) == 0
        errors = {
            str(row[0])
            for row in admin.execute(
                "select last_sync_error from public.appointments where sync_state = 'parked'"
            ).fetchall()
        }
        assert all("re-authorisation" in error or "connect Google" in error for error in errors), errors
        assert_calendar_matches_database(admin, google, others, seed=seed)

        store_connection(admin, victim.id, victim.account, google.issue_refresh_token(victim.account))  # reconnect
        wait_until(drained(admin), timeout=DRAIN_TIMEOUT, what=f"the victim's backlog drained (FAULT_SEED={seed})")
    assert_calendar_matches_database(admin, google, tenants, seed=seed)
    assert sync_states(admin) == {"synced": count_where(admin, "true")}
