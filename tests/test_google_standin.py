"""The Google stand-in behaves like Google, as seen through the real google-api-python-client, google-auth and
google-auth-oauthlib."""

from __future__ import annotations

import contextlib
import email.utils
import logging
import queue
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import google_auth_httplib2
import httplib2
import httpx
import pytest
from google.auth import jwt
from google.auth.exceptions import RefreshError
from google.oauth2.credentials import Credentials
from google_auth_oauthlib.flow import Flow, InstalledAppFlow
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from oauthlib.oauth2 import AccessDeniedError, InvalidGrantError, OAuth2Error

from tests.standins.google import (
    CALENDAR_EVENTS_SCOPE,
    OPENID_SCOPE,
    USERINFO_EMAIL_SCOPE,
    Fault,
    GoogleStandIn,
    RecordedRequest,
)

CLINIC = "clinic@example.com"
OTHER_CLINIC = "other@example.com"
TEAM_CALENDAR = "team@group.calendar.google.com"
EVENTS_PATH = "/calendar/v3/calendars/primary/events"
AUTH_PATH = "/o/oauth2/auth"
# Where the copy-paste flow says the browser goes afterwards; nothing needs to listen there.
LOOPBACK = "http://127.0.0.1:8765/"
# What connect-google asks for: the calendar, and who the account is.
SCOPES = [CALENDAR_EVENTS_SCOPE, OPENID_SCOPE, USERINFO_EMAIL_SCOPE]

Connect = Callable[..., Any]
MakeFlow = Callable[..., Any]


@pytest.fixture
def google() -> Iterator[GoogleStandIn]:
    with GoogleStandIn() as standin:
        yield standin


@pytest.fixture
def refresh_token(google: GoogleStandIn) -> str:
    google.add_account(OTHER_CLINIC)
    return google.add_account(CLINIC, calendars=[TEAM_CALENDAR])


def credentials(google: GoogleStandIn, refresh_token: str | None = None, token: str | None = None) -> Credentials:
    return Credentials(  # type: ignore[no-untyped-call]
        token,
        refresh_token=refresh_token,
        token_uri=google.token_uri,
        client_id=google.client_id,
        client_secret=google.client_secret,
        scopes=[CALENDAR_EVENTS_SCOPE],
    )


def refresh(creds: Credentials) -> None:
    http = httplib2.Http(timeout=5)
    try:
        creds.refresh(google_auth_httplib2.Request(http))  # type: ignore[no-untyped-call]
    finally:
        http.close()


@pytest.fixture
def connect(google: GoogleStandIn) -> Iterator[Connect]:
    """Builds the real Calendar client against the stand-in; closes every client afterwards."""
    services: list[Any] = []

    def connect(creds: Credentials, *, timeout: float = 5.0, refresh_on_401: bool = True) -> Any:
        kwargs: dict[str, Any] = {} if refresh_on_401 else {"refresh_status_codes": ()}
        http = google_auth_httplib2.AuthorizedHttp(creds, http=httplib2.Http(timeout=timeout), **kwargs)
        service = build(
            "calendar",
            "v3",
            http=http,
            cache_discovery=False,
            static_discovery=True,
            client_options={"api_endpoint": google.api_endpoint},
        )
        services.append(service)
        return service

    yield connect
    for service in services:
        service.close()


@pytest.fixture
def calendar(google: GoogleStandIn, refresh_token: str, connect: Connect) -> Any:
    """The Calendar client of CLINIC, refreshing its access token through the stand-in's token endpoint."""
    return connect(credentials(google, refresh_token))


def new_id() -> str:
    return uuid.uuid4().hex  # 0-9a-f: inside Google's a-v0-9 alphabet


def event_body(event_id: str | None = None, *, day: int = 2, summary: str = "Check-up") -> dict[str, Any]:
    body: dict[str, Any] = {
        "summary": summary,
        "start": {"dateTime": f"2026-03-{day:02d}T10:00:00+00:00", "timeZone": "Europe/London"},
        "end": {"dateTime": f"2026-03-{day:02d}T10:30:00Z", "timeZone": "Europe/London"},
        "extendedProperties": {"private": {"appointment": f"appt-{day}"}},
    }
    if event_id is not None:
        body["id"] = event_id
    return body


def http_error(call: Callable[[], Any]) -> HttpError:
    with pytest.raises(HttpError) as caught:
        call()
    return caught.value


def reason_of(error: HttpError) -> str:
    """Google's machine-readable reason: HttpError.reason is the human message, the reason is in error_details."""
    details = error.error_details
    assert isinstance(details, list), details
    return str(details[0]["reason"])


# -- OAuth ------------------------------------------------------------------------------------------


def test_refresh_gives_a_working_access_token(google: GoogleStandIn, refresh_token: str, connect: Connect) -> None:
    creds = credentials(google, refresh_token)
    refresh(creds)
    assert creds.token and creds.token.startswith("ya29.")
    assert creds.valid and creds.expiry is not None
    assert creds.granted_scopes == [CALENDAR_EVENTS_SCOPE]

    # The bare access token, with nothing to refresh it, is accepted by the Calendar API.
    service = connect(Credentials(creds.token), refresh_on_401=False)  # type: ignore[no-untyped-call]
    assert service.events().list(calendarId="primary").execute()["items"] == []


def test_revoked_refresh_token_is_invalid_grant_and_not_retryable(
    google: GoogleStandIn, refresh_token: str, connect: Connect
) -> None:
    service = connect(credentials(google, refresh_token))
    service.events().list(calendarId="primary").execute()
    google.revoke(refresh_token)

    creds = credentials(google, refresh_token)
    with pytest.raises(RefreshError) as caught:
        refresh(creds)
    assert caught.value.retryable is False
    assert "invalid_grant" in str(caught.value)

    # Access tokens minted from it stop working too; AuthorizedHttp's refresh then fails the same way.
    with pytest.raises(RefreshError) as caught:
        service.events().list(calendarId="primary").execute()
    assert caught.value.retryable is False
    assert [(r.method, r.path, r.account, r.status) for r in google.requests()[-3:]] == [
        ("POST", "/token", CLINIC, 400),
        ("GET", EVENTS_PATH, CLINIC, 401),
        ("POST", "/token", CLINIC, 400),
    ]


def test_wrong_client_secret_is_invalid_client(google: GoogleStandIn, refresh_token: str) -> None:
    creds = Credentials(  # type: ignore[no-untyped-call]
        None, refresh_token=refresh_token, token_uri=google.token_uri, client_id=google.client_id, client_secret="x"
    )
    with pytest.raises(RefreshError, match="invalid_client"):
        refresh(creds)
    assert google.requests()[-1] == RecordedRequest("POST", "/token", CLINIC, 401)


def test_expired_access_token_is_401_auth_error(google: GoogleStandIn, refresh_token: str, connect: Connect) -> None:
    creds = credentials(google, refresh_token)
    refresh(creds)
    bare = connect(Credentials(creds.token), refresh_on_401=False)  # type: ignore[no-untyped-call]
    refreshing = connect(creds)
    bare.events().list(calendarId="primary").execute()

    google.expire_access_tokens(CLINIC)
    error = http_error(lambda: bare.events().list(calendarId="primary").execute())
    assert error.status_code == 401
    assert reason_of(error) == "authError"
    assert error.resp["www-authenticate"].startswith("Bearer")

    # With a refresh token, google-auth refreshes on the 401 and re-sends, invisibly to the caller.
    assert refreshing.events().list(calendarId="primary").execute()["items"] == []
    assert [(r.method, r.path, r.status) for r in google.requests()[-3:]] == [
        ("GET", EVENTS_PATH, 401),
        ("POST", "/token", 200),
        ("GET", EVENTS_PATH, 200),
    ]


def test_unknown_access_token_is_401(google: GoogleStandIn, refresh_token: str, connect: Connect) -> None:
    service = connect(Credentials("ya29.made-up"), refresh_on_401=False)  # type: ignore[no-untyped-call]
    error = http_error(lambda: service.events().list(calendarId="primary").execute())
    assert error.status_code == 401
    assert google.requests()[-1] == RecordedRequest("GET", EVENTS_PATH, None, 401, "alt=json")


# -- the authorization-code flow (google-auth-oauthlib) ---------------------------------------------


@pytest.fixture
def make_flow(google: GoogleStandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeFlow]:
    """Builds real google-auth-oauthlib flows for the stand-in's client; closes their HTTP sessions afterwards.

    oauthlib refuses a plain-http token endpoint unless OAUTHLIB_INSECURE_TRANSPORT is set.
    """
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    flows: list[Any] = []

    def make(scopes: list[str] = SCOPES, *, client_id: str | None = None, flow_class: Any = Flow, **kwargs: Any) -> Any:
        config = {
            "installed": {
                "client_id": client_id or google.client_id,
                "client_secret": google.client_secret,
                "auth_uri": google.auth_uri,
                "token_uri": google.token_uri,
                "redirect_uris": ["http://localhost"],
            }
        }
        flow = flow_class.from_client_config(config, scopes=scopes, **kwargs)
        flows.append(flow)
        return flow

    yield make
    for flow in flows:
        flow.oauth2session.close()


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    """The user's browser; it follows no redirect unless asked to."""
    with httpx.Client(timeout=5.0) as client:
        yield client


def authorize(browser: httpx.Client, flow: Any, **kwargs: Any) -> str:
    """Visit the flow's authorization URL and return where Google sent the browser back to (copy-paste mode)."""
    url, _ = flow.authorization_url(**kwargs)
    response = browser.get(url)
    assert response.status_code == 302, response.text
    return str(response.headers["location"])


