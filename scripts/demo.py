"""The local demo: the whole pipeline on this machine, driven by the operator's own commands.

1. A throwaway PostgreSQL, made to look like a Supabase database, gets the migrations
   (`clinic-sync migrate`).
2. Local stand-ins for Supabase's REST gateway and Realtime, and for Google Calendar + OAuth,
   start on 127.0.0.1.
3. `clinic-sync add-clinic` creates a demo clinic and its key; `connect-google` runs the OAuth
   consent flow (copy-paste mode, with this script playing the person at the browser);
   `vapi-tools` prints the tool definitions Vapi would be given.
4. The sync daemon runs on the Supabase path (REST gateway + Realtime doorbell).
5. The receptionist blocks a lunch hour straight in Google Calendar; the daemon's busy mirror
   reads it back, so the assistant will not offer it.
6. A scripted phone conversation calls those tools exactly as Vapi would (HTTP POST to the
   tools' server URL with their headers): availability, a booking, a retried booking, a clash,
   a reschedule and a cancellation. Each change is timed until Google has it.
7. The calendar, the measured latencies and `clinic-sync verify` are shown; then everything is
   removed.

Nothing here talks to Supabase, Vapi or Google: every "remote" service is a local stand-in.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
from loguru import logger

from daemon.cli import main as clinic_sync
from tests.daemon_harness import Backend, make_settings, running, settings_env, wait_until
from tests.standins.google import GoogleStandIn
from tests.standins.postgres import AUTHENTICATOR, MIGRATOR, ThrowawayPostgres
from tests.standins.realtime import RealtimeStandIn
from tests.standins.receptionist import Receptionist
from tests.standins.supabase_rest import SupabaseRestStandIn
from tests.standins.vapi import VapiCall, tool_call

LONDON = ZoneInfo("Europe/London")
ACCOUNT = "reception@riverside.example"
STAND_INS = (
    "Everything below runs locally. Google Calendar + OAuth, Supabase's REST gateway and Supabase Realtime are\n"
    "stand-ins on 127.0.0.1 (tests/standins/), driven by the real client libraries; the database is a throwaway\n"
    "PostgreSQL. No request leaves this machine. The README shows how to point the same daemon at a real\n"
    "Supabase project and real Google credentials."
)


def heading(text: str) -> None:
    print(f"\n== {text}")


def say(who: str, text: str) -> None:
    print(f"  {who:<10} {text}")


def command(*argv: str) -> str:
    """Run a `clinic-sync` subcommand in this process and echo what it printed."""
    print(f"  $ clinic-sync {' '.join(argv)}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = clinic_sync(list(argv))
    text = out.getvalue()
    if code != 0:
        raise SystemExit(f"clinic-sync {argv[0]} failed with exit code {code}")
    return text


def echo(text: str, lines: int | None = None) -> None:
    shown = text.rstrip().splitlines()
    for line in shown[:lines]:
        print(f"    {line}")
    if lines is not None and len(shown) > lines:
        print(f"    ... ({len(shown) - lines} more lines)")


class Phone:
    """A Vapi assistant on a call, using the tool definitions `vapi-tools` printed."""

    def __init__(self, tools: list[dict[str, Any]], caller: str, admin: psycopg.Connection) -> None:
        self._servers = {tool["function"]["name"]: tool["server"] for tool in tools}
        self._call = VapiCall(customer_number=caller)
        self._admin = admin
        self.latencies_ms: list[float] = []

    def use(self, name: str, arguments: dict[str, Any], *, call_id: str | None = None, timed: bool = False) -> str:
        server = self._servers[name]
        say("assistant", f"-> {name} {json.dumps(arguments)}")
        body = self._call.message(tool_call(name, arguments, call_id=call_id))
        response = httpx.post(server["url"], headers=server["headers"], json=body, timeout=server["timeoutSeconds"])
        committed = time.monotonic()
        [answer] = response.json()["results"]
        text = str(answer.get("result") or f"ERROR: {answer['error']}")
        say("database", f"<- {text}")
        if timed and "result" in answer:
            reference = re.findall(r"reference ([A-Z0-9]{4,12})", text, re.IGNORECASE)[-1]
            self._time_until_synced(reference, committed)
        return text

    def _time_until_synced(self, reference: str, committed: float) -> None:
        def synced() -> bool:
            row = self._admin.execute(
                "select sync_state = 'synced' from public.appointments where reference = %s", (reference,)
            ).fetchone()
            return row == (True,)

        wait_until(synced, timeout=30, what=f"{reference} in the calendar")
        latency = (time.monotonic() - committed) * 1000
        self.latencies_ms.append(latency)
        say("calendar", f"   Google has it {latency:.0f} ms after the database answered")


def next_tuesday() -> dt.date:
    day = dt.datetime.now(LONDON).date() + dt.timedelta(days=7)
    return day + dt.timedelta(days=(2 - day.isoweekday()) % 7)


def conversation(tools: list[dict[str, Any]], admin: psycopg.Connection) -> list[float]:
    day = next_tuesday()
    jane = Phone(tools, "+447700900123", admin)
    heading("Call 1 (caller +447700900123)")
    say("caller", f"Have you got anything on {day:%A %-d %B}?")
    jane.use("check_availability", {"date": day.isoformat()})
    say("caller", "10:30 please, it's Jane Doe.")
    booked = jane.use(
        "book_appointment", {"start": f"{day}T10:30", "patient_name": "Jane Doe"}, call_id="demo-1", timed=True
    )
    print("  (Vapi retries the same tool call after a network blip: same answer, no second booking)")
    jane.use("book_appointment", {"start": f"{day}T10:30", "patient_name": "Jane Doe"}, call_id="demo-1")
    reference = booked.rsplit("Reference ", 1)[1].rstrip(".")

    john = Phone(tools, "+447700900456", admin)
    heading("Call 2 (caller +447700900456)")
    say("caller", "Can I have 10:30 that Tuesday? John Roe.")
    john.use("book_appointment", {"start": f"{day}T10:30", "patient_name": "John Roe"})
    say("caller", "11:00 then.")
    john.use("book_appointment", {"start": f"{day}T11:00", "patient_name": "John Roe"}, timed=True)

    heading("Call 3 (Jane again)")
    say("caller", f"Could you move {reference} to 14:00?")
    jane.use("reschedule_appointment", {"reference": reference, "new_start": f"{day}T14:00"}, timed=True)
    say("caller", "Actually, please cancel it.")
    jane.use("cancel_appointment", {}, timed=True)
    return jane.latencies_ms + john.latencies_ms


def show_calendar(google: GoogleStandIn) -> None:
    heading(f"Google Calendar of {ACCOUNT} (stand-in)")
    for event in sorted(google.events(ACCOUNT), key=lambda e: e["created"]):
        start = dt.datetime.fromisoformat(event["start"]["dateTime"])
        print(f"  {event['id'][:10]}...  {start:%a %d %b %H:%M %z}  {event['status']:<10} {event['summary']}")


def show_latencies(latencies_ms: list[float]) -> None:
    heading("Booking-to-calendar latency (database commit -> Google has the change), measured above")
    print(
        f"  {len(latencies_ms)} changes: median {statistics.median(latencies_ms):.0f} ms, "
        f"max {max(latencies_ms):.0f} ms (Realtime doorbell; about 20 ms of it is the coalescing window)"
    )


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def main() -> int:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    print(__doc__.strip().splitlines()[0])
    print(STAND_INS)
    with ThrowawayPostgres() as pg, GoogleStandIn() as google:
        pg.create_database("demo")
        pg.bootstrap_supabase("demo")
        heading("Schema")
        echo(command("migrate", "--database-url", pg.dsn("demo", MIGRATOR)))
        with (
            SupabaseRestStandIn(pg.dsn("demo", AUTHENTICATOR)) as rest,
            RealtimeStandIn(pg.dsn("demo")) as realtime,
            psycopg.connect(pg.dsn("demo"), autocommit=True) as admin,
        ):
            backend = Backend(
                "supabase",
                {
                    "SUPABASE_URL": rest.url,
                    "SUPABASE_SERVICE_ROLE_KEY": rest.service_role_key,
                    "SUPABASE_ANON_KEY": rest.anon_key,
                    "SUPABASE_REALTIME_URL": realtime.url,
                },
                feed=True,
            )
            # oauthlib refuses plain-http token endpoints; only the stand-in is plain http.
            env = {**settings_env(backend, google), "OAUTHLIB_INSECURE_TRANSPORT": "1"}
            with environment(env):
                run(google, admin, backend)
    print("\nThrowaway database and stand-ins removed.")
    return 0


def run(google: GoogleStandIn, admin: psycopg.Connection, backend: Backend) -> None:
    heading("A clinic")
    created = command(
        "add-clinic",
        "--name",
        "Riverside Clinic",
        "--hours",
        "mon-fri 09:00-17:00",
        "--service",
        "Check-up=30",
        "--service",
        "Consultation=60",
    )
    echo(created)
    clinic_id = re.findall(r"clinic id:\s+(\S+)", created)[0]
    key = re.findall(r"clinic key:\s+(\S+)", created)[0]

    heading("Its Google Calendar (OAuth consent; this script plays the receptionist at the browser)")
    google.add_account(ACCOUNT)
    google.consent(ACCOUNT)
    connect(google, uuid.UUID(clinic_id))

    heading("The tools to paste into Vapi")
    tools = json.loads(command("vapi-tools", "--clinic", clinic_id, "--clinic-key", key))
    for tool in tools:
        parameters = tool["function"]["parameters"]
        print(f"    {tool['function']['name']}({', '.join(parameters['properties'])}) -> POST {tool['server']['url']}")

    settings = make_settings(backend, google, sync_poll_seconds=30, mirror_interval_seconds=1)
    with running(settings) as runner:
        wait_until(lambda: runner.daemon.feed is not None and runner.daemon.feed.subscriptions > 0, what="Realtime")
        heading("The receptionist blocks Dr Patel's lunch straight in Google Calendar")
        receptionist = Receptionist(google, ACCOUNT)
        try:
            receptionist.add(next_tuesday(), "12:00", "13:00")
        finally:
            receptionist.close()
        wait_until(lambda: admin.execute("select count(*) from public.calendar_busy").fetchone() == (1,), what="mirror")
        print(f"  {next_tuesday():%A} 12:00-13:00 is busy in the clinic's calendar; the mirror has read it back.")
        heading("The daemon is running (Supabase path, Realtime doorbell); the phone rings")
        latencies = conversation(tools, admin)
        show_calendar(google)
        show_latencies(latencies)
        heading("Readiness report")
        print("  $ clinic-sync verify")
        clinic_sync(["verify"])


def connect(google: GoogleStandIn, clinic_id: uuid.UUID) -> None:
    """`connect-google --copy-paste`, answering its prompt the way a person would."""
    import asyncio

    from daemon.config import Settings
    from daemon.google_connect import ConnectOptions, connect_google

    printed: list[str] = []

    def browser(prompt: str) -> str:
        url = re.findall(r"http://127\.0\.0\.1:\d+/o/oauth2/auth\?\S+", printed[-1])[0]
        location = httpx.get(url, follow_redirects=False, timeout=5).headers["location"]
        print(f"  {prompt}{location[:60]}...")
        return str(location)

    def show(text: str) -> None:
        printed.append(text)
        echo(text.replace("\n\n", "\n"), lines=3)

    print(f"  $ clinic-sync connect-google --clinic {clinic_id} --copy-paste")
    result = asyncio.run(connect_google(Settings(), clinic_id, ConnectOptions(copy_paste=True, show=show, ask=browser)))
    print(f"    {result.summary()}")


if __name__ == "__main__":
    sys.exit(main())
