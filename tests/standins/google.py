"""A stand-in for Google's Calendar API v3 and OAuth 2.0 token endpoint, over real HTTP on 127.0.0.1.

It is driven through the real client libraries, exactly as the daemon drives Google:

    googleapiclient.discovery.build("calendar", "v3", http=..., cache_discovery=False, static_discovery=True,
                                    client_options={"api_endpoint": standin.api_endpoint})
    google.oauth2.credentials.Credentials(None, refresh_token=..., token_uri=standin.token_uri, ...)
    google_auth_oauthlib.flow.InstalledAppFlow.from_client_config(
        {"installed": {"client_id": ..., "client_secret": ..., "auth_uri": standin.auth_uri,
                       "token_uri": standin.token_uri}}, scopes=[...])

With `api_endpoint` set, google-api-python-client sends `<api_endpoint>calendars/{calendarId}/events[/{eventId}]`
(events.watch: POST `<api_endpoint>calendars/{calendarId}/events/watch`; channels.stop: POST
`<api_endpoint>channels/stop`) plus a query string that always ends in `alt=json` (path parameters
percent-encoded, so `a@b.com` arrives as `a%40b.com`; booleans as `true`/`false`). google-auth POSTs a form
body (`grant_type=refresh_token`, `client_id`, `client_secret`, `refresh_token`, optional `scope`) to
`token_uri`. google-auth-oauthlib sends the browser to `auth_uri` (PKCE S256 by default) and POSTs
`grant_type=authorization_code` with HTTP Basic client authentication; it refuses plain http unless
OAUTHLIB_INSECURE_TRANSPORT is set, which tests against this stand-in must do.

What it imitates (Google's documented behaviour; error bodies in Google's JSON shape):
- OAuth: refresh tokens per account (revocable, at most 100 live per account and client, the oldest dies
  first), access tokens that expire after `access_token_lifetime` seconds; `invalid_client`, `invalid_grant`.
- The authorization-code flow of a desktop ("installed") client: loopback redirect URIs on any port, PKCE,
  single-use codes that expire, refresh tokens only for offline access when the consent screen was shown,
  ID tokens for `openid`, 7-day refresh tokens for a project in "Testing". The test decides who signs in and
  whether they approve (consent(), deny_consent()); without a browser the decision is applied at once.
- A "Web application" client instead (make_web_client(redirect_uris)): only the registered redirect URIs,
  matched exactly (a loopback address too, port included), else Google's `redirect_uri_mismatch` error page.
  With `consent_screen` on, the decided visit shows a consent page (the account, the app's requested access, an
  "Allow" and a "Cancel" button posting to APPROVAL_PATH) that a real browser answers; Cancel redirects with
  `error=access_denied`, as Google does.
- Scopes: "email"/"profile" are answered as their userinfo URLs plus "openid", as Google does; calendar calls
  need a calendar scope (403 `insufficientPermissions`).
- Calendar: Bearer auth (401 `authError`), sliding 60 s windows per account (403 `userRateLimitExceeded`) and
  for the whole project (403 `rateLimitExceeded`), counting every calendar request;
  events.insert/get/update/patch/delete/list with client-chosen ids (409 `duplicate`, 400 `invalid`), soft
  deletion (status `cancelled`, 410 `deleted` on a second delete),
  paging, incremental sync with sync tokens (410 `fullSyncRequired` once expired).
- Deleted events in listings (incremental, or showDeleted=true) carry only `kind`, `etag`, `id` and `status`
  (instances also `recurringEventId` and `originalStartTime`), as Google may send them: `minimal_deletions`
  (default True; False lists full copies). events.get of a deleted event still answers the whole event.
- Refused restores: an update/patch bringing a cancelled event back (status confirmed or tentative) is answered
  403 `forbidden` or 409 `conflict` and changes nothing, per `restore_refusal` ("forbidden" | "conflict" | None,
  the default) for the ids in `restore_refusal_ids` (None: every event). Re-inserting a deleted id stays 409.
- Recurring events: `recurrence` (one RRULE with FREQ=DAILY|WEEKLY|MONTHLY|YEARLY, INTERVAL, COUNT, UNTIL, BYDAY
  for weekly rules, WKST; EXDATE lines; other RFC 5545 parts are refused with a 400 saying the stand-in does not
  implement them) on a start/end with `dateTime` + `timeZone` (required, 400 `required` without) or all-day
  `date`. events.list without singleEvents=true returns a series as its master (recurrence and all), and each
  exception as an item of its own (a cancelled one even without showDeleted); with singleEvents=true its
  instances instead: id `<masterId>_<YYYYMMDDTHHMMSSZ>` (UTC start; all-day `<masterId>_<YYYYMMDD>`),
  `recurringEventId`, `originalStartTime`, start/end in the series' zone at the same wall-clock time across DST
  changes, timeMin applied to the instance's end. Instances start before timeMax, or without one before
  EXPANSION_HORIZON (400 days) after the later of now and timeMin; an incremental listing expands a changed
  series within the window of the full listing its token descends from. events.get/update/patch/delete accept an
  instance id: a changed instance becomes an exception (own times, `updated`, etag), a deleted one a cancelled
  exception. Incremental listings with singleEvents=true list a changed series as all its instances (an edited
  or deleted master changes every one) and a changed exception as its instance; without it, masters and
  exceptions as themselves. Not imitated: RDATE/EXRULE, BYMONTHDAY and the other BY* parts, numbered BYDAY;
  events.instances; a master edit that drops occurrences does not list them as cancelled, and exceptions keep
  their own copy of every field (Google carries unchanged master fields over to them).
- Push notifications: events.watch (`{id` ≤ 64 chars of [A-Za-z0-9/_+=-], `type` web_hook (or webhook),
  `address` https://, `token`? ≤ 256 chars, `params.ttl`?}) answers `api#channel` with `resourceId` (opaque,
  stable per calendar and query), `resourceUri`, `token` and `expiration` (ms since the epoch, as a string;
  CHANNEL_DEFAULT_TTL a week, a longer ttl cut to CHANNEL_MAX_TTL, 30 days); 400 `push.webhookUrlNotHttps`,
  `channelIdNotUnique` (while the id's channel is live or lost), `invalid`, `required`. It counts as a calendar
  request. Then the stand-in POSTs notifications: `sync` (message number 1) right after the watch, `exists` on
  every change to the calendar's events by anyone, message numbers increasing per channel; empty body,
  headers X-Goog-Channel-ID, X-Goog-Channel-Token (only when the channel has one), X-Goog-Channel-Expiration
  (RFC 1123), X-Goog-Resource-ID, X-Goog-Resource-URI, X-Goog-Resource-State, X-Goog-Message-Number. The stand-in
  plays the operator's TLS terminator too: `https://127.0.0.1:PORT/path` is delivered as plain
  `http://127.0.0.1:PORT/path`, and only loopback addresses (127.0.0.1, localhost, ::1) are ever contacted;
  others are recorded as not delivered. Delivery is asynchronous (a few threads, a channel always on the same
  one, so in order per channel), never under the stand-in's lock, NOTIFICATION_TIMEOUT (2 s) per attempt, and
  never after the channel expired, was stopped or lost. channels.stop (`{id, resourceId}`) answers 204; an
  unknown, stopped or expired channel, or a wrong resourceId, 404 `notFound`. Not imitated: `not_exists`,
  Google's retries of notifications answered 500/502/503/504, certificate checks, channels outliving their
  expiration for stop.
- Test controls: latency, injected faults (HTTP errors, dropping the connection after the operation was
  committed, slow answers), either counted (inject) or drawn at random for a share of requests (chaos), a
  record of every request and the fault it got; for push: channels(), notifications() (every attempt: channel,
  state, message number, URL, HTTP status or error), pause_notifications()/resume_notifications(),
  lose_channel() (Google silently stops sending), expire_channels().
"""

from __future__ import annotations

import base64
import contextlib
import copy
import email.utils
import hashlib
import hmac
import html
import http.client
import itertools
import json
import math
import queue
import random
import re
import secrets
import socket
import threading
import time
import urllib.parse
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tests.standins.service import LocalService

CALENDAR_EVENTS_SCOPE = "https://www.googleapis.com/auth/calendar.events"
CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar"
OPENID_SCOPE = "openid"
USERINFO_EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
USERINFO_PROFILE_SCOPE = "https://www.googleapis.com/auth/userinfo.profile"
API_PATH = "/calendar/v3/"
TOKEN_PATH = "/token"
AUTH_PATH = "/o/oauth2/auth"
APPROVAL_PATH = "/o/oauth2/approval"
DEFAULT_TIME_ZONE = "Europe/London"
ID_TOKEN_ISSUER = "https://accounts.google.com"
# RFC 6749 recommends at most 10 minutes for an authorization code; Google keeps to it.
AUTHORIZATION_CODE_LIFETIME = 600.0
# A refresh token granted to a project in "Testing" publishing status lives 7 days; Google announces it as one
# second less, as it does with its 3599 s access tokens.
TESTING_REFRESH_TOKEN_LIFETIME = 7 * 24 * 3600
# Google keeps at most this many live refresh tokens per account and OAuth client; the oldest dies first.
MAX_LIVE_REFRESH_TOKENS = 100
RATE_WINDOW_SECONDS = 60.0
DEFAULT_MAX_RESULTS = 250
MAX_MAX_RESULTS = 2500
# How far a recurring series is expanded into instances (singleEvents=true) when the listing has no timeMax:
# instances starting up to this long after the later of now and the listing's timeMin (an incremental listing
# uses the window of the full listing its sync token descends from). Google expands further; a stand-in needs a
# bound, and a clinic's diary needs about a year.
EXPANSION_HORIZON = timedelta(days=400)
# events.watch: a channel lives `params.ttl` seconds, a week unless asked otherwise. Google documents no maximum
# for Calendar channels; the stand-in caps a longer ttl at 30 days without an error, as Google is seen to.
CHANNEL_DEFAULT_TTL = 604_800
CHANNEL_MAX_TTL = 2_592_000
CHANNEL_MAX_ID_LENGTH = 64
CHANNEL_MAX_TOKEN_LENGTH = 256
# Seconds the stand-in waits for a notification's receiver to connect and answer.
NOTIFICATION_TIMEOUT = 2.0
# The project the stand-in's OAuth client belongs to, as Google names it in channels.stop's 404.
PROJECT_NUMBER = "123456789012"
NOTIFICATION_USER_AGENT = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)"

_EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
_CHANNEL_ID = re.compile(r"[A-Za-z0-9/_+=-]+")
_CHANNEL_TYPES = frozenset({"web_hook", "webhook"})  # the discovery document names both spellings
# Notification threads: a channel always goes to the same one, so its notifications arrive in order.
_DELIVERY_WORKERS = 4
_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"  # base32hex, lower case: what Google's own ids use
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})?", re.IGNORECASE)
_DATE_TIME_WITH_OFFSET = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})", re.I)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_STATUSES = ("confirmed", "tentative", "cancelled")
# Google answers the short OpenID Connect names with the userinfo URLs, and adds "openid" to either of them.
_SCOPE_ALIASES = {"email": USERINFO_EMAIL_SCOPE, "profile": USERINFO_PROFILE_SCOPE}
_CALENDAR_WRITE_SCOPES = frozenset({CALENDAR_SCOPE, CALENDAR_EVENTS_SCOPE})
_CALENDAR_READ_SCOPES = _CALENDAR_WRITE_SCOPES | {CALENDAR_SCOPE + ".readonly", CALENDAR_EVENTS_SCOPE + ".readonly"}
_KNOWN_SCOPES = _CALENDAR_READ_SCOPES | {OPENID_SCOPE, USERINFO_EMAIL_SCOPE, USERINFO_PROFILE_SCOPE}
# Desktop clients may redirect to the loopback interface on any port, over plain http.
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# The out-of-band copy-the-code flow, blocked by Google since 2022-2023.
_OOB_REDIRECT_URIS = frozenset({"urn:ietf:wg:oauth:2.0:oob", "urn:ietf:wg:oauth:2.0:oob:auto", "oob"})
_PROMPTS = frozenset({"none", "consent", "select_account"})
_CODE_CHALLENGE_METHODS = frozenset({"S256", "plain"})
# Fields the server owns: a client may send them, but they never overwrite the stored values.
_SERVER_FIELDS = frozenset(
    {
        "kind",
        "etag",
        "id",
        "status",
        "htmlLink",
        "created",
        "updated",
        "creator",
        "organizer",
        "iCalUID",
        "sequence",
        "recurringEventId",  # an instance's, immutable
        "originalStartTime",  # an instance's, immutable
    }
)
# events.list parameters Google refuses to combine with syncToken.
_NOT_WITH_SYNC_TOKEN = (
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
)
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    410: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_USAGE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"})
_DEFAULT_MESSAGES = {
    "backendError": "Backend Error",
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User Rate Limit Exceeded",
    "quotaExceeded": "Calendar usage limits exceeded.",
    "forbidden": "Forbidden",
    "conflict": "Conflict",
    "badRequest": "Bad Request",
    "notFound": "Not Found",
    "invalid": "Invalid Value",
    "required": "Required",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in saw it.

    `path` is the URL path as sent (percent-encoded, no query string); `query` is the raw query string.
    `account` is the Google account the credential belongs to (None when it names none).
    `status` is what was answered: 0 while unanswered, or when the response was dropped or could not be written.
    `fault` is the fault the request was given (injected or drawn by chaos), None for an undisturbed one.
    """

    method: str
    path: str
    account: str | None
    status: int
    query: str = ""
    fault: Fault | None = None
    at: float = field(default=0.0, compare=False)  # time.monotonic() when it arrived (not part of equality)


FaultKind = Literal["http", "drop_after_commit", "delay", "late"]


@dataclass(frozen=True)
class Fault:
    """Something going wrong at Google for one calendar request; build one with the class methods.

    - `Fault.error(503, "backendError")`: answer that error instead of executing the request
      (`retry_after=` adds a Retry-After header, as Google's front end sometimes sends with 429 and 503).
    - `Fault.drop_after_commit()`: execute the request, then close the connection without answering.
    - `Fault.delay(2.0)`: execute the request, then wait that long before answering (client time-outs).
    - `Fault.late(3.0)`: wait that long, then execute the request and answer: a request Google carries out after
      the client gave up on it (and may have sent a newer one).
    """

    kind: FaultKind
    status: int = 0
    reason: str = ""
    message: str = ""
    seconds: float = 0.0
    retry_after: int | None = None

    @classmethod
    def error(cls, status: int, reason: str, message: str | None = None, *, retry_after: int | None = None) -> Fault:
        """An HTTP error in Google's JSON shape, e.g. (500, "backendError"), (429, "rateLimitExceeded"),
        (403, "rateLimitExceeded"), (403, "quotaExceeded"), (403, "forbidden"), (400, "badRequest");
        `retry_after` (seconds) is sent as a Retry-After header."""
        return cls(
            "http",
            status=status,
            reason=reason,
            message=message or _DEFAULT_MESSAGES.get(reason, reason),
            retry_after=retry_after,
        )

    @classmethod
    def drop_after_commit(cls) -> Fault:
        """Perform the operation, then close the socket without answering."""
        return cls("drop_after_commit")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Perform the operation, then sleep `seconds` before answering."""
        return cls("delay", seconds=seconds)

    @classmethod
    def late(cls, seconds: float) -> Fault:
        """Sleep `seconds`, then perform the operation and answer (if the client still listens)."""
        return cls("late", seconds=seconds)


RestoreRefusal = Literal["forbidden", "conflict"]
ChannelState = Literal["live", "stopped", "expired", "lost"]


@dataclass(frozen=True)
class Channel:
    """A push notification channel made by events.watch, as the stand-in knows it.

    `expiration` is in milliseconds since the epoch (what the watch answer says, as a number). `state`: "live"
    (notifications are sent), "stopped" (channels.stop), "expired" (its expiration passed, or expire_channels()),
    "lost" (lose_channel(): Google stopped sending without telling anyone; stop still finds it).
    """

    id: str
    resource_id: str
    resource_uri: str
    account: str
    calendar_id: str
    address: str
    token: str | None
    expiration: int
    state: ChannelState


@dataclass(frozen=True)
class Notification:
    """One notification the stand-in POSTed (or tried to) to a channel's address.

    `url` is where it went: the channel's https:// address as plain http:// (the stand-in plays the operator's TLS
    terminator too). `status` is the HTTP status the receiver answered, None when there was no answer; then
    `error` says why (refused, timed out, or an address off this machine, which is never contacted).
    """

    channel_id: str
    resource_id: str
    state: str  # "sync" | "exists"
    message_number: int
    url: str
    status: int | None
    error: str | None = None
    at: float = 0.0  # time.monotonic() when the attempt ended


class _ApiError(Exception):
    """A Calendar API error answer, raised anywhere inside request handling."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        domain: str | None = None,
        location: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.domain = domain
        self.location = location
        self.headers = dict(headers or {})

    def reply(self) -> _Reply:
        return _Reply(
            self.status,
            google_error(self.status, self.reason, self.message, domain=self.domain, location=self.location),
            self.headers,
        )


def google_error(
    status: int,
    reason: str,
    message: str,
    *,
    domain: str | None = None,
    location: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """An error body as Google APIs send it: {"error": {"code", "message", "errors": [...], "status"}}."""
    detail: dict[str, Any] = {
        "domain": domain or ("usageLimits" if reason in _USAGE_LIMIT_REASONS else "global"),
        "reason": reason,
        "message": message,
    }
    if location is not None:
        detail["locationType"], detail["location"] = location
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [detail],
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
        }
    }


@dataclass
class _Reply:
    status: int
    body: Any = None  # JSON-serialisable, or a str sent as it is (an HTML page); None means an empty body
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=UTF-8"

    def payload(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


class _OAuthError(Exception):
    """An OAuth token endpoint error answer: {"error", "error_description"} with an HTTP status."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description


class _AuthorizationPageError(Exception):
    """An authorization request Google refuses with an error page in the browser (no redirect to the client)."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message

    def reply(self) -> _Reply:
        return _page(
            self.status,
            f"Error {self.status}: {self.error}",
            ["Access blocked: Authorization Error", self.message, f"Error {self.status}: {self.error}"],
        )


@dataclass
class _Record:
    method: str
    path: str
    query: str
    account: str | None = None
    status: int = 0
    fault: Fault | None = None
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass
class _Calendar:
    id: str
    time_zone: str = DEFAULT_TIME_ZONE
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)  # event id -> change number of its last change


@dataclass
class _Account:
    email: str
    calendars: dict[str, _Calendar] = field(default_factory=dict)
    admitted: deque[float] = field(default_factory=deque)  # monotonic times of admitted calendar requests
    granted: set[str] = field(default_factory=set)  # scopes this account has granted the OAuth client


@dataclass
class _RefreshToken:
    account: str
    scopes: tuple[str, ...] = (CALENDAR_EVENTS_SCOPE,)
    expires_at: float = math.inf  # monotonic; finite for a project in "Testing"
    revoked: bool = False


@dataclass
class _AccessToken:
    account: str
    refresh_token: str | None  # None when the code exchange issued no refresh token
    expires_at: float  # monotonic
    scopes: tuple[str, ...] = (CALENDAR_EVENTS_SCOPE,)


@dataclass(frozen=True)
class _AuthorizationRequest:
    """A valid request to the authorization endpoint, as the client sent it (scopes normalised)."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    offline: bool
    prompts: frozenset[str]
    code_challenge: str | None
    code_challenge_method: str | None
    login_hint: str | None


@dataclass
class _Decision:
    """What the user at the browser does next: sign in as `account` and approve, or deny (account None)."""

    account: str | None
    testing_mode: bool = False


@dataclass
class _AuthorizationCode:
    request: _AuthorizationRequest
    account: str
    with_refresh_token: bool  # offline access and the consent screen was shown
    testing_mode: bool
    expires_at: float  # monotonic


@dataclass
class _SyncToken:
    account: str
    calendar_id: str
    change: int  # changes numbered above this one are "since the token"
    # The time window of the full listing the token descends from: what a changed series is expanded within.
    time_min: datetime | None = None
    time_max: datetime | None = None


@dataclass
class _Page:
    account: str
    calendar_id: str
    items: list[dict[str, Any]]  # full copies, as they stood when the listing began
    offset: int
    max_results: int
    change: int  # the change number when the listing began: its eventual nextSyncToken
    time_min: datetime | None = None
    time_max: datetime | None = None


@dataclass
class _Channel:
    id: str
    resource_id: str
    resource_uri: str
    account: str
    calendar: _Calendar
    address: str
    token: str | None
    expiration: int  # ms since the epoch
    stopped: bool = False
    lost: bool = False
    last_number: int = 0  # X-Goog-Message-Number of the last notification queued

    def state(self, now_ms: int) -> ChannelState:
        if self.stopped:
            return "stopped"
        if self.expiration <= now_ms:
            return "expired"
        return "lost" if self.lost else "live"

    def public(self, now_ms: int) -> Channel:
        return Channel(
            self.id,
            self.resource_id,
            self.resource_uri,
            self.account,
            self.calendar.id,
            self.address,
            self.token,
            self.expiration,
            self.state(now_ms),
        )


@dataclass(frozen=True)
class _Delivery:
    channel_id: str
    state: str
    number: int


@dataclass
class _PendingFault:
    fault: Fault
    remaining: int
    method: str | None
    path_contains: str | None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path_contains is None or (
            self.path_contains in path or self.path_contains in urllib.parse.unquote(path)
        )


@dataclass
class _Chaos:
    """Random faults: each matching calendar request gets one with probability `rate`, drawn by `weights`."""

    rate: float
    faults: tuple[Fault, ...]
    weights: tuple[float, ...]
    rng: random.Random
    method: str | None

    def draw(self, method: str) -> Fault | None:
        if self.method is not None and self.method != method:
            return None
        if self.rng.random() >= self.rate:
            return None
        return self.rng.choices(self.faults, weights=self.weights)[0]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's listen backlog of 5 overflows when many clients connect at once while the accepting
    # thread waits for the GIL, and the kernel then resets connections: Google's front end never does.
    request_queue_size = 128

    def __init__(self, standin: GoogleStandIn) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.standin = standin
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End every open keep-alive connection, so their handler threads finish."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the delayed-ACK stall
    server_version = "ESF"  # what Google's front end calls itself
    sys_version = ""

    def do_GET(self) -> None:
        self._standin().serve(self)

    def do_POST(self) -> None:
        self._standin().serve(self)

    def do_PUT(self) -> None:
        self._standin().serve(self)

    def do_PATCH(self) -> None:
        self._standin().serve(self)

    def do_DELETE(self) -> None:
        self._standin().serve(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _standin(self) -> GoogleStandIn:
        return cast(_Server, self.server).standin

    def read_body(self) -> bytes:
        """The request body, by Content-Length or chunked transfer coding."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, reply: _Reply) -> bool:
        """Write `reply`; False when the client had already gone."""
        payload = reply.payload()
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.status != 204:
                if reply.body is not None:
                    self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return False
        return True


class GoogleStandIn(LocalService):
    """Google Calendar API v3 and Google's OAuth token endpoint on 127.0.0.1, in a background thread.

    Use as a context manager (or call start()/stop()). Accounts, tokens and calendars are created with
    add_account(); everything else is driven through HTTP by the real client libraries. For the
    authorization-code flow the test plays the user: consent() or deny_consent() decides what the next
    browser visit to `auth_uri` does.
    """

    def __init__(
        self,
        *,
        client_id: str = "test-client-id",
        client_secret: str = "test-client-secret",
        access_token_lifetime: float = 3600.0,
        authorization_code_lifetime: float = AUTHORIZATION_CODE_LIFETIME,
        requests_per_minute: int = 600,
        project_requests_per_minute: int = 10_000,
        latency: float = 0.0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_token_lifetime = access_token_lifetime
        #: Seconds an authorization code can be exchanged for; settable at runtime.
        self.authorization_code_lifetime = authorization_code_lifetime
        #: Calendar requests each account may make in any 60 s window; settable at runtime.
        self.requests_per_minute = requests_per_minute
        #: Calendar requests the whole project (every account) may make in any 60 s window; settable at runtime.
        self.project_requests_per_minute = project_requests_per_minute
        #: Seconds to wait before answering every calendar request; settable at runtime.
        self.latency = latency
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._accounts: dict[str, _Account] = {}
        self._refresh_tokens: dict[str, _RefreshToken] = {}
        self._access_tokens: dict[str, _AccessToken] = {}
        self._sync_tokens: dict[str, _SyncToken] = {}
        self._pages: dict[str, _Page] = {}
        self._codes: dict[str, _AuthorizationCode] = {}
        self._decision: _Decision | None = None
        #: The registered redirect URIs of a Web application client; None: a desktop client (loopback, any port).
        self.web_redirect_uris: frozenset[str] | None = None
        #: Show a consent page (Allow / Cancel) on the decided visit instead of redirecting at once; settable.
        self.consent_screen = False
        self._screens: dict[str, tuple[_AuthorizationRequest, _Decision]] = {}
        self._faults: list[_PendingFault] = []
        self._chaos: _Chaos | None = None
        self._records: list[_Record] = []
        self._admitted: deque[float] = deque()  # monotonic times of the project's admitted calendar requests
        self._change = 0
        #: Deleted events in listings (incremental, or showDeleted) carry only kind, etag, id and status (and an
        #: instance's recurringEventId and originalStartTime), as Google may send them; False lists full copies.
        #: Settable at runtime.
        self.minimal_deletions = True
        self._restore_refusal: RestoreRefusal | None = None
        #: The event ids restore_refusal applies to; None means every event. Settable at runtime.
        self.restore_refusal_ids: set[str] | None = None
        self._channels: dict[str, _Channel] = {}
        self._notifications: list[Notification] = []
        self._delivery_queues: list[queue.SimpleQueue[_Delivery | None]] = []
        self._delivery_threads: list[threading.Thread] = []
        self._delivery = threading.Condition()
        self._delivery_paused = False

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on a free port of 127.0.0.1 and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the Google stand-in is already running")
        self._stopping.clear()
        server = _Server(self)
        self._port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="google-standin", daemon=True)
        self._thread.start()
        self._delivery_queues = [queue.SimpleQueue() for _ in range(_DELIVERY_WORKERS)]
        self._delivery_threads = [
            threading.Thread(target=self._deliver_forever, args=(jobs,), name=f"google-push-{n}", daemon=True)
            for n, jobs in enumerate(self._delivery_queues)
        ]
        for worker in self._delivery_threads:
            worker.start()

    def stop(self) -> None:
        """Stop serving, end open connections and release the port; safe to call more than once."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._stopping.set()  # wakes requests sleeping for latency or a delay fault
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        with self._delivery:
            self._delivery.notify_all()  # wakes paused notification threads
        for jobs in self._delivery_queues:
            jobs.put(None)
        for worker in self._delivery_threads:
            worker.join(timeout=NOTIFICATION_TIMEOUT + 3)
        self._delivery_queues, self._delivery_threads = [], []

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        if not self._port:
            raise RuntimeError("the Google stand-in has not been started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_endpoint(self) -> str:
        """The value for client_options={"api_endpoint": ...}: the whole Calendar API base URL."""
        return self.base_url + API_PATH

    @property
    def token_uri(self) -> str:
        """The OAuth token endpoint, for Credentials(token_uri=...) and a client config's "token_uri"."""
        return self.base_url + TOKEN_PATH

    @property
    def auth_uri(self) -> str:
        """The OAuth authorization endpoint (Google's /o/oauth2/auth), for a client config's "auth_uri"."""
        return self.base_url + AUTH_PATH

    # -- test controls -----------------------------------------------------------------------------

    def add_account(self, account: str, calendars: Iterable[str] = (), *, time_zone: str | None = None) -> str:
        """Create the Google account `account` (an email) with its primary calendar (whose id is the email)
        and the named extra calendars, and return a new refresh token for it (so the account counts as having
        granted the calendar.events scope). Adding again adds calendars.

        New calendars are in Europe/London unless `time_zone` (an IANA name) says otherwise; a `time_zone`
        also moves the already existing calendars named in this call.
        """
        if time_zone is not None:
            ZoneInfo(time_zone)  # refuses names that are not IANA zones
        with self._lock:
            acct = self._accounts.setdefault(account, _Account(account))
            for calendar_id in (account, *calendars):
                calendar = acct.calendars.setdefault(calendar_id, _Calendar(calendar_id))
                if time_zone is not None:
                    calendar.time_zone = time_zone
            acct.granted.add(CALENDAR_EVENTS_SCOPE)
            return self._issue_refresh_token(account)

    def issue_refresh_token(self, account: str) -> str:
        """A new refresh token for an existing account (as if the user consented again)."""
        with self._lock:
            self._account(account).granted.add(CALENDAR_EVENTS_SCOPE)
            return self._issue_refresh_token(account)

    def revoke(self, refresh_token: str) -> None:
        """Revoke a refresh token: refreshing with it gives invalid_grant, its access tokens get 401."""
        with self._lock:
            self._refresh_tokens[refresh_token].revoked = True

    def consent(self, account: str, *, testing_mode: bool = False) -> None:
        """The next valid visit to `auth_uri` is `account` signing in and approving every requested scope.

        One decision serves one authorization request; a later call replaces an unused one. `testing_mode`
        is the OAuth client's project being in "Testing" publishing status: the refresh token this consent
        leads to lives 7 days (the token answer says `refresh_token_expires_in`; expire_refresh_tokens() ends
        those days early).
        """
        with self._lock:
            self._account(account)
            self._decision = _Decision(account, testing_mode)

    def make_web_client(self, redirect_uris: Iterable[str], *, consent_screen: bool = True) -> None:
        """The OAuth client becomes a "Web application" client with these registered redirect URIs."""
        with self._lock:
            self.web_redirect_uris = frozenset(redirect_uris)
            self.consent_screen = consent_screen

    def deny_consent(self) -> None:
        """The next valid visit to `auth_uri` is the user pressing Cancel: the browser is redirected to the
        client with `error=access_denied`."""
        with self._lock:
            self._decision = _Decision(None)

    def remove_access(self, account: str) -> None:
        """The user removes the app's access in their Google account settings: every refresh and access token
        of the account dies, and the next consent counts as the first (so it yields a refresh token again)."""
        with self._lock:
            self._account(account).granted.clear()
            for refresh in self._refresh_tokens.values():
                if refresh.account == account:
                    refresh.revoked = True
            for token in self._access_tokens.values():
                if token.account == account:
                    token.expires_at = -math.inf

    def expire_authorization_codes(self) -> None:
        """Make every authorization code issued so far expire now (as if its 10 minutes had passed)."""
        with self._lock:
            for code in self._codes.values():
                code.expires_at = -math.inf

    def expire_refresh_tokens(self, account: str | None = None) -> None:
        """Make the time-limited refresh tokens (consented in testing mode) of `account`, or of everyone, expire
        now, as 7 days passing would: refreshing then gives invalid_grant. Unlimited tokens are unaffected."""
        with self._lock:
            for refresh in self._refresh_tokens.values():
                if math.isfinite(refresh.expires_at) and (account is None or refresh.account == account):
                    refresh.expires_at = -math.inf

    def expire_access_tokens(self, account: str | None = None) -> None:
        """Make every existing access token (of `account`, or of everyone) expire now."""
        with self._lock:
            for token in self._access_tokens.values():
                if account is None or token.account == account:
                    token.expires_at = -math.inf

    def expire_sync_tokens(self) -> None:
        """Invalidate every sync token issued so far: using one gives 410 fullSyncRequired."""
        with self._lock:
            self._sync_tokens.clear()

    def events(self, account: str, calendar_id: str = "primary") -> list[dict[str, Any]]:
        """Deep copies of the stored events of one calendar, cancelled ones included, in creation order."""
        with self._lock:
            calendar = self._accounts[account].calendars[account if calendar_id == "primary" else calendar_id]
            return copy.deepcopy(list(calendar.events.values()))

    def requests(self) -> list[RecordedRequest]:
        """Every request received (token endpoint and calendar), in arrival order."""
        with self._lock:
            return [
                RecordedRequest(r.method, r.path, r.account, r.status, r.query, r.fault, r.at) for r in self._records
            ]

    def peak_requests(self, account: str | None = None, window: float = RATE_WINDOW_SECONDS) -> int:
        """The most calendar requests (of every kind; of `account`, or of all accounts) that arrived in any
        `window` seconds: what Google's sliding-window quotas measure."""
        times = sorted(r.at for r in self.requests() if r.path.startswith(API_PATH) and account in (None, r.account))
        most, start = 0, 0
        for end, at in enumerate(times):
            while at - times[start] >= window:
                start += 1
            most = max(most, end - start + 1)
        return most

    def inject(
        self, fault: Fault, *, times: int = 1, method: str | None = None, path_contains: str | None = None
    ) -> None:
        """Give the next `times` calendar requests matching `method` and `path_contains` this fault.

        Faults are consumed in the order they were injected; a request gets at most one.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.append(_PendingFault(fault, times, method.upper() if method else None, path_contains))

    def chaos(
        self,
        rate: float,
        faults: Sequence[Fault] | Mapping[Fault, float],
        *,
        seed: int,
        method: str | None = None,
    ) -> None:
        """From now on, give each calendar request (of `method`, or any) a fault with probability `rate`, drawn
        from `faults` (uniformly, or by the weights of a mapping), until calm().

        A counted fault budget (inject) tells a test exactly what happens; a rate is what an unreliable Google
        looks like under load, where which request suffers is a matter of luck. The draws come from
        `random.Random(seed)` in arrival order, so a seed names one sequence of faults (which request meets
        which of them still depends on thread timing). Injected faults go first; a request gets at most one.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        weighted = list(faults.items()) if isinstance(faults, Mapping) else [(fault, 1.0) for fault in faults]
        if not weighted or any(weight < 0 for _, weight in weighted) or sum(w for _, w in weighted) <= 0:
            raise ValueError("faults must name at least one fault, with weights >= 0 and not all 0")
        with self._lock:
            self._chaos = _Chaos(
                rate,
                tuple(fault for fault, _ in weighted),
                tuple(weight for _, weight in weighted),
                random.Random(seed),
                method.upper() if method else None,
            )

    def calm(self) -> None:
        """End chaos(): from now on only injected faults (if any are left) disturb requests."""
        with self._lock:
            self._chaos = None

    @property
    def restore_refusal(self) -> RestoreRefusal | None:
        """How Google refuses to bring a deleted event back: an update or patch of a cancelled event (or cancelled
        instance) that would make it confirmed or tentative is answered 403 `forbidden` ("forbidden") or 409
        `conflict` ("conflict") and changes nothing; None (the default) restores it. Applies to the ids in
        `restore_refusal_ids`, or to every event while that is None. Settable at runtime."""
        return self._restore_refusal

    @restore_refusal.setter
    def restore_refusal(self, mode: RestoreRefusal | None) -> None:
        if mode not in (None, "forbidden", "conflict"):
            raise ValueError(f"restore_refusal must be None, 'forbidden' or 'conflict', not {mode!r}")
        self._restore_refusal = mode

    def channels(self) -> list[Channel]:
        """Every channel events.watch made, in creation order, with its state now."""
        now_ms = _now_ms()
        with self._lock:
            return [channel.public(now_ms) for channel in self._channels.values()]

    def notifications(self) -> list[Notification]:
        """Every notification attempted so far, in the order the attempts ended."""
        with self._lock:
            return list(self._notifications)

    def pause_notifications(self) -> None:
        """Hold every notification back (queued, in order) until resume_notifications(): Google running late.
        A channel that expires, is stopped or lost meanwhile gets nothing more."""
        with self._delivery:
            self._delivery_paused = True

    def resume_notifications(self) -> None:
        """Send the held notifications and go on sending as changes happen."""
        with self._delivery:
            self._delivery_paused = False
            self._delivery.notify_all()

    def lose_channel(self, channel_id: str) -> None:
        """Google silently stops sending on a channel (nobody is told; channels.stop still finds it)."""
        with self._lock:
            self._channels[channel_id].lost = True

    def expire_channels(self, channel_ids: Iterable[str] | None = None) -> None:
        """Make the named live channels (or every one) expire now, as their `expiration` passing would: nothing
        more is sent on them, and channels.stop no longer finds them."""
        now_ms = _now_ms()
        with self._lock:
            wanted = None if channel_ids is None else set(channel_ids)
            for channel in self._channels.values():
                if (wanted is None or channel.id in wanted) and channel.expiration > now_ms:
                    channel.expiration = now_ms

    # -- request handling --------------------------------------------------------------------------

    def serve(self, handler: _Handler) -> None:
        """Answer one HTTP request (called on the connection's thread)."""
        method = handler.command
        split = urllib.parse.urlsplit(handler.path)
        path = split.path
        record = _Record(method, path, split.query)
        with self._lock:
            self._records.append(record)
        try:
            body = handler.read_body()
        except (ValueError, OSError):
            handler.close_connection = True
            self._answer(handler, record, _ApiError(400, "badRequest", "Bad Request").reply())
            return
        if path == TOKEN_PATH:
            self._answer(
                handler, record, self._token_endpoint(method, body, handler.headers.get("Authorization"), record)
            )
            return
        if path == AUTH_PATH:
            self._answer(handler, record, self._authorization_endpoint(method, split.query, record))
            return
        if path == APPROVAL_PATH:
            self._answer(handler, record, self._approval(method, body, record))
            return
        if not path.startswith(API_PATH):
            self._answer(handler, record, _ApiError(404, "notFound", "Not Found").reply())
            return

        access_token = _bearer(handler.headers.get("Authorization"))
        with self._lock:
            known = self._access_tokens.get(access_token or "")
            record.account = known.account if known is not None else None
        latency = self.latency
        if latency > 0:
            self._stopping.wait(latency)
        fault = self._take_fault(method, path, record)
        if fault is not None and fault.kind == "http":
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            self._answer(handler, record, _ApiError(fault.status, fault.reason, fault.message, headers=headers).reply())
            return
        if fault is not None and fault.kind == "late":
            self._stopping.wait(fault.seconds)
        try:
            reply = self._calendar(method, path, split.query, body, access_token)
        except _ApiError as error:
            reply = error.reply()
        if fault is not None and fault.kind == "drop_after_commit":
            handler.close_connection = True  # the server closes the socket; nothing was written
            return
        if fault is not None and fault.kind == "delay":
            self._stopping.wait(fault.seconds)
        self._answer(handler, record, reply)

    def _answer(self, handler: _Handler, record: _Record, reply: _Reply) -> None:
        # Recorded before writing, so a client that has read the answer always finds it recorded.
        with self._lock:
            record.status = reply.status
        if not handler.send(reply):
            with self._lock:
                record.status = 0

    def _take_fault(self, method: str, path: str, record: _Record) -> Fault | None:
        with self._lock:
            for pending in self._faults:
                if pending.matches(method, path):
                    pending.remaining -= 1
                    if pending.remaining == 0:
                        self._faults.remove(pending)
                    record.fault = pending.fault
                    return pending.fault
            if self._chaos is not None:
                record.fault = self._chaos.draw(method)
            return record.fault

    # OAuth authorization endpoint (what the user's browser visits)

    def _authorization_endpoint(self, method: str, query: str, record: _Record) -> _Reply:
        """Google's consent screen without a screen: a refusal page for an invalid request, a sign-in page when
        the test has not decided what the user does, else a 302 back to the client with a code or an error."""
        if method != "GET":
            return _page(405, "Error 405", ["Method not allowed."])
        try:
            request = self._authorization_request(urllib.parse.parse_qs(query, keep_blank_values=True))
        except _AuthorizationPageError as error:
            return error.reply()
        if "none" in request.prompts:
            # No interaction allowed, and the stand-in has no signed-in browser session to approve silently.
            return _redirect(request.redirect_uri, [("error", "interaction_required"), ("state", request.state)])
        with self._lock:
            decision, self._decision = self._decision, None
            if decision is None:
                return _sign_in_page(request.login_hint)
            if decision.account is None:
                return _redirect(request.redirect_uri, [("error", "access_denied"), ("state", request.state)])
            if self.consent_screen:
                screen = secrets.token_urlsafe(16)
                self._screens[screen] = (request, decision)
                return _consent_page(screen, decision.account, request.scopes)
            return self._grant_code(request, decision, record)

    def _approval(self, method: str, body: bytes, record: _Record) -> _Reply:
        """The consent page's answer: Allow redirects with a code, Cancel with error=access_denied."""
        if method != "POST":
            return _page(405, "Error 405", ["Method not allowed."])
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
        with self._lock:
            screen = self._screens.pop(form.get("screen", ""), None)
            if screen is None:
                return _page(400, "Error 400", ["This consent page has expired. Go back and try again."])
            request, decision = screen
            if form.get("action") != "allow":
                return _redirect(request.redirect_uri, [("error", "access_denied"), ("state", request.state)])
            return self._grant_code(request, decision, record)

    def _grant_code(self, request: _AuthorizationRequest, decision: _Decision, record: _Record) -> _Reply:
        """The user approved: a code for the client (called under the lock)."""
        assert decision.account is not None
        account = self._account(decision.account)
        record.account = account.email
        # Google shows the consent screen when asked to, or when a scope has not been granted before; only
        # then does offline access come with a refresh token.
        consent_shown = "consent" in request.prompts or not set(request.scopes) <= account.granted
        account.granted.update(request.scopes)
        code = _new_authorization_code()
        self._codes[code] = _AuthorizationCode(
            request,
            account.email,
            with_refresh_token=request.offline and consent_shown,
            testing_mode=decision.testing_mode,
            expires_at=time.monotonic() + self.authorization_code_lifetime,
        )
        return _redirect(
            request.redirect_uri,
            [
                ("state", request.state),
                ("code", code),
                ("scope", " ".join(request.scopes)),
                ("authuser", "0"),
                ("prompt", "consent" if consent_shown else "none"),
            ],
        )

    def _authorization_request(self, params: dict[str, list[str]]) -> _AuthorizationRequest:
        """Validate an authorization request in Google's order: the client, where to send the answer, then the rest."""

        def one(name: str) -> str | None:
            values = params.get(name)
            return values[0] if values else None

        client_id = one("client_id")
        if not client_id:
            raise _AuthorizationPageError(400, "invalid_request", "Missing required parameter: client_id")
        if client_id != self.client_id:
            raise _AuthorizationPageError(401, "invalid_client", "The OAuth client was not found.")
        redirect_uri = one("redirect_uri")
        if not redirect_uri:
            raise _AuthorizationPageError(400, "invalid_request", "Missing required parameter: redirect_uri")
        if redirect_uri in _OOB_REDIRECT_URIS:
            raise _AuthorizationPageError(
                400,
                "invalid_request",
                "The out-of-band (OOB) flow has been blocked in order to keep users secure.",
            )
        if self.web_redirect_uris is not None:
            if redirect_uri not in self.web_redirect_uris:
                raise _AuthorizationPageError(
                    400,
                    "redirect_uri_mismatch",
                    f"You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 policy. If"
                    f" you're the app developer, register the redirect URI in the Google Cloud Console."
                    f" Request details: redirect_uri={redirect_uri}",
                )
        elif not _is_loopback_redirect(redirect_uri):
            raise _AuthorizationPageError(
                400,
                "redirect_uri_mismatch",
                f"The redirect URI in the request, {redirect_uri}, can only be a loopback address for a desktop"
                " OAuth client.",
            )
        response_type = one("response_type")
        if not response_type:
            raise _AuthorizationPageError(400, "invalid_request", "Required parameter is missing: response_type")
        if response_type != "code":
            raise _AuthorizationPageError(400, "unsupported_response_type", f"Invalid response_type: {response_type}")
        requested = (one("scope") or "").split()
        if not requested:
            raise _AuthorizationPageError(400, "invalid_request", "Missing required parameter: scope")
        unknown = [scope for scope in requested if _SCOPE_ALIASES.get(scope, scope) not in _KNOWN_SCOPES]
        if unknown:
            raise _AuthorizationPageError(
                400, "invalid_scope", f"Some requested scopes were invalid. {{invalid=[{', '.join(unknown)}]}}"
            )
        access_type = one("access_type") or "online"
        if access_type not in ("online", "offline"):
            raise _AuthorizationPageError(400, "invalid_request", f"Invalid access_type: {access_type}")
        prompts = frozenset((one("prompt") or "").split())
        if not prompts <= _PROMPTS or ("none" in prompts and len(prompts) > 1):
            raise _AuthorizationPageError(400, "invalid_request", f"Invalid prompt: {one('prompt')}")
        challenge, method = one("code_challenge"), one("code_challenge_method")
        if challenge is None and method is not None:
            raise _AuthorizationPageError(400, "invalid_request", "Missing code_challenge.")
        if challenge is not None:
            method = method or "plain"  # RFC 7636's default, which Google follows
            if method not in _CODE_CHALLENGE_METHODS:
                raise _AuthorizationPageError(400, "invalid_request", f"Invalid code_challenge_method: {method}")
        return _AuthorizationRequest(
            client_id=client_id,
            redirect_uri=redirect_uri,
            scopes=_normalise_scopes(requested),
            state=one("state"),
            offline=access_type == "offline",
            prompts=prompts,
            code_challenge=challenge,
            code_challenge_method=method,
            login_hint=one("login_hint"),
        )

    # OAuth token endpoint

    def _token_endpoint(self, method: str, body: bytes, authorization: str | None, record: _Record) -> _Reply:
        headers = {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate", "Pragma": "no-cache"}
        if method != "POST":
            return _Reply(405, {"error": "invalid_request", "error_description": "Method not allowed."}, headers)
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = _basic(authorization)
        if basic is not None:
            client_id, client_secret = basic
        try:
            with self._lock:
                record.account = self._account_in(form)
                self._authenticate_client(client_id, client_secret)
                grant_type = form.get("grant_type")
                if grant_type == "refresh_token":
                    answer = self._refresh_grant(form)
                elif grant_type == "authorization_code":
                    answer = self._code_grant(form, str(client_id))
                else:
                    raise _OAuthError(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type or ''}")
        except _OAuthError as error:
            return _Reply(error.status, {"error": error.error, "error_description": error.description}, headers)
        return _Reply(200, answer, headers)

    def _account_in(self, form: Mapping[str, str]) -> str | None:
        """The account a token request is about, for the record (whether or not the request succeeds)."""
        refresh = self._refresh_tokens.get(form.get("refresh_token", ""))
        if refresh is not None:
            return refresh.account
        code = self._codes.get(form.get("code", ""))
        return code.account if code is not None else None

    def _authenticate_client(self, client_id: str | None, client_secret: str | None) -> None:
        if not client_id:
            raise _OAuthError(400, "invalid_request", "Could not determine client ID from request.")
        if client_id != self.client_id:
            raise _OAuthError(401, "invalid_client", "The OAuth client was not found.")
        if client_secret != self.client_secret:
            raise _OAuthError(401, "invalid_client", "Unauthorized")

    def _refresh_grant(self, form: Mapping[str, str]) -> dict[str, Any]:
        if "refresh_token" not in form:
            raise _OAuthError(400, "invalid_request", "Missing required parameter: refresh_token")
        refresh = self._refresh_tokens.get(form["refresh_token"])
        if refresh is None or refresh.revoked or refresh.expires_at <= time.monotonic():
            raise _OAuthError(400, "invalid_grant", "Token has been expired or revoked.")
        scopes = _normalise_scopes(form["scope"].split()) if form.get("scope") else refresh.scopes
        if not set(scopes) <= set(refresh.scopes):
            raise _OAuthError(400, "invalid_scope", "Bad Request")
        return self._tokens(refresh.account, scopes, form["refresh_token"])

    def _code_grant(self, form: Mapping[str, str], client_id: str) -> dict[str, Any]:
        """Exchange an authorization code. The code is spent by any attempt that names it, successful or not."""
        if not form.get("code"):
            raise _OAuthError(400, "invalid_request", "Missing required parameter: code")
        grant = self._codes.pop(form["code"], None)
        if grant is None or grant.expires_at <= time.monotonic() or grant.request.client_id != client_id:
            raise _OAuthError(400, "invalid_grant", "Bad Request")
        if "redirect_uri" not in form:
            raise _OAuthError(400, "invalid_request", "Missing parameter: redirect_uri")
        if form["redirect_uri"] != grant.request.redirect_uri:
            raise _OAuthError(400, "redirect_uri_mismatch", "Bad Request")
        _check_code_verifier(grant.request, form.get("code_verifier"))
        refresh_token = None
        if grant.with_refresh_token:
            expires_at = time.monotonic() + TESTING_REFRESH_TOKEN_LIFETIME if grant.testing_mode else math.inf
            refresh_token = self._issue_refresh_token(grant.account, grant.request.scopes, expires_at)
        answer = self._tokens(grant.account, grant.request.scopes, refresh_token)
        if refresh_token is not None:
            answer["refresh_token"] = refresh_token
            if grant.testing_mode:
                answer["refresh_token_expires_in"] = TESTING_REFRESH_TOKEN_LIFETIME - 1
        return answer

    def _tokens(self, account: str, scopes: tuple[str, ...], refresh_token: str | None) -> dict[str, Any]:
        """A new access token (and an ID token when `openid` was granted), as the token endpoint answers them."""
        access_token = "ya29." + secrets.token_urlsafe(48)
        self._access_tokens[access_token] = _AccessToken(
            account, refresh_token, time.monotonic() + self.access_token_lifetime, scopes
        )
        answer: dict[str, Any] = {
            "access_token": access_token,
            # Google answers 3599 for its one-hour tokens: the second already begun does not count.
            "expires_in": max(0, math.ceil(self.access_token_lifetime) - 1),
            "scope": " ".join(scopes),
            "token_type": "Bearer",
        }
        if OPENID_SCOPE in scopes:
            answer["id_token"] = self._id_token(account, scopes)
        return answer

    def _id_token(self, account: str, scopes: tuple[str, ...]) -> str:
        """An OpenID Connect ID token with Google's claims, signed HS256 with the client secret (OIDC allows
        that; Google signs RS256 with its published keys, which a stand-in cannot)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ID_TOKEN_ISSUER,
            "azp": self.client_id,
            "aud": self.client_id,
            "sub": _subject(account),
        }
        if USERINFO_EMAIL_SCOPE in scopes:
            claims["email"] = account
            claims["email_verified"] = True
        claims["iat"] = now
        claims["exp"] = now + 3600
        return _jwt_hs256(claims, self.client_secret)

    def _issue_refresh_token(
        self, account: str, scopes: tuple[str, ...] = (CALENDAR_EVENTS_SCOPE,), expires_at: float = math.inf
    ) -> str:
        token = "1//" + secrets.token_urlsafe(48)
        self._refresh_tokens[token] = _RefreshToken(account, scopes, expires_at)
        live = [t for t in self._refresh_tokens.values() if t.account == account and not t.revoked]
        for oldest in live[: max(0, len(live) - MAX_LIVE_REFRESH_TOKENS)]:
            oldest.revoked = True
        return token

    def _account(self, account: str) -> _Account:
        known = self._accounts.get(account)
        if known is None:
            raise KeyError(f"no Google account {account!r}")
        return known

    # Calendar API

    def _calendar(self, method: str, path: str, query: str, body: bytes, access_token: str | None) -> _Reply:
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        segments = [urllib.parse.unquote(s) for s in path[len(API_PATH) :].split("/")]
        # events.watch and channels.stop are POSTs that a read-only scope allows.
        watch = method == "POST" and len(segments) == 4 and segments[0] == "calendars" and segments[3] == "watch"
        stop = method == "POST" and segments == ["channels", "stop"]
        with self._lock:
            token = self._authenticate(access_token)
            _check_calendar_scope(token, "GET" if watch or stop else method)
            account = self._accounts[token.account]
            self._admit(account)
            if stop:
                self._stop_channel(_json_object(body))
                return _Reply(204)
            if len(segments) not in (3, 4) or segments[0] != "calendars" or segments[2] != "events":
                raise _ApiError(404, "notFound", "Not Found")
            calendar = self._calendar_of(account, segments[1])
            if watch:
                return _Reply(200, self._watch(account, calendar, path, query, _json_object(body)))
            if len(segments) == 3:
                if method == "GET":
                    return _Reply(200, self._list(account, calendar, params))
                if method == "POST":
                    return _Reply(200, self._insert(account, calendar, _json_object(body)))
            else:
                event_id = segments[3]
                if method == "GET":
                    return _Reply(200, self._render(calendar, event_id))
                if method == "PUT":
                    return _Reply(200, self._update(calendar, event_id, _json_object(body), patch=False))
                if method == "PATCH":
                    return _Reply(200, self._update(calendar, event_id, _json_object(body), patch=True))
                if method == "DELETE":
                    self._delete(calendar, event_id)
                    return _Reply(204)
            raise _ApiError(404, "notFound", "Not Found")

    def _authenticate(self, access_token: str | None) -> _AccessToken:
        token = self._access_tokens.get(access_token or "")
        if (
            token is None
            or token.expires_at <= time.monotonic()
            or (token.refresh_token is not None and self._refresh_tokens[token.refresh_token].revoked)
            or token.account not in self._accounts
        ):
            raise _ApiError(
                401,
                "authError",
                "Invalid Credentials",
                location=("header", "Authorization"),
                headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
            )
        return token

    def _admit(self, account: _Account) -> None:
        """Count one calendar request against the account's and the project's sliding 60 s windows, or
        refuse it (403 userRateLimitExceeded for the account, rateLimitExceeded for the project)."""
        now = time.monotonic()
        for admitted in (account.admitted, self._admitted):
            while admitted and admitted[0] <= now - RATE_WINDOW_SECONDS:
                admitted.popleft()
        if len(self._admitted) >= self.project_requests_per_minute:
            raise _ApiError(403, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
        if len(account.admitted) >= self.requests_per_minute:
            raise _ApiError(
                403,
                "userRateLimitExceeded",
                "Rate Limit Exceeded",
                domain="usageLimits",
            )
        account.admitted.append(now)
        self._admitted.append(now)

    def _calendar_of(self, account: _Account, calendar_id: str) -> _Calendar:
        calendar = account.calendars.get(account.email if calendar_id == "primary" else calendar_id)
        if calendar is None:
            raise _ApiError(404, "notFound", "Not Found")
        return calendar

    # Events, series and their instances

    def _series(self, event: Mapping[str, Any]) -> _Series | None:
        """The series of a stored recurring event (validated when it was written); None for any other event."""
        try:
            return _series_of(event)
        except _ApiError:
            return None

    def _master_of(self, calendar: _Calendar, instance_id: str) -> tuple[dict[str, Any], _Series, str] | None:
        """The recurring event an instance id names, its series and the id's occurrence stamp."""
        matched = _INSTANCE_ID.fullmatch(instance_id)
        if matched is None:
            return None
        master = calendar.events.get(matched.group(1))
        series = self._series(master) if master is not None else None
        if master is None or series is None:
            return None
        return master, series, matched.group(2)

    def _instance(
        self, calendar: _Calendar, master: Mapping[str, Any], series: _Series, local: datetime
    ) -> dict[str, Any]:
        """One instance of a series as the API shows it: its exception when it has one, else the master's copy at
        that occurrence. Every instance of a cancelled series is cancelled."""
        instance_id = f"{master['id']}_{series.stamp(local)}"
        exception = calendar.events.get(instance_id)
        if exception is not None:
            item = copy.deepcopy(exception)
        else:
            item = {k: copy.deepcopy(v) for k, v in master.items() if k != "recurrence"}
            item["id"] = instance_id
            item["htmlLink"] = f"{self.base_url}/calendar/event?eid={instance_id}"
            item["recurringEventId"] = master["id"]
            item["originalStartTime"] = series.when(local)
            item["start"] = series.when(local)
            item["end"] = series.end_when(local)
        if master["status"] == "cancelled":
            item["status"] = "cancelled"
        return item

    def _render(self, calendar: _Calendar, event_id: str) -> dict[str, Any]:
        """A full copy of an event or instance as events.get answers it (cancelled ones too), else 404."""
        event = calendar.events.get(event_id)
        master = self._master_of(calendar, event_id)
        if master is not None:
            master_event, series, stamp = master
            local = series.occurrence(stamp)
            if local is not None:
                return self._instance(calendar, master_event, series, local)
        if event is None:
            raise _ApiError(404, "notFound", "Not Found")
        return copy.deepcopy(event)

    def _listed(self, item: dict[str, Any]) -> dict[str, Any]:
        """An item as a listing sends it: a deleted one, minimally when `minimal_deletions` is on."""
        if item.get("status") != "cancelled" or not self.minimal_deletions:
            return item
        minimal: dict[str, Any] = {key: item[key] for key in ("kind", "etag", "id", "status") if key in item}
        for key in ("recurringEventId", "originalStartTime"):
            if key in item:
                minimal[key] = item[key]
        return minimal

    def _touch(self, calendar: _Calendar, event: dict[str, Any]) -> None:
        """Stamp a change: new etag and `updated`, a place in the calendar's change order, and an `exists`
        notification for every live channel watching the calendar."""
        self._change += 1
        event["etag"] = f'"{3_000_000_000_000_000 + self._change}"'
        event["updated"] = _rfc3339(datetime.now(UTC))
        calendar.changed[event["id"]] = self._change
        now_ms = _now_ms()
        for channel in self._channels.values():
            if channel.calendar is calendar and channel.state(now_ms) == "live":
                self._queue_notification(channel, "exists")

    def _insert(self, account: _Account, calendar: _Calendar, body: dict[str, Any]) -> dict[str, Any]:
        event_id = body.get("id")
        if event_id is not None and not (isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id)):
            raise _ApiError(400, "invalid", "Invalid resource id value.")
        _check_times(body)
        _series_of(_client_fields(body))
        status = _status_in(body, default="confirmed")
        if status == "cancelled":
            status = "confirmed"
        if event_id is None:
            event_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))
        if event_id in calendar.events:
            raise _ApiError(409, "duplicate", "The requested identifier already exists.")
        now = _rfc3339(datetime.now(UTC))
        event: dict[str, Any] = {
            "kind": "calendar#event",
            "etag": "",
            "id": event_id,
            "status": status,
            "htmlLink": f"{self.base_url}/calendar/event?eid={event_id}",
            "created": now,
            "updated": now,
            "creator": {"email": account.email, "self": True},
            "organizer": {"email": calendar.id, "self": True},
            "iCalUID": body.get("iCalUID") or f"{event_id}@google.com",
            "sequence": 0,
            "reminders": {"useDefault": True},
            "eventType": "default",
        }
        event.update(copy.deepcopy(_client_fields(body)))
        calendar.events[event_id] = event
        self._touch(calendar, event)
        return copy.deepcopy(event)

    def _update(self, calendar: _Calendar, event_id: str, body: dict[str, Any], *, patch: bool) -> dict[str, Any]:
        """events.update/patch. On an instance of a series it makes (or changes) that instance's exception."""
        stored = calendar.events.get(event_id)
        base = self._render(calendar, event_id)
        instance = base.get("recurringEventId") is not None
        kept = {k: v for k, v in base.items() if k in _SERVER_FIELDS}
        if patch:
            fields = _merge({k: v for k, v in base.items() if k not in _SERVER_FIELDS}, _client_fields(body))
        else:
            fields = copy.deepcopy(_client_fields(body))
        if instance:
            fields.pop("recurrence", None)  # instances carry none
        _check_times(fields)
        _series_of(fields)
        updated = {**kept, **fields}
        updated["status"] = _status_in(body, default=base["status"])
        if base["status"] == "cancelled" and updated["status"] != "cancelled":
            self._refuse_restore(event_id)
        updated["sequence"] = int(base.get("sequence", 0)) + 1
        if stored is None:
            stored = calendar.events[event_id] = {}
        stored.clear()
        stored.update(updated)
        self._touch(calendar, stored)
        return copy.deepcopy(stored)

    def _refuse_restore(self, event_id: str) -> None:
        mode = self._restore_refusal
        if mode is None or (self.restore_refusal_ids is not None and event_id not in self.restore_refusal_ids):
            return
        if mode == "forbidden":
            raise _ApiError(403, "forbidden", _DEFAULT_MESSAGES["forbidden"])
        raise _ApiError(409, "conflict", _DEFAULT_MESSAGES["conflict"])

    def _delete(self, calendar: _Calendar, event_id: str) -> None:
        """events.delete: the event (or the instance, as a cancelled exception) is cancelled; its id stays."""
        current = self._render(calendar, event_id)
        if current["status"] == "cancelled":
            raise _ApiError(410, "deleted", "Resource has been deleted")
        event = calendar.events.setdefault(event_id, current)
        event["status"] = "cancelled"
        self._touch(calendar, event)

    def _list(self, account: _Account, calendar: _Calendar, params: dict[str, list[str]]) -> dict[str, Any]:
        def one(name: str) -> str | None:
            values = params.get(name)
            return values[0] if values else None

        max_results = DEFAULT_MAX_RESULTS
        if one("maxResults") is not None:
            try:
                max_results = int(one("maxResults") or "")
            except ValueError:
                raise _ApiError(
                    400, "invalid", "Invalid value for: maxResults", location=("parameter", "maxResults")
                ) from None
            if max_results < 1:
                raise _ApiError(400, "invalid", "Invalid value for: maxResults", location=("parameter", "maxResults"))
            max_results = min(max_results, MAX_MAX_RESULTS)
        single_events = one("singleEvents") == "true"

        page_token = one("pageToken")
        if page_token is not None:
            page = self._pages.pop(page_token, None)
            if page is None or page.account != account.email or page.calendar_id != calendar.id:
                raise _ApiError(400, "invalid", "Invalid page token value.", location=("parameter", "pageToken"))
            if one("maxResults") is not None:
                page.max_results = max_results
        elif one("syncToken") is not None:
            clashing = [name for name in _NOT_WITH_SYNC_TOKEN if name in params]
            if clashing:
                raise _ApiError(
                    400,
                    "invalid",
                    f"Sync token cannot be used with {clashing[0]}.",
                    location=("parameter", "syncToken"),
                )
            sync = self._sync_tokens.get(one("syncToken") or "")
            if sync is None or sync.account != account.email or sync.calendar_id != calendar.id:
                raise _ApiError(
                    410,
                    "fullSyncRequired",
                    "Sync token is no longer valid, a full sync is required.",
                    domain="calendar",
                    location=("parameter", "syncToken"),
                )
            changed = sorted((n, eid) for eid, n in calendar.changed.items() if n > sync.change)
            items = self._changes(calendar, [eid for _, eid in changed], single_events, sync.time_min, sync.time_max)
            page = _Page(account.email, calendar.id, items, 0, max_results, self._change, sync.time_min, sync.time_max)
        else:
            time_min = _query_time(one("timeMin"), "timeMin")
            time_max = _query_time(one("timeMax"), "timeMax")
            items = self._matching(calendar, params, one, single_events, time_min, time_max)
            page = _Page(account.email, calendar.id, items, 0, max_results, self._change, time_min, time_max)

        chunk = page.items[page.offset : page.offset + page.max_results]
        page.offset += len(chunk)
        result: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"{3_000_000_000_000_000 + self._change}"',
            "summary": calendar.id,  # for the primary calendar: the account's email, as at Google
            "description": "",
            "updated": _rfc3339(datetime.now(UTC)),
            "timeZone": calendar.time_zone,
            "accessRole": "owner",
            "defaultReminders": [],
            "items": [self._listed(copy.deepcopy(item)) for item in chunk],
        }
        if page.offset < len(page.items):
            token = secrets.token_urlsafe(24)
            self._pages[token] = page
            result["nextPageToken"] = token
        else:
            token = secrets.token_urlsafe(24)
            self._sync_tokens[token] = _SyncToken(account.email, calendar.id, page.change, page.time_min, page.time_max)
            result["nextSyncToken"] = token
        return result

    def _changes(
        self,
        calendar: _Calendar,
        ids: Iterable[str],
        single_events: bool,
        time_min: datetime | None,
        time_max: datetime | None,
    ) -> list[dict[str, Any]]:
        """What an incremental listing returns for the events changed since its token, in change order.

        With singleEvents a changed series comes as every one of its instances (within the window of the full
        listing the token descends from, and the expansion horizon), a changed exception as its instance.
        """
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        limit = _expansion_limit(time_min, time_max)
        for event_id in ids:
            event = calendar.events[event_id]
            series = self._series(event) if single_events else None
            if series is None:
                candidates = [self._render(calendar, event_id)] if event_id in calendar.events else []
            else:
                candidates = [
                    item
                    for local in series.occurrences(limit)
                    if _overlaps(item := self._instance(calendar, event, series, local), time_min, time_max)
                ]
            for item in candidates:
                if item["id"] not in seen:
                    seen.add(item["id"])
                    items.append(item)
        return items

    def _matching(
        self,
        calendar: _Calendar,
        params: dict[str, list[str]],
        one: Callable[[str], str | None],
        single_events: bool,
        time_min: datetime | None,
        time_max: datetime | None,
    ) -> list[dict[str, Any]]:
        """What a full (non-sync) listing returns, as full copies in the requested order.

        With singleEvents each series is replaced by its instances (exceptions in their place); without it a
        series is its master, and its exceptions are items of their own (a cancelled one even without
        showDeleted, as Google documents).
        """
        updated_min = _query_time(one("updatedMin"), "updatedMin")
        # Google includes deleted events when asked to, and always together with updatedMin.
        show_deleted = one("showDeleted") == "true" or updated_min is not None
        text = (one("q") or "").lower()
        ical_uid = one("iCalUID")
        wanted: list[tuple[str, str, str]] = []
        for scope, name in (("private", "privateExtendedProperty"), ("shared", "sharedExtendedProperty")):
            for pair in params.get(name, []):
                key, _, value = pair.partition("=")
                wanted.append((scope, key, value))
        limit = _expansion_limit(time_min, time_max)

        selected: list[dict[str, Any]] = []
        for event in calendar.events.values():
            master = self._master_of(calendar, event["id"]) if event.get("recurringEventId") is not None else None
            series = self._series(event)
            if master is not None:
                if single_events:
                    continue  # listed in its series' place
                item = self._render(calendar, event["id"])
                deleted_ok = show_deleted or master[0]["status"] != "cancelled"
                candidates = [item] if _overlaps(item, time_min, time_max) else []
            elif series is not None and single_events:
                deleted_ok = show_deleted
                candidates = [
                    item
                    for local in series.occurrences(limit)
                    if _overlaps(item := self._instance(calendar, event, series, local), time_min, time_max)
                ]
            else:
                deleted_ok = show_deleted
                overlaps = (
                    _series_overlaps(series, time_min, time_max)
                    if series is not None
                    else _overlaps(event, time_min, time_max)
                )
                candidates = [copy.deepcopy(event)] if overlaps else []
            for item in candidates:
                if item["status"] == "cancelled" and not deleted_ok:
                    continue
                if updated_min is not None and _parse_rfc3339(item["updated"]) < updated_min:
                    continue
                if ical_uid is not None and item.get("iCalUID") != ical_uid:
                    continue
                if text and not any(
                    text in str(item.get(k, "")).lower() for k in ("summary", "description", "location")
                ):
                    continue
                properties = item.get("extendedProperties") or {}
                if any((properties.get(scope) or {}).get(key) != value for scope, key, value in wanted):
                    continue
                selected.append(item)

        order_by = one("orderBy")
        if order_by == "startTime":
            if not single_events:
                raise _ApiError(400, "badRequest", "The requested ordering is not available for the particular query.")
            selected.sort(key=lambda e: _when(e.get("start"), "start"))
        elif order_by == "updated":
            selected.sort(key=lambda e: _parse_rfc3339(e["updated"]))
        elif order_by is not None:
            raise _ApiError(400, "invalid", "Invalid value for: orderBy", location=("parameter", "orderBy"))
        return selected

    # Push notifications

    def _watch(
        self, account: _Account, calendar: _Calendar, path: str, query: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """events.watch: a web_hook channel on the calendar's events, announced with a `sync` notification."""
        channel_id = body.get("id")
        if not channel_id:
            raise _ApiError(400, "required", "Required", location=("body", "id"))
        if not isinstance(channel_id, str) or not _CHANNEL_ID.fullmatch(channel_id):
            raise _ApiError(400, "invalid", "Channel id must match [A-Za-z0-9\\-_\\+/=]+")
        if len(channel_id) > CHANNEL_MAX_ID_LENGTH:
            raise _ApiError(400, "invalid", f"Channel id must be at most {CHANNEL_MAX_ID_LENGTH} characters.")
        channel_type = body.get("type")
        if not channel_type:
            raise _ApiError(400, "required", "Required", location=("body", "type"))
        if channel_type not in _CHANNEL_TYPES:
            raise _ApiError(400, "invalid", f"Invalid channel type: {channel_type}")
        address = body.get("address")
        if not isinstance(address, str) or urllib.parse.urlsplit(address).scheme.lower() != "https":
            raise _ApiError(400, "push.webhookUrlNotHttps", f"WebHook callback must be HTTPS: {address or ''}")
        if not urllib.parse.urlsplit(address).hostname:
            raise _ApiError(400, "push.webhookUrlNoHostPort", f"WebHook callback must have a host: {address}")
        token = body.get("token")
        if token is not None and (not isinstance(token, str) or len(token) > CHANNEL_MAX_TOKEN_LENGTH):
            raise _ApiError(400, "invalid", f"Channel token must be at most {CHANNEL_MAX_TOKEN_LENGTH} characters.")
        ttl = CHANNEL_DEFAULT_TTL
        channel_params = body.get("params") or {}
        if not isinstance(channel_params, dict):
            raise _ApiError(400, "invalid", "Invalid value for: params")
        if channel_params.get("ttl") is not None:
            text = str(channel_params["ttl"])
            if not text.isdigit() or int(text) < 1:
                raise _ApiError(400, "invalid", f"Invalid ttl value: {text}")
            ttl = min(int(text), CHANNEL_MAX_TTL)
        now_ms = _now_ms()
        known = self._channels.get(channel_id)
        if known is not None and known.state(now_ms) in ("live", "lost"):
            raise _ApiError(400, "channelIdNotUnique", "Channel id not unique")
        self._channels.pop(channel_id, None)  # a stopped or expired channel's id may be used again
        watched = "&".join(sorted(p for p in query.split("&") if p and not p.startswith(("alt=", "pageToken="))))
        digest = hashlib.sha256(f"{account.email}\0{calendar.id}\0{watched}".encode()).digest()
        channel = _Channel(
            id=channel_id,
            resource_id=base64.urlsafe_b64encode(digest[:20]).decode().rstrip("="),
            resource_uri=f"{self.base_url}{path.removesuffix('/watch')}?{query or 'alt=json'}",
            account=account.email,
            calendar=calendar,
            address=address,
            token=token,
            expiration=now_ms + ttl * 1000,
        )
        self._channels[channel_id] = channel
        self._queue_notification(channel, "sync")
        answer: dict[str, Any] = {
            "kind": "api#channel",
            "id": channel.id,
            "resourceId": channel.resource_id,
            "resourceUri": channel.resource_uri,
        }
        if token is not None:
            answer["token"] = token
        answer["expiration"] = str(channel.expiration)
        return answer

    def _stop_channel(self, body: dict[str, Any]) -> None:
        """channels.stop: the channel with this id and resourceId sends nothing more; 404 for any other."""
        channel_id = body.get("id")
        channel = self._channels.get(channel_id) if isinstance(channel_id, str) else None
        if (
            channel is None
            or channel.state(_now_ms()) in ("stopped", "expired")
            or body.get("resourceId") != channel.resource_id
        ):
            raise _ApiError(404, "notFound", f"Channel '{channel_id or ''}' not found for project '{PROJECT_NUMBER}'")
        channel.stopped = True

    def _queue_notification(self, channel: _Channel, state: str) -> None:
        """Queue the channel's next notification (called under the lock; sent by a notification thread)."""
        channel.last_number += 1
        if self._delivery_queues:
            shard = zlib.crc32(channel.id.encode()) % len(self._delivery_queues)
            self._delivery_queues[shard].put(_Delivery(channel.id, state, channel.last_number))

    def _deliver_forever(self, jobs: queue.SimpleQueue[_Delivery | None]) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            with self._delivery:
                while self._delivery_paused and not self._stopping.is_set():
                    self._delivery.wait()
            if self._stopping.is_set():
                return
            self._deliver(job)

    def _deliver(self, job: _Delivery) -> None:
        """POST one notification, outside the lock, and record how it went. A channel that is no longer live gets
        nothing (Google sends nothing after expiration, stop, or losing the channel)."""
        with self._lock:
            channel = self._channels.get(job.channel_id)
            if channel is None or channel.state(_now_ms()) != "live":
                return
            headers = {
                "X-Goog-Channel-ID": channel.id,
                "X-Goog-Channel-Expiration": email.utils.formatdate(channel.expiration / 1000, usegmt=True),
                "X-Goog-Resource-ID": channel.resource_id,
                "X-Goog-Resource-URI": channel.resource_uri,
                "X-Goog-Resource-State": job.state,
                "X-Goog-Message-Number": str(job.number),
                "User-Agent": NOTIFICATION_USER_AGENT,
            }
            if channel.token is not None:
                headers["X-Goog-Channel-Token"] = channel.token
            address, resource_id = channel.address, channel.resource_id
        split = urllib.parse.urlsplit(address)
        url = urllib.parse.urlunsplit(split._replace(scheme="http"))
        status: int | None = None
        error: str | None = None
        if split.hostname not in _LOOPBACK_HOSTS:
            error = f"not delivered: {split.hostname} is not this machine (only loopback addresses are delivered to)"
        else:
            connection = http.client.HTTPConnection(split.hostname, split.port or 443, timeout=NOTIFICATION_TIMEOUT)
            try:
                connection.request(
                    "POST", urllib.parse.urlunsplit(("", "", split.path or "/", split.query, "")), b"", headers
                )
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as failure:
                error = f"{type(failure).__name__}: {failure}"
            finally:
                connection.close()
        with self._lock:
            self._notifications.append(
                Notification(job.channel_id, resource_id, job.state, job.number, url, status, error, time.monotonic())
            )


# -- helpers -----------------------------------------------------------------------------------------


def _check_calendar_scope(token: _AccessToken, method: str) -> None:
    """Calendar calls need a calendar scope (a read-only one for reads), else 403 insufficientPermissions."""
    needed = _CALENDAR_READ_SCOPES if method == "GET" else _CALENDAR_WRITE_SCOPES
    if needed.isdisjoint(token.scopes):
        raise _ApiError(
            403,
            "insufficientPermissions",
            "Request had insufficient authentication scopes.",
            headers={
                "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="insufficient_scope", '
                f'scope="{CALENDAR_EVENTS_SCOPE}"'
            },
        )


def _normalise_scopes(requested: Iterable[str]) -> tuple[str, ...]:
    """The scopes as Google grants them: short OpenID names as their URLs, `openid` added to email/profile,
    duplicates dropped, order kept."""
    scopes = [_SCOPE_ALIASES.get(scope, scope) for scope in requested]
    if {USERINFO_EMAIL_SCOPE, USERINFO_PROFILE_SCOPE} & set(scopes):
        scopes.append(OPENID_SCOPE)
    return tuple(dict.fromkeys(scopes))


def _is_loopback_redirect(uri: str) -> bool:
    """http://127.0.0.1, http://[::1] or http://localhost, any port and path: what a desktop client may use."""
    split = urllib.parse.urlsplit(uri)
    try:
        split.port  # noqa: B018 -- raises for a port that is not a number in range
    except ValueError:
        return False
    return (
        split.scheme == "http"
        and split.hostname in _LOOPBACK_HOSTS
        and not split.username
        and not split.password
        and not split.fragment
    )


def _redirect(redirect_uri: str, params: Iterable[tuple[str, str | None]]) -> _Reply:
    """A 302 to the client's redirect URI with `params` (None values left out) added to its query.

    Like Google, slashes and colons stay unescaped (codes look like `4/0A...`, scopes are URLs); spaces are %20.
    """
    split = urllib.parse.urlsplit(redirect_uri)
    added = urllib.parse.urlencode(
        [(name, value) for name, value in params if value is not None], safe="/:", quote_via=urllib.parse.quote
    )
    query = f"{split.query}&{added}" if split.query else added
    return _Reply(302, None, {"Location": urllib.parse.urlunsplit(split._replace(query=query))})


def _page(status: int, title: str, paragraphs: Iterable[str]) -> _Reply:
    """A small HTML page, as a browser would be shown it."""
    body = "".join(f"<p>{html.escape(text)}</p>" for text in paragraphs)
    document = (
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title></head>"
        f"<body>{body}</body></html>"
    )
    return _Reply(status, document, {"Cache-Control": "no-cache, no-store"}, content_type="text/html; charset=utf-8")


def _consent_page(screen: str, account: str, scopes: Iterable[str]) -> _Reply:
    """Google's consent screen: who is signed in, what the app asks for, Allow and Cancel."""
    items = "".join(f"<li>{html.escape(scope)}</li>" for scope in scopes)
    document = (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Sign in - Google Accounts</title></head><body>"
        f"<h1>The app wants access to your Google Account</h1><p id=account>{html.escape(account)}</p>"
        f"<p>This will allow the app to:</p><ul id=scopes>{items}</ul>"
        f"<form method=post action={APPROVAL_PATH}><input type=hidden name=screen value={html.escape(screen)}>"
        "<button name=action value=deny>Cancel</button> <button name=action value=allow>Allow</button></form>"
        "</body></html>"
    )
    return _Reply(200, document, {"Cache-Control": "no-cache, no-store"}, content_type="text/html; charset=utf-8")


def _sign_in_page(login_hint: str | None) -> _Reply:
    """What the browser shows while nobody has signed in: the test has called neither consent() nor deny_consent()."""
    lines = ["Sign in", "to continue to the application"]
    if login_hint:
        lines.append(login_hint)
    return _page(200, "Sign in - Google Accounts", lines)


def _new_authorization_code() -> str:
    """A code shaped like Google's (`4/0A...`). Never containing "http": InstalledAppFlow.run_local_server turns
    every "http" of the redirect it received into "https" before parsing it."""
    while True:
        code = "4/0A" + secrets.token_urlsafe(54)
        if "http" not in code:
            return code


def _check_code_verifier(request: _AuthorizationRequest, verifier: str | None) -> None:
    """PKCE (RFC 7636) as Google checks it, with Google's error descriptions."""
    if request.code_challenge is None:
        if verifier is not None:
            raise _OAuthError(400, "invalid_grant", "code_verifier or verifier is not needed.")
        return
    if verifier is None:
        raise _OAuthError(400, "invalid_grant", "Missing code verifier.")
    if request.code_challenge_method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    else:
        expected = verifier
    if not hmac.compare_digest(expected, request.code_challenge):
        raise _OAuthError(400, "invalid_grant", "Invalid code verifier.")


def _subject(account: str) -> str:
    """A stable, numeric Google account id for the ID token's `sub` (Google's are 21 digits)."""
    return "1" + str(int.from_bytes(hashlib.sha256(account.encode()).digest()[:8], "big")).zfill(20)[:20]


def _jwt_hs256(claims: Mapping[str, Any], key: str) -> str:
    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    header = part(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = part(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(key.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{part(signature)}"


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, credential = authorization.partition(" ")
    return credential.strip() if scheme.lower() == "bearer" and credential.strip() else None


def _basic(authorization: str | None) -> tuple[str, str] | None:
    if authorization is None:
        return None
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(credential.strip()).decode().partition(":")
    except ValueError:
        return None
    return urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise _ApiError(400, "parseError", "Parse Error") from None
    if not isinstance(value, dict):
        raise _ApiError(400, "parseError", "Parse Error")
    return value


def _client_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in _SERVER_FIELDS}


def _merge(base: dict[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """Patch semantics: objects merge recursively, anything else (arrays too) is replaced, null removes."""
    merged = copy.deepcopy(base)
    for key, value in change.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _status_in(body: Mapping[str, Any], *, default: str) -> str:
    status = body.get("status")
    if status is None:
        return default
    if status not in _STATUSES:
        raise _ApiError(400, "invalid", "Invalid value for: status")
    return str(status)


def _when(when: Any, which: str) -> datetime:
    """The instant an event's start or end names (all-day dates at midnight UTC)."""
    instant, _ = _parse_when(when, which)
    return instant


def _parse_when(when: Any, which: str) -> tuple[datetime, bool]:
    """Parse an event's start/end object; returns (aware instant, is all-day)."""
    if not isinstance(when, dict) or (when.get("dateTime") is None and when.get("date") is None):
        raise _ApiError(400, "required", f"Missing {which} time.")
    zone = None
    if when.get("timeZone") is not None:
        try:
            zone = ZoneInfo(str(when["timeZone"]))
        except (ZoneInfoNotFoundError, ValueError):
            raise _ApiError(400, "invalid", f"Invalid time zone definition for {which} time.") from None
    if when.get("dateTime") is not None:
        text = when["dateTime"]
        if when.get("date") is not None or not isinstance(text, str) or not _DATE_TIME.fullmatch(text):
            raise _ApiError(400, "invalid", f"Invalid {which} time.")
        try:
            parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        except ValueError:
            raise _ApiError(400, "invalid", f"Invalid {which} time.") from None
        if parsed.tzinfo is None:
            if zone is None:
                raise _ApiError(400, "required", f"Missing time zone definition for {which} time.")
            parsed = parsed.replace(tzinfo=zone)
        return parsed, False
    text = when["date"]
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise _ApiError(400, "invalid", f"Invalid {which} time.")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise _ApiError(400, "invalid", f"Invalid {which} time.") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC), True


def _check_times(fields: Mapping[str, Any]) -> None:
    start, start_all_day = _parse_when(fields.get("start"), "start")
    end, end_all_day = _parse_when(fields.get("end"), "end")
    if start_all_day != end_all_day:
        raise _ApiError(400, "invalid", "Start and end times must either both be date or both be dateTime.")
    if end <= start:
        raise _ApiError(400, "timeRangeEmpty", "The specified time range is empty.", domain="calendar")


def _overlaps(item: Mapping[str, Any], time_min: datetime | None, time_max: datetime | None) -> bool:
    """Whether an event or instance falls in a listing's window: ending after timeMin, starting before timeMax."""
    if time_min is not None and _when(item.get("end"), "end") <= time_min:
        return False
    return time_max is None or _when(item.get("start"), "start") < time_max


def _series_overlaps(series: _Series, time_min: datetime | None, time_max: datetime | None) -> bool:
    """Whether a series (listed as its master) has an occurrence in the window, looking as far as the expansion
    horizon past timeMin."""
    if time_max is not None and series.instant(series.start) >= time_max:
        return False
    if time_min is None:
        return True
    for local in series.occurrences(time_min + EXPANSION_HORIZON):
        if series.instant(local) + series.duration > time_min:
            return time_max is None or series.instant(local) < time_max
    return False


def _expansion_limit(time_min: datetime | None, time_max: datetime | None) -> datetime:
    """Instances of a series are listed if they start before this: the listing's timeMax, or without one
    EXPANSION_HORIZON after the later of now and timeMin."""
    if time_max is not None:
        return time_max
    now = datetime.now(UTC)
    return (max(now, time_min) if time_min is not None else now) + EXPANSION_HORIZON


def _now_ms() -> int:
    """Wall-clock milliseconds since the epoch: what a channel's expiration is measured in."""
    return time.time_ns() // 1_000_000


def _query_time(text: str | None, name: str) -> datetime | None:
    """timeMin/timeMax/updatedMin: RFC 3339 with a mandatory offset."""
    if text is None:
        return None
    if not _DATE_TIME_WITH_OFFSET.fullmatch(text):
        raise _ApiError(400, "invalid", f"Invalid value for: {name}", location=("parameter", name))
    try:
        return _parse_rfc3339(text)
    except ValueError:
        raise _ApiError(400, "invalid", f"Invalid value for: {name}", location=("parameter", name)) from None


def _parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))


def _rfc3339(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


# -- recurrence ----------------------------------------------------------------------------------------

_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_FREQUENCIES = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
# RFC 5545 rule parts the stand-in does not expand: a series using one is refused with a message saying so,
# rather than expanded wrongly.
_UNIMPLEMENTED_RULE_PARTS = frozenset(
    {"BYSECOND", "BYMINUTE", "BYHOUR", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "RSCALE", "SKIP"}
)
_RULE_DATE = re.compile(r"(\d{8})(?:T(\d{6})(Z)?)?", re.IGNORECASE)
_INSTANCE_ID = re.compile(r"([a-v0-9]{5,1024})_(\d{8}(?:T\d{6}Z)?)")


def _invalid_recurrence() -> _ApiError:
    return _ApiError(400, "invalid", "Invalid recurrence rule.")


def _not_implemented(what: str) -> _ApiError:
    return _ApiError(400, "invalid", f"The Google stand-in does not implement {what} in recurrence rules.")


@dataclass(frozen=True)
class _Series:
    """A recurring event's recurrence, ready to expand.

    Occurrences are naive wall-clock datetimes in the series' time zone (midnight for all-day series), so a weekly
    16:00 stays 16:00 local across a DST change; instant() attaches the zone (a wall-clock time inside a DST gap
    takes the offset from before the gap, as RFC 5545 says).
    """

    zone: ZoneInfo | None  # None for an all-day series
    time_zone: str | None
    start: datetime  # naive local start of the first occurrence
    duration: timedelta  # absolute for a timed series, whole days for an all-day one
    freq: str
    interval: int
    count: int | None
    until: datetime | date | None  # an aware instant, or a local date (inclusive)
    weekdays: tuple[int, ...]  # BYDAY of a weekly rule as offsets from the week start, ascending
    week_start: int  # WKST: 0 = Monday
    excluded_instants: frozenset[datetime]  # EXDATE date-times, in UTC
    excluded_days: frozenset[date]  # EXDATE dates

    @property
    def all_day(self) -> bool:
        return self.zone is None

    def instant(self, local: datetime) -> datetime:
        """The aware start of an occurrence (all-day ones at midnight UTC, like every all-day date here)."""
        return local.replace(tzinfo=self.zone if self.zone is not None else UTC)

    def stamp(self, local: datetime) -> str:
        """The instance id's suffix: the UTC start, or the date of an all-day occurrence."""
        if self.all_day:
            return local.strftime("%Y%m%d")
        return self.instant(local).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    def when(self, local: datetime) -> dict[str, Any]:
        """An occurrence's start (and originalStartTime) as the API shows it."""
        if self.all_day:
            return {"date": local.date().isoformat()}
        return {"dateTime": self.instant(local).isoformat(), "timeZone": self.time_zone}

    def end_when(self, local: datetime) -> dict[str, Any]:
        if self.all_day:
            return {"date": (local + self.duration).date().isoformat()}
        assert self.zone is not None
        end = (self.instant(local) + self.duration).astimezone(self.zone)
        return {"dateTime": end.isoformat(), "timeZone": self.time_zone}

    def occurrences(self, before: datetime) -> Iterator[datetime]:
        """The occurrences starting before the instant `before`, in order (COUNT, UNTIL and EXDATE applied)."""
        produced = 0
        for local in self._candidates():
            if self.count is not None and produced >= self.count:
                return
            instant = self.instant(local)
            if isinstance(self.until, datetime):
                if instant > self.until:
                    return
            elif self.until is not None and local.date() > self.until:
                return
            if instant >= before:
                return
            produced += 1  # an excluded occurrence still counts towards COUNT (RFC 5545)
            if instant.astimezone(UTC) in self.excluded_instants or local.date() in self.excluded_days:
                continue
            yield local

    def occurrence(self, stamp: str) -> datetime | None:
        """The occurrence an instance id's suffix names, None when the series has no such occurrence."""
        matched = _RULE_DATE.fullmatch(stamp)
        if matched is None or (self.all_day != (matched.group(2) is None)):
            return None
        try:
            day = datetime.strptime(matched.group(1), "%Y%m%d")
            target = day.replace(tzinfo=UTC)
            if matched.group(2) is not None:
                clock = datetime.strptime(matched.group(2), "%H%M%S")
                target = target.replace(hour=clock.hour, minute=clock.minute, second=clock.second)
        except ValueError:
            return None
        for local in self.occurrences(target + timedelta(seconds=1)):
            if self.stamp(local) == stamp:
                return local
        return None

    def _candidates(self) -> Iterator[datetime]:
        """Every date-time the rule names from the start on (ascending, unbounded), before COUNT/UNTIL/EXDATE."""
        start = self.start
        if self.freq == "DAILY":
            for k in itertools.count():
                yield start + timedelta(days=k * self.interval)
        elif self.freq == "WEEKLY":
            week = start - timedelta(days=(start.weekday() - self.week_start) % 7)
            offsets = self.weekdays or ((start.weekday() - self.week_start) % 7,)
            for k in itertools.count():
                for offset in offsets:
                    candidate = week + timedelta(days=7 * self.interval * k + offset)
                    if candidate >= start:
                        yield candidate
        else:
            step = self.interval * (12 if self.freq == "YEARLY" else 1)
            for k in itertools.count():
                years, month = divmod(start.month - 1 + k * step, 12)
                with contextlib.suppress(ValueError):  # a month (or year) without that day is skipped
                    yield start.replace(year=start.year + years, month=month + 1)


def _series_of(event: Mapping[str, Any]) -> _Series | None:
    """The series an event's `recurrence` describes (None for a single event), or 400 for one Google would
    refuse (or the stand-in cannot expand). Instances never carry a recurrence."""
    recurrence = event.get("recurrence")
    if recurrence is None or recurrence == [] or event.get("recurringEventId") is not None:
        return None
    if not isinstance(recurrence, list) or not all(isinstance(line, str) for line in recurrence):
        raise _invalid_recurrence()
    start_when = event.get("start")
    start, all_day = _parse_when(start_when, "start")
    end, _ = _parse_when(event.get("end"), "end")
    zone: ZoneInfo | None = None
    time_zone: str | None = None
    if all_day:
        local = start.replace(tzinfo=None)
    else:
        assert isinstance(start_when, dict)
        if not start_when.get("timeZone"):
            # The time zone a recurrence is expanded in is required for recurring events.
            raise _ApiError(400, "required", "Missing time zone definition for start time.")
        time_zone = str(start_when["timeZone"])
        zone = ZoneInfo(time_zone)
        local = start.astimezone(zone).replace(tzinfo=None)
    rules: list[str] = []
    excluded_instants: set[datetime] = set()
    excluded_days: set[date] = set()
    for line in recurrence:
        name, separator, value = line.partition(":")
        if not separator or not value:
            raise _invalid_recurrence()
        prop, *params = name.split(";")
        prop = prop.strip().upper()
        if prop == "RRULE" and not params:
            rules.append(value)
        elif prop == "EXDATE":
            _exdates(params, value, zone, excluded_instants, excluded_days)
        elif prop in ("RDATE", "EXRULE"):
            raise _not_implemented(prop)
        else:
            raise _invalid_recurrence()
    if not rules:
        raise _invalid_recurrence()
    if len(rules) > 1:
        raise _not_implemented("more than one RRULE")
    parts = _rule_parts(rules[0])
    freq = parts.get("FREQ")
    if freq in ("SECONDLY", "MINUTELY", "HOURLY"):
        raise _not_implemented(f"FREQ={freq}")
    if freq not in _FREQUENCIES:
        raise _invalid_recurrence()
    interval = _positive(parts.get("INTERVAL", "1"))
    count = _positive(parts["COUNT"]) if "COUNT" in parts else None
    until = _until(parts["UNTIL"], zone) if "UNTIL" in parts else None
    if count is not None and until is not None:
        raise _invalid_recurrence()
    week_start = _weekday(parts.get("WKST", "MO"))
    weekdays: tuple[int, ...] = ()
    if "BYDAY" in parts:
        if freq != "WEEKLY":
            raise _not_implemented(f"BYDAY with FREQ={freq}")
        days = {(_weekday(day) - week_start) % 7 for day in parts["BYDAY"].split(",")}
        weekdays = tuple(sorted(days))
    return _Series(
        zone=zone,
        time_zone=time_zone,
        start=local,
        duration=end - start,
        freq=freq,
        interval=interval,
        count=count,
        until=until,
        weekdays=weekdays,
        week_start=week_start,
        excluded_instants=frozenset(excluded_instants),
        excluded_days=frozenset(excluded_days),
    )


def _rule_parts(rule: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in rule.split(";"):
        key, separator, value = item.partition("=")
        key = key.strip().upper()
        if not separator or not value or key in parts:
            raise _invalid_recurrence()
        if key in _UNIMPLEMENTED_RULE_PARTS:
            raise _not_implemented(key)
        if key not in ("FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "WKST"):
            raise _invalid_recurrence()
        parts[key] = value.strip().upper()
    return parts


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise _invalid_recurrence()
    return int(text)


def _weekday(text: str) -> int:
    if text in _WEEKDAYS:
        return _WEEKDAYS.index(text)
    if len(text) > 2 and text[-2:] in _WEEKDAYS and re.fullmatch(r"[+-]?\d{1,2}", text[:-2]):
        raise _not_implemented("numbered BYDAY (such as 2TU)")
    raise _invalid_recurrence()


def _rule_time(text: str, zone: ZoneInfo | None) -> datetime | date:
    """A DATE or DATE-TIME value of a rule: a date, a UTC instant (…Z), or local time in `zone` (floating)."""
    matched = _RULE_DATE.fullmatch(text.strip())
    if matched is None:
        raise _invalid_recurrence()
    try:
        day = datetime.strptime(matched.group(1), "%Y%m%d")
        if matched.group(2) is None:
            return day.date()
        clock = datetime.strptime(matched.group(2), "%H%M%S")
    except ValueError:
        raise _invalid_recurrence() from None
    moment = day.replace(hour=clock.hour, minute=clock.minute, second=clock.second)
    return moment.replace(tzinfo=UTC if matched.group(3) or zone is None else zone)


def _until(text: str, zone: ZoneInfo | None) -> datetime | date:
    value = _rule_time(text, zone)
    if zone is None and isinstance(value, datetime):
        return value.date()  # an all-day series ends on a day
    return value


def _exdates(
    params: Sequence[str],
    value: str,
    zone: ZoneInfo | None,
    instants: set[datetime],
    days: set[date],
) -> None:
    """EXDATE[;TZID=zone][;VALUE=DATE|DATE-TIME]:value[,value...] into the excluded instants and days."""
    in_zone = zone
    for param in params:
        key, _, setting = param.partition("=")
        if key.upper() == "TZID":
            try:
                in_zone = ZoneInfo(setting)
            except (ZoneInfoNotFoundError, ValueError):
                raise _invalid_recurrence() from None
        elif key.upper() != "VALUE" or setting.upper() not in ("DATE", "DATE-TIME"):
            raise _invalid_recurrence()
    for text in value.split(","):
        moment = _rule_time(text, in_zone)
        if isinstance(moment, datetime):
            instants.add(moment.astimezone(UTC))
        else:
            days.add(moment)
