"""`clinic-sync verify`: is this deployment ready for production? One line per check.

Each check is `ok`, `warn` (works, but someone should look) or `fail` (bookings would be lost,
late or unsafe); any `fail` makes the command exit 1. Checks that depend on a failed one are
reported as `skip` rather than as a cascade of failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import psycopg
from googleapiclient.errors import HttpError
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console
from rich.markup import escape

from daemon.calendar import GoogleCalendar, classify, event_id_for
from daemon.config import Settings
from daemon.domain.calendar_connections import ConnectionOverview
from daemon.domain.calendar_mirror import MirrorFreshness
from daemon.domain.clinics import ClinicProfile
from daemon.domain.google_budget import BudgetExhausted
from daemon.domain.operations import ReadinessFacts
from daemon.domain.sync_queue import SyncStatus
from daemon.domain.vapi_setup import VapiSetup
from daemon.feed import FeedState
from daemon.migrations import discover
from daemon.store import Store, StoreError
from daemon.tokens import NeedsReauth, TokenUnavailable
from daemon.vapi_api import VapiError
from daemon.vapi_setup import Endpoint, missing_settings, open_vapi, plan
from daemon.vapi_tools import RPC_PATH
from daemon.wiring import google_calendar, make_feed, open_store, token_manager

FEED_TIMEOUT_SECONDS = 15.0
MAX_PENDING_AGE_SECONDS = 300.0
ROUND_TRIP_LABEL = "verify round-trip"
ROUND_TRIP_PATIENT = "Readiness Check"
# Ofcom reserves 07700 900000-900999 for fiction: never a real patient.
ROUND_TRIP_PHONE = "+447700900000"
SEARCH_DAYS = 14


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.status is not Status.FAIL for check in self.checks)

    def add(self, name: str, status: Status, detail: str, **data: Any) -> Check:
        check = Check(name, status, detail, data)
        self.checks.append(check)
        return check


@dataclass(frozen=True)
class VerifyOptions:
    round_trip_clinic: uuid.UUID | None = None
    budget_seconds: float = 30.0
    feed_timeout_seconds: float = FEED_TIMEOUT_SECONDS
    connect_timeout_seconds: float = 10.0
    max_pending_age_seconds: float = MAX_PENDING_AGE_SECONDS


async def run_checks(settings: Settings, options: VerifyOptions) -> Report:
    report = Report()
    dsn = settings.database_url.get_secret_value() if settings.database_url is not None else None
    pooled = transaction_pooler(dsn) if dsn is not None else None
    if pooled is not None and settings.database_backend == "postgres":
        report.add("database", Status.FAIL, f"DATABASE_URL {pooled}")
        return _skip_the_rest(report)
    if pooled is not None:
        report.add("database url", Status.WARN, f"DATABASE_URL, which `clinic-sync migrate` uses, {pooled}")
    try:
        store = await open_store(settings, timeout=options.connect_timeout_seconds)
    except StoreError as error:
        return _unreachable(report, settings, error)
    try:
        try:
            facts = await store.readiness_facts()
        except StoreError as error:
            return _unreachable(report, settings, error)
        report.add("database", Status.OK, f"reachable over the {settings.database_backend} path")
        _check_schema(report, settings, facts)
        await _check_feed(report, settings, options)
        executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="verify")
        calendar, _ = google_calendar(settings, store)
        try:
            google = _Google(settings, store, executor, calendar)
            await _check_connections(report, store, google)
            await _check_links(report, store)
            await _check_vapi(report, settings, store)
            await _check_backlog(report, store, options)
            if options.round_trip_clinic is not None:
                await _round_trip(report, settings, store, google, options)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
            calendar.close()
    finally:
        await store.close()
    return report


def _unreachable(report: Report, settings: Settings, error: StoreError) -> Report:
    hint = ""
    if settings.database_backend == "postgres" and settings.database_url is not None:
        hint = ipv6_only_hint(settings.database_url.get_secret_value())
    report.add("database", Status.FAIL, f"unreachable over the {settings.database_backend} path: {error}{hint}")
    return _skip_the_rest(report)


def _skip_the_rest(report: Report) -> Report:
    for name in ("migrations", "row-level security", "doorbell", "change feed", "google", "backlog"):
        report.add(name, Status.SKIP, "needs the database")
    return report


TRANSACTION_POOLER_PORT = "6543"
DIRECT_HOST = re.compile(r"^db\.[a-z0-9]+\.supabase\.co$")


def _hosts_and_ports(dsn: str) -> list[tuple[str, str]]:
    """The (host, port) pairs of a libpq connection string or URL; [] when it cannot be parsed."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return []
    hosts = str(params.get("host") or params.get("hostaddr") or "").split(",")
    ports = str(params.get("port") or "5432").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    return list(zip(hosts, ports, strict=False))


