"""`clinic-sync connect-google`: a clinic's Google account grants the daemon its calendar.

The OAuth consent flow of google-auth-oauthlib, for an installed app: offline access with
`prompt=consent`, so Google issues a refresh token even to an account that consented before.
Two ways to finish it:
- local redirect (default): a one-request web server on localhost receives Google's redirect;
- copy-paste (a headless server): the operator opens the link on any machine, signs in, and
  pastes back the address the browser ends on (`http://localhost:1/?code=...`; nothing listens
  there, so the browser shows an error page, but its address bar holds the code).

Before anything is stored the new token must read the clinic's calendar; the refresh token is
stored Fernet-encrypted, and the operator is told which account and calendar were connected,
and warned when Google says the grant expires (an OAuth app still in "Testing": 7 days).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
import webbrowser
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import google.auth.jwt
import httplib2
import requests
from google_auth_oauthlib.flow import Flow, InstalledAppFlow
from googleapiclient.errors import HttpError
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from daemon.calendar import CalendarInfo, classify
from daemon.config import Settings
from daemon.crypto import TokenCipher
from daemon.domain.google_budget import BudgetExhausted
from daemon.store import Store
from daemon.tokens import CALENDAR_SCOPE
from daemon.wiring import google_calendar, open_store

# openid + email name the account in the id_token; calendar.events is all the daemon uses.
SCOPES = [CALENDAR_SCOPE, "openid", "https://www.googleapis.com/auth/userinfo.email"]
COPY_PASTE_REDIRECT = "http://localhost:1/"
CONSENT_TIMEOUT_SECONDS = 300


class ConnectError(Exception):
    """The clinic was not connected; the message says why and what to do. Nothing was stored."""


@dataclass(frozen=True)
class ConnectOptions:
    copy_paste: bool = False
    port: int = 0
    open_browser: bool = True
    timeout_seconds: int = CONSENT_TIMEOUT_SECONDS
    show: Callable[[str], None] = print
    ask: Callable[[str], str] = input


@dataclass(frozen=True)
class ConnectResult:
    clinic_name: str
    account: str
    calendar: CalendarInfo
    refresh_token_expires_at: dt.datetime | None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        zone = f" ({self.calendar.time_zone})" if self.calendar.time_zone else ""
        return (
            f"Connected {self.clinic_name} to Google account {self.account}, "
            f"calendar {self.calendar.summary!r} [{self.calendar.calendar_id}]{zone}."
        )


async def connect_google(settings: Settings, clinic_id: uuid.UUID, options: ConnectOptions) -> ConnectResult:
    cipher = TokenCipher(settings.token_encryption_key.get_secret_value())
    store = await open_store(settings)
    try:
        profile = await store.clinic_profile(clinic_id)
        flow = _flow(settings)
        token = await asyncio.to_thread(_consent, flow, options)
        grant = await check_grant(settings, store, cipher, clinic_id, profile.calendar_id, token)
        await store.save_connection(clinic_id, **grant.connection())
    finally:
        await store.close()
    return grant.result(profile.name, profile.time_zone)


@dataclass(frozen=True)
class CheckedGrant:
    """A token from Google's token endpoint that has read the clinic's calendar, its tokens encrypted: what both
    `connect-google` and the connect page store."""

    account: str
    calendar: CalendarInfo
    scopes: list[str]
    refresh_token_encrypted: str
    access_token_encrypted: str
    access_token_expires_at: dt.datetime | None
    refresh_token_expires_at: dt.datetime | None

    def connection(self) -> dict[str, Any]:
        """The arguments Store.save_connection / Store.complete_consent take after the clinic (or state)."""
        return {
            "google_account": self.account,
            "refresh_token_encrypted": self.refresh_token_encrypted,
            "scopes": self.scopes,
            "access_token_encrypted": self.access_token_encrypted,
            "access_token_expires_at": self.access_token_expires_at,
            "refresh_token_expires_at": self.refresh_token_expires_at,
        }

    def result(self, clinic_name: str, clinic_time_zone: str) -> ConnectResult:
        expires_at = self.refresh_token_expires_at
        return ConnectResult(
            clinic_name,
            self.account,
            self.calendar,
            expires_at,
            grant_warnings(clinic_time_zone, self.calendar, expires_at),
        )


async def check_grant(
    settings: Settings, store: Store, cipher: TokenCipher, clinic_id: uuid.UUID, calendar_id: str, token: dict[str, Any]
) -> CheckedGrant:
    """Refuse a grant without a refresh token or the calendar permission, then read the calendar with the new
    access token (ConnectError, nothing stored, when it cannot)."""
    _require_grant(token)
    account = _account(token)
    calendar = await _describe(settings, store, clinic_id, calendar_id, str(token["access_token"]), account)
    return CheckedGrant(
        account=account,
        calendar=calendar,
        scopes=_granted(token),
        refresh_token_encrypted=cipher.encrypt(str(token["refresh_token"])),
        access_token_encrypted=cipher.encrypt(str(token["access_token"])),
        access_token_expires_at=_access_token_expiry(token),
        refresh_token_expires_at=_refresh_token_expiry(token),
    )


def web_flow(
    settings: Settings, redirect_uri: str, *, state: str | None = None, code_verifier: str | None = None
) -> Flow:
    """The consent flow of a Web application OAuth client (the connect page): Google sends the browser back to
    `redirect_uri` (PUBLIC_URL/connect/callback, registered on the client). PKCE S256 with `code_verifier`."""
    config = {
        "web": {
            "client_id": settings.google_client_id,
            "client_secret": settings.google_client_secret.get_secret_value(),
            "auth_uri": settings.google_auth_uri,
            "token_uri": settings.google_token_uri,
            "redirect_uris": [redirect_uri],
        }
    }
    return Flow.from_client_config(
        config, scopes=SCOPES, redirect_uri=redirect_uri, state=state, code_verifier=code_verifier
    )


def consent_url(flow: Flow) -> str:
    """Where to send the browser: offline access with the consent screen, so Google issues a refresh token."""
    url, _ = flow.authorization_url(access_type="offline", prompt="consent")
    return str(url)


def exchange_code(flow: Flow, code: str) -> dict[str, Any]:
    """The token endpoint's answer for an authorization code (blocking). ConnectError when Google refuses or
    cannot be reached."""
    try:
        flow.fetch_token(code=code)
    except OAuth2Error as error:
        raise ConnectError(f"Google refused: {error.description or error.error}") from error
    except (OSError, requests.RequestException) as error:
        raise ConnectError("Google could not be reached; nothing was stored, try again in a few minutes") from error
    token: dict[str, Any] = dict(flow.oauth2session.token)
    return token


def _flow(settings: Settings) -> InstalledAppFlow:
    config = {
        "installed": {
            "client_id": settings.google_client_id,
            "client_secret": settings.google_client_secret.get_secret_value(),
            "auth_uri": settings.google_auth_uri,
            "token_uri": settings.google_token_uri,
            "redirect_uris": ["http://localhost"],
        }
    }
    return InstalledAppFlow.from_client_config(config, scopes=SCOPES)


def _consent(flow: InstalledAppFlow, options: ConnectOptions) -> dict[str, Any]:
    """Run the consent flow (blocking: it waits for the person); the token endpoint's answer."""
    try:
        if options.copy_paste:
            flow.redirect_uri = COPY_PASTE_REDIRECT
            url, _ = flow.authorization_url(access_type="offline", prompt="consent")
            options.show(
                "Open this link in a browser on any computer, sign in with the clinic's Google account and allow"
                f" access:\n\n    {url}\n\nThe browser then fails to load a localhost page; that is expected."
            )
            pasted = options.ask("Paste the full address from the browser's address bar: ").strip()
            if not pasted.startswith(("http://localhost", "https://localhost")):
                raise ConnectError(
                    "that is not the localhost address Google sent the browser to; run the command again"
                )
            # oauthlib insists on https; the loopback redirect is http by Google's design.
            flow.fetch_token(authorization_response=pasted.replace("http://", "https://", 1))
        else:
            flow.run_local_server(
                host="localhost",
                port=options.port,
                open_browser=options.open_browser and _has_browser(),
                authorization_prompt_message="Open this link to let the clinic's Google account grant access:\n\n"
                "    {url}\n",
                success_message="The clinic's calendar is connected. You can close this window.",
                timeout_seconds=options.timeout_seconds,
                access_type="offline",
                prompt="consent",
            )
    except OAuth2Error as error:
        raise ConnectError(f"Google refused: {error.description or error.error}") from error
    except Exception as error:
        if type(error).__name__ == "WSGITimeoutError":
            raise ConnectError(f"no answer from the browser within {options.timeout_seconds}s") from error
        raise
    token: dict[str, Any] = dict(flow.oauth2session.token)
    return token


