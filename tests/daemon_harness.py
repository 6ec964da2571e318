"""Running the real daemon against the stand-ins: settings, a background runner, bounded waits."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from cryptography.fernet import Fernet

from daemon.app import Daemon
from daemon.calendar import event_id_for
from daemon.config import Settings
from daemon.crypto import TokenCipher
from daemon.tokens import CALENDAR_SCOPE
from tests.standins.google import GoogleStandIn

ROOT = Path(__file__).resolve().parent.parent
TOKEN_KEY = Fernet.generate_key().decode()


@dataclass(frozen=True)
class Backend:
    """Where the daemon finds the database: Supabase's REST gateway or PostgreSQL directly."""

    name: str
    env: dict[str, str]
    feed: bool = False  # whether a change feed is there to subscribe to (else the timer alone)


def settings_env(backend: Backend, google: GoogleStandIn, **overrides: Any) -> dict[str, str]:
    env = {
        **backend.env,
        "SYNC_DATABASE": backend.name,
        "GOOGLE_CLIENT_ID": "test-client-id",
        "GOOGLE_CLIENT_SECRET": "test-client-secret",
        "TOKEN_ENCRYPTION_KEY": TOKEN_KEY,
        "GOOGLE_API_ENDPOINT": google.api_endpoint,
        "GOOGLE_TOKEN_URI": google.token_uri,
        "GOOGLE_AUTH_URI": google.auth_uri,
        "GOOGLE_TIMEOUT_SECONDS": "2",
        "SYNC_POLL_SECONDS": "0.2",
        "SYNC_LEASE_SECONDS": "5",
        "SYNC_BACKOFF_BASE_SECONDS": "0.05",
        "SYNC_BACKOFF_CAP_SECONDS": "0.5",
        "GOOGLE_RATE_LIMIT_HOLD_SECONDS": "0.05",
        "SYNC_SHUTDOWN_GRACE_SECONDS": "5",
        "FEED_ENABLED": str(backend.feed).lower(),
        "FEED_PROBE_SECONDS": "0.5",
        "FEED_PROBE_TIMEOUT_SECONDS": "1",
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": "0",
        "BACKLOG_METRICS_SECONDS": "0.5",
    }
    env.update({name.upper(): str(value) for name, value in overrides.items()})
    return env


def make_settings(backend: Backend, google: GoogleStandIn, **overrides: Any) -> Settings:
    """Settings for the stand-ins; every connection setting is explicit, so the environment cannot redirect it."""
    values = {name.lower(): value for name, value in settings_env(backend, google, **overrides).items()}
    return Settings.model_validate(values)


class DaemonThread:
    """The daemon running in this process, on its own event loop in a background thread."""

    def __init__(self, settings: Settings, owner: str | None = None) -> None:
        self.daemon = Daemon(settings, owner=owner)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"daemon-{self.daemon.owner}", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self.daemon.run())
        except BaseException as error:  # surfaced by stop()
            self.error = error

    def start(self) -> DaemonThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 20.0) -> None:
        self.daemon.stop()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the daemon did not stop"
        if self.error is not None:
            raise self.error


@contextmanager
def running(settings: Settings, owner: str | None = None) -> Iterator[DaemonThread]:
    runner = DaemonThread(settings, owner).start()
    try:
        yield runner
    finally:
        runner.stop()


def daemon_process(env: dict[str, str], output: int | IO[bytes] = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """`python -m daemon` as a separate process (for SIGKILL and SIGTERM). Its output (stdout and stderr)
    goes to a pipe, or to `output` (a file: a pipe nobody reads fills up and stalls a long-running daemon)."""
    return subprocess.Popen(
        [sys.executable, "-m", "daemon"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=output,
        stderr=subprocess.STDOUT,
    )


def wait_until(condition: Callable[[], bool], *, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def connect_google(
    admin: psycopg.Connection, google: GoogleStandIn, clinic_id: uuid.UUID, account: str | None = None
) -> str:
    """Give the clinic a Google account at the stand-in and store its (encrypted) connection."""
    account = account or f"clinic-{clinic_id.hex[:8]}@example.com"
    refresh_token = google.add_account(account)
    store_connection(admin, clinic_id, account, refresh_token)
    return account


def store_connection(admin: psycopg.Connection, clinic_id: uuid.UUID, account: str, refresh_token: str) -> None:
    admin.execute(
        "select public.save_calendar_connection(%s, %s, %s, %s)",
        (clinic_id, account, TokenCipher(TOKEN_KEY).encrypt(refresh_token), [CALENDAR_SCOPE]),
    )


def sync_states(admin: psycopg.Connection) -> dict[str, int]:
    rows = admin.execute("select sync_state, count(*) from public.appointments group by 1").fetchall()
    return {state: count for state, count in rows}


def all_synced(admin: psycopg.Connection) -> Callable[[], bool]:
    return lambda: set(sync_states(admin)) == {"synced"}


def appointment_events(
    admin: psycopg.Connection, google: GoogleStandIn, account: str, clinic_id: uuid.UUID
) -> dict[uuid.UUID, dict[str, Any]]:
    """Each of the clinic's appointments with its one event in the account's calendar (fails otherwise)."""
    events = {event["id"]: event for event in google.events(account)}
    appointments = [
        row[0]
        for row in admin.execute("select id from public.appointments where clinic_id = %s", (clinic_id,)).fetchall()
    ]
    assert len(events) == len(appointments), (len(events), len(appointments))
    return {appointment: events[event_id_for(appointment)] for appointment in appointments}
