"""`clinic-sync`: the operator's command (also `python -m daemon`).

    clinic-sync run                      the sync daemon (the default)
    clinic-sync migrate [status]         apply the SQL migrations to DATABASE_URL, or list them
    clinic-sync verify [--json] [--round-trip --clinic ID]
    clinic-sync add-clinic --name ... [--time-zone] [--calendar-id] [--hours ...] [--service ...]
    clinic-sync keys|rotate-key|revoke-key
    clinic-sync connect-google --clinic ID [--copy-paste]
    clinic-sync connect-link --clinic ID [--expires 72h]     a link the clinic opens to connect Google itself
    clinic-sync status-link --clinic ID [--expires 30d]      a link to the clinic's status page
    clinic-sync links --clinic ID | revoke-link LINK_ID
    clinic-sync practitioners --clinic ID                    the clinic's practitioners (diaries)
    clinic-sync add-practitioner|change-practitioner|deactivate-practitioner ...
    clinic-sync vapi-tools --clinic ID [--clinic-key KEY | --issue-key]
    clinic-sync vapi-sync --clinic ID [--assistant ID] [--dry-run]   the clinic's tools and credential in Vapi
    clinic-sync retry-failed [--clinic ID] [--appointment ID]

Settings come from the environment (or `.env`); see the README. Every command logs to stderr as LOG_FORMAT
(text or json) and LOG_LEVEL say. Exit codes: 0 done, 1 failed (database, Google, or a failed check), 2 bad
usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from loguru import logger
from pydantic import ValidationError

from daemon import admin
from daemon.admin import Deactivation, NewClinic, NewPractitioner, Refused, UsageError
from daemon.config import DatabaseSettings, Settings, StoreSettings, VapiSettings
from daemon.domain.clinics import ClinicProfile
from daemon.domain.practitioners import Practitioner
from daemon.google_connect import ConnectError, ConnectOptions, connect_google
from daemon.logs import LogSettings, configure_logging
from daemon.store import Store, StoreError
from daemon.vapi_api import VapiError
from daemon.vapi_setup import (
    Endpoint,
    SyncReport,
    VapiSyncFailed,
    command_owner,
    missing_settings,
    open_vapi,
    sync_clinic,
)
from daemon.vapi_tools import tool_definitions
from daemon.wiring import open_store

T = TypeVar("T")
Handler = Callable[[argparse.Namespace], int]


class ConfigurationError(Exception):
    """A setting is missing or invalid; the message names it."""


def load(settings_class: type[T]) -> T:
    try:
        return settings_class()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper() or 'settings'}: {e['msg']}" for e in error.errors()
        )
        raise ConfigurationError(problems) from error


async def with_store(settings: StoreSettings, action: Callable[[Store], Awaitable[T]]) -> T:
    store = await open_store(settings)
    try:
        return await action(store)
    finally:
        await store.close()


def _run(args: argparse.Namespace) -> int:
    from daemon.app import serve  # the main loop: only this command needs it

    asyncio.run(serve(load(Settings)))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from daemon.migrations import migrate_command

    overrides = {"database_url": args.database_url} if args.database_url else {}
    try:
        settings = DatabaseSettings(**overrides)
    except ValidationError as error:
        raise ConfigurationError("set DATABASE_URL or pass --database-url") from error
    return migrate_command(settings, args.action)


def _verify(args: argparse.Namespace) -> int:
    from daemon.verify import Status, VerifyOptions, print_report, run_checks

    settings = load(Settings)
    if args.round_trip and args.clinic is None:
        raise UsageError("--round-trip needs --clinic: the test clinic whose calendar receives the synthetic booking")
    options = VerifyOptions(round_trip_clinic=args.clinic if args.round_trip else None, budget_seconds=args.budget)
    report = asyncio.run(run_checks(settings, options))
    print_report(report, as_json=args.json)
    failed = [check.name for check in report.checks if check.status is Status.FAIL]
    logger.info(
        "readiness report: {} ({} check(s){})",
        "ready" if report.passed else "not ready",
        len(report.checks),
        f"; failed: {', '.join(failed)}" if failed else "",
    )
    return 0 if report.passed else 1


def _add_clinic(args: argparse.Namespace) -> int:
    clinic = NewClinic(
        name=args.name,
        time_zone=args.time_zone,
        calendar_id=args.calendar_id,
        hours=args.hours or list(admin.DEFAULT_HOURS),
        services=args.service or list(admin.DEFAULT_SERVICES),
        phone_country_code=args.phone_country_code,
        key_label=args.key_label,
    )
    admin.parse_hours(clinic.hours)  # refuse bad notation before touching the database
    admin.parse_services(clinic.services)
    created = asyncio.run(with_store(load(StoreSettings), lambda store: admin.add_clinic(store, clinic)))
    logger.info("created clinic {} with its first key", created.clinic_id)
    print(f"clinic id:  {created.clinic_id}")
    print(f"clinic key: {created.key}")
    print("The key is shown only this once (only its hash is stored): put it in Vapi as the x-clinic-key header.")
    print(f"Next: clinic-sync connect-link --clinic {created.clinic_id}   (or connect-google)")
    print(f"      clinic-sync vapi-tools --clinic {created.clinic_id} --clinic-key <the key above>")
    return 0


def _keys(args: argparse.Namespace) -> int:
    keys = asyncio.run(with_store(load(StoreSettings), lambda store: store.clinic_keys(args.clinic)))
    for key in keys:
        state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
        print(f"{key.id}  {key.key_prefix}…  {key.label or '-':<12} created {key.created_at}  {state}")
    if not keys:
        print("no keys")
    return 0


def _rotate_key(args: argparse.Namespace) -> int:
    """A new key. For a clinic set up in Vapi by vapi-sync the key goes into its Vapi credential (never shown),
    and only once Vapi has it do the other keys start their grace period."""
    settings = load(VapiSettings)
    if args.grace_minutes < 0:
        raise UsageError("the grace period cannot be negative")

    async def rotate(store: Store) -> str | SyncReport:
        setup = await store.vapi_setup(args.clinic)
        if setup is None or setup.credential_id is None:
            return await admin.rotate_key(store, args.clinic, args.label, args.grace_minutes)
        missing = missing_settings(settings)
        if missing:
            raise ConfigurationError(
                f"{', '.join(missing)}: the clinic's key is in its Vapi credential {setup.credential_id}"
                " (clinic-sync vapi-sync), where rotate-key puts the new one"
            )
        async with open_vapi(settings) as vapi:
            return await sync_clinic(
                store,
                vapi,
                Endpoint.of(settings),
                args.clinic,
                owner=command_owner(),
                rotate_grace_minutes=args.grace_minutes,
            )

    rotated = _vapi_run(settings, rotate)
    when = f"in {args.grace_minutes} minute(s)" if args.grace_minutes else "now"
    if isinstance(rotated, SyncReport):
        print("\n".join(rotated.lines()))
        print(
            "The new clinic key is in the Vapi credential only (not shown: only Vapi needs it)."
            f" The clinic's previous keys stop working {when}."
        )
        return 0
    print(f"clinic key: {rotated}")
    print(f"Shown only this once. The clinic's previous keys stop working {when}: update Vapi's x-clinic-key header.")
    return 0


def _vapi_run(settings: StoreSettings, action: Callable[[Store], Awaitable[T]]) -> T:
    """Run `action` with the store; a sync that failed prints what it did first (the error is reported by main)."""
    try:
        return asyncio.run(with_store(settings, action))
    except VapiSyncFailed as failed:
        print("\n".join(failed.report.lines()[:-1]))
        raise


def _vapi_sync(args: argparse.Namespace) -> int:
    settings = load(VapiSettings)
    missing = missing_settings(settings)
    if missing:
        raise ConfigurationError(
            f"{', '.join(missing)}: vapi-sync talks to Vapi's API with VAPI_API_KEY and points the tools at"
            " <SUPABASE_URL>/rest/v1/rpc/vapi_tool_call with the apikey header SUPABASE_ANON_KEY"
        )

    async def sync(store: Store) -> SyncReport:
        async with open_vapi(settings) as vapi:
            return await sync_clinic(
                store,
                vapi,
                Endpoint.of(settings),
                args.clinic,
                owner=command_owner(),
                assistant_id=args.assistant,
                dry_run=args.dry_run,
            )

    report = _vapi_run(settings, sync)
    print("\n".join(report.lines()))
    if report.credential_made:
        print(
            "The credential holds a clinic key of its own (label 'vapi credential'). Keys pasted into Vapi by hand"
            f" still work: once no assistant uses them, clinic-sync keys --clinic {args.clinic}, then"
            " clinic-sync revoke-key KEY_ID."
        )
    if report.dry_run or any(change.subject.startswith("assistant") for change in report.changes):
        return 0
    print(
        f"No assistant named: attach the tools in Vapi, or run again with --assistant <assistant id> (its metadata"
        f' org_id is then set to "{args.clinic}").'
    )
    return 0


def _revoke_key(args: argparse.Namespace) -> int:
    asyncio.run(with_store(load(StoreSettings), lambda store: store.revoke_key(args.key_id)))
    print(f"key {args.key_id} revoked")
    return 0


def _connect_google(args: argparse.Namespace) -> int:
    settings = load(Settings)
    options = ConnectOptions(copy_paste=args.copy_paste, port=args.port, open_browser=not args.no_browser)
    result = asyncio.run(connect_google(settings, args.clinic, options))
    print(result.summary())
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def parse_duration(text: str) -> int:
    """Seconds in '72h', '30m', '7d' or '3600s'."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 72h, 30m or 7d")
    return int(number) * units[unit]


