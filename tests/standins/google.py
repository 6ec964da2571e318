"""A stand-in for Google's Calendar API v3 and OAuth 2.0 token endpoint, over real HTTP on 127.0.0.1.

It is driven through the real client libraries, exactly as the daemon drives Google:

    googleapiclient.discovery.build("calendar", "v3", http=..., cache_discovery=False, static_discovery=True,
                                    client_options={"api_endpoint": standin.api_endpoint})
    google.oauth2.credentials.Credentials(None, refresh_token=..., token_uri=standin.token_uri, ...)
    google_auth_oauthlib.flow.InstalledAppFlow.from_client_config(
        {"installed": {"client_id": ..., "client_secret": ..., "auth_uri": standin.auth_uri,
                       "token_uri": standin.token_uri}}, scopes=[...])

With `api_endpoint` set, google-api-python-client sends `<api_endpoint>calendars/{calendarId}/events[/{eventId}]`
plus a query string that always ends in `alt=json` (path parameters percent-encoded, so `a@b.com` arrives as
`a%40b.com`; booleans as `true`/`false`). google-auth POSTs a form body (`grant_type=refresh_token`,
`client_id`, `client_secret`, `refresh_token`, optional `scope`) to `token_uri`. google-auth-oauthlib sends the
browser to `auth_uri` (PKCE S256 by default) and POSTs `grant_type=authorization_code` with HTTP Basic client
authentication; it refuses plain http unless OAUTHLIB_INSECURE_TRANSPORT is set, which tests against this
stand-in must do.

What it imitates (Google's documented behaviour; error bodies in Google's JSON shape):
- OAuth: refresh tokens per account (revocable, at most 100 live per account and client, the oldest dies
  first), access tokens that expire after `access_token_lifetime` seconds; `invalid_client`, `invalid_grant`.
- The authorization-code flow of a desktop ("installed") client: loopback redirect URIs on any port, PKCE,
  single-use codes that expire, refresh tokens only for offline access when the consent screen was shown,
  ID tokens for `openid`, 7-day refresh tokens for a project in "Testing". There is no browser: the test decides
  who signs in and whether they approve (consent(), deny_consent()).
- Scopes: "email"/"profile" are answered as their userinfo URLs plus "openid", as Google does; calendar calls
  need a calendar scope (403 `insufficientPermissions`).
- Calendar: Bearer auth (401 `authError`), sliding 60 s windows per account (403 `userRateLimitExceeded`) and
  for the whole project (403 `rateLimitExceeded`), counting every calendar request;
  events.insert/get/update/patch/delete/list with client-chosen ids (409 `duplicate`, 400 `invalid`), soft
  deletion (status `cancelled`, 410 `deleted` on a second delete),
  paging, incremental sync with sync tokens (410 `fullSyncRequired` once expired).
- Test controls: latency, injected faults (HTTP errors, dropping the connection after the operation was
  committed, slow answers), either counted (inject) or drawn at random for a share of requests (chaos), a
  record of every request and the fault it got.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import hmac
import html
import json
import math
import random
import re
import secrets
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
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

_EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
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
    {"kind", "etag", "id", "status", "htmlLink", "created", "updated", "creator", "organizer", "iCalUID", "sequence"}
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


@dataclass
class _Page:
    account: str
    calendar_id: str
    ids: list[str]
    offset: int
    max_results: int
    change: int  # the change number when the listing began: its eventual nextSyncToken


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
        self._faults: list[_PendingFault] = []
        self._chaos: _Chaos | None = None
        self._records: list[_Record] = []
        self._admitted: deque[float] = deque()  # monotonic times of the project's admitted calendar requests
        self._change = 0

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
        if not _is_loopback_redirect(redirect_uri):
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
        with self._lock:
            token = self._authenticate(access_token)
            _check_calendar_scope(token, method)
            account = self._accounts[token.account]
            self._admit(account)
            if len(segments) not in (3, 4) or segments[0] != "calendars" or segments[2] != "events":
                raise _ApiError(404, "notFound", "Not Found")
            calendar = self._calendar_of(account, segments[1])
            if len(segments) == 3:
                if method == "GET":
                    return _Reply(200, self._list(account, calendar, params))
                if method == "POST":
                    return _Reply(200, self._insert(account, calendar, _json_object(body)))
            else:
                event_id = segments[3]
                if method == "GET":
                    return _Reply(200, copy.deepcopy(self._existing(calendar, event_id)))
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

    def _existing(self, calendar: _Calendar, event_id: str) -> dict[str, Any]:
        event = calendar.events.get(event_id)
        if event is None:
            raise _ApiError(404, "notFound", "Not Found")
        return event

    def _touch(self, calendar: _Calendar, event: dict[str, Any]) -> None:
        """Stamp a change: new etag and `updated`, and a place in the calendar's change order."""
        self._change += 1
        event["etag"] = f'"{3_000_000_000_000_000 + self._change}"'
        event["updated"] = _rfc3339(datetime.now(UTC))
        calendar.changed[event["id"]] = self._change

    def _insert(self, account: _Account, calendar: _Calendar, body: dict[str, Any]) -> dict[str, Any]:
        event_id = body.get("id")
        if event_id is not None and not (isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id)):
            raise _ApiError(400, "invalid", "Invalid resource id value.")
        _check_times(body)
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
        event = self._existing(calendar, event_id)
        kept = {k: v for k, v in event.items() if k in _SERVER_FIELDS}
        if patch:
            fields = _merge({k: v for k, v in event.items() if k not in _SERVER_FIELDS}, _client_fields(body))
        else:
            fields = copy.deepcopy(_client_fields(body))
        _check_times(fields)
        updated = {**kept, **fields}
        updated["status"] = _status_in(body, default=event["status"])
        updated["sequence"] = int(event.get("sequence", 0)) + 1
        event.clear()
        event.update(updated)
        self._touch(calendar, event)
        return copy.deepcopy(event)

    def _delete(self, calendar: _Calendar, event_id: str) -> None:
        event = self._existing(calendar, event_id)
        if event["status"] == "cancelled":
            raise _ApiError(410, "deleted", "Resource has been deleted")
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
            page = _Page(account.email, calendar.id, [eid for _, eid in changed], 0, max_results, self._change)
        else:
            ids = self._matching(calendar, params, one)
            page = _Page(account.email, calendar.id, ids, 0, max_results, self._change)

        chunk = page.ids[page.offset : page.offset + page.max_results]
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
            "items": [copy.deepcopy(calendar.events[eid]) for eid in chunk if eid in calendar.events],
        }
        if page.offset < len(page.ids):
            token = secrets.token_urlsafe(24)
            self._pages[token] = page
            result["nextPageToken"] = token
        else:
            token = secrets.token_urlsafe(24)
            self._sync_tokens[token] = _SyncToken(account.email, calendar.id, page.change)
            result["nextSyncToken"] = token
        return result

    def _matching(
        self, calendar: _Calendar, params: dict[str, list[str]], one: Callable[[str], str | None]
    ) -> list[str]:
        """Ids of the events a full (non-sync) listing returns, in the requested order."""
        time_min = _query_time(one("timeMin"), "timeMin")
        time_max = _query_time(one("timeMax"), "timeMax")
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

        selected: list[dict[str, Any]] = []
        for event in calendar.events.values():
            if event["status"] == "cancelled" and not show_deleted:
                continue
            start, end = _when(event.get("start"), "start"), _when(event.get("end"), "end")
            if (time_min is not None and end <= time_min) or (time_max is not None and start >= time_max):
                continue
            if updated_min is not None and _parse_rfc3339(event["updated"]) < updated_min:
                continue
            if ical_uid is not None and event.get("iCalUID") != ical_uid:
                continue
            if text and not any(text in str(event.get(k, "")).lower() for k in ("summary", "description", "location")):
                continue
            properties = event.get("extendedProperties") or {}
            if any((properties.get(scope) or {}).get(key) != value for scope, key, value in wanted):
                continue
            selected.append(event)

        order_by = one("orderBy")
        if order_by == "startTime":
            if one("singleEvents") != "true":
                raise _ApiError(400, "badRequest", "The requested ordering is not available for the particular query.")
            selected.sort(key=lambda e: _when(e.get("start"), "start"))
        elif order_by == "updated":
            selected.sort(key=lambda e: _parse_rfc3339(e["updated"]))
        elif order_by is not None:
            raise _ApiError(400, "invalid", "Invalid value for: orderBy", location=("parameter", "orderBy"))
        return [event["id"] for event in selected]


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