def transaction_pooler(dsn: str) -> str | None:
    """Why `dsn` cannot carry the direct path, when it names a transaction-mode pooler (Supavisor's, or a
    project's dedicated PgBouncer, listens on 6543): each transaction may run on another server connection."""
    for host, port in _hosts_and_ports(dsn):
        if port == TRANSACTION_POOLER_PORT:
            where = f"{host}:{port}" if host else f"port {port}"
            return (
                f"points at a transaction-mode pooler ({where}), where each transaction may run on another"
                " server connection: LISTEN/NOTIFY (the doorbell), session advisory locks (migrate) and prepared"
                " statements need a direct connection (db.<ref>.supabase.co:5432) or the session-mode pooler"
                " (the same pooler host on port 5432)"
            )
    return None


def ipv6_only_hint(dsn: str) -> str:
    """What to try when Supabase's direct host cannot be reached: it has only an IPv6 address."""
    if any(DIRECT_HOST.match(host) for host, _ in _hosts_and_ports(dsn)):
        return (
            " (db.<ref>.supabase.co has only an IPv6 address unless the project has Supabase's IPv4 add-on: from a"
            " network without IPv6, use the session-mode pooler, <pooler host>:5432 with user postgres.<ref>, from"
            " the dashboard's Connect dialog)"
        )
    return ""


def _check_schema(report: Report, settings: Settings, facts: ReadinessFacts) -> None:
    known = [m.version for m in discover(settings.migrations_dir)]
    applied = set(facts.applied_migrations)
    pending = [v for v in known if v not in applied]
    unknown = sorted(applied - set(known))
    if pending:
        report.add(
            "migrations", Status.FAIL, f"{len(pending)} not applied: {', '.join(pending)} (run: clinic-sync migrate)"
        )
    elif unknown:
        report.add("migrations", Status.WARN, f"at head, and the database has newer ones: {', '.join(unknown)}")
    else:
        report.add("migrations", Status.OK, f"at head ({known[-1] if known else 'none'})")

    no_rls, anon = facts.tables_without_rls, facts.anon_table_privileges
    if no_rls or anon:
        problems = ([f"RLS disabled on {', '.join(no_rls)}"] if no_rls else []) + (
            [f"anon holds {', '.join(anon)}"] if anon else []
        )
        report.add("row-level security", Status.FAIL, "; ".join(problems))
    else:
        report.add("row-level security", Status.OK, "enabled on every public table; anon holds no table privilege")

    _check_doorbell(report, settings, facts)


def _check_doorbell(report: Report, settings: Settings, facts: ReadinessFacts) -> None:
    """The path's doorbell trigger is there; whole appointment rows do not travel through Realtime."""
    if settings.database_backend == "supabase":
        present, what = (
            facts.broadcast_doorbell,
            ("a trigger sends appointment and clinic ids to Realtime's private topic calendar-sync"),
        )
        missing = (
            "the trigger that sends appointment ids to Realtime (appointments_broadcast_calendar_sync), or"
            " realtime.send itself, is missing"
        )
    else:
        present, what = facts.notify_doorbell, "a trigger NOTIFYs calendar_sync, without a payload"
        missing = "the trigger that NOTIFYs calendar_sync (appointments_notify_calendar_sync) is missing"
    if not present:
        report.add("doorbell", Status.FAIL, f"{missing}: bookings wait for the sweep (clinic-sync migrate)")
    elif facts.appointments_in_realtime:
        report.add(
            "doorbell",
            Status.WARN,
            f"{what}; but public.appointments is in the supabase_realtime publication, so Postgres Changes can"
            " send whole rows, patient details included, to subscribers: alter publication supabase_realtime"
            " drop table public.appointments",
        )
    else:
        report.add("doorbell", Status.OK, what)


