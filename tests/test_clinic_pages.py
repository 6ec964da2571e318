"""Clinics connect themselves, in a real browser: Debian's Chromium (headless, driven by Playwright) opens a
connect link printed by `clinic-sync connect-link`, reads the page, goes through the Google stand-in's consent
page as a Web application client, and lands on the daemon's callback page; every refusal gets its page and
stores nothing; the clinic status page shows one clinic's bookings.

The daemon's public address is https://127.0.0.1:PORT, a TLS terminator in front of its listener
(tests/standins/tls_terminator.py), as in production.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import shutil
import urllib.parse
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Response, ViewportSize, sync_playwright

from daemon.cli import main
from daemon.config import Settings
from tests.conftest import Clinic, Database
from tests.daemon_harness import (
    Backend,
    DaemonThread,
    make_settings,
    running,
    settings_env,
    sync_states,
    wait_until,
)
from tests.dates import upcoming
from tests.standins.clinics import create_clinic
from tests.standins.google import GoogleStandIn
from tests.standins.postgres import AUTHENTICATOR, MIGRATOR, scalar
from tests.standins.service import free_port
from tests.standins.supabase_rest import SupabaseRestStandIn
from tests.standins.tls_terminator import TlsTerminator
from tests.standins.vapi import Assistant

ACCOUNT = "manager@riverside.example"
CHROMIUM = "/usr/bin/chromium"
PHONE: ViewportSize = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="make chromium installs Debian's Chromium")


@pytest.fixture(autouse=True)
def loopback_token_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    # oauthlib refuses plain-http token endpoints; the stand-in serves http on 127.0.0.1 only.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Module-scoped, not session-scoped: Playwright's sync API keeps an event loop running in this thread while
    it is open, and the other modules' asyncio.run() calls must not find one."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    """One headless Debian Chromium for all the browser tests (Playwright's own browser download is not used)."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield browser
    browser.close()


@pytest.fixture
def backend(database: Database) -> Backend:
    """The direct path: the refusals and the status page do not depend on the database path."""
    return Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)})


@pytest.fixture(params=["supabase", "postgres"])
def either_backend(request: pytest.FixtureRequest, database: Database) -> Iterator[Backend]:
    """Each database path in turn (the store's link calls through Supabase's REST gateway too)."""
    if request.param == "postgres":
        yield Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)})
        return
    with SupabaseRestStandIn(database.dsn(AUTHENTICATOR)) as rest:
        yield Backend("supabase", {"SUPABASE_URL": rest.url, "SUPABASE_SERVICE_ROLE_KEY": rest.service_role_key})


class Site:
    """The daemon with a public address behind a TLS terminator, and a browser context (a manager's phone)."""

    def __init__(self, settings: Settings, runner: DaemonThread, context: BrowserContext) -> None:
        assert settings.public_url is not None
        self.settings = settings
        self.public_url = settings.public_url
        self.runner = runner
        self.context = context
        self.page: Page = context.new_page()
        self.answers: list[Response] = []
        context.on("response", lambda response: self.answers.append(response))

    @property
    def http_url(self) -> str:
        """The listener itself, as the terminator reaches it."""
        return f"http://127.0.0.1:{self.settings.public_port}"

    def last_answer(self, path_prefix: str) -> Response:
        return next(a for a in reversed(self.answers) if urllib.parse.urlsplit(a.url).path.startswith(path_prefix))


@contextmanager
def site(chromium: Browser, backend: Backend, google: GoogleStandIn, **overrides: Any) -> Iterator[Site]:
    port = free_port()
    with TlsTerminator(port) as tls:
        settings = make_settings(
            backend,
            google,
            public_url=f"https://127.0.0.1:{tls.port}",
            public_host="127.0.0.1",
            public_port=port,
            channel_check_seconds=0.2,
            **overrides,
        )
        google.make_web_client([f"{settings.public_url}/connect/callback"])
        with running(settings) as runner:
            context = chromium.new_context(viewport=PHONE, ignore_https_errors=True)  # the terminator's own cert
            try:
                yield Site(settings, runner, context)
            finally:
                context.close()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    def apply(backend: Backend, google: GoogleStandIn, web: Site) -> None:
        env = settings_env(backend, google, public_url=web.public_url)
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return apply