def _has_browser() -> bool:
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def _granted(token: dict[str, Any]) -> list[str]:
    scope = token.get("scope", [])
    return sorted(scope.split() if isinstance(scope, str) else scope)


def _require_grant(token: dict[str, Any]) -> None:
    if not token.get("refresh_token"):
        raise ConnectError("Google issued no refresh token, so the daemon could not act for the clinic; run again")
    if CALENDAR_SCOPE not in _granted(token):
        # Google's granular consent lets the account holder untick a permission.
        raise ConnectError("the calendar permission was not granted; run again and tick 'View and edit events'")


def _account(token: dict[str, Any]) -> str:
    """The account's email, from the id_token (straight from the token endpoint over TLS, so not re-verified)."""
    id_token = token.get("id_token")
    if not id_token:
        return "(unnamed account)"
    claims = google.auth.jwt.decode(id_token, verify=False)  # type: ignore[no-untyped-call]
    return str(claims.get("email") or claims.get("sub") or "(unnamed account)")


async def _describe(
    settings: Settings, store: Store, clinic_id: uuid.UUID, calendar_id: str, access_token: str, account: str
) -> CalendarInfo:
    calendar, _ = google_calendar(settings, store)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="connect")
    try:
        return await asyncio.get_running_loop().run_in_executor(
            executor, calendar.describe, clinic_id, calendar_id, access_token
        )
    except BudgetExhausted as error:
        raise ConnectError(f"{error}: try again then; nothing was stored") from error
    except HttpError as error:
        raise ConnectError(
            f"{account} cannot use calendar {calendar_id!r}: {classify(error, what='calendar').error}."
            " Share that calendar with the account, or set the clinic's calendar id; nothing was stored"
        ) from error
    except (OSError, httplib2.HttpLib2Error) as error:
        raise ConnectError(
            "Google Calendar could not be reached; nothing was stored, try again in a few minutes"
        ) from error
    finally:
        executor.shutdown(wait=True)
        calendar.close()


