"""Prometheus metrics and the health/metrics HTTP endpoint for the container's orchestrator.

`Metrics` holds every series the daemon exports, in a registry of its own rather than
prometheus_client's global one, so several daemons (tests, benchmarks) can live in one process.
Every labelled counter is created at zero for all its label values up front: a dashboard or an
alert rule sees the series before the first event, and `rate()` starts from a real zero.

The backlog gauges come from a periodic database snapshot (`daemon.domain.sync_queue.BacklogSnapshot`), not from this
replica's own counts: the queue is shared by every replica, and only the database knows it.
The snapshot's timestamp is exported too, so a stalled snapshot job shows as staleness instead
of as a reassuringly constant backlog.

`HealthServer` serves /metrics, /healthz and /readyz from a background thread using only the
standard library's WSGI server and prometheus_client's own exposition. It never logs requests:
nothing it serves holds patient data, and the orchestrator's probes would only drown the log.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final, Literal, get_args
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from daemon.domain.calendar_mirror import MIRROR_CHANGES, MirrorFreshness, MirrorSummary
from daemon.domain.google_budget import BudgetSnapshot
from daemon.domain.sync_queue import BacklogSnapshot, RetryReason
from daemon.domain.vapi_setup import VapiSetup

SyncAction = Literal["insert", "update", "delete"]
FailureReason = Literal["rejected", "gave_up"]
RefreshResult = Literal["ok", "needs_reauth", "error"]
MirrorKind = Literal["incremental", "full", "error"]
VapiSyncResult = Literal["ok", "failed"]

SYNC_ACTIONS: Final[tuple[str, ...]] = get_args(SyncAction)
FAILURE_REASONS: Final[tuple[str, ...]] = get_args(FailureReason)
RETRY_REASONS: Final[tuple[str, ...]] = get_args(RetryReason)
REFRESH_RESULTS: Final[tuple[str, ...]] = get_args(RefreshResult)
MIRROR_KINDS: Final[tuple[str, ...]] = get_args(MirrorKind)
VAPI_SYNC_RESULTS: Final[tuple[str, ...]] = get_args(VapiSyncResult)
# "synced" is the queue's terminal state, not work waiting, so it is not part of the backlog.
BACKLOG_STATES: Final = ("pending", "in_flight", "failed", "parked")
# The first state is prometheus_client's initial value: a feed is "starting" until told otherwise.
FEED_STATES: Final = ("starting", "subscribed", "down", "disabled")

# From a doorbell-driven push (tens of ms) to a row that waited out backoff or a token refresh (minutes).
LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _check_label(kind: str, value: str, allowed: tuple[str, ...]) -> str:
    # The Literal types make this a type error already; at run time an unknown value would
    # silently start a new series that no dashboard or alert knows about.
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {', '.join(allowed)}")
    return value


class Metrics:
    """The daemon's Prometheus metrics, in a registry of its own (several daemons can run in one test process).

    Every method is thread-safe (prometheus_client locks each series), so it may be called from
    the event loop and from the Google worker threads alike.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._synced = Counter(
            "calendar_sync_appointments_synced_total",
            "Appointments whose change Google Calendar confirmed, by calendar action (insert, update, delete).",
            ["action"],
            registry=r,
        )
        self._latency = Histogram(
            "calendar_sync_booking_to_calendar_seconds",
            "Seconds from an appointment change being committed to Google Calendar confirming it.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._failed = Counter(
            "calendar_sync_appointments_failed_total",
            "Appointments marked failed: rejected by Google, or gave up after the maximum attempts.",
            ["reason"],
            registry=r,
        )
        self._parked = Counter(
            "calendar_sync_appointments_parked_total",
            "Appointments parked because their clinic's Google connection needs re-authorisation.",
            registry=r,
        )
        self._retries = Counter(
            "calendar_sync_push_retries_total",
            "Pushes to Google re-queued for a later attempt, by cause.",
            ["reason"],
            registry=r,
        )
        self._claims = Counter(
            "calendar_sync_claims_total",
            "Claim queries this replica made against the sync queue.",
            registry=r,
        )
        self._claimed = Counter(
            "calendar_sync_claimed_appointments_total",
            "Appointments this replica claimed from the sync queue.",
            registry=r,
        )
        self._refreshes = Counter(
            "calendar_sync_token_refreshes_total",
            "Google access-token refreshes, by result (ok, needs_reauth, error).",
            ["result"],
            registry=r,
        )
        self._backlog = Gauge(
            "calendar_sync_backlog",
            "Appointments in the shared sync queue by sync state, from the last database snapshot.",
            ["state"],
            registry=r,
        )
        self._oldest_pending = Gauge(
            "calendar_sync_oldest_pending_age_seconds",
            "Seconds the oldest unsynced appointment change (pending or in flight) has waited, 0 when none, from the "
            "last database snapshot.",
            registry=r,
        )
        self._needs_reauth = Gauge(
            "calendar_sync_clinics_needing_reauth",
            "Clinics whose Google connection needs re-authorisation, from the last database snapshot.",
            registry=r,
        )
        self._mirror_runs = Counter(
            "calendar_sync_mirror_runs_total",
            "Listings of clinics' calendars by the busy mirror, by kind (incremental, full, error).",
            ["kind"],
            registry=r,
        )
        self._mirror_changes = Counter(
            "calendar_sync_mirror_changes_total",
            "What the busy mirror applied: busy and freed intervals, appointments cancelled or moved in Google,"
            " and changes put back in Google (restored).",
            ["change"],
            registry=r,
        )
        self._mirror_age = Gauge(
            "calendar_sync_mirror_age_seconds",
            "Seconds since each connected clinic's calendar was last mirrored (-1: never), from the last snapshot.",
            ["clinic_id"],
            registry=r,
        )
        self._mirrors_stale = Gauge(
            "calendar_sync_mirrors_stale",
            "Connected clinics whose mirror is older than its limit (the assistant then offers no times).",
            registry=r,
        )
        self._google_window = Gauge(
            "calendar_sync_google_requests_in_window",
            "Google Calendar requests the shared budget counts in the current 60 s window: the whole project, and"
            " each of the busiest Google accounts (at most 5, from the last snapshot).",
            ["budget", "account"],
            registry=r,
        )
        self._google_limit = Gauge(
            "calendar_sync_google_requests_limit",
            "The budget's limits per 60 s window: per Google account and for the whole project.",
            ["budget"],
            registry=r,
        )
        self._google_throttled = Gauge(
            "calendar_sync_google_accounts_throttled",
            "Google accounts held back by every replica after Google answered them with a rate or usage limit.",
            registry=r,
        )
        self._held_back = Gauge(
            "calendar_sync_clinics_held_back",
            "Clinics with due appointment changes that are not claimed because their Google budget is spent.",
            registry=r,
        )
        self._backlog_updated = Gauge(
            "calendar_sync_backlog_updated_timestamp_seconds",
            "Unix time of the last database backlog snapshot (0 before the first).",
            registry=r,
        )
        self._vapi_syncs = Counter(
            "calendar_sync_vapi_syncs_total",
            "The daemon's re-syncs of clinics' Vapi tools after a change, by result (ok, failed: retried later).",
            ["result"],
            registry=r,
        )
        self._vapi_stale = Gauge(
            "calendar_sync_vapi_setups_stale",
            "Clinics set up in Vapi whose tools describe the clinic as it was (a change not yet synced, or a failed"
            " sync), from the last database snapshot.",
            registry=r,
        )
        self._vapi_stale_age = Gauge(
            "calendar_sync_vapi_oldest_stale_seconds",
            "Seconds the longest-stale clinic's Vapi tools have been stale, 0 when none, from the last snapshot.",
            registry=r,
        )
        self._feed = Enum(
            "calendar_sync_feed_state",
            "State of the change feed (the doorbell); disabled when the daemon relies on the timer sweep alone.",
            states=list(FEED_STATES),
            registry=r,
        )
        self._precreate()

    def _precreate(self) -> None:
        for action in SYNC_ACTIONS:
            self._synced.labels(action=action)
        for reason in FAILURE_REASONS:
            self._failed.labels(reason=reason)
        for reason in RETRY_REASONS:
            self._retries.labels(reason=reason)
        for result in REFRESH_RESULTS:
            self._refreshes.labels(result=result)
        for state in BACKLOG_STATES:
            self._backlog.labels(state=state)
        for kind in MIRROR_KINDS:
            self._mirror_runs.labels(kind=kind)
        for change in MIRROR_CHANGES:
            self._mirror_changes.labels(change=change)
        for result in VAPI_SYNC_RESULTS:
            self._vapi_syncs.labels(result=result)

    def synced(self, action: SyncAction, latency_seconds: float | None) -> None:
        """Google confirmed an insert, update or delete; `latency_seconds` from the change's commit, when known."""
        self._synced.labels(action=_check_label("action", action, SYNC_ACTIONS)).inc()
        # A NaN or infinity would poison the histogram's sum for the life of the process.
        if latency_seconds is not None and math.isfinite(latency_seconds):
            # The commit time comes from the database's clock; a little skew must not make it negative.
            self._latency.observe(max(0.0, latency_seconds))

    def failed(self, reason: FailureReason) -> None:
        self._failed.labels(reason=_check_label("failure reason", reason, FAILURE_REASONS)).inc()

    def parked(self) -> None:
        self._parked.inc()

    def retried(self, reason: RetryReason) -> None:
        self._retries.labels(reason=_check_label("retry reason", reason, RETRY_REASONS)).inc()

    def claimed(self, count: int) -> None:
        """One claim query that returned `count` appointments (0 included: empty claims are part of the ratio)."""
        if count < 0:
            raise ValueError(f"claimed count must not be negative, got {count}")
        self._claims.inc()
        self._claimed.inc(count)

    def token_refresh(self, result: RefreshResult) -> None:
        self._refreshes.labels(result=_check_label("token refresh result", result, REFRESH_RESULTS)).inc()

    def backlog(self, snapshot: BacklogSnapshot) -> None:
        """Replace the backlog gauges with a database snapshot; a state it leaves out is 0, not its old value."""
        for state in BACKLOG_STATES:
            self._backlog.labels(state=state).set(snapshot.by_state.get(state, 0))
        self._oldest_pending.set(snapshot.oldest_pending_age_seconds)
        self._needs_reauth.set(snapshot.clinics_needing_reauth)
        self._backlog_updated.set(time.time())

    def mirrored(self, kind: MirrorKind, changes: MirrorSummary | None = None) -> None:
        """One listing applied (with what it changed) or failed."""
        self._mirror_runs.labels(_check_label("mirror kind", kind, MIRROR_KINDS)).inc()
        for change in MIRROR_CHANGES:
            count = getattr(changes, change, 0)
            if count:
                self._mirror_changes.labels(change).inc(count)

    def mirror_freshness(self, mirrors: Iterable[MirrorFreshness]) -> None:
        """Per connected clinic: seconds since its mirror ran (-1: never); replaces the last snapshot."""
        self._mirror_age.clear()
        stale = 0
        for mirror in mirrors:
            age = -1.0 if mirror.age_seconds is None else mirror.age_seconds
            self._mirror_age.labels(str(mirror.clinic_id)).set(age)
            stale += mirror.stale
        self._mirrors_stale.set(stale)

    def google_budget(self, snapshot: BudgetSnapshot) -> None:
        """Replace the budget gauges with a database snapshot (accounts not among the busiest are dropped)."""
        self._google_window.clear()
        self._google_window.labels(budget="project", account="").set(snapshot.project_used)
        for account, used in snapshot.accounts:
            self._google_window.labels(budget="account", account=account).set(used)
        self._google_limit.labels(budget="project").set(snapshot.project_limit)
        self._google_limit.labels(budget="account").set(snapshot.account_limit)
        self._google_throttled.set(snapshot.throttled)
        self._held_back.set(snapshot.held_back_clinics)

    def vapi_synced(self, result: VapiSyncResult) -> None:
        self._vapi_syncs.labels(result=_check_label("vapi sync result", result, VAPI_SYNC_RESULTS)).inc()

    def vapi_setups(self, setups: Iterable[VapiSetup]) -> None:
        """Replace the Vapi gauges with a database snapshot of every clinic set up in Vapi."""
        now = dt.datetime.now(dt.UTC)
        stale = [s for s in setups if s.stale]
        ages = [max(0.0, (now - s.stale_since).total_seconds()) for s in stale if s.stale_since]
        self._vapi_stale.set(len(stale))
        self._vapi_stale_age.set(max(ages, default=0.0))

    def feed_state(self, state: str | None) -> None:
        """The change feed's state (a `FeedState` is a str); None means the feed is disabled."""
        value = "disabled" if state is None else str(state)
        self._feed.state(_check_label("feed state", value, FEED_STATES))

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: Mapping[str, Any]  # JSON-serialisable; included in the response body