def command(*argv: str) -> int:
    """`clinic-sync ...` in a thread of its own: Playwright's sync API keeps an event loop in this one."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(main, list(argv)).result()


def issue(capsys: pytest.CaptureFixture[str], name: str, clinic_id: uuid.UUID, *extra: str) -> str:
    capsys.readouterr()
    assert command(name, "--clinic", str(clinic_id), *extra) == 0
    return capsys.readouterr().out.strip()


def connection(admin: psycopg.Connection, clinic_id: uuid.UUID) -> tuple[str, str, dt.datetime] | None:
    row = admin.execute(
        "select status, google_account, connected_at from public.calendar_connections where clinic_id = %s",
        (clinic_id,),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def link_states(admin: psycopg.Connection) -> list[str]:
    return [row[0] for row in admin.execute("select private.clinic_link_state(l) from public.clinic_links l")]


def assert_secure_page(answer: Response) -> None:
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"


def fits_a_phone(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_a_clinic_connects_its_calendar_through_a_link(
    chromium: Browser, either_backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic,
    assistant: Assistant, capsys: pytest.CaptureFixture[str], cli_env: Any,
) -> None:  # fmt: skip
    backend = either_backend
    google.add_account(ACCOUNT)
    with site(chromium, backend, google) as web:
        cli_env(backend, google, web)
        assistant.book(f"{upcoming(2)}T10:00", "Ada Lovelace")
        wait_until(lambda: sync_states(admin) == {"parked": 1}, what="parked: the clinic is not connected yet")
        url = issue(capsys, "connect-link", clinic.id, "--expires", "72h")
        assert url.startswith(f"{web.public_url}/connect/")
        secret = url.rsplit("/", 1)[1]
        # Only the secret's hash is stored.
        hashed = "select secret_hash = sha256(convert_to(%s, 'UTF8')) from public.clinic_links"
        assert scalar(admin, hashed, (secret,))
        assert scalar(admin, "select count(*) from public.clinic_links l where strpos(l::text, %s) > 0", (secret,)) == 0

        page = web.page
        page.goto(url)
        assert page.locator("h1").inner_text() == "Connect Riverside Clinic's Google Calendar"
        assert "https://www.googleapis.com/auth/calendar.events" in page.inner_text("main")
        assert fits_a_phone(page)
        assert_secure_page(web.last_answer("/connect/"))

        google.consent(ACCOUNT)
        page.get_by_role("button", name="Continue to Google").click()
        page.wait_for_url(re.compile(re.escape(google.auth_uri)))
        consent = page.url
        assert "access_type=offline" in consent and "prompt=consent" in consent
        assert "code_challenge_method=S256" in consent and "state=" in consent
        assert page.locator("#account").inner_text() == ACCOUNT
        assert "https://www.googleapis.com/auth/calendar.events" in page.locator("#scopes").inner_text()
        page.get_by_role("button", name="Allow").click()
        page.wait_for_url(re.compile(re.escape(f"{web.public_url}/connect/callback")))
        callback = page.url
        assert page.locator("h1").inner_text() == "Google Calendar connected"
        assert page.locator("#account").inner_text() == ACCOUNT
        assert "primary" in page.locator("#calendar").inner_text()
        assert page.locator("#zone").inner_text() == "Europe/London"
        assert page.locator(".warnings").count() == 0
        assert_secure_page(web.last_answer("/connect/callback"))

        stored = connection(admin, clinic.id)
        assert stored is not None and stored[:2] == ("active", ACCOUNT)
        assert link_states(admin) == ["used"]
        wait_until(lambda: sync_states(admin) == {"synced": 1}, what="the parked booking reaches the calendar")
        wait_until(
            lambda: any(channel.account == ACCOUNT and channel.state == "live" for channel in google.channels()),
            what="the calendar's push channel",
        )

        # The link and Google's answer work once.
        page.goto(url)
        assert page.locator("h1").inner_text() == "This link has already been used"
        assert web.last_answer("/connect/").status == 410
        page.goto(callback)
        assert page.locator("h1").inner_text() == "This link has already been used"
        assert connection(admin, clinic.id) == stored


def test_a_testing_mode_grant_and_another_zone_are_warned_about_on_the_page(
    chromium: Browser, backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic,
    capsys: pytest.CaptureFixture[str], cli_env: Any,
) -> None:  # fmt: skip
    google.add_account(ACCOUNT, time_zone="Europe/Paris")
    with site(chromium, backend, google, mirror_enabled=False) as web:
        cli_env(backend, google, web)
        web.page.goto(issue(capsys, "connect-link", clinic.id))
        google.consent(ACCOUNT, testing_mode=True)
        web.page.get_by_role("button", name="Continue to Google").click()
        web.page.get_by_role("button", name="Allow").click()
        web.page.wait_for_url(re.compile(r".*/connect/callback"))
        warnings = web.page.locator(".warnings li").all_inner_texts()
        assert web.page.locator("#zone").inner_text() == "Europe/Paris"
    assert len(warnings) == 2
    assert "'Testing'" in warnings[0] and "Publish" in warnings[0]
    assert "Europe/Paris" in warnings[1] and "Europe/London" in warnings[1]
    assert connection(admin, clinic.id) is not None


@pytest.mark.parametrize(
    "refusal",
    ["forged", "expired", "revoked", "denied", "state mismatch", "unreadable calendar", "google unreachable"],
)
def test_each_refusal_gets_its_page_and_stores_nothing(
    refusal: str, chromium: Browser, backend: Backend, google: GoogleStandIn, admin: psycopg.Connection,
    clinic: Clinic, capsys: pytest.CaptureFixture[str], cli_env: Any,
) -> None:  # fmt: skip
    google.add_account(ACCOUNT)
    overrides: dict[str, Any] = {"mirror_enabled": False}
    if refusal == "google unreachable":
        overrides["google_token_uri"] = f"http://127.0.0.1:{free_port()}/token"  # nothing listens there
    if refusal == "unreadable calendar":
        admin.execute("update public.clinics set calendar_id = 'surgery@group.calendar.google.com'")
    expected: tuple[int, str, str]
    with site(chromium, backend, google, **overrides) as web:
        cli_env(backend, google, web)
        url = issue(capsys, "connect-link", clinic.id)
        page = web.page
        if refusal == "forged":
            url = f"{web.public_url}/connect/{secrets.token_urlsafe(32)}"
            expected = (404, "This link is not valid", "whole link")
        elif refusal == "expired":
            admin.execute("update public.clinic_links set created_at = now() - interval '4 days',"
                          " expires_at = now() - interval '1 day'")  # fmt: skip
            expected = (410, "This link has expired", "new one")
        elif refusal == "revoked":
            [link_id] = [row[0] for row in admin.execute("select id from public.clinic_links")]
            assert command("revoke-link", str(link_id)) == 0
            expected = (410, "This link was withdrawn", "new one")
        if refusal in ("forged", "expired", "revoked"):
            page.goto(url)
            answer = web.last_answer("/connect/")
        elif refusal == "state mismatch":
            page.goto(url)
            page.goto(f"{web.public_url}/connect/callback?state={secrets.token_urlsafe(32)}&code=4/0Aforged")
            answer = web.last_answer("/connect/callback")
            expected = (400, "This answer from Google does not match a connection in progress", "Nothing was stored")
        else:
            page.goto(url)
            if refusal == "denied":
                google.consent(ACCOUNT)
                page.get_by_role("button", name="Continue to Google").click()
                page.get_by_role("button", name="Cancel").click()
                expected = (403, "Google Calendar was not connected", "You chose not to allow access")
            else:
                google.consent(ACCOUNT)
                page.get_by_role("button", name="Continue to Google").click()
                page.get_by_role("button", name="Allow").click()
                expected = (
                    (422, "Google Calendar was not connected", "cannot use calendar 'surgery@group.calendar")
                    if refusal == "unreadable calendar"
                    else (502, "Google Calendar was not connected", "could not be reached")
                )
            page.wait_for_url(re.compile(r".*/connect/callback"))
            answer = web.last_answer("/connect/callback")
        status, title, says = expected
        assert (answer.status, page.locator("h1").inner_text()) == (status, title)
        assert says in page.inner_text("main")
        assert_secure_page(answer)
    assert scalar(admin, "select count(*) from public.calendar_connections") == 0
    if refusal in ("denied", "unreadable calendar", "google unreachable", "state mismatch"):
        assert link_states(admin) == ["open"]  # the manager can try again with the same link


def test_forms_need_their_token_and_guessing_links_is_slowed_down(
    chromium: Browser, backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic,
    capsys: pytest.CaptureFixture[str], cli_env: Any,
) -> None:  # fmt: skip
    with site(chromium, backend, google, mirror_enabled=False) as web:
        cli_env(backend, google, web)
        url = issue(capsys, "connect-link", clinic.id).replace(web.public_url, web.http_url)
        forged = httpx.post(url, data={"form_token": "0" * 64}, follow_redirects=False)
        missing = httpx.post(url, data={}, follow_redirects=False)
        assert (forged.status_code, missing.status_code) == (403, 403)
        assert "This form could not be accepted" in forged.text
        assert scalar(admin, "select count(*) from public.clinic_links where consent_started_at is not null") == 0
        statuses = [httpx.get(f"{web.http_url}/connect/{secrets.token_urlsafe(32)}").status_code for _ in range(12)]
        # Two forged forms and eight guessed links spend the ten refusals a client may make at once.
        assert statuses == [404] * 8 + [429] * 4
        assert httpx.get(url).status_code == 429  # the guesser is held back on every page, for a while


def test_the_status_page_shows_one_clinics_connection_and_bookings_and_reconnects(
    chromium: Browser, backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic,
    assistant: Assistant, gateway: psycopg.Connection, capsys: pytest.CaptureFixture[str], cli_env: Any,
) -> None:  # fmt: skip
    other_id = create_clinic(admin, name="Hillside Surgery", booking_horizon_days=400)
    admin.execute(
        "insert into public.appointments (clinic_id, reference, patient, service, starts_at, ends_at)"
        " values (%s, 'OTHER1', '{\"name\": \"Other Patient\"}', 'Check-up', now() + interval '2 days',"
        " now() + interval '2 days 30 minutes')",
        (other_id,),
    )
    google.add_account(ACCOUNT)
    with site(chromium, backend, google, mirror_enabled=False) as web:
        cli_env(backend, google, web)
        assistant.book(f"{upcoming(2)}T10:00", "Ada Lovelace")
        assistant.book(f"{upcoming(2)}T11:00", "Grace Hopper")
        wait_until(lambda: sync_states(admin).get("parked") == 3, what="every booking parked")
        admin.execute(
            "update public.appointments set sync_state = 'failed', next_attempt_at = null,"
            " last_sync_error = 'Google refused: the calendar is full' where patient->>'name' = 'Grace Hopper'"
        )
        page = web.page
        page.goto(issue(capsys, "status-link", clinic.id, "--expires", "30d"))
        assert_secure_page(web.last_answer("/clinic/"))
        text = page.inner_text("main")
        assert page.locator("h1").inner_text() == "Riverside Clinic: calendar status"
        assert "Not connected" in page.locator("#connection-state").inner_text()
        assert "Reconnect Google" in text
        assert "Ada Lovelace" in text and "waiting for Google" in text
        assert "Google refused: the calendar is full" in text
        assert "Other Patient" not in text and "Hillside" not in text and "OTHER1" not in text
        assert fits_a_phone(page)

        google.consent(ACCOUNT)
        page.get_by_role("button", name="Reconnect Google").click()
        assert page.locator("h1").inner_text() == "Connect Riverside Clinic's Google Calendar"
        page.get_by_role("button", name="Continue to Google").click()
        page.get_by_role("button", name="Allow").click()
        page.wait_for_url(re.compile(r".*/connect/callback"))
        assert page.locator("h1").inner_text() == "Google Calendar connected"
        assert connection(admin, other_id) is None
        stored = connection(admin, clinic.id)
        assert stored is not None and stored[1] == ACCOUNT
    assert scalar(admin, "select count(*) from public.clinic_links where purpose = 'connect'") == 1


def test_links_are_listed_and_verify_names_open_links_and_clinics_never_connected(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for name, value in settings_env(backend, google, public_url="https://sync.example.com").items():
        monkeypatch.setenv(name, value)
    url = issue(capsys, "connect-link", clinic.id, "--expires", "2h")
    assert re.fullmatch(r"https://sync\.example\.com/connect/[A-Za-z0-9_-]{43}", url)
    listed = issue(capsys, "links", clinic.id)
    [line] = listed.splitlines()
    link_id = line.split()[0]
    assert " connect " in line and " open " in line and url.rsplit("/", 1)[1] not in listed
    capsys.readouterr()
    assert command("verify", "--json") in (0, 1)
    report = capsys.readouterr().out
    assert "Riverside Clinic" in report and link_id in report
    assert command("revoke-link", link_id) == 0
    assert " revoked " in issue(capsys, "links", clinic.id)
    with pytest.raises(SystemExit) as usage:
        command("connect-link", "--clinic", str(clinic.id), "--expires", "soon")
    assert usage.value.code == 2
    assert scalar(admin, "select count(*) from public.clinic_links") == 1
