"""The local demo: phone calls book through `vapi_tool_call`; the daemon puts them in the calendar.

Everything runs on this machine: a throwaway PostgreSQL made to look like a Supabase
database, the project's migrations, a demo clinic connected to a stand-in Google Calendar, the
sync daemon (direct-PostgreSQL path, LISTEN/NOTIFY doorbell), and the calls a Vapi assistant
would make through Supabase's REST gateway (imitated exactly: role, request headers, one
transaction). Nothing is sent to Supabase, Vapi or Google, and everything is removed afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from loguru import logger

from daemon.config import DEFAULT_MIGRATIONS_DIR
from daemon.migrations import apply
from tests.daemon_harness import Backend, connect_google, make_settings, running, wait_until
from tests.standins.clinics import create_clinic, issue_key
from tests.standins.google import GoogleStandIn
from tests.standins.postgres import AUTHENTICATOR, MIGRATOR, ThrowawayPostgres
from tests.standins.vapi import Assistant, VapiCall, reference_of, tool_call

LONDON = ZoneInfo("Europe/London")


def next_tuesday() -> dt.date:
    day = dt.datetime.now(LONDON).date() + dt.timedelta(days=7)
    return day + dt.timedelta(days=(2 - day.isoweekday()) % 7)


def say(who: str, text: str) -> None:
    print(f"  {who:<10} {text}")


def use(assistant: Assistant, name: str, arguments: dict[str, Any], call_id: str | None = None) -> str:
    item = tool_call(name, arguments, call_id=call_id)
    say("assistant", f"-> {name} {json.dumps(arguments)}")
    [answer] = assistant.send(assistant.call.message(item))["results"]
    text = answer.get("result") or f"ERROR: {answer['error']}"
    say("database", f"<- {text}")
    return str(text)


def conversation(gateway: psycopg.Connection, key: str) -> None:
    day = next_tuesday()
    jane = Assistant(gateway, key, VapiCall(customer_number="+447700900123"))
    print("\nCall 1 (caller +447700900123)")
    say("caller", f"Have you got anything on {day:%A %-d %B}?")
    use(jane, "check_availability", {"date": day.isoformat()})
    say("caller", "10:30 please, it's Jane Doe.")
    booked = use(jane, "book_appointment", {"start": f"{day}T10:30", "patient_name": "Jane Doe"}, call_id="demo-1")
    print("  (Vapi retries the same tool call after a network blip: same answer, no second booking)")
    use(jane, "book_appointment", {"start": f"{day}T10:30", "patient_name": "Jane Doe"}, call_id="demo-1")
    reference = reference_of(booked)

    john = Assistant(gateway, key, VapiCall(customer_number="+447700900456"))
    print("\nCall 2 (caller +447700900456)")
    say("caller", "Can I have 10:30 that Tuesday? John Roe.")
    use(john, "book_appointment", {"start": f"{day}T10:30", "patient_name": "John Roe"})
    say("caller", "11:00 then.")
    use(john, "book_appointment", {"start": f"{day}T11:00", "patient_name": "John Roe"})

    print("\nCall 3 (Jane again)")
    say("caller", f"Could you move {reference} to 14:00?")
    use(jane, "reschedule_appointment", {"reference": reference, "new_start": f"{day}T14:00"})
    say("caller", "Actually, please cancel it.")
    use(jane, "cancel_appointment", {})


def everything_synced(admin: psycopg.Connection) -> bool:
    row = admin.execute("select bool_and(sync_state = 'synced') from public.appointments").fetchone()
    return row == (True,)


def show_appointments(admin: psycopg.Connection) -> None:
    print("\nAppointments table:")
    rows = admin.execute(
        "select reference, starts_at, service, status, sync_state, revision, synced_revision,"
        " extract(epoch from synced_at - updated_at) * 1000"
        " from public.appointments order by created_at"
    ).fetchall()
    print(
        f"  {'ref':<8}{'London time':<20}{'service':<12}{'status':<11}{'sync':<9}{'revision':<10}last change -> synced"
    )
    for reference, starts_at, service, status, sync_state, revision, synced, lag in rows:
        local = starts_at.astimezone(LONDON)
        print(
            f"  {reference:<8}{local:%a %d %b %H:%M}{'':<4}{service:<12}{status:<11}{sync_state:<9}"
            f"{f'{synced}/{revision}':<10}{lag:.0f} ms"
        )


def show_calendar(google: GoogleStandIn, account: str) -> None:
    print(f"\nGoogle Calendar of {account} (stand-in):")
    for event in sorted(google.events(account), key=lambda e: e["created"]):
        start = dt.datetime.fromisoformat(event["start"]["dateTime"])
        print(f"  {event['id'][:10]}...  {start:%a %d %b %H:%M %z}  {event['status']:<10} {event['summary']}")


def main() -> int:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    print(__doc__.strip().splitlines()[0])
    print(
        "Local stand-ins only: PostgreSQL imitating Supabase, a stand-in Google Calendar;"
        " no Supabase, Vapi or Google involved."
    )
    with ThrowawayPostgres() as pg, GoogleStandIn() as google:
        pg.create_database("demo")
        pg.bootstrap_supabase("demo")
        applied = apply(pg.dsn("demo", MIGRATOR), DEFAULT_MIGRATIONS_DIR)
        print(f"Applied {len(applied)} migrations to a throwaway database.")
        with (
            psycopg.connect(pg.dsn("demo"), autocommit=True) as admin,
            psycopg.connect(pg.dsn("demo", AUTHENTICATOR), autocommit=True) as gateway,
        ):
            clinic_id = create_clinic(admin, "Riverside Clinic (demo)")
            account = connect_google(admin, google, clinic_id, "reception@riverside.example")
            backend = Backend("postgres", {"DATABASE_URL": pg.dsn("demo", MIGRATOR)}, feed=True)
            with running(make_settings(backend, google, sync_poll_seconds=30)):
                conversation(gateway, issue_key(admin, clinic_id))
                wait_until(lambda: everything_synced(admin), what="the calendar to catch up")
            show_appointments(admin)
            show_calendar(google, account)
    print("\nThrowaway database and stand-ins removed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