class _Prompts(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: queue.Queue[str] = queue.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.put(record.getMessage())


@contextlib.contextmanager
def authorization_prompts() -> Iterator[queue.Queue[str]]:
    """What InstalledAppFlow.run_local_server tells the user to visit: it logs its prompt at INFO as it prints it."""
    logger = logging.getLogger("google_auth_oauthlib.flow")
    handler, level = _Prompts(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def run_local_server(flow: Any, browser: httpx.Client, **kwargs: Any) -> Any:
    """Run InstalledAppFlow.run_local_server as connect-google does, playing the browser: open the URL it prompts
    with and follow the stand-in's redirect to its local server. Returns its credentials or raises its error."""
    with authorization_prompts() as prompts, ThreadPoolExecutor(1) as pool:
        outcome = pool.submit(
            flow.run_local_server,
            port=0,
            open_browser=False,
            authorization_prompt_message="{url}",
            timeout_seconds=10,
            access_type="offline",
            **kwargs,
        )
        url = prompts.get(timeout=10)
        landing = browser.get(url, follow_redirects=True)
        assert landing.status_code == 200, landing.text
        return outcome.result(timeout=10)


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def test_installed_app_flow_with_local_server(
    google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client, connect: Connect
) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    flow = make_flow(flow_class=InstalledAppFlow)
    creds = run_local_server(flow, browser, prompt="consent")

    assert creds.token.startswith("ya29.") and creds.refresh_token.startswith("1//")
    assert set(creds.granted_scopes) == set(SCOPES)
    assert jwt.decode(creds.id_token, verify=False)["email"] == CLINIC  # type: ignore[no-untyped-call]
    # The access token works for the calendar of the account that consented.
    listing = connect(creds).events().list(calendarId="primary", maxResults=1).execute()
    assert (listing["kind"], listing["summary"], listing["timeZone"]) == ("calendar#events", CLINIC, "Europe/London")

    authorization, exchange = google.requests()[:2]
    assert (authorization.method, authorization.path, authorization.account, authorization.status) == (
        "GET",
        AUTH_PATH,
        CLINIC,
        302,
    )
    sent = query_of("?" + authorization.query)
    assert sent["redirect_uri"].startswith("http://localhost:") and sent["code_challenge_method"] == "S256"
    assert (sent["access_type"], sent["prompt"], sent["response_type"]) == ("offline", "consent", "code")
    assert exchange == RecordedRequest("POST", "/token", CLINIC, 200)


def test_copy_paste_flow_and_its_refresh_token(
    google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client, connect: Connect
) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    flow = make_flow(redirect_uri=LOOPBACK)
    redirected = authorize(browser, flow, prompt="consent")
    assert redirected.startswith(LOOPBACK + "?")
    back = query_of(redirected)
    assert back["code"].startswith("4/") and back["prompt"] == "consent"
    assert set(back["scope"].split()) == set(SCOPES)

    token = flow.fetch_token(authorization_response=redirected)
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3599
    assert "refresh_token_expires_in" not in token
    creds = flow.credentials

    # The refresh token works with the refresh grant, as the daemon uses it, and for the calendar.
    stored = credentials(google, creds.refresh_token)
    refresh(stored)
    assert stored.granted_scopes == [CALENDAR_EVENTS_SCOPE]
    assert connect(stored).events().list(calendarId="primary").execute()["items"] == []
    # Refreshing with every scope of the consent brings a new ID token too.
    refresh(creds)
    assert jwt.decode(creds.id_token, verify=False)["email"] == CLINIC  # type: ignore[no-untyped-call]


def test_id_token_claims(google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    flow = make_flow(redirect_uri=LOOPBACK)
    token = flow.fetch_token(authorization_response=authorize(browser, flow))
    claims = jwt.decode(token["id_token"], verify=False)  # type: ignore[no-untyped-call]
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["aud"] == claims["azp"] == google.client_id
    assert (claims["email"], claims["email_verified"]) == (CLINIC, True)
    assert claims["sub"].isdigit() and len(claims["sub"]) == 21
    assert claims["iat"] < claims["exp"]


def test_without_openid_there_is_no_id_token(google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    flow = make_flow([CALENDAR_EVENTS_SCOPE], redirect_uri=LOOPBACK)
    token = flow.fetch_token(authorization_response=authorize(browser, flow))
    assert "id_token" not in token and token["scope"] == [CALENDAR_EVENTS_SCOPE]


def test_short_email_scope_comes_back_as_userinfo_email_plus_openid(
    google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    flow = make_flow([CALENDAR_EVENTS_SCOPE, "email"], redirect_uri=LOOPBACK)
    # As with Google, oauthlib then refuses the answer: the granted scopes differ from the requested ones.
    with pytest.raises(Warning, match="Scope has changed"):
        flow.fetch_token(authorization_response=authorize(browser, flow))

    monkeypatch.setenv("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
    google.consent(CLINIC)
    token = flow.fetch_token(authorization_response=authorize(browser, flow))
    assert token["scope"] == [CALENDAR_EVENTS_SCOPE, USERINFO_EMAIL_SCOPE, OPENID_SCOPE]
    assert jwt.decode(token["id_token"], verify=False)["email"] == CLINIC  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("access_type", "prompt", "with_refresh_token"),
    [("offline", "consent", True), ("offline", None, False), ("online", "consent", False), ("online", None, False)],
)
def test_refresh_token_only_for_offline_access_with_the_consent_screen(
    google: GoogleStandIn,
    make_flow: MakeFlow,
    browser: httpx.Client,
    access_type: str,
    prompt: str | None,
    with_refresh_token: bool,
) -> None:
    google.add_account(CLINIC)  # the account granted calendar.events before: no consent screen unless asked for
    google.consent(CLINIC)
    flow = make_flow([CALENDAR_EVENTS_SCOPE], redirect_uri=LOOPBACK)
    kwargs = {"access_type": access_type} | ({"prompt": prompt} if prompt else {})
    redirected = authorize(browser, flow, **kwargs)
    assert query_of(redirected)["prompt"] == ("consent" if prompt else "none")
    token = flow.fetch_token(authorization_response=redirected)
    assert ("refresh_token" in token) is with_refresh_token
    assert token["access_token"].startswith("ya29.")


def test_first_consent_gives_a_refresh_token_without_prompt(
    google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client
) -> None:
    old = google.add_account(CLINIC)
    google.remove_access(CLINIC)  # the user removed the app in their Google account settings
    with pytest.raises(RefreshError, match="invalid_grant"):
        refresh(credentials(google, old))

    google.consent(CLINIC)
    flow = make_flow([CALENDAR_EVENTS_SCOPE], redirect_uri=LOOPBACK)
    assert "refresh_token" in flow.fetch_token(authorization_response=authorize(browser, flow))
    # Granted now: the next offline authorization skips the consent screen and brings no refresh token ...
    google.consent(CLINIC)
    assert "refresh_token" not in flow.fetch_token(authorization_response=authorize(browser, flow))
    # ... unless it asks for a scope not granted yet.
    google.consent(CLINIC)
    flow = make_flow(SCOPES, redirect_uri=LOOPBACK)
    assert "refresh_token" in flow.fetch_token(authorization_response=authorize(browser, flow))


def test_testing_mode_refresh_token_lives_seven_days(
    google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client
) -> None:
    unlimited = google.add_account(CLINIC)
    google.consent(CLINIC, testing_mode=True)
    flow = make_flow(redirect_uri=LOOPBACK)
    token = flow.fetch_token(authorization_response=authorize(browser, flow, prompt="consent"))
    assert token["refresh_token_expires_in"] == 604799
    limited = credentials(google, token["refresh_token"])
    refresh(limited)

    google.expire_refresh_tokens(CLINIC)  # the 7 days pass
    with pytest.raises(RefreshError) as caught:
        refresh(credentials(google, token["refresh_token"]))
    assert caught.value.retryable is False and "invalid_grant" in str(caught.value)
    refresh(credentials(google, unlimited))  # tokens without a time limit live on


def test_consent_needs_a_known_account(google: GoogleStandIn) -> None:
    with pytest.raises(KeyError):
        google.consent(CLINIC)


def test_without_a_decision_the_browser_shows_sign_in(
    google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client
) -> None:
    google.add_account(CLINIC)
    url, _ = make_flow(redirect_uri=LOOPBACK).authorization_url(login_hint=CLINIC)
    page = browser.get(url)
    assert page.status_code == 200 and "location" not in page.headers
    assert page.headers["content-type"].startswith("text/html") and "Sign in" in page.text and CLINIC in page.text
    assert google.requests()[-1] == RecordedRequest("GET", AUTH_PATH, None, 200, urllib.parse.urlsplit(url).query)


def test_prompt_none_cannot_approve_silently(google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    flow = make_flow(redirect_uri=LOOPBACK)
    url, state = flow.authorization_url(prompt="none")
    assert query_of(browser.get(url).headers["location"]) == {"error": "interaction_required", "state": state}
    # The user's decision is still there for an interactive request.
    assert "code" in query_of(authorize(browser, flow))


def test_denied_consent_reaches_run_local_server_as_access_denied(
    google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client
) -> None:
    google.add_account(CLINIC)
    google.deny_consent()
    with pytest.raises(AccessDeniedError):
        run_local_server(make_flow(flow_class=InstalledAppFlow), browser)
    denied = google.requests()[-1]
    assert (denied.path, denied.account, denied.status) == (AUTH_PATH, None, 302)
    assert [r.path for r in google.requests()] == [AUTH_PATH]  # no code, so no token request


def test_denial_redirect_carries_state(google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client) -> None:
    google.add_account(CLINIC)
    google.deny_consent()
    flow = make_flow(redirect_uri=LOOPBACK)
    url, state = flow.authorization_url()
    redirected = browser.get(url).headers["location"]
    assert query_of(redirected) == {"error": "access_denied", "state": state}
    with pytest.raises(AccessDeniedError):
        flow.fetch_token(authorization_response=redirected)


def test_code_is_single_use(google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    flow = make_flow(redirect_uri=LOOPBACK)
    redirected = authorize(browser, flow)
    flow.fetch_token(authorization_response=redirected)
    with pytest.raises(InvalidGrantError) as caught:
        flow.fetch_token(authorization_response=redirected)
    assert caught.value.description == "Bad Request"
    assert google.requests()[-1] == RecordedRequest("POST", "/token", None, 400)


def test_expired_code_is_invalid_grant(google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    flow = make_flow(redirect_uri=LOOPBACK)
    redirected = authorize(browser, flow)
    google.expire_authorization_codes()
    with pytest.raises(InvalidGrantError):
        flow.fetch_token(authorization_response=redirected)


def test_pkce_verifier_must_match(google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    flow = make_flow(redirect_uri=LOOPBACK)
    redirected = authorize(browser, flow)
    right, flow.code_verifier = flow.code_verifier, "x" * 64
    with pytest.raises(InvalidGrantError) as caught:
        flow.fetch_token(authorization_response=redirected)
    assert caught.value.description == "Invalid code verifier."
    # The failed attempt spent the code: the right verifier comes too late.
    flow.code_verifier = right
    with pytest.raises(InvalidGrantError):
        flow.fetch_token(authorization_response=redirected)


def test_pkce_verifier_missing(google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    flow = make_flow(redirect_uri=LOOPBACK)
    redirected = authorize(browser, flow)
    flow.code_verifier = None
    with pytest.raises(InvalidGrantError) as caught:
        flow.fetch_token(authorization_response=redirected)
    assert caught.value.description == "Missing code verifier."


def test_flow_without_pkce(google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    flow = make_flow(redirect_uri=LOOPBACK, autogenerate_code_verifier=False)
    url, _ = flow.authorization_url(prompt="consent")
    assert "code_challenge" not in query_of(url)
    redirected = browser.get(url).headers["location"]
    assert "refresh_token" in flow.fetch_token(authorization_response=redirected)

    # A verifier for a code that was asked for without a challenge is refused too.
    google.consent(CLINIC)
    redirected = authorize(browser, flow)
    flow.code_verifier = "x" * 64
    with pytest.raises(InvalidGrantError, match="not needed"):
        flow.fetch_token(authorization_response=redirected)


def test_token_request_must_repeat_the_redirect_uri(
    google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client
) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    flow = make_flow(redirect_uri=LOOPBACK)
    redirected = authorize(browser, flow)
    flow.redirect_uri = "http://127.0.0.1:8766/"
    with pytest.raises(OAuth2Error) as caught:
        flow.fetch_token(authorization_response=redirected)
    assert caught.value.error == "redirect_uri_mismatch"


def test_unknown_client_at_the_token_endpoint(google: GoogleStandIn, refresh_token: str) -> None:
    creds = Credentials(  # type: ignore[no-untyped-call]
        None, refresh_token=refresh_token, token_uri=google.token_uri, client_id="nobody", client_secret="x"
    )
    with pytest.raises(RefreshError, match="The OAuth client was not found"):
        refresh(creds)


@pytest.mark.parametrize(
    "redirect_uri", ["http://localhost:1234/", "http://127.0.0.1:9/callback", "http://[::1]:65000/", "http://localhost"]
)
def test_any_loopback_redirect_is_allowed(
    google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client, redirect_uri: str
) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    assert authorize(browser, make_flow(redirect_uri=redirect_uri)).startswith(redirect_uri)


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"redirect_uri": "https://clinic.example/oauth"}, 400, "redirect_uri_mismatch"),
        ({"redirect_uri": "http://192.168.1.2:8080/"}, 400, "redirect_uri_mismatch"),
        ({"redirect_uri": "urn:ietf:wg:oauth:2.0:oob"}, 400, "invalid_request"),
        ({"redirect_uri": None}, 400, "invalid_request"),
        ({"client_id": "nobody.apps.googleusercontent.com"}, 401, "invalid_client"),
        ({"client_id": None}, 400, "invalid_request"),
        ({"response_type": None}, 400, "invalid_request"),
        ({"response_type": "token"}, 400, "unsupported_response_type"),
        ({"scope": None}, 400, "invalid_request"),
        ({"scope": "https://www.googleapis.com/auth/drive.nothing"}, 400, "invalid_scope"),
        ({"access_type": "sometimes"}, 400, "invalid_request"),
        ({"code_challenge_method": "S512"}, 400, "invalid_request"),
    ],
)
def test_invalid_authorization_requests_get_an_error_page(
    google: GoogleStandIn, browser: httpx.Client, change: dict[str, str | None], status: int, error: str
) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    valid: dict[str, str | None] = {
        "client_id": google.client_id,
        "redirect_uri": LOOPBACK,
        "response_type": "code",
        "scope": CALENDAR_EVENTS_SCOPE,
        "state": "xyz",
        "access_type": "offline",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    page = browser.get(google.auth_uri, params={k: v for k, v in (valid | change).items() if v is not None})
    assert page.status_code == status and "location" not in page.headers
    assert page.headers["content-type"].startswith("text/html")
    assert f"Error {status}: {error}" in page.text
    assert google.requests()[-1].status == status

    # An invalid request does not use up the user's decision.
    redirected = browser.get(google.auth_uri, params={k: v for k, v in valid.items() if v is not None})
    assert redirected.status_code == 302 and "code" in query_of(redirected.headers["location"])


def test_redirect_uri_mismatch_through_the_library(
    google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client
) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    url, _ = make_flow(redirect_uri="https://clinic.example/oauth").authorization_url()
    page = browser.get(url)
    assert page.status_code == 400 and "Error 400: redirect_uri_mismatch" in page.text


def test_calendar_needs_a_calendar_scope(
    google: GoogleStandIn, make_flow: MakeFlow, browser: httpx.Client, connect: Connect
) -> None:
    google.add_account(CLINIC)
    google.consent(CLINIC)
    flow = make_flow([OPENID_SCOPE, USERINFO_EMAIL_SCOPE], redirect_uri=LOOPBACK)
    flow.fetch_token(authorization_response=authorize(browser, flow))
    service = connect(flow.credentials, refresh_on_401=False)
    error = http_error(lambda: service.events().list(calendarId="primary").execute())
    assert (error.status_code, reason_of(error)) == (403, "insufficientPermissions")


# -- events -----------------------------------------------------------------------------------------


def test_insert_with_our_own_id_then_get(google: GoogleStandIn, calendar: Any) -> None:
    event_id = new_id()
    created = calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    assert created["id"] == event_id
    assert created["status"] == "confirmed"
    assert created["sequence"] == 0
    assert created["htmlLink"] == f"{google.base_url}/calendar/event?eid={event_id}"
    assert created["extendedProperties"] == {"private": {"appointment": "appt-2"}}
    assert created["created"].endswith("Z") and created["etag"]

    fetched = calendar.events().get(calendarId="primary", eventId=event_id).execute()
    assert fetched == created
    assert google.events(CLINIC) == [created]


def test_insert_without_id_gets_a_generated_one(google: GoogleStandIn, calendar: Any) -> None:
    created = calendar.events().insert(calendarId="primary", body=event_body()).execute()
    assert len(created["id"]) >= 5 and set(created["id"]) <= set("abcdefghijklmnopqrstuv0123456789")


def test_repeated_insert_is_409_duplicate(google: GoogleStandIn, calendar: Any) -> None:
    event_id = new_id()
    calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    error = http_error(lambda: calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute())
    assert error.status_code == 409
    assert reason_of(error) == "duplicate"
    assert error.reason == "The requested identifier already exists."
    assert len(google.events(CLINIC)) == 1


@pytest.mark.parametrize("bad_id", ["abc", "UPPER12345", "wxyz12345", "with-dash-1", "a" * 1025])
def test_invalid_id_is_400(google: GoogleStandIn, calendar: Any, bad_id: str) -> None:
    error = http_error(lambda: calendar.events().insert(calendarId="primary", body=event_body(bad_id)).execute())
    assert error.status_code == 400
    assert reason_of(error) == "invalid"
    assert error.reason == "Invalid resource id value."
    assert google.events(CLINIC) == []


def test_end_before_start_is_time_range_empty(calendar: Any) -> None:
    body = event_body(new_id())
    body["end"] = {"dateTime": "2026-03-02T09:00:00+00:00"}
    error = http_error(lambda: calendar.events().insert(calendarId="primary", body=body).execute())
    assert (error.status_code, reason_of(error)) == (400, "timeRangeEmpty")


def test_delete_cancels_then_410_and_unknown_is_404(google: GoogleStandIn, calendar: Any) -> None:
    event_id = new_id()
    calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    assert calendar.events().delete(calendarId="primary", eventId=event_id).execute() == ""
    assert calendar.events().get(calendarId="primary", eventId=event_id).execute()["status"] == "cancelled"

    again = http_error(lambda: calendar.events().delete(calendarId="primary", eventId=event_id).execute())
    assert (again.status_code, reason_of(again), again.reason) == (410, "deleted", "Resource has been deleted")

    unknown = http_error(lambda: calendar.events().delete(calendarId="primary", eventId=new_id()).execute())
    assert (unknown.status_code, reason_of(unknown)) == (404, "notFound")
    missing = http_error(lambda: calendar.events().get(calendarId="primary", eventId=new_id()).execute())
    assert missing.status_code == 404

    # A cancelled event still owns its id.
    dup = http_error(lambda: calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute())
    assert (dup.status_code, reason_of(dup)) == (409, "duplicate")
    assert [e["status"] for e in google.events(CLINIC)] == ["cancelled"]


def test_update_restores_a_cancelled_event(google: GoogleStandIn, calendar: Any) -> None:
    event_id = new_id()
    created = calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    calendar.events().delete(calendarId="primary", eventId=event_id).execute()

    body = {**event_body(event_id, day=3, summary="Moved"), "status": "confirmed"}
    updated = calendar.events().update(calendarId="primary", eventId=event_id, body=body).execute()
    assert updated["status"] == "confirmed"
    assert updated["sequence"] == created["sequence"] + 1
    assert updated["summary"] == "Moved" and updated["start"]["dateTime"] == "2026-03-03T10:00:00+00:00"
    assert (updated["id"], updated["created"], updated["htmlLink"]) == (
        created["id"],
        created["created"],
        created["htmlLink"],
    )
    assert updated["etag"] != created["etag"]
    assert calendar.events().get(calendarId="primary", eventId=event_id).execute() == updated

    unknown = http_error(lambda: calendar.events().update(calendarId="primary", eventId=new_id(), body=body).execute())
    assert unknown.status_code == 404


def test_patch_merges(calendar: Any) -> None:
    event_id = new_id()
    calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    patched = calendar.events().patch(calendarId="primary", eventId=event_id, body={"summary": "Renamed"}).execute()
    assert patched["summary"] == "Renamed"
    assert patched["extendedProperties"] == {"private": {"appointment": "appt-2"}}
    assert patched["sequence"] == 1


def test_calendars_other_than_primary(google: GoogleStandIn, calendar: Any) -> None:
    # The client percent-encodes the id ("@" -> "%40"); the stand-in decodes it.
    calendar.events().insert(calendarId=TEAM_CALENDAR, body=event_body(new_id())).execute()
    assert len(google.events(CLINIC, TEAM_CALENDAR)) == 1
    assert google.events(CLINIC) == []
    assert google.requests()[-1].path == "/calendar/v3/calendars/team%40group.calendar.google.com/events"

    for calendar_id in ("nobody@group.calendar.google.com", OTHER_CLINIC):
        with pytest.raises(HttpError) as caught:
            calendar.events().list(calendarId=calendar_id).execute()
        error = caught.value
        assert (error.status_code, reason_of(error)) == (404, "notFound")


def test_concurrent_inserts_of_one_id_create_one_event(google: GoogleStandIn, refresh_token: str) -> None:
    event_id = new_id()
    outcomes: list[int] = []
    lock = threading.Lock()

    def insert() -> None:
        # httplib2 is not thread-safe: one client per thread.
        service = build(
            "calendar",
            "v3",
            http=google_auth_httplib2.AuthorizedHttp(credentials(google, refresh_token), http=httplib2.Http(timeout=5)),
            cache_discovery=False,
            static_discovery=True,
            client_options={"api_endpoint": google.api_endpoint},
        )
        try:
            service.events().insert(calendarId="primary", body=event_body(event_id)).execute()
            status = 200
        except HttpError as error:
            status = error.status_code
        finally:
            service.close()
        with lock:
            outcomes.append(status)

    threads = [threading.Thread(target=insert) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [200] + [409] * 7
    assert len(google.events(CLINIC)) == 1


# -- quotas and faults ------------------------------------------------------------------------------


def test_rate_limit_is_403_user_rate_limit_exceeded(google: GoogleStandIn, calendar: Any) -> None:
    google.requests_per_minute = 3
    for _ in range(3):
        calendar.events().list(calendarId="primary").execute()
    error = http_error(lambda: calendar.events().insert(calendarId="primary", body=event_body(new_id())).execute())
    assert error.status_code == 403
    assert reason_of(error) == "userRateLimitExceeded"
    assert error.error_details[0]["domain"] == "usageLimits"
    assert google.events(CLINIC) == []  # a rate-limited request is not executed

    google.requests_per_minute = 600
    calendar.events().list(calendarId="primary").execute()


def test_the_project_quota_counts_every_account_and_the_peaks_are_measured(
    google: GoogleStandIn, calendar: Any, connect: Connect
) -> None:
    other = connect(credentials(google, google.issue_refresh_token(OTHER_CLINIC)))
    google.project_requests_per_minute = 4
    for client in (calendar, other, calendar, other):
        client.events().list(calendarId="primary").execute()
    error = http_error(lambda: other.events().list(calendarId="primary").execute())
    assert error.status_code == 403 and reason_of(error) == "rateLimitExceeded"
    # Every request that arrived counts in the measured peaks, the refused one included.
    assert google.peak_requests() == 5
    assert google.peak_requests(OTHER_CLINIC) == 3
    assert google.peak_requests(CLINIC, window=0.000001) == 1


@pytest.mark.parametrize(
    ("status", "reason", "domain"),
    [
        (500, "backendError", "global"),
        (503, "backendError", "global"),
        (429, "rateLimitExceeded", "usageLimits"),
        (403, "rateLimitExceeded", "usageLimits"),
        (403, "quotaExceeded", "usageLimits"),
        (403, "forbidden", "global"),
        (400, "badRequest", "global"),
    ],
)
def test_injected_error_then_success(
    google: GoogleStandIn, calendar: Any, status: int, reason: str, domain: str
) -> None:
    google.inject(Fault.error(status, reason), method="POST", path_contains="/events")
    event_id = new_id()
    error = http_error(lambda: calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute())
    assert (error.status_code, reason_of(error), error.error_details[0]["domain"]) == (status, reason, domain)
    assert google.events(CLINIC) == []  # the faulted request was not executed

    created = calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    assert created["id"] == event_id
    statuses = [r.status for r in google.requests() if r.method == "POST" and r.path == EVENTS_PATH]
    assert statuses == [status, 200]


def test_faults_only_hit_matching_requests(google: GoogleStandIn, calendar: Any) -> None:
    google.inject(Fault.error(503, "backendError"), times=2, method="DELETE")
    calendar.events().list(calendarId="primary").execute()
    event_id = new_id()
    calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    for _ in range(2):
        assert (
            http_error(lambda: calendar.events().delete(calendarId="primary", eventId=event_id).execute()).status_code
            == 503
        )
    calendar.events().delete(calendarId="primary", eventId=event_id).execute()


def test_drop_after_commit_is_resent_by_httplib2_and_answered_409(google: GoogleStandIn, calendar: Any) -> None:
    calendar.events().list(calendarId="primary").execute()  # token refreshed, connection open
    google.inject(Fault.drop_after_commit(), method="POST")
    event_id = new_id()

    # The event is created, the connection closes unanswered, and httplib2 silently re-sends the POST
    # once on a fresh connection (it treats the missing status line as a stale keep-alive connection).
    # The re-sent insert meets its own first attempt: 409 duplicate.
    error = http_error(lambda: calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute())
    assert (error.status_code, reason_of(error)) == (409, "duplicate")
    assert [e["id"] for e in google.events(CLINIC)] == [event_id]
    posts = [r for r in google.requests() if r.method == "POST" and r.path == EVENTS_PATH]
    assert [r.status for r in posts] == [0, 409]


def test_drop_twice_reaches_the_caller_as_a_connection_error(google: GoogleStandIn, calendar: Any) -> None:
    calendar.events().list(calendarId="primary").execute()
    google.inject(Fault.drop_after_commit(), times=2, method="POST")
    event_id = new_id()
    with pytest.raises(ConnectionError):
        calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    assert [e["id"] for e in google.events(CLINIC)] == [event_id]


def test_delay_fault_makes_the_client_time_out(google: GoogleStandIn, refresh_token: str, connect: Connect) -> None:
    service = connect(credentials(google, refresh_token), timeout=0.5)
    service.events().list(calendarId="primary").execute()
    google.inject(Fault.delay(5.0), method="POST")
    event_id = new_id()
    with pytest.raises(TimeoutError):
        service.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    # The operation itself happened: the client cannot tell.
    assert [e["id"] for e in google.events(CLINIC)] == [event_id]
    # The same client recovers on its next call (httplib2 replaces the stale connection).
    assert service.events().get(calendarId="primary", eventId=event_id).execute()["id"] == event_id


def test_late_fault_carries_the_request_out_after_the_client_gave_up(
    google: GoogleStandIn, refresh_token: str, connect: Connect
) -> None:
    service = connect(credentials(google, refresh_token), timeout=0.5)
    service.events().list(calendarId="primary").execute()
    google.inject(Fault.late(1.0), method="POST")
    event_id = new_id()
    with pytest.raises(TimeoutError):
        service.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    assert google.events(CLINIC) == []  # not yet: Google has not got round to it
    deadline = time.monotonic() + 10
    while not google.events(CLINIC) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e["id"] for e in google.events(CLINIC)] == [event_id]


def test_latency_applies_to_calendar_requests(google: GoogleStandIn, refresh_token: str, connect: Connect) -> None:
    service = connect(credentials(google, refresh_token), timeout=0.3)
    google.latency = 2.0
    with pytest.raises(TimeoutError):
        service.events().list(calendarId="primary").execute()
    google.latency = 0.0
    service.events().list(calendarId="primary").execute()


def test_an_error_fault_can_carry_retry_after(google: GoogleStandIn, calendar: Any) -> None:
    google.inject(Fault.error(429, "rateLimitExceeded", retry_after=7), method="GET")
    google.inject(Fault.error(503, "backendError"), method="GET")
    with_header = http_error(lambda: calendar.events().list(calendarId="primary").execute())
    without = http_error(lambda: calendar.events().list(calendarId="primary").execute())
    assert (with_header.status_code, with_header.resp.get("retry-after")) == (429, "7")
    assert (without.status_code, without.resp.get("retry-after")) == (503, None)
    faults = [r.fault for r in google.requests() if r.path == EVENTS_PATH]
    assert faults == [Fault.error(429, "rateLimitExceeded", retry_after=7), Fault.error(503, "backendError")]


def list_statuses(google: GoogleStandIn, calendar: Any, count: int) -> list[tuple[int, Fault | None]]:
    """`count` events.list calls one after another; what each was answered and the fault it got."""
    start = len(google.requests())
    for _ in range(count):
        with contextlib.suppress(HttpError):
            calendar.events().list(calendarId="primary").execute()
    return [(r.status, r.fault) for r in google.requests()[start:] if r.path == EVENTS_PATH]


def test_chaos_faults_a_share_of_requests_until_calm(google: GoogleStandIn, calendar: Any) -> None:
    calendar.events().list(calendarId="primary").execute()  # the token refresh is not a calendar request
    faults = {Fault.error(500, "backendError"): 1.0, Fault.error(429, "rateLimitExceeded"): 1.0}
    google.chaos(0.3, faults, seed=7)
    answered = list_statuses(google, calendar, 200)
    faulted = [(status, fault) for status, fault in answered if fault is not None]
    assert 30 <= len(faulted) <= 90  # 60 expected
    assert {status for status, _ in faulted} == {500, 429}
    assert all(fault is not None and status == fault.status for status, fault in faulted)
    assert all(status == 200 for status, fault in answered if fault is None)

    google.calm()
    assert list_statuses(google, calendar, 20) == [(200, None)] * 20


def test_chaos_is_repeatable_by_seed_and_keeps_to_its_weights_and_method(google: GoogleStandIn, calendar: Any) -> None:
    calendar.events().list(calendarId="primary").execute()
    faults = {Fault.error(503, "backendError"): 1.0, Fault.error(400, "badRequest"): 0.0}
    google.chaos(0.5, faults, seed=11)
    first = list_statuses(google, calendar, 40)
    google.chaos(0.5, faults, seed=11)
    assert list_statuses(google, calendar, 40) == first
    assert {status for status, _ in first} == {200, 503}  # a weight of 0 is never drawn

    google.chaos(1.0, [Fault.error(503, "backendError")], seed=1, method="DELETE")
    assert list_statuses(google, calendar, 5) == [(200, None)] * 5
    event_id = new_id()
    calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    error = http_error(lambda: calendar.events().delete(calendarId="primary", eventId=event_id).execute())
    assert error.status_code == 503


def test_injected_faults_go_before_chaos(google: GoogleStandIn, calendar: Any) -> None:
    calendar.events().list(calendarId="primary").execute()
    google.chaos(1.0, [Fault.error(500, "backendError")], seed=3)
    google.inject(Fault.error(429, "rateLimitExceeded"), method="GET")
    assert [status for status, _ in list_statuses(google, calendar, 3)] == [429, 500, 500]


@pytest.mark.parametrize(
    ("rate", "faults"),
    [(1.5, [Fault.error(500, "backendError")]), (0.3, []), (0.3, {Fault.error(500, "backendError"): 0.0})],
    ids=["rate-above-1", "no-faults", "all-weights-0"],
)
def test_chaos_refuses_what_cannot_be_drawn(google: GoogleStandIn, rate: float, faults: Any) -> None:
    with pytest.raises(ValueError):
        google.chaos(rate, faults, seed=1)


# -- listing and sync -------------------------------------------------------------------------------


def test_list_pages_then_gives_a_sync_token(calendar: Any) -> None:
    ids = [new_id() for _ in range(5)]
    for day, event_id in enumerate(ids, start=1):
        calendar.events().insert(calendarId="primary", body=event_body(event_id, day=day)).execute()

    pages = []
    request = calendar.events().list(calendarId="primary", maxResults=2, singleEvents=True)
    while request is not None:
        page = request.execute()
        pages.append(page)
        request = calendar.events().list_next(request, page)
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert [item["id"] for p in pages for item in p["items"]] == ids
    assert ["nextPageToken" in p for p in pages] == [True, True, False]
    assert ["nextSyncToken" in p for p in pages] == [False, False, True]


def test_list_hides_cancelled_unless_show_deleted(calendar: Any) -> None:
    kept, deleted = new_id(), new_id()
    for event_id in (kept, deleted):
        calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    calendar.events().delete(calendarId="primary", eventId=deleted).execute()

    visible = calendar.events().list(calendarId="primary").execute()["items"]
    assert [e["id"] for e in visible] == [kept]
    everything = calendar.events().list(calendarId="primary", showDeleted=True).execute()["items"]
    assert {e["id"]: e["status"] for e in everything} == {kept: "confirmed", deleted: "cancelled"}


def test_list_names_the_calendar_and_its_time_zone(google: GoogleStandIn, calendar: Any) -> None:
    listing = calendar.events().list(calendarId="primary").execute()
    assert (listing["kind"], listing["summary"], listing["timeZone"]) == ("calendar#events", CLINIC, "Europe/London")
    google.add_account(CLINIC, [TEAM_CALENDAR], time_zone="America/New_York")
    team = calendar.events().list(calendarId=TEAM_CALENDAR).execute()
    assert (team["summary"], team["timeZone"]) == (TEAM_CALENDAR, "America/New_York")


def test_time_window_filters(calendar: Any) -> None:
    ids = [new_id() for _ in range(3)]
    for day, event_id in zip((1, 2, 3), ids, strict=True):
        calendar.events().insert(calendarId="primary", body=event_body(event_id, day=day)).execute()
    found = (
        calendar.events()
        .list(calendarId="primary", timeMin="2026-03-02T00:00:00Z", timeMax="2026-03-03T00:00:00+00:00")
        .execute()["items"]
    )
    assert [e["id"] for e in found] == [ids[1]]


def test_incremental_sync_returns_only_changes(google: GoogleStandIn, calendar: Any) -> None:
    unchanged, updated, deleted = new_id(), new_id(), new_id()
    for event_id in (unchanged, updated, deleted):
        calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    sync_token = calendar.events().list(calendarId="primary").execute()["nextSyncToken"]

    added = new_id()
    calendar.events().insert(calendarId="primary", body=event_body(added)).execute()
    calendar.events().patch(calendarId="primary", eventId=updated, body={"summary": "Changed"}).execute()
    calendar.events().delete(calendarId="primary", eventId=deleted).execute()

    first = calendar.events().list(calendarId="primary", syncToken=sync_token, maxResults=2).execute()
    assert "nextSyncToken" not in first
    second = calendar.events().list(calendarId="primary", syncToken=sync_token, pageToken=first["nextPageToken"])
    rest = second.execute()
    changes = {e["id"]: e["status"] for e in first["items"] + rest["items"]}
    assert changes == {added: "confirmed", updated: "confirmed", deleted: "cancelled"}

    nothing_new = calendar.events().list(calendarId="primary", syncToken=rest["nextSyncToken"]).execute()
    assert nothing_new["items"] == [] and "nextSyncToken" in nothing_new


def test_expired_or_unknown_sync_token_is_410(google: GoogleStandIn, calendar: Any) -> None:
    sync_token = calendar.events().list(calendarId="primary").execute()["nextSyncToken"]
    google.expire_sync_tokens()
    for token in (sync_token, "made-up"):
        with pytest.raises(HttpError) as caught:
            calendar.events().list(calendarId="primary", syncToken=token).execute()
        error = caught.value
        assert (error.status_code, reason_of(error)) == (410, "fullSyncRequired")
        assert error.reason == "Sync token is no longer valid, a full sync is required."
    # A full sync gives a fresh token that works.
    fresh = calendar.events().list(calendarId="primary").execute()["nextSyncToken"]
    assert calendar.events().list(calendarId="primary", syncToken=fresh).execute()["items"] == []


def test_sync_token_cannot_be_combined_with_time_filters(calendar: Any) -> None:
    sync_token = calendar.events().list(calendarId="primary").execute()["nextSyncToken"]
    error = http_error(
        lambda: (
            calendar.events().list(calendarId="primary", syncToken=sync_token, timeMin="2026-01-01T00:00:00Z").execute()
        )
    )
    assert error.status_code == 400


# -- the record ----------------------------------------------------------------------------------------


def test_requests_are_recorded_in_order(google: GoogleStandIn, calendar: Any) -> None:
    event_id = new_id()
    calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    calendar.events().get(calendarId="primary", eventId=event_id).execute()
    calendar.events().delete(calendarId="primary", eventId=event_id).execute()
    calendar.events().list(calendarId="primary", maxResults=2, showDeleted=True).execute()

    recorded = google.requests()
    assert [(r.method, r.path, r.account, r.status) for r in recorded] == [
        ("POST", "/token", CLINIC, 200),
        ("POST", EVENTS_PATH, CLINIC, 200),
        ("GET", f"{EVENTS_PATH}/{event_id}", CLINIC, 200),
        ("DELETE", f"{EVENTS_PATH}/{event_id}", CLINIC, 204),
        ("GET", EVENTS_PATH, CLINIC, 200),
    ]
    # What google-api-python-client puts in the query string.
    assert recorded[1].query == "alt=json"
    assert recorded[3].query == ""
    assert recorded[4].query == "maxResults=2&showDeleted=true&alt=json"


def test_unknown_paths_are_404(google: GoogleStandIn) -> None:
    http = httplib2.Http(timeout=5)
    try:
        response, _ = http.request(google.base_url + "/nowhere", "GET")
        assert response.status == 404
        response, _ = http.request(google.api_endpoint + "users/me/calendarList", "GET")
        assert response.status == 401  # authentication comes first, as at Google
    finally:
        http.close()
    assert [r.status for r in google.requests()] == [404, 401]


def test_stop_is_idempotent() -> None:
    standin = GoogleStandIn()
    standin.start()
    url = standin.base_url
    standin.stop()
    standin.stop()
    http = httplib2.Http(timeout=2)
    try:
        with pytest.raises(ConnectionRefusedError):
            http.request(url + "/token", "POST")
    finally:
        http.close()


# -- recurring events -------------------------------------------------------------------------------

LONDON = "Europe/London"


def series_body(
    recurrence: list[str],
    *,
    start: str = "2027-02-15T16:00:00",
    end: str = "2027-02-15T17:00:00",
    time_zone: str | None = LONDON,
    summary: str = "Staff meeting",
) -> dict[str, Any]:
    """A recurring event as a receptionist makes one in Google: local wall-clock times in the series' zone."""
    body: dict[str, Any] = {"summary": summary, "recurrence": recurrence}
    if "T" in start:
        body["start"] = {"dateTime": start, "timeZone": time_zone}
        body["end"] = {"dateTime": end, "timeZone": time_zone}
        if time_zone is None:
            body["start"] = {"dateTime": start + "+00:00"}
            body["end"] = {"dateTime": end + "+00:00"}
    else:
        body["start"], body["end"] = {"date": start}, {"date": end}
    return body


def instances(calendar: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Every item of a singleEvents listing, all pages."""
    items: list[dict[str, Any]] = []
    request = calendar.events().list(calendarId="primary", singleEvents=True, **kwargs)
    while request is not None:
        page = request.execute()
        items.extend(page["items"])
        request = calendar.events().list_next(request, page)
    return items


def starts(items: list[dict[str, Any]]) -> list[str]:
    return [item["start"].get("dateTime") or item["start"]["date"] for item in items]


def test_a_series_is_its_master_without_single_events_and_its_instances_with(calendar: Any) -> None:
    master_id = new_id()
    body = {**series_body(["RRULE:FREQ=WEEKLY;BYDAY=MO"]), "id": master_id}
    created = calendar.events().insert(calendarId="primary", body=body).execute()
    assert created["recurrence"] == ["RRULE:FREQ=WEEKLY;BYDAY=MO"]

    # Without singleEvents (or with it false) the series is one item: its master, recurrence and all.
    for listing in (
        calendar.events().list(calendarId="primary").execute(),
        calendar.events().list(calendarId="primary", singleEvents=False, timeMin="2027-03-01T00:00:00Z").execute(),
    ):
        assert [(item["id"], item["recurrence"]) for item in listing["items"]] == [(master_id, body["recurrence"])]

    found = instances(calendar, timeMin="2027-02-14T00:00:00Z", timeMax="2027-03-09T00:00:00Z", orderBy="startTime")
    assert [item["id"] for item in found] == [
        f"{master_id}_20270215T160000Z",
        f"{master_id}_20270222T160000Z",
        f"{master_id}_20270301T160000Z",
        f"{master_id}_20270308T160000Z",
    ]
    first = found[0]
    assert first["recurringEventId"] == master_id and "recurrence" not in first
    assert first["originalStartTime"] == {"dateTime": "2027-02-15T16:00:00+00:00", "timeZone": LONDON}
    assert first["start"] == first["originalStartTime"]
    assert first["end"] == {"dateTime": "2027-02-15T17:00:00+00:00", "timeZone": LONDON}
    assert (first["summary"], first["status"], first["iCalUID"]) == ("Staff meeting", "confirmed", created["iCalUID"])
    # timeMin applies to an instance's end: the one ending exactly at timeMin is left out.
    later = instances(calendar, timeMin="2027-02-22T17:00:00Z", timeMax="2027-03-02T00:00:00Z")
    assert starts(later) == ["2027-03-01T16:00:00+00:00"]


def test_a_weekly_series_keeps_its_local_time_across_the_clocks_going_forward(calendar: Any) -> None:
    master_id = new_id()
    body = series_body(["RRULE:FREQ=WEEKLY;COUNT=3"], start="2027-03-22T16:00:00", end="2027-03-22T17:00:00")
    calendar.events().insert(calendarId="primary", body={**body, "id": master_id}).execute()
    found = instances(calendar)
    # 16:00 in London before and after 28 March 2027: 16:00 GMT, then 16:00 BST (15:00 UTC).
    assert starts(found) == ["2027-03-22T16:00:00+00:00", "2027-03-29T16:00:00+01:00", "2027-04-05T16:00:00+01:00"]
    assert [item["end"]["dateTime"] for item in found][1] == "2027-03-29T17:00:00+01:00"
    assert [item["id"].rsplit("_", 1)[1] for item in found] == [
        "20270322T160000Z",
        "20270329T150000Z",
        "20270405T150000Z",
    ]


def test_an_all_day_series_with_an_excluded_day(calendar: Any) -> None:
    master_id = new_id()
    body = series_body(["RRULE:FREQ=DAILY;COUNT=4", "EXDATE;VALUE=DATE:20270216"], start="2027-02-15", end="2027-02-16")
    calendar.events().insert(calendarId="primary", body={**body, "id": master_id}).execute()
    found = instances(calendar)
    # COUNT counts the excluded day too (RFC 5545): 15, (16), 17, 18.
    assert [item["id"] for item in found] == [f"{master_id}_{day}" for day in ("20270215", "20270217", "20270218")]
    assert (found[0]["start"], found[0]["end"]) == ({"date": "2027-02-15"}, {"date": "2027-02-16"})
    assert found[0]["originalStartTime"] == {"date": "2027-02-15"}


@pytest.mark.parametrize(
    ("recurrence", "start", "expected"),
    [
        (
            # Every other week on Monday and Wednesday until (and including) 10 March, one Wednesday excluded.
            [
                "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;UNTIL=20270310T160000Z",
                "EXDATE;TZID=Europe/London:20270217T090000",
            ],
            "2027-02-15T09:00:00",
            ["2027-02-15", "2027-03-01", "2027-03-03"],
        ),
        (
            # The 31st of every month: months without one are skipped.
            ["RRULE:FREQ=MONTHLY;COUNT=4"],
            "2027-01-31T09:00:00",
            ["2027-01-31", "2027-03-31", "2027-05-31", "2027-07-31"],
        ),
        (
            ["RRULE:FREQ=DAILY;INTERVAL=3;UNTIL=20270224", "EXDATE:20270221T090000Z,20270218T090000Z"],
            "2027-02-15T09:00:00",
            ["2027-02-15", "2027-02-24"],
        ),
        (["RRULE:FREQ=YEARLY;COUNT=3"], "2028-02-29T09:00:00", ["2028-02-29", "2032-02-29", "2036-02-29"]),
    ],
    ids=["weekly-byday-interval-until-exdate", "monthly-31st", "daily-interval-until-date-exdate-list", "yearly"],
)
def test_recurrence_rules(calendar: Any, recurrence: list[str], start: str, expected: list[str]) -> None:
    end = start.replace("T09:", "T10:")
    calendar.events().insert(calendarId="primary", body=series_body(recurrence, start=start, end=end)).execute()
    found = instances(calendar, timeMin="2027-01-01T00:00:00Z", timeMax="2037-01-01T00:00:00Z")
    assert [s[:10] for s in starts(found)] == expected


@pytest.mark.parametrize(
    ("body", "status", "reason", "message"),
    [
        (
            series_body(["RRULE:FREQ=WEEKLY"], time_zone=None),
            400,
            "required",
            "Missing time zone definition for start time.",
        ),
        (series_body(["RRULE:FREQ=FORTNIGHTLY"]), 400, "invalid", "Invalid recurrence rule."),
        (series_body(["RRULE:FREQ=DAILY;COUNT=2;UNTIL=20270301"]), 400, "invalid", "Invalid recurrence rule."),
        (series_body(["EXDATE:20270222T160000Z"]), 400, "invalid", "Invalid recurrence rule."),
        (
            series_body(["RRULE:FREQ=MONTHLY;BYMONTHDAY=15"]),
            400,
            "invalid",
            "The Google stand-in does not implement BYMONTHDAY in recurrence rules.",
        ),
    ],
    ids=["no-time-zone", "unknown-freq", "count-and-until", "no-rrule", "unimplemented-part"],
)
def test_a_series_google_would_refuse_or_the_stand_in_cannot_expand_is_400(
    google: GoogleStandIn, calendar: Any, body: dict[str, Any], status: int, reason: str, message: str
) -> None:
    error = http_error(lambda: calendar.events().insert(calendarId="primary", body=body).execute())
    assert (error.status_code, reason_of(error), error.reason) == (status, reason, message)
    assert google.events(CLINIC) == []


def test_an_unbounded_series_is_expanded_up_to_the_horizon(calendar: Any) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    body = series_body(["RRULE:FREQ=DAILY"], start=f"{today}T09:00:00", end=f"{today}T09:30:00", time_zone="UTC")
    calendar.events().insert(calendarId="primary", body=body).execute()
    found = instances(calendar, maxResults=2500)
    # EXPANSION_HORIZON: instances starting up to 400 days after now (today's 09:00 may be past or to come).
    assert len(found) in (400, 401)
    limited = instances(calendar, timeMax=f"{today}T09:00:01Z")
    assert starts(limited) == [f"{today}T09:00:00+00:00"]


def test_an_instance_can_be_read_moved_and_deleted(google: GoogleStandIn, calendar: Any) -> None:
    master_id = new_id()
    body = {**series_body(["RRULE:FREQ=WEEKLY;COUNT=4"]), "id": master_id}
    calendar.events().insert(calendarId="primary", body=body).execute()
    second, third = f"{master_id}_20270222T160000Z", f"{master_id}_20270301T160000Z"

    fetched = calendar.events().get(calendarId="primary", eventId=second).execute()
    assert (fetched["id"], fetched["recurringEventId"], fetched["start"]["dateTime"]) == (
        second,
        master_id,
        "2027-02-22T16:00:00+00:00",
    )
    # Not an occurrence, past COUNT, a date-only suffix on a timed series.
    for missing in (f"{master_id}_20270223T160000Z", f"{master_id}_20270315T160000Z", f"{master_id}_20270222"):
        assert http_error(calendar.events().get(calendarId="primary", eventId=missing).execute).status_code == 404

    # Moving one instance makes it an exception: its own time and `updated`, the same id and original start.
    moved = (
        calendar.events()
        .patch(
            calendarId="primary",
            eventId=second,
            body={
                "start": {"dateTime": "2027-02-23T11:00:00", "timeZone": LONDON},
                "end": {"dateTime": "2027-02-23T12:00:00", "timeZone": LONDON},
                "recurrence": ["RRULE:FREQ=DAILY"],  # instances carry none: ignored
            },
        )
        .execute()
    )
    assert moved["originalStartTime"] == {"dateTime": "2027-02-22T16:00:00+00:00", "timeZone": LONDON}
    assert "recurrence" not in moved and moved["updated"] != fetched["updated"]
    assert calendar.events().delete(calendarId="primary", eventId=third).execute() == ""
    again = http_error(lambda: calendar.events().delete(calendarId="primary", eventId=third).execute())
    assert (again.status_code, reason_of(again)) == (410, "deleted")

    found = instances(calendar)
    assert [(item["id"], item["start"]["dateTime"]) for item in found] == [
        (f"{master_id}_20270215T160000Z", "2027-02-15T16:00:00+00:00"),
        (second, "2027-02-23T11:00:00"),
        (f"{master_id}_20270308T160000Z", "2027-03-08T16:00:00+00:00"),
    ]
    assert found[1]["updated"] == moved["updated"] != found[0]["updated"]
    cancelled = [item for item in instances(calendar, showDeleted=True) if item["status"] == "cancelled"]
    assert cancelled == [
        {
            "kind": "calendar#event",
            "etag": cancelled[0]["etag"],
            "id": third,
            "status": "cancelled",
            "recurringEventId": master_id,
            "originalStartTime": {"dateTime": "2027-03-01T16:00:00+00:00", "timeZone": LONDON},
        }
    ]
    # Without singleEvents: the master, and each exception as an item of its own (a cancelled one even
    # without showDeleted, as Google documents).
    listed = calendar.events().list(calendarId="primary").execute()["items"]
    assert [(item["id"], item["status"]) for item in listed] == [
        (master_id, "confirmed"),
        (second, "confirmed"),
        (third, "cancelled"),
    ]
    assert [e["id"] for e in google.events(CLINIC)] == [master_id, second, third]


def test_incremental_listings_of_a_series(calendar: Any) -> None:
    window = {"timeMin": "2027-02-14T00:00:00Z"}
    full = calendar.events().list(calendarId="primary", singleEvents=True, showDeleted=True, **window).execute()
    token = full["nextSyncToken"]
    master_id = new_id()
    body = {**series_body(["RRULE:FREQ=WEEKLY;COUNT=4"]), "id": master_id}
    calendar.events().insert(calendarId="primary", body=body).execute()

    # With the full listing's parameters: every instance. With only the sync token: the master (the series is
    # one item, and a reader taking it as one event blocks only its first week).
    changes = calendar.events().list(calendarId="primary", singleEvents=True, showDeleted=True, syncToken=token)
    listed = changes.execute()
    assert [item["id"][-17:] for item in listed["items"]] == [
        "_20270215T160000Z",
        "_20270222T160000Z",
        "_20270301T160000Z",
        "_20270308T160000Z",
    ]
    masters = calendar.events().list(calendarId="primary", syncToken=token).execute()["items"]
    assert [(item["id"], "recurrence" in item) for item in masters] == [(master_id, True)]

    # One instance moved: only that instance.
    token = listed["nextSyncToken"]
    second = f"{master_id}_20270222T160000Z"
    calendar.events().patch(calendarId="primary", eventId=second, body={"summary": "Moved"}).execute()
    listed = calendar.events().list(calendarId="primary", singleEvents=True, syncToken=token).execute()
    assert [(item["id"], item["summary"]) for item in listed["items"]] == [(second, "Moved")]

    # The master edited: every instance (the exception keeps its own summary).
    token = listed["nextSyncToken"]
    calendar.events().patch(calendarId="primary", eventId=master_id, body={"location": "Room 2"}).execute()
    listed = calendar.events().list(calendarId="primary", singleEvents=True, syncToken=token).execute()
    assert [item["summary"] for item in listed["items"]] == ["Staff meeting", "Moved", "Staff meeting", "Staff meeting"]
    assert [item.get("location") for item in listed["items"]] == ["Room 2", None, "Room 2", "Room 2"]

    # The series deleted: every instance, cancelled and minimal.
    token = listed["nextSyncToken"]
    calendar.events().delete(calendarId="primary", eventId=master_id).execute()
    listed = calendar.events().list(calendarId="primary", singleEvents=True, syncToken=token).execute()
    assert [(item["status"], sorted(item)) for item in listed["items"]] == [
        ("cancelled", ["etag", "id", "kind", "originalStartTime", "recurringEventId", "status"])
    ] * 4
    assert instances(calendar) == []


def test_an_incremental_listing_expands_a_series_within_the_full_listings_window(calendar: Any) -> None:
    token = calendar.events().list(calendarId="primary", singleEvents=True, timeMin="2027-03-01T00:00:00Z").execute()
    body = series_body(["RRULE:FREQ=WEEKLY;COUNT=4"])
    calendar.events().insert(calendarId="primary", body=body).execute()
    listed = calendar.events().list(calendarId="primary", singleEvents=True, syncToken=token["nextSyncToken"]).execute()
    assert starts(listed["items"]) == ["2027-03-01T16:00:00+00:00", "2027-03-08T16:00:00+00:00"]


# -- deleted events ---------------------------------------------------------------------------------


def test_deleted_events_are_listed_minimally_unless_told_otherwise(google: GoogleStandIn, calendar: Any) -> None:
    event_id = new_id()
    created = calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    token = calendar.events().list(calendarId="primary").execute()["nextSyncToken"]
    calendar.events().delete(calendarId="primary", eventId=event_id).execute()
    deleted = calendar.events().get(calendarId="primary", eventId=event_id).execute()
    assert deleted["status"] == "cancelled" and deleted["extendedProperties"] == created["extendedProperties"]

    minimal = {"kind": "calendar#event", "etag": deleted["etag"], "id": event_id, "status": "cancelled"}
    assert calendar.events().list(calendarId="primary", syncToken=token).execute()["items"] == [minimal]
    assert calendar.events().list(calendarId="primary", showDeleted=True).execute()["items"] == [minimal]

    google.minimal_deletions = False
    assert calendar.events().list(calendarId="primary", syncToken=token).execute()["items"] == [deleted]
    assert calendar.events().list(calendarId="primary", showDeleted=True).execute()["items"] == [deleted]


@pytest.mark.parametrize(
    ("mode", "status", "message"), [("forbidden", 403, "Forbidden"), ("conflict", 409, "Conflict")]
)
def test_google_can_refuse_to_restore_a_deleted_event(
    google: GoogleStandIn, calendar: Any, mode: Any, status: int, message: str
) -> None:
    refused, restored = new_id(), new_id()
    for event_id in (refused, restored):
        calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
        calendar.events().delete(calendarId="primary", eventId=event_id).execute()
    google.restore_refusal = mode
    google.restore_refusal_ids = {refused}
    before = google.events(CLINIC)

    body = {**event_body(refused, day=3), "status": "confirmed"}
    for call in (
        lambda: calendar.events().update(calendarId="primary", eventId=refused, body=body).execute(),
        lambda: calendar.events().patch(calendarId="primary", eventId=refused, body={"status": "tentative"}).execute(),
    ):
        error = http_error(call)
        assert (error.status_code, reason_of(error), error.reason) == (status, mode, message)
    assert google.events(CLINIC) == before  # nothing changed
    # Re-inserting the id stays 409 duplicate; a change that leaves it cancelled is no restore.
    dup = http_error(lambda: calendar.events().insert(calendarId="primary", body=event_body(refused)).execute())
    assert (dup.status_code, reason_of(dup)) == (409, "duplicate")
    patched = calendar.events().patch(calendarId="primary", eventId=refused, body={"summary": "x"}).execute()
    assert patched["status"] == "cancelled"
    # Events outside restore_refusal_ids come back; with the set cleared, every one is refused.
    body = {**event_body(restored), "status": "confirmed"}
    assert (
        calendar.events().update(calendarId="primary", eventId=restored, body=body).execute()["status"] == "confirmed"
    )
    google.restore_refusal_ids = None
    calendar.events().delete(calendarId="primary", eventId=restored).execute()
    assert http_error(lambda: calendar.events().update(calendarId="primary", eventId=restored, body=body).execute())
    google.restore_refusal = None
    assert (
        calendar.events().update(calendarId="primary", eventId=restored, body=body).execute()["status"] == "confirmed"
    )


def test_restore_refusal_takes_only_its_modes(google: GoogleStandIn) -> None:
    with pytest.raises(ValueError, match="restore_refusal"):
        google.restore_refusal = "gone"  # type: ignore[assignment]
    assert google.restore_refusal is None


# -- push notifications -----------------------------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request it gets: what the daemon's public listener would
    be behind the operator's TLS terminator."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[str, str, dict[str, str], bytes]] = queue.Queue()
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.put((self.command, self.path, dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def address(self, path: str = "/google/notifications") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def next(self, timeout: float = 5.0) -> tuple[str, str, dict[str, str], bytes]:
        return self.received.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def watch(calendar: Any, address: str, channel_id: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"id": channel_id or str(uuid.uuid4()), "type": "web_hook", "address": address, **fields}
    result: dict[str, Any] = calendar.events().watch(calendarId="primary", body=body).execute()
    return result


def test_watch_then_sync_and_an_exists_notification_for_every_change(
    google: GoogleStandIn, calendar: Any, connect: Connect, refresh_token: str, receiver: Receiver
) -> None:
    channel_id = str(uuid.uuid4())
    before_ms = int(time.time() * 1000)
    channel = watch(
        calendar, receiver.address("/google/push?clinic=1"), channel_id, token="s3cret", params={"ttl": "3600"}
    )
    assert set(channel) == {"kind", "id", "resourceId", "resourceUri", "token", "expiration"}
    assert (channel["kind"], channel["id"], channel["token"]) == ("api#channel", channel_id, "s3cret")
    assert channel["resourceUri"] == f"{google.api_endpoint}calendars/primary/events?alt=json"
    assert isinstance(channel["expiration"], str)
    assert before_ms + 3_600_000 <= int(channel["expiration"]) <= int(time.time() * 1000) + 3_600_000
    watch_request = google.requests()[-1]
    assert (watch_request.method, watch_request.path, watch_request.status) == ("POST", EVENTS_PATH + "/watch", 200)

    method, path, headers, body = receiver.next()
    # Delivered over plain http to the same host, port, path and query (the stand-in is the TLS terminator too).
    assert (method, path, body, headers["Content-Length"]) == ("POST", "/google/push?clinic=1", b"", "0")
    expected = {
        "X-Goog-Channel-ID": channel_id,
        "X-Goog-Channel-Token": "s3cret",
        "X-Goog-Channel-Expiration": email.utils.formatdate(int(channel["expiration"]) / 1000, usegmt=True),
        "X-Goog-Resource-ID": channel["resourceId"],
        "X-Goog-Resource-URI": channel["resourceUri"],
        "X-Goog-Resource-State": "sync",
        "X-Goog-Message-Number": "1",
    }
    assert {name: headers.get(name) for name in expected} == expected
    assert headers["X-Goog-Channel-Expiration"].endswith(" GMT")

    # Every change to the calendar's events, whoever makes it: insert, update, delete, an instance's exception.
    other = connect(credentials(google, google.issue_refresh_token(CLINIC)))
    event_id, master_id = new_id(), new_id()
    calendar.events().insert(calendarId="primary", body=event_body(event_id)).execute()
    other.events().patch(calendarId="primary", eventId=event_id, body={"summary": "Lunch"}).execute()
    calendar.events().delete(calendarId="primary", eventId=event_id).execute()
    calendar.events().insert(
        calendarId="primary", body={**series_body(["RRULE:FREQ=DAILY"]), "id": master_id}
    ).execute()
    other.events().delete(calendarId="primary", eventId=f"{master_id}_20270216T160000Z").execute()
    # Another calendar's changes are not this channel's.
    calendar.events().insert(calendarId=TEAM_CALENDAR, body=event_body(new_id())).execute()
    seen = [receiver.next() for _ in range(5)]
    assert [(h["X-Goog-Resource-State"], h["X-Goog-Message-Number"]) for _, _, h, _ in seen] == [
        ("exists", str(n)) for n in range(2, 7)
    ]
    assert all(h["X-Goog-Channel-ID"] == channel_id and b == b"" for _, _, h, b in seen)
    wait_for(lambda: len(google.notifications()) == 6)
    assert [(n.channel_id, n.state, n.message_number, n.status) for n in google.notifications()] == [
        (channel_id, "sync", 1, 200)
    ] + [(channel_id, "exists", n, 200) for n in range(2, 7)]
    assert google.notifications()[0].url == f"http://127.0.0.1:{receiver.port}/google/push?clinic=1"
    assert receiver.received.empty()


def test_the_token_header_only_when_the_channel_has_one_and_the_default_ttl(
    google: GoogleStandIn, calendar: Any, receiver: Receiver
) -> None:
    channel = watch(calendar, receiver.address())
    assert "token" not in channel
    now_ms = int(time.time() * 1000)
    assert now_ms + 604_800_000 - 60_000 <= int(channel["expiration"]) <= now_ms + 604_800_000
    _, _, headers, _ = receiver.next()
    assert "X-Goog-Channel-Token" not in headers and headers["X-Goog-Resource-State"] == "sync"
    # A ttl above the maximum is cut to it; the resource id is the same for the same calendar and query.
    longer = watch(calendar, receiver.address(), params={"ttl": str(10 * 365 * 86400)})
    assert int(longer["expiration"]) <= int(time.time() * 1000) + 2_592_000_000
    assert longer["resourceId"] == channel["resourceId"]
    narrower = (
        calendar.events()
        .watch(
            calendarId="primary",
            singleEvents=True,
            body={"id": "c-3", "type": "web_hook", "address": receiver.address()},
        )
        .execute()
    )
    assert narrower["resourceId"] != channel["resourceId"]


def test_an_expired_channel_gets_nothing_more(google: GoogleStandIn, calendar: Any, receiver: Receiver) -> None:
    short = watch(calendar, receiver.address("/short"), params={"ttl": "1"})
    kept = watch(calendar, receiver.address("/kept"))
    assert {receiver.next()[1], receiver.next()[1]} == {"/short", "/kept"}
    wait_for(lambda: [c.state for c in google.channels()] == ["expired", "live"])

    calendar.events().insert(calendarId="primary", body=event_body(new_id())).execute()
    assert receiver.next()[1] == "/kept"
    google.expire_channels([kept["id"]])
    calendar.events().insert(calendarId="primary", body=event_body(new_id())).execute()
    wait_for(lambda: len(google.notifications()) == 3)
    ongoing = watch(calendar, receiver.address("/ongoing"))
    assert receiver.next()[1] == "/ongoing"  # delivery goes on: nothing was queued for the expired ones
    assert receiver.received.empty()
    assert [n.state for n in google.notifications() if n.channel_id in (short["id"], kept["id"])] == [
        "sync",
        "sync",
        "exists",
    ]
    # Google forgets an expired channel: stopping it is 404, and its id may be used again.
    error = http_error(
        lambda: calendar.channels().stop(body={"id": kept["id"], "resourceId": kept["resourceId"]}).execute()
    )
    assert (error.status_code, reason_of(error)) == (404, "notFound")
    assert watch(calendar, receiver.address(), kept["id"])["id"] == kept["id"]
    assert ongoing["id"] in [c.id for c in google.channels() if c.state == "live"]


def test_stop_ends_a_channel_and_needs_its_resource_id(
    google: GoogleStandIn, calendar: Any, receiver: Receiver
) -> None:
    channel = watch(calendar, receiver.address())
    receiver.next()
    for body in (
        {"id": channel["id"], "resourceId": "someone-elses"},
        {"id": "unknown", "resourceId": channel["resourceId"]},
    ):
        error = http_error(calendar.channels().stop(body=body).execute)
        assert (error.status_code, reason_of(error)) == (404, "notFound")
        assert error.reason == f"Channel '{body['id']}' not found for project '123456789012'"

    stopped = calendar.channels().stop(body={"id": channel["id"], "resourceId": channel["resourceId"]}).execute()
    assert stopped == ""
    stop_request = google.requests()[-1]
    assert (stop_request.method, stop_request.path, stop_request.status) == ("POST", "/calendar/v3/channels/stop", 204)
    assert [c.state for c in google.channels()] == ["stopped"]
    calendar.events().insert(calendarId="primary", body=event_body(new_id())).execute()
    again = http_error(
        lambda: calendar.channels().stop(body={"id": channel["id"], "resourceId": channel["resourceId"]}).execute()
    )
    assert again.status_code == 404
    # The next channel's sync arrives; nothing came for the stopped channel's change before it.
    watch(calendar, receiver.address("/next"))
    assert receiver.next()[1] == "/next"
    wait_for(lambda: len(google.notifications()) == 2)  # recorded once the receiver has answered
    assert [n.state for n in google.notifications()] == ["sync", "sync"]


def test_a_lost_channel_goes_silent(google: GoogleStandIn, calendar: Any, receiver: Receiver) -> None:
    lost = watch(calendar, receiver.address("/lost"))
    receiver.next()
    google.lose_channel(lost["id"])
    calendar.events().insert(calendarId="primary", body=event_body(new_id())).execute()
    watch(calendar, receiver.address("/next"))
    assert receiver.next()[1] == "/next"
    assert [c.state for c in google.channels()] == ["lost", "live"]
    # Google still knows the channel: its id is taken, and stop finds it.
    error = http_error(lambda: watch(calendar, receiver.address(), lost["id"]))
    assert (error.status_code, reason_of(error)) == (400, "channelIdNotUnique")
    calendar.channels().stop(body={"id": lost["id"], "resourceId": lost["resourceId"]}).execute()
    assert google.channels()[0].state == "stopped"


@pytest.mark.parametrize(
    ("fields", "reason", "message"),
    [
        (
            {"address": "http://127.0.0.1:9/hook"},
            "push.webhookUrlNotHttps",
            "WebHook callback must be HTTPS: http://127.0.0.1:9/hook",
        ),
        ({"address": None}, "push.webhookUrlNotHttps", "WebHook callback must be HTTPS:"),
        ({"type": "email"}, "invalid", "Invalid channel type: email"),
        ({"type": None}, "required", "Required"),
        ({"id": "has space"}, "invalid", "Channel id must match [A-Za-z0-9\\-_\\+/=]+"),
        ({"id": "a" * 65}, "invalid", "Channel id must be at most 64 characters."),
        ({"id": None}, "required", "Required"),
        ({"token": "t" * 257}, "invalid", "Channel token must be at most 256 characters."),
        ({"params": {"ttl": "soon"}}, "invalid", "Invalid ttl value: soon"),
    ],
    ids=["http", "no-address", "type", "no-type", "id-chars", "id-length", "no-id", "token-length", "ttl"],
)
def test_watch_refuses_what_google_refuses(
    google: GoogleStandIn, calendar: Any, fields: dict[str, Any], reason: str, message: str
) -> None:
    body = {"id": "c-" + new_id(), "type": "web_hook", "address": "https://127.0.0.1:9/hook", **fields}
    error = http_error(lambda: calendar.events().watch(calendarId="primary", body=body).execute())
    assert (error.status_code, reason_of(error), error.reason) == (400, reason, message)
    assert google.channels() == []


def test_the_longest_channel_id_and_token_are_accepted_and_ids_are_unique(
    google: GoogleStandIn, calendar: Any, receiver: Receiver
) -> None:
    channel_id = "A-z_0+9/=" + "x" * 55
    watch(calendar, receiver.address(), channel_id, token="t" * 256)
    assert receiver.next()[2]["X-Goog-Channel-ID"] == channel_id
    error = http_error(lambda: watch(calendar, receiver.address(), channel_id))
    assert (error.status_code, reason_of(error), error.reason) == (400, "channelIdNotUnique", "Channel id not unique")
    assert len(google.channels()) == 1


def test_watch_and_stop_count_in_the_rate_window(google: GoogleStandIn, calendar: Any, receiver: Receiver) -> None:
    calendar.events().list(calendarId="primary").execute()
    google.requests_per_minute = 3
    channel = watch(calendar, receiver.address())
    calendar.channels().stop(body={"id": channel["id"], "resourceId": channel["resourceId"]}).execute()
    error = http_error(lambda: watch(calendar, receiver.address()))
    assert (error.status_code, reason_of(error)) == (403, "userRateLimitExceeded")
    assert len(google.channels()) == 1  # the refused watch made nothing
    assert google.peak_requests(CLINIC) == 4


def test_held_notifications_arrive_in_order_after_resume(
    google: GoogleStandIn, calendar: Any, receiver: Receiver
) -> None:
    google.pause_notifications()
    channel = watch(calendar, receiver.address())
    for _ in range(3):
        calendar.events().insert(calendarId="primary", body=event_body(new_id())).execute()
    assert google.notifications() == [] and receiver.received.empty()
    google.resume_notifications()
    numbers = [receiver.next()[2]["X-Goog-Message-Number"] for _ in range(4)]
    assert numbers == ["1", "2", "3", "4"]
    wait_for(lambda: len(google.notifications()) == 4)
    assert [(n.channel_id, n.message_number) for n in google.notifications()] == [
        (channel["id"], n) for n in range(1, 5)
    ]


def test_failed_and_off_machine_deliveries_are_recorded(
    google: GoogleStandIn, calendar: Any, receiver: Receiver
) -> None:
    receiver.status = 500
    watch(calendar, receiver.address())
    receiver.next()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    watch(calendar, f"https://127.0.0.1:{closed_port}/hook")
    watch(calendar, "https://clinic-sync.example.com/hook")
    wait_for(lambda: len(google.notifications()) == 3)
    outcomes = {n.url: (n.status, n.error) for n in google.notifications()}
    assert outcomes[f"http://127.0.0.1:{receiver.port}/google/notifications"] == (500, None)
    refused = outcomes[f"http://127.0.0.1:{closed_port}/hook"]
    assert refused[0] is None and refused[1] is not None and "ConnectionRefusedError" in refused[1]
    off_machine = outcomes["http://clinic-sync.example.com/hook"]
    assert off_machine[0] is None and off_machine[1] is not None and "not this machine" in off_machine[1]
