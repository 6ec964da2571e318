"""The local demo: the whole pipeline on this machine, driven by the operator's own commands.

1. A throwaway PostgreSQL, made to look like a Supabase database, gets the migrations
   (`clinic-sync migrate`).
2. Local stand-ins for Supabase's REST gateway and Realtime, and for Google Calendar + OAuth,
   start on 127.0.0.1.
3. `clinic-sync add-clinic` creates a demo clinic and its key. The sync daemon starts on the Supabase
   path (REST gateway + Realtime doorbell), its public listener behind a local TLS terminator;
   `clinic-sync connect-link` prints the link the clinic's manager would be sent, and this script
   plays the manager's browser: the connect page, Google's consent, the page saying what was
   connected. `vapi-tools` prints the tool definitions Vapi would be given.
4. The daemon syncs; `clinic-sync status-link` gives the clinic its status page.
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
import html
import io
import json
import os
import re
import statistics
import sys
import time
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
from tests.standins.service import free_port
from tests.standins.supabase_rest import SupabaseRestStandIn
from tests.standins.tls_terminator import TlsTerminator
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

    public_port = free_port()
    with TlsTerminator(public_port) as tls:
        public_url = f"https://127.0.0.1:{tls.port}"
        google.make_web_client([f"{public_url}/connect/callback"], consent_screen=False)
        settings = make_settings(
            backend,
            google,
            sync_poll_seconds=30,
            public_url=public_url,
            public_host="127.0.0.1",
            public_port=public_port,
            mirror_safety_net_seconds=1,
        )
        with environment({"PUBLIC_URL": public_url}), running(settings) as runner:
            wait_until(lambda: runner.daemon.feed is not None and runner.daemon.feed.subscriptions > 0, what="Realtime")
            heading("Its Google Calendar: a link for the clinic's manager (this script plays the manager's browser)")
            google.add_account(ACCOUNT)
            google.consent(ACCOUNT)
            connect_through_link(clinic_id)
            heading("The tools to paste into Vapi")
            tools = json.loads(command("vapi-tools", "--clinic", clinic_id, "--clinic-key", key))
            for tool in tools:
                parameters = tool["function"]["parameters"]
                print(
                    f"    {tool['function']['name']}({', '.join(parameters['properties'])})"
                    f" -> POST {tool['server']['url']}"
                )
            live(google, admin, tools)
            heading("The clinic's status page")
            status = command("status-link", "--clinic", clinic_id, "--expires", "30d").strip()
            print(f"    {status}")
            page = httpx.get(status, verify=False, timeout=10).text
            for row in re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td>\s*<td>(.*?)</td></tr>", page, re.S):
                print("    " + " | ".join(html.unescape(cell) for cell in row))


def live(google: GoogleStandIn, admin: psycopg.Connection, tools: list[dict[str, Any]]) -> None:
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


def connect_through_link(clinic_id: str) -> None:
    """`connect-link`, then the manager's browser: the connect page, its button, Google, the answer page."""
    url = command("connect-link", "--clinic", clinic_id).strip()
    print(f"    {url}")
    # The local TLS terminator's certificate is self-signed.
    with httpx.Client(verify=False, timeout=10, follow_redirects=True) as browser:
        page = browser.get(url)
        print(f"  The manager opens it: {heading_of(page.text)}")
        token = re.findall(r'name="form_token" value="([0-9a-f]+)"', page.text)[0]
        answer = browser.post(url, data={"form_token": token})  # Continue to Google; Google's consent; back
        print(f"  Continue to Google -> the manager allows access -> {heading_of(answer.text)}")
        for label, value in re.findall(r"<dt>(.*?)</dt><dd[^>]*>(.*?)</dd>", answer.text):
            print(f"    {html.unescape(label)}: {html.unescape(value)}")


def heading_of(page: str) -> str:
    found = re.findall(r"<h1>(.*?)</h1>", page, re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", found[0])) if found else "(no heading)"


if __name__ == "__main__":
    sys.exit(main())