async def _check_feed(report: Report, settings: Settings, options: VerifyOptions) -> None:
    if not settings.feed_enabled:
        report.add(
            "change feed",
            Status.WARN,
            f"FEED_ENABLED=false: changes wait for the sweep (every {settings.sync_poll_seconds:g}s)",
        )
        return
    feed = make_feed(settings)
    kind = "Realtime" if settings.database_backend == "supabase" else "LISTEN/NOTIFY"
    started = time.monotonic()
    task = asyncio.create_task(feed.run(lambda: None))
    try:
        subscribed = await _until(lambda: feed.state is FeedState.SUBSCRIBED, options.feed_timeout_seconds)
    finally:
        feed.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if subscribed:
        report.add("change feed", Status.OK, f"{kind} subscribed in {time.monotonic() - started:.1f}s")
    else:
        report.add(
            "change feed",
            Status.FAIL,
            f"{kind} not subscribed within {options.feed_timeout_seconds:g}s; bookings would wait for the sweep",
        )


class _Google:
    """Token refresh and calendar calls for the checks, off the event loop."""

    def __init__(self, settings: Settings, store: Store, executor: ThreadPoolExecutor, calendar: GoogleCalendar):
        self.calendar = calendar
        self.executor = executor
        self.tokens = token_manager(settings, store, executor)

    async def run(self, call: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, call, *args)


async def _check_connections(report: Report, store: Store, google: _Google) -> None:
    connections = await store.connections_overview()
    mirrors = {m.clinic_id: m for m in await store.mirror_freshness()}
    if not connections:
        report.add("google", Status.WARN, "no clinics yet (clinic-sync add-clinic)")
        return
    for row in connections:
        name = f"google: {row.clinic_name}"
        clinic_id = row.clinic_id
        if row.status == "not_connected":
            report.add(
                name,
                Status.FAIL,
                f"not connected (clinic-sync connect-google --clinic {clinic_id}, or send the clinic a link:"
                f" clinic-sync connect-link --clinic {clinic_id}): it has never been connected",
            )
            continue
        if row.status != "active":
            report.add(
                name,
                Status.FAIL,
                f"needs re-authorisation: {row.last_error or row.status} "
                f"(clinic-sync connect-google --clinic {clinic_id})",
                clinic_id=str(clinic_id),
            )
            continue
        check = await _check_connection(name, clinic_id, row, google)
        report.checks.append(_with_mirror(check, mirrors.get(clinic_id)))


async def _check_links(report: Report, store: Store) -> None:
    """The connect and status links still open, when there are any (revoke the ones nobody needs any more:
    clinic-sync revoke-link ID). Clinics never connected are named by their own `google:` check."""
    readiness = await store.connect_readiness()
    if not readiness.open_links:
        return
    never = {clinic_id for clinic_id, _ in readiness.never_connected}
    links = [
        f"{purpose} link {link_id} for {name} until {expires:%Y-%m-%d %H:%M} UTC"
        for link_id, name, purpose, expires in readiness.open_links
    ]
    report.add(
        "open links",
        Status.OK,
        f"{len(links)} open: {'; '.join(links)}",
        link_ids=[str(link[0]) for link in readiness.open_links],
        clinics_never_connected=[str(clinic_id) for clinic_id in sorted(never, key=str)],
    )