def _access_token_expiry(token: dict[str, Any]) -> dt.datetime | None:
    expires_at = token.get("expires_at")
    return dt.datetime.fromtimestamp(float(expires_at), dt.UTC) if expires_at else None


def _refresh_token_expiry(token: dict[str, Any]) -> dt.datetime | None:
    seconds = token.get("refresh_token_expires_in")
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=float(seconds)) if seconds else None


def grant_warnings(
    clinic_time_zone: str, calendar: CalendarInfo, refresh_token_expires_at: dt.datetime | None
) -> list[str]:
    warnings = []
    if refresh_token_expires_at is not None:
        days = (refresh_token_expires_at - dt.datetime.now(dt.UTC)).total_seconds() / 86400
        warnings.append(
            f"Google will end this grant in {days:.0f} day(s) ({refresh_token_expires_at:%Y-%m-%d %H:%M} UTC). "
            "That is what a Google Cloud OAuth app in 'Testing' gets: publish the app (OAuth consent screen ->"
            " Publish) and connect again, or the clinic's bookings will stop reaching the calendar."
        )
    if calendar.time_zone and calendar.time_zone != clinic_time_zone:
        warnings.append(
            f"the calendar's time zone is {calendar.time_zone} but the clinic's is {clinic_time_zone}: events"
            " keep the right instant but may display oddly"
        )
    return warnings