Check = Callable[[], Health]
_ALLOWED_METHODS = ("GET", "HEAD")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: probes every few seconds would drown the daemon's own log."""


class _Server(ThreadingWSGIServer):
    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's fully qualified name, a reverse DNS lookup
        # that can stall start-up for seconds in a container; WSGI only needs a SERVER_NAME.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; a client hanging up mid-request is not news.
        logger.debug("health server: a connection failed while being handled")


class _Server6(_Server):
    address_family = socket.AF_INET6


def _server_class(host: str, port: int) -> type[_Server]:
    """The server class for the host's address family: WSGIServer alone binds IPv4 only, and a
    dual-stack cluster may hand the daemon "::"."""
    if not host:  # "" means every IPv4 interface to bind(), but getaddrinfo() cannot resolve it
        return _Server
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return _Server6 if family == socket.AF_INET6 else _Server


class HealthServer:
    """Serves /metrics (Prometheus text format), /healthz (liveness) and /readyz (readiness) on a background thread.

    `liveness` and `readiness` are called on the server's request threads, possibly several at
    once, so they must be thread-safe and quick: read state the daemon keeps, never await it.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        host: str,
        port: int,
        liveness: Callable[[], Health],
        readiness: Callable[[], Health],
    ) -> None:
        self._host = host
        self._requested_port = port
        self._metrics_app: WSGIApplication = make_wsgi_app(metrics.registry)
        self._checks: dict[str, Check] = {"/healthz": liveness, "/readyz": readiness}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve; port 0 picks a free port. Raises OSError when the address cannot be bound."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError("the health server is already running")
            server = self._bind()
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="health-server", daemon=True
            )
            thread.start()
            self._server, self._thread = server, thread
        logger.info("serving /metrics, /healthz and /readyz on {}:{}", self._host, self.port)

    def _bind(self) -> _Server:
        where = f"{self._host}:{self._requested_port}"
        try:
            server_class = _server_class(self._host, self._requested_port)
            return make_server(
                self._host, self._requested_port, self._app, server_class=server_class, handler_class=_QuietHandler
            )
        except OSError as error:
            # The bare errno text ("Address already in use") does not say which setting to change.
            reason = error.strerror or str(error)
            raise OSError(error.errno, f"cannot serve /metrics, /healthz and /readyz on {where}: {reason}") from error

    @property
    def port(self) -> int:
        """The bound port (the one picked when started with port 0)."""
        server = self._server
        if server is None:
            raise RuntimeError("the health server is not running")
        return server.server_port

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread; does nothing when not running."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ["REQUEST_METHOD"]
        if path != "/metrics" and path not in self._checks:
            return _respond(start_response, HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n", method)
        if method not in _ALLOWED_METHODS:
            return _respond(
                start_response,
                HTTPStatus.METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                b"method not allowed\n",
                method,
                [("Allow", ", ".join(_ALLOWED_METHODS))],
            )
        if path == "/metrics":
            return self._serve_metrics(environ, start_response)
        status, body = _run_check(path, self._checks[path])
        return _respond(start_response, status, "application/json", body, method)

    def _serve_metrics(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # prometheus_client's app negotiates the format (text or OpenMetrics) and compression; it
        # answers only GET, so a HEAD is asked as a GET and answered with its headers alone.
        if environ["REQUEST_METHOD"] == "GET":
            return self._metrics_app(environ, start_response)
        answer: list[tuple[str, list[tuple[str, str]]]] = []

        def keep(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
            answer.append((status, headers))
            return lambda _data: None

        body = b"".join(self._metrics_app({**environ, "REQUEST_METHOD": "GET"}, keep))
        status, headers = answer[0]
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return []


def _run_check(path: str, check: Check) -> tuple[HTTPStatus, bytes]:
    """Call a health check; any exception it raises is an unhealthy answer naming only the exception's type."""
    try:
        health = check()
        if not isinstance(health, Health):
            raise TypeError(f"a health check returned {type(health).__name__}, not Health")
        body: dict[str, Any] = {"ok": bool(health.ok)}
        body.update((key, value) for key, value in health.detail.items() if key != "ok")
        encoded = json.dumps(body).encode()
    except Exception as error:  # a broken check must answer "not ok", never take the server down
        # The message could hold connection strings or ids; the type is enough to start looking.
        logger.warning("health check {} raised {}", path, type(error).__name__)
        return HTTPStatus.SERVICE_UNAVAILABLE, json.dumps({"ok": False, "error": type(error).__name__}).encode()
    return (HTTPStatus.OK if health.ok else HTTPStatus.SERVICE_UNAVAILABLE), encoded


def _respond(
    start_response: StartResponse,
    status: HTTPStatus,
    content_type: str,
    body: bytes,
    method: str,
    extra_headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        # A cached "ok" would hide an unhealthy replica from whoever asks next.
        ("Cache-Control", "no-store"),
        *(extra_headers or []),
    ]
    start_response(f"{status.value} {status.phrase}", headers)
    return [] if method == "HEAD" else [body]