async def _check_vapi(report: Report, settings: Settings, store: Store) -> None:
    """Per clinic set up in Vapi (clinic-sync vapi-sync): whether Vapi's tools, credential and assistant are what
    `vapi-tools` would print (the key in the credential), and whether the database has a change not yet synced."""
    setups = await store.vapi_setups_overview()
    if not setups:
        return
    missing = missing_settings(settings)
    if missing:
        stale = [f"{s.clinic_name} ({_stale_note(s)})" for s in setups if s.stale]
        report.add(
            "vapi",
            Status.WARN,
            f"{len(setups)} clinic(s) set up in Vapi, not compared without {', '.join(missing)}"
            + (f"; stale: {'; '.join(stale)}" if stale else ""),
        )
        return
    endpoint = Endpoint.of(settings)
    async with open_vapi(settings) as vapi:
        for setup in setups:
            name = f"vapi: {setup.clinic_name}"
            data = {"clinic_id": str(setup.clinic_id), "stale": setup.stale}
            try:
                profile = await store.clinic_profile(setup.clinic_id)
                found = await plan(vapi, endpoint, profile, setup)
            except VapiError as error:
                report.add(name, Status.FAIL, f"Vapi could not be compared: {error}", **data)
                continue
            differing = [
                f"{c.subject} {c.detail or c.verb}" if c.verb != "update" else f"{c.subject} ({c.detail})"
                for c in found.changes()
                if c.verb != "keep"
            ]
            fix = f"clinic-sync vapi-sync --clinic {setup.clinic_id}"
            if differing:
                why = f"; {_stale_note(setup)}" if setup.stale else ""
                report.add(
                    name,
                    Status.FAIL,
                    f"Vapi's tools are not what vapi-tools would print: {'; '.join(differing)}{why}"
                    f" (the daemon re-syncs stale clinics with VAPI_API_KEY set; now: {fix})",
                    **data,
                )
            elif setup.stale:
                report.add(name, Status.WARN, f"Vapi matches, but {_stale_note(setup)} ({fix})", **data)
            else:
                where = (
                    f", attached to assistant {setup.assistant_id}" if setup.assistant_id else ", no assistant named"
                )
                report.add(
                    name,
                    Status.OK,
                    f"{len(found.tools)} tools match vapi-tools, key in credential {setup.credential_id}{where}",
                    **data,
                )


def _stale_note(setup: VapiSetup) -> str:
    """Why the database calls a clinic's Vapi setup stale, and how retrying goes."""
    since = f" since {setup.stale_since:%Y-%m-%d %H:%M} UTC" if setup.stale_since else ""
    note = f"stale{since}: {setup.stale_because or 'changed'}"
    if setup.sync_attempts:
        note += f"; {setup.sync_attempts} failed sync(s), the last: {setup.last_error}"
    if setup.next_attempt_at:
        note += f"; next try {setup.next_attempt_at:%H:%M:%S} UTC"
    return note


def _with_mirror(check: Check, mirror: MirrorFreshness | None) -> Check:
    """The busy mirror's freshness, added to a connection that otherwise works."""
    if check.status is Status.FAIL:
        return check
    if mirror is None or mirror.last_synced_at is None or mirror.age_seconds is None:
        if mirror is not None and mirror.last_error:  # e.g. a practitioner's calendar not shared with the account
            note = f"a calendar of the clinic has never been listed: {mirror.last_error}"
            return Check(check.name, Status.FAIL, f"{check.detail}; {note}", check.data)
        note = "its calendar has not been mirrored yet (is the daemon running?)"
        return Check(check.name, Status.WARN, f"{check.detail}; {note}", check.data)
    age = mirror.age_seconds
    if mirror.stale:
        note = (
            f"the calendar was last mirrored {age:.0f}s ago ({mirror.last_error or 'no error recorded'}):"
            " the assistant offers no times until it is fresh"
        )
        return Check(check.name, Status.FAIL, f"{check.detail}; {note}", check.data)
    return Check(check.name, check.status, f"{check.detail}; mirrored {age:.0f}s ago", check.data)


async def _check_connection(name: str, clinic_id: uuid.UUID, row: ConnectionOverview, google: _Google) -> Check:
    try:
        token = await google.tokens.force_refresh(clinic_id)
    except NeedsReauth as error:
        return Check(
            name, Status.FAIL, f"needs re-authorisation: {error} (clinic-sync connect-google --clinic {clinic_id})"
        )
    except TokenUnavailable as error:
        return Check(name, Status.FAIL, f"token refresh failed: {error}")
    try:
        info = await google.run(google.calendar.describe, clinic_id, row.calendar_id, token)
    except HttpError as error:
        return Check(name, Status.FAIL, f"calendar {row.calendar_id!r}: {classify(error, what='calendar').error}")
    except BudgetExhausted as error:  # the account is busy with the clinic's own work: not a fault
        return Check(name, Status.WARN, f"calendar not read: {error}")
    except OSError as error:
        return Check(name, Status.FAIL, f"Google unreachable: {type(error).__name__}")
    detail = f"{row.google_account or 'account'}, calendar {info.summary!r}"
    notes = []
    if info.time_zone and info.time_zone != row.time_zone:
        notes.append(f"the calendar's zone is {info.time_zone}, the clinic's {row.time_zone}")
    if row.refresh_token_expires_at:
        notes.append(
            f"Google will end this grant at {row.refresh_token_expires_at} (a project in 'Testing' gives 7 days: "
            "publish the OAuth app)"
        )
    return Check(name, Status.WARN if notes else Status.OK, "; ".join([detail, *notes]))


