"""`clinic-sync connect-google`: the OAuth consent flow (google-auth-oauthlib) against the Google
stand-in, in both modes, and what it stores, says and refuses."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable

import httpx
import psycopg
import pytest

from daemon.config import Settings
from daemon.crypto import TokenCipher
from daemon.google_connect import ConnectError, ConnectOptions, ConnectResult, connect_google
from daemon.store import StoreError
from daemon.tokens import CALENDAR_SCOPE
from tests.conftest import Clinic, Database
from tests.daemon_harness import ROOT, TOKEN_KEY, Backend, make_settings, running, settings_env, sync_states, wait_until
from tests.dates import upcoming
from tests.standins.google import GoogleStandIn
from tests.standins.postgres import MIGRATOR, scalar
from tests.standins.vapi import Assistant

ACCOUNT = "reception@riverside.example"
AUTH_URL = re.compile(r"https?://127\.0\.0\.1:\d+/o/oauth2/auth\?\S+")


@pytest.fixture(autouse=True)
def loopback_token_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    # oauthlib refuses plain-http token endpoints; the stand-in serves http on 127.0.0.1 only.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.fixture
def backend(database: Database) -> Backend:
    return Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)})


def connection(admin: psycopg.Connection) -> tuple[str, str, str, list[str], dt.datetime | None] | None:
    row = admin.execute(
        "select status, google_account, refresh_token_encrypted, scopes, refresh_token_expires_at"
        " from public.calendar_connections"
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3], row[4])


def browser(google: GoogleStandIn, shown: list[str]) -> Callable[[str], str]:
    """The person in copy-paste mode: opens the printed link, signs in, pastes back where Google sent them."""

    def paste(prompt: str) -> str:
        match = AUTH_URL.search(shown[-1])
        assert match, shown
        response = httpx.get(match[0], follow_redirects=False, timeout=5)
        assert response.status_code == 302, response.text
        return response.headers["location"]

    return paste


def connect(settings: Settings, clinic: Clinic, google: GoogleStandIn) -> ConnectResult:
    shown: list[str] = []
    options = ConnectOptions(copy_paste=True, show=shown.append, ask=browser(google, shown))
    return asyncio.run(connect_google(settings, clinic.id, options))


def test_the_cli_connects_through_a_local_redirect_and_the_daemon_can_then_sync(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, assistant: Assistant, clinic: Clinic
) -> None:
    google.add_account(ACCOUNT)
    google.consent(ACCOUNT)
    env = {**os.environ, **settings_env(backend, google), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "daemon", "connect-google", "--clinic", str(clinic.id), "--no-browser"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not any(AUTH_URL.search(line) for line in lines):  # bounded by the process ending
            line = process.stdout.readline()
            assert line, f"connect-google ended before printing a link: {lines}"
            lines.append(line)
        [url] = [m[0] for line in lines if (m := AUTH_URL.search(line))]
        assert "access_type=offline" in url and "prompt=consent" in url and "calendar.events" in url
        landing = httpx.get(url, follow_redirects=True, timeout=10)  # the browser: consent, then Google's redirect
        assert landing.status_code == 200 and "connected" in landing.text
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert f"Connected Riverside Clinic to Google account {ACCOUNT}, calendar '{ACCOUNT}' [primary]" in out
    stored = connection(admin)
    assert stored is not None
    status, account, refresh_encrypted, scopes, expires = stored
    assert (status, account, expires) == ("active", ACCOUNT, None)
    assert CALENDAR_SCOPE in scopes
    assert TokenCipher(TOKEN_KEY).decrypt(refresh_encrypted) not in out + err  # never printed

    with running(make_settings(backend, google)):
        assistant.book(f"{upcoming(2)}T10:00")
        wait_until(lambda: sync_states(admin) == {"synced": 1}, what="the booking synced with the new grant")
    assert len(google.events(ACCOUNT)) == 1


def test_copy_paste_mode_reconnects_a_clinic_and_its_parked_bookings_drain(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, assistant: Assistant, clinic: Clinic
) -> None:
    google.add_account(ACCOUNT)
    settings = make_settings(backend, google)
    with running(settings):
        assistant.book(f"{upcoming(2)}T10:00")
        wait_until(lambda: sync_states(admin) == {"parked": 1}, what="parked: no connection yet")
        google.consent(ACCOUNT)
        result = connect(settings, clinic, google)
        wait_until(lambda: sync_states(admin) == {"synced": 1}, what="the parked booking synced after connecting")
    assert result.account == ACCOUNT and result.calendar.time_zone == "Europe/London"
    assert result.warnings == []
    assert len(google.events(ACCOUNT)) == 1


def test_a_testing_mode_grant_is_stored_with_its_expiry_and_warned_about(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic
) -> None:
    google.add_account(ACCOUNT, time_zone="Europe/Paris")
    google.consent(ACCOUNT, testing_mode=True)
    result = connect(make_settings(backend, google), clinic, google)
    stored = connection(admin)
    assert stored is not None and stored[4] is not None
    assert dt.timedelta(days=6.9) < stored[4] - dt.datetime.now(dt.UTC) <= dt.timedelta(days=7)
    [testing, zone] = result.warnings
    assert "in 7 day(s)" in testing and "'Testing'" in testing and "Publish" in testing
    assert "Europe/Paris" in zone and "Europe/London" in zone


@pytest.mark.parametrize("problem", ["denied", "unknown calendar", "not a redirect", "unknown clinic"])
def test_a_failed_connection_stores_nothing(
    problem: str, backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic
) -> None:
    google.add_account(ACCOUNT)
    google.consent(ACCOUNT)
    settings = make_settings(backend, google)
    shown: list[str] = []
    ask = browser(google, shown)
    target = clinic
    if problem == "denied":
        google.deny_consent()
        expected = "Google refused: "
    elif problem == "unknown calendar":
        admin.execute("update public.clinics set calendar_id = 'surgery@group.calendar.google.com'")
        expected = f"{ACCOUNT} cannot use calendar 'surgery@group.calendar.google.com'"
    elif problem == "not a redirect":
        ask = lambda prompt: "I clicked allow"  # noqa: E731
        expected = "not the localhost address"
    else:
        target = Clinic(uuid.uuid4(), clinic.key)
        expected = "No clinic with id"
    options = ConnectOptions(copy_paste=True, show=shown.append, ask=ask)
    with pytest.raises((ConnectError, StoreError)) as raised:
        asyncio.run(connect_google(settings, target.id, options))
    assert expected in str(raised.value)
    assert connection(admin) is None
    assert scalar(admin, "select count(*) from public.calendar_connections") == 0