def _public_settings() -> Settings:
    settings = load(Settings)
    if settings.public_url is None:
        raise ConfigurationError(
            "PUBLIC_URL: links point to the daemon's public address, e.g. https://sync.example.com"
        )
    return settings


def _issue_link(args: argparse.Namespace, purpose: str) -> int:
    from daemon.connect_web import connect_url, status_url

    settings = _public_settings()
    assert settings.public_url is not None
    link = asyncio.run(with_store(settings, lambda store: store.issue_link(args.clinic, purpose, args.expires)))
    url = (connect_url if purpose == "connect" else status_url)(settings.public_url, link.secret)
    logger.info("issued {} link {} for clinic {}", purpose, link.id, args.clinic)
    print(url)
    what = "works once" if purpose == "connect" else "works"
    print(
        f"link {link.id} {what} until {link.expires_at:%Y-%m-%d %H:%M} UTC; shown only this once (only a hash is"
        f" stored). Revoke it with: clinic-sync revoke-link {link.id}",
        file=sys.stderr,
    )
    return 0


def _connect_link(args: argparse.Namespace) -> int:
    return _issue_link(args, "connect")


def _status_link(args: argparse.Namespace) -> int:
    return _issue_link(args, "status")


def _links(args: argparse.Namespace) -> int:
    links = asyncio.run(with_store(load(StoreSettings), lambda store: store.clinic_links(args.clinic)))
    for link in links:
        print(
            f"{link.id}  {link.purpose:<8} {link.state:<8} created {link.created_at:%Y-%m-%d %H:%M}"
            f"  expires {link.expires_at:%Y-%m-%d %H:%M}"
        )
    if not links:
        print("no links")
    return 0