async def _check_backlog(report: Report, store: Store, options: VerifyOptions) -> None:
    backlog = await store.backlog()
    states = dict(backlog.by_state)
    age = backlog.oldest_pending_age_seconds
    waiting = states.get("pending", 0) + states.get("in_flight", 0)
    detail = (
        f"{waiting} waiting (oldest {age:.0f}s), {states.get('parked', 0)} parked, {states.get('failed', 0)} failed,"
        f" {states.get('synced', 0)} synced"
    )
    if waiting and age > options.max_pending_age_seconds:
        report.add("backlog", Status.FAIL, f"{detail}: is the daemon running?", **states)
    elif states.get("failed", 0) or states.get("parked", 0):
        report.add("backlog", Status.WARN, f"{detail} (clinic-sync retry-failed re-queues failed ones)", **states)
    else:
        report.add("backlog", Status.OK, detail, **states)


async def _round_trip(
    report: Report, settings: Settings, store: Store, google: _Google, options: VerifyOptions
) -> None:
    assert options.round_trip_clinic is not None
    if settings.supabase_url is None or settings.supabase_anon_key is None:
        report.add("round trip", Status.FAIL, "needs SUPABASE_URL and SUPABASE_ANON_KEY: it books the way Vapi does")
        return
    trip = RoundTrip(settings.supabase_url, settings.supabase_anon_key.get_secret_value(), store, google, options)
    report.checks.append(await trip.run())