def _revoke_link(args: argparse.Namespace) -> int:
    asyncio.run(with_store(load(StoreSettings), lambda store: store.revoke_link(args.link_id)))
    print(f"link {args.link_id} revoked")
    return 0


INDENT = " " * 38  # under a practitioner's id


def _practitioners(args: argparse.Namespace) -> int:
    async def gather(store: Store) -> tuple[ClinicProfile, list[Practitioner]]:
        return await store.clinic_profile(args.clinic), await store.clinic_practitioners(args.clinic)

    profile, practitioners = asyncio.run(with_store(load(StoreSettings), gather))
    for practitioner in practitioners:
        _print_practitioner(practitioner)
    if not practitioners:
        print(f"no practitioners: {profile.name} books as one diary")
    return 0


def _print_practitioner(practitioner: Practitioner) -> None:
    state = "active" if practitioner.active else "deactivated"
    print(f"{practitioner.id}  {practitioner.name}  {state}  {practitioner.upcoming_bookings} booking(s) ahead")
    services = ", ".join(practitioner.services) if practitioner.services else "all of the clinic's"
    hours = ", ".join(admin.format_hours(practitioner.opening_hours)) if practitioner.opening_hours else "the clinic's"
    print(f"{INDENT}services: {services}")
    print(f"{INDENT}hours:    {hours}")
    calendar = practitioner.calendar_id or "the clinic's"
    print(f"{INDENT}calendar: {calendar}")


def _add_practitioner(args: argparse.Namespace) -> int:
    new = NewPractitioner.from_notation(args.clinic, args.name, args.services, args.hours, args.calendar_id)
    practitioner_id = asyncio.run(with_store(load(StoreSettings), lambda store: admin.add_practitioner(store, new)))
    logger.info("added practitioner {} to clinic {}", practitioner_id, args.clinic)
    print(f"practitioner id: {practitioner_id}")
    if new.calendar_id is not None:
        print(_CALENDAR_NOTE.format(calendar=new.calendar_id))
    print(_tools_note(args.clinic))
    return 0


_CALENDAR_NOTE = (
    "The clinic's connected Google account must be able to make changes to events in {calendar}"
    " (e.g. that calendar shared with it, 'Make changes to events')."
)


def _tools_note(clinic: uuid.UUID | None) -> str:
    command = f"clinic-sync vapi-tools --clinic {clinic or 'ID'}"
    return (
        "The assistant's tool descriptions name the practitioners: set up with clinic-sync vapi-sync, the daemon"
        f" updates them in Vapi; else print them again ({command}) and update Vapi."
    )


def _change_practitioner(args: argparse.Namespace) -> int:
    changes = admin.practitioner_changes(
        name=args.name,
        services=args.services,
        all_services=args.all_services,
        hours=args.hours,
        clinic_hours=args.clinic_hours,
        calendar_id=args.calendar_id,
        clinic_calendar=args.clinic_calendar,
        reactivate=args.reactivate,
    )
    asyncio.run(with_store(load(StoreSettings), lambda store: store.change_practitioner(args.practitioner_id, changes)))
    logger.info("changed practitioner {}: {}", args.practitioner_id, ", ".join(changes.to_json()))
    print(f"practitioner {args.practitioner_id} changed: {', '.join(changes.to_json())}")
    if changes.calendar_id is not None:
        print(_CALENDAR_NOTE.format(calendar=changes.calendar_id))
    if {"name", "services", "active"} & set(changes.to_json()):
        print(_tools_note(None))
    return 0


def _deactivate_practitioner(args: argparse.Namespace) -> int:
    done = asyncio.run(
        with_store(
            load(StoreSettings),
            lambda store: admin.deactivate_practitioner(store, args.clinic, args.practitioner_id, args.reassign),
        )
    )
    logger.info("deactivated practitioner {} ({} booking(s) ahead)", args.practitioner_id, len(done.bookings))
    _print_deactivation(done, args)
    return 0


def _print_deactivation(done: Deactivation, args: argparse.Namespace) -> None:
    name = done.practitioner.name
    print(f"{name} no longer takes bookings.")
    if not done.bookings:
        print("No bookings ahead.")
    else:
        print(f"Bookings ahead ({done.time_zone} time):")
        for booking in done.bookings:
            print(
                f"  {booking.reference}  {done.local_start(booking):%a %d %b %Y %H:%M}  {booking.service}"
                f"  with {booking.practitioner_name}  {booking.outcome}"
            )
        kept = sum(booking.outcome == "kept" for booking in done.bookings)
        print(f"{len(done.bookings) - kept} moved to a colleague free at that time, {kept} kept with {name}.")
        if kept:
            print(
                f"Kept bookings stay with {name}: the clinic must move or cancel them"
                " (their calendar is still synced while they have any)."
            )
        if kept and not args.reassign:
            print(
                "To move those a colleague can take: clinic-sync deactivate-practitioner"
                f" {args.practitioner_id} --clinic {args.clinic} --reassign"
            )
    print(_tools_note(args.clinic))


def _vapi_tools(args: argparse.Namespace) -> int:
    settings = load(StoreSettings)
    if settings.supabase_url is None:
        raise ConfigurationError("SUPABASE_URL: the tools' server URL is <SUPABASE_URL>/rest/v1/rpc/vapi_tool_call")

    async def gather(store: Store) -> tuple[ClinicProfile, str | None]:
        profile = await store.clinic_profile(args.clinic)
        key = await store.issue_key(args.clinic, "vapi") if args.issue_key else args.clinic_key
        return profile, key

    profile, key = asyncio.run(with_store(settings, gather))
    anon = settings.supabase_anon_key.get_secret_value() if settings.supabase_anon_key else None
    print(json.dumps(tool_definitions(profile, settings.supabase_url, anon, key), indent=2))
    if anon is None or key is None:
        print(
            "note: placeholders left for "
            + " and ".join(
                what
                for what, missing in (("SUPABASE_ANON_KEY", anon is None), ("the clinic key", key is None))
                if missing
            ),
            file=sys.stderr,
        )
    print(
        f'note: set the assistant\'s metadata to {{"org_id": "{args.clinic}"}} so every call is checked against '
        "the key's clinic",
        file=sys.stderr,
    )
    return 0