class RoundTrip:
    """A synthetic booking through the Vapi RPC (with a temporary key) that must reach the test
    clinic's calendar within the budget; then cancelled, its event gone, its row and key removed."""

    def __init__(self, supabase_url: str, anon_key: str, store: Store, google: _Google, options: VerifyOptions):
        assert options.round_trip_clinic is not None
        self._url = supabase_url.rstrip("/") + RPC_PATH
        self._anon_key = anon_key
        self._store = store
        self._google = google
        self._clinic = options.round_trip_clinic
        self._budget = options.budget_seconds

    async def run(self) -> Check:
        try:
            profile = await self._store.clinic_profile(self._clinic)
        except StoreError as error:
            return Check("round trip", Status.FAIL, str(error))
        key = await self._store.issue_key(self._clinic, ROUND_TRIP_LABEL)
        try:
            async with httpx.AsyncClient(headers={"apikey": self._anon_key, "x-clinic-key": key}, timeout=20.0) as http:
                return await self._book_and_check(http, profile)
        finally:
            await self._revoke(key)

    async def _book_and_check(self, http: httpx.AsyncClient, profile: ClinicProfile) -> Check:
        slot = await self._free_slot(http, profile)
        if slot is None:
            return Check("round trip", Status.FAIL, f"no free time in the next {SEARCH_DAYS} days to book")
        started = time.monotonic()
        confirmation = await self._tool(
            http,
            "book_appointment",
            {
                "start": slot,
                "patient_name": ROUND_TRIP_PATIENT,
                "patient_phone": ROUND_TRIP_PHONE,
                "notes": "clinic-sync verify; removed automatically",
            },
        )
        match = re.search(r"Reference ([A-Z0-9]{4,12})", confirmation)
        if match is None:
            return Check("round trip", Status.FAIL, f"booking refused: {confirmation}")
        reference = match[1]
        try:
            synced = await self._until_synced(reference, "booked")
            if synced is None:
                return Check(
                    "round trip", Status.FAIL, f"not in the calendar after {self._budget:g}s: is the daemon running?"
                )
            latency = time.monotonic() - started
            problem = await self._event_problem(profile, synced)
            if problem:
                return Check("round trip", Status.FAIL, problem)
            return Check(
                "round trip",
                Status.OK,
                f"booked {slot} through the Vapi RPC, in Google Calendar after {latency:.1f}s; cleaned up",
                {"latency_seconds": round(latency, 3)},
            )
        finally:
            await self._clean_up(http, reference)

    async def _free_slot(self, http: httpx.AsyncClient, profile: ClinicProfile) -> str | None:
        today = dt.datetime.now(dt.UTC).date()
        for offset in range(1, SEARCH_DAYS + 1):
            day = (today + dt.timedelta(days=offset)).isoformat()
            answer = await self._tool(http, "check_availability", {"date": day})
            # "Free start times on <day> for a 30-minute Check-up (GMT time): 09:00, 09:15."
            _, _, times = answer.rpartition("): ")
            found = re.findall(r"\b\d{2}:\d{2}\b", times) if answer.startswith("Free start times") else []
            if found:
                return f"{day}T{found[-1]}"  # the day's last slot: the least likely to be wanted by a patient
        return None

    async def _tool(self, http: httpx.AsyncClient, name: str, arguments: Mapping[str, Any]) -> str:
        call_id = f"verify-{uuid.uuid4()}"
        envelope = {
            "message": {
                "type": "tool-calls",
                "toolCallList": [
                    {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
                ],
                "call": {"id": call_id},
                "assistant": {"metadata": {"org_id": str(self._clinic)}},
            }
        }
        response = await http.post(self._url, json=envelope)
        response.raise_for_status()
        [result] = response.json()["results"]
        return str(result.get("result") or result.get("error"))

    async def _until_synced(self, reference: str, status: str) -> SyncStatus | None:
        deadline = time.monotonic() + self._budget
        while time.monotonic() < deadline:
            row = await self._store.sync_status(self._clinic, reference)
            if row and row.status == status and row.sync_state == "synced":
                return row
            await asyncio.sleep(0.2)
        return None

    async def _event_problem(self, profile: ClinicProfile, row: SyncStatus) -> str | None:
        event_id = row.calendar_event_id or event_id_for(row.appointment_id)
        try:
            token = await self._google.tokens.access_token(self._clinic)
            event = await self._google.run(
                self._google.calendar.event, self._clinic, profile.calendar_id, event_id, token
            )
        except (NeedsReauth, TokenUnavailable, BudgetExhausted) as error:
            return f"synced, but its event cannot be read back: {error}"
        except HttpError as error:
            return f"synced, but Google has no such event: {classify(error, what='event').error}"
        if event.get("status") != "confirmed":
            return f"synced, but the event is {event.get('status')}"
        return None

    async def _clean_up(self, http: httpx.AsyncClient, reference: str) -> None:
        with contextlib.suppress(httpx.HTTPError, StoreError):
            await self._tool(http, "cancel_appointment", {"reference": reference})
            row = await self._until_synced(reference, "cancelled")
            if row is not None:
                await self._store.delete_cancelled_appointment(row.appointment_id)

    async def _revoke(self, key: str) -> None:
        with contextlib.suppress(StoreError):
            for issued in await self._store.clinic_keys(self._clinic):
                if issued.label == ROUND_TRIP_LABEL and key.startswith(issued.key_prefix) and not issued.revoked_at:
                    await self._store.revoke_key(issued.id)


async def _until(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


STYLES = {Status.OK: ("green", "✔"), Status.WARN: ("yellow", "!"), Status.FAIL: ("red", "✘"), Status.SKIP: ("dim", "-")}


def print_report(report: Report, *, as_json: bool, console: Console | None = None) -> None:
    console = console or Console(highlight=False, soft_wrap=True)
    if as_json:
        console.print_json(json.dumps({"passed": report.passed, "checks": [_jsonable(c) for c in report.checks]}))
        return
    for check in report.checks:
        colour, mark = STYLES[check.status]
        console.print(
            f"[{colour}]{mark} {check.status.value:<4}[/] [bold]{escape(check.name)}[/]: {escape(check.detail)}"
        )
    verdict = "[green]ready[/]" if report.passed else "[red]not ready[/]"
    console.print(
        f"{verdict}: {sum(c.status is Status.FAIL for c in report.checks)} failed, "
        f"{sum(c.status is Status.WARN for c in report.checks)} warning(s)"
    )


def _jsonable(check: Check) -> dict[str, Any]:
    return {**asdict(check), "status": check.status.value, "data": dict(check.data)}