def _retry_failed(args: argparse.Namespace) -> int:
    count = asyncio.run(
        with_store(load(StoreSettings), lambda store: store.retry_failed(args.clinic, args.appointment))
    )
    print(f"re-queued {count} failed appointment(s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clinic-sync", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="command")

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    command("run", _run, "run the sync daemon until SIGTERM/SIGINT")

    migrate = command("migrate", _migrate, "apply pending SQL migrations to DATABASE_URL, or show their status")
    migrate.add_argument("action", nargs="?", choices=["apply", "status"], default="apply")
    migrate.add_argument("--database-url", help="defaults to DATABASE_URL")

    verify = command("verify", _verify, "check that this deployment is ready for production")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--round-trip", action="store_true", help="also book through the Vapi RPC and wait for Google")
    verify.add_argument("--clinic", type=uuid.UUID, help="the test clinic for --round-trip")
    verify.add_argument("--budget", type=float, default=30.0, help="seconds the round trip may take (default 30)")

    add = command("add-clinic", _add_clinic, "create a clinic and print its key (once)")
    add.add_argument("--name", required=True)
    add.add_argument("--time-zone", default="Europe/London", help="IANA name (default Europe/London)")
    add.add_argument("--calendar-id", default="primary", help="Google calendar id (default: the account's own)")
    add.add_argument(
        "--hours",
        action="append",
        help="opening hours, repeatable: 'mon-fri 09:00-17:00' (the default), 'sat 09:00-12:00'",
    )
    add.add_argument(
        "--service", action="append", help="service, repeatable: 'Check-up=30' (minutes; '*' after the default)"
    )
    add.add_argument("--phone-country-code", default="44", help="for national numbers like 07700 900123 (default 44)")
    add.add_argument("--key-label", default="vapi")

    keys = command("keys", _keys, "list a clinic's keys (prefixes only)")
    keys.add_argument("--clinic", type=uuid.UUID, required=True)
    rotate = command("rotate-key", _rotate_key, "issue a new clinic key; the old ones stop after a grace period")
    rotate.add_argument("--clinic", type=uuid.UUID, required=True)
    rotate.add_argument("--grace-minutes", type=int, default=60, help="how long the old keys keep working (default 60)")
    rotate.add_argument("--label", default="vapi")
    revoke = command("revoke-key", _revoke_key, "revoke one clinic key now (ids from `keys`)")
    revoke.add_argument("key_id", type=uuid.UUID)

    connect = command("connect-google", _connect_google, "connect a clinic's Google Calendar (OAuth consent)")
    connect.add_argument("--clinic", type=uuid.UUID, required=True)
    connect.add_argument(
        "--copy-paste", action="store_true", help="headless server: open the link elsewhere, paste back the address"
    )
    connect.add_argument("--no-browser", action="store_true", help="print the link instead of opening a browser")
    connect.add_argument("--port", type=int, default=0, help="local port for Google's redirect (default: any free)")

    link = command("connect-link", _connect_link, "print a single-use link the clinic opens to connect Google")
    link.add_argument("--clinic", type=uuid.UUID, required=True)
    link.add_argument("--expires", type=parse_duration, default=72 * 3600, help="e.g. 72h (the default), 30m, 7d")
    status = command("status-link", _status_link, "print a link to the clinic's status page (bookings, sync state)")
    status.add_argument("--clinic", type=uuid.UUID, required=True)
    status.add_argument("--expires", type=parse_duration, default=30 * 86400, help="e.g. 30d (the default), 72h")
    links = command("links", _links, "list a clinic's connect and status links (never their secrets)")
    links.add_argument("--clinic", type=uuid.UUID, required=True)
    revoke_link = command("revoke-link", _revoke_link, "revoke a connect or status link now (ids from `links`)")
    revoke_link.add_argument("link_id", type=uuid.UUID)

    _practitioner_commands(command)

    tools = command("vapi-tools", _vapi_tools, "print the clinic's Vapi tool definitions (JSON)")
    tools.add_argument("--clinic", type=uuid.UUID, required=True)
    which_key = tools.add_mutually_exclusive_group()
    which_key.add_argument("--clinic-key", help="the clinic key to put in the x-clinic-key header")
    which_key.add_argument("--issue-key", action="store_true", help="issue a new clinic key for these tools")

    vapi_sync = command(
        "vapi-sync", _vapi_sync, "create or update the clinic's Vapi tools and credential through Vapi's API"
    )
    vapi_sync.add_argument("--clinic", type=uuid.UUID, required=True)
    vapi_sync.add_argument(
        "--assistant", help="the Vapi assistant to attach the tools to (remembered; its metadata org_id is set)"
    )
    vapi_sync.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")

    retry = command("retry-failed", _retry_failed, "put failed appointments back in the sync queue")
    retry.add_argument("--clinic", type=uuid.UUID, help="only this clinic's")
    retry.add_argument("--appointment", type=uuid.UUID, help="only this appointment")
    return parser


def _practitioner_commands(command: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    hours_help = "their own hours, repeatable, as add-clinic's --hours: 'mon-fri 09:00-17:00'"
    services_help = "the clinic's services they offer, comma-separated: 'Check-up, Hygiene'"
    listing = command("practitioners", _practitioners, "list a clinic's practitioners (deactivated ones too)")
    listing.add_argument("--clinic", type=uuid.UUID, required=True)

    add = command("add-practitioner", _add_practitioner, "add a practitioner (a diary of their own) to a clinic")
    add.add_argument("--clinic", type=uuid.UUID, required=True)
    add.add_argument("--name", required=True, help="as callers say it, unique in the clinic: 'Dr Anika Patel'")
    add.add_argument("--services", help=services_help + " (default: all of them)")
    add.add_argument("--hours", action="append", help=hours_help + " (default: the clinic's)")
    add.add_argument("--calendar-id", help="their own Google calendar (default: the clinic's)")

    change = command("change-practitioner", _change_practitioner, "change a practitioner; give only what changes")
    change.add_argument("practitioner_id", type=uuid.UUID)
    change.add_argument("--name")
    services = change.add_mutually_exclusive_group()
    services.add_argument("--services", help=services_help)
    services.add_argument("--all-services", action="store_true", help="every service of the clinic")
    hours = change.add_mutually_exclusive_group()
    hours.add_argument("--hours", action="append", help=hours_help + " (replaces their hours)")
    hours.add_argument("--clinic-hours", action="store_true", help="the clinic's opening hours")
    calendar = change.add_mutually_exclusive_group()
    calendar.add_argument("--calendar-id", help="their own Google calendar")
    calendar.add_argument("--clinic-calendar", action="store_true", help="the clinic's calendar")
    change.add_argument("--reactivate", action="store_true", help="take a deactivated practitioner back")

    deactivate = command(
        "deactivate-practitioner", _deactivate_practitioner, "stop a practitioner taking bookings; lists theirs ahead"
    )
    deactivate.add_argument("practitioner_id", type=uuid.UUID)
    deactivate.add_argument("--clinic", type=uuid.UUID, required=True, help="their clinic (checked; its time zone)")
    deactivate.add_argument(
        "--reassign", action="store_true", help="move each booking ahead to a colleague free at that time"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = getattr(args, "handler", _run)
    log_format = "text"
    try:
        logs = load(LogSettings)  # before anything logs: every command, not only `run`, honours LOG_FORMAT
        log_format = logs.log_format
        configure_logging(logs.log_level, logs.log_format)
        return handler(args)
    except ConfigurationError as error:
        return _fail(log_format, f"configuration error: {error}", 2)
    except UsageError as error:
        return _fail(log_format, f"error: {error}", 2)
    except (StoreError, ConnectError, Refused, VapiError, VapiSyncFailed) as error:
        return _fail(log_format, f"error: {error}", 1)


def _fail(log_format: str, message: str, code: int) -> int:
    """Report why the command failed on stderr: a plain line, or a JSON log line under LOG_FORMAT=json."""
    if log_format == "json":
        logger.error(message)
    else:
        print(message, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
