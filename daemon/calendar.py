"""Pushing one appointment to its clinic's Google Calendar, idempotently.

The event id is derived from the appointment id, so whatever happens (lost responses, retries,
two replicas, a crash between Google's answer and our write-back) there is only ever one event
per appointment: a repeated insert gets 409, a deleted event keeps its id and is restored.

google-api-python-client is synchronous and httplib2 is not thread-safe, so each worker thread
gets its own Http and its own client.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import httplib2
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from daemon.domain.google_budget import BudgetExhausted
from daemon.domain.sync_queue import Claim, RetryReason

RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
QUOTA_REASONS = frozenset({"quotaExceeded", "dailyLimitExceeded"})


def event_id_for(appointment_id: uuid.UUID, generation: int = 0) -> str:
    """Google event ids allow a-v and 0-9 (base32hex), 5 to 1024 characters: the appointment id's 26, then
    for a generation after the first (Google refused to restore a deleted event) its number."""
    base = base64.b32hexencode(appointment_id.bytes).decode().rstrip("=").lower()
    return base if generation == 0 else f"{base}{generation}"


_OUR_EVENT_ID = re.compile(r"(?P<base>[0-9a-v]{26})(?P<generation>[1-9][0-9]{0,3})?")


def appointment_of(event_id: str) -> uuid.UUID | None:
    """The appointment an event id of ours names (any generation), or None for an id that cannot be one.
    Google's own ids look alike, so the database checks that such an appointment exists in the clinic."""
    match = _OUR_EVENT_ID.fullmatch(event_id)
    if match is None:
        return None
    return uuid.UUID(bytes=base64.b32hexdecode(match["base"].upper() + "======"))


def event_body(claim: Claim) -> dict[str, Any]:
    zone = ZoneInfo(claim.time_zone)
    name = str(claim.patient.get("name", ""))
    phone = claim.patient.get("phone")
    lines = [f"Patient: {name}"]
    if phone:
        lines.append(f"Phone: {phone}")
    lines.append(f"Service: {claim.service}")
    if claim.practitioner_name:
        lines.append(f"With: {claim.practitioner_name}")
    lines.append(f"Reference: {claim.reference}")
    if claim.notes:
        lines.append(f"Notes: {claim.notes}")
    lines.append("Booked by the clinic's phone assistant.")
    return {
        "id": event_id_for(claim.appointment_id, claim.event_generation),
        "status": "confirmed",
        "summary": f"{claim.service}: {name}",
        "description": "\n".join(lines),
        "start": {"dateTime": claim.starts_at.astimezone(zone).isoformat(), "timeZone": claim.time_zone},
        "end": {"dateTime": claim.ends_at.astimezone(zone).isoformat(), "timeZone": claim.time_zone},
        # The revision tells the busy mirror a late-landing write of ours from a change made in Google.
        "extendedProperties": {
            "private": {
                "appointmentId": str(claim.appointment_id),
                "reference": claim.reference,
                "revision": str(claim.revision),
            }
        },
    }


class Verdict(enum.Enum):
    SYNCED = "synced"
    RETRY = "retry"  # transient: rate limits, 5xx, timeouts, network
    QUOTA = "quota"  # a daily/project quota: retry, but much later
    FAILED = "failed"  # permanent: the reason is recorded for an operator
    UNAUTHORIZED = "unauthorized"  # the access token was refused: refresh and try once more
    RESTORE_REFUSED = "restore_refused"  # the event was deleted and Google will not bring it back: a new id


@dataclass(frozen=True)
class PushResult:
    verdict: Verdict
    event_id: str | None = None
    event_link: str | None = None
    error: str | None = None
    retry_reason: RetryReason | None = None  # why a RETRY / QUOTA verdict, for metrics
    retry_after: float | None = None  # when it is known how long to wait (the Google budget)


def _reason(error: HttpError) -> str:
    details = error.error_details
    if isinstance(details, list) and details and isinstance(details[0], dict):
        return str(details[0].get("reason", ""))
    try:
        return str(json.loads(error.content)["error"]["errors"][0]["reason"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def classify(error: HttpError, *, what: str) -> PushResult:
    status = error.status_code
    reason = _reason(error)
    text = f"Google {what}: HTTP {status}" + (f" {reason}" if reason else "")
    if status == 401:
        return PushResult(Verdict.UNAUTHORIZED, error=text)
    if status == 429 or (status == 403 and reason in RATE_LIMIT_REASONS):
        return PushResult(Verdict.RETRY, error=text, retry_reason="rate_limited")
    if status >= 500:
        return PushResult(Verdict.RETRY, error=text, retry_reason="google_error")
    if status == 403 and reason in QUOTA_REASONS:
        return PushResult(Verdict.QUOTA, error=text, retry_reason="quota")
    if status == 404:
        return PushResult(Verdict.FAILED, error=f"{text} (the clinic's calendar was not found)")
    return PushResult(Verdict.FAILED, error=text)


def _same_event(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    def instant(side: dict[str, Any]) -> dt.datetime | None:
        value = side.get("dateTime")
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None

    return (
        existing.get("status") == "confirmed"
        and all(instant(existing.get(k, {})) == instant(wanted[k]) for k in ("start", "end"))
        and all(existing.get(k) == wanted[k] for k in ("summary", "description"))
    )


@dataclass(frozen=True)
class ChannelRequest:
    """A push channel to ask Google for: where to notify, and the secret it sends back with each one."""

    channel_id: str
    address: str
    token: str = field(repr=False)
    ttl_seconds: int


@dataclass(frozen=True)
class WatchedChannel:
    channel_id: str
    resource_id: str
    expires_at: dt.datetime


class RestoreRefused(Exception):
    """The appointment's event was deleted in Google and Google refuses to bring it back."""


@dataclass(frozen=True)
class CalendarInfo:
    calendar_id: str
    summary: str
    time_zone: str | None


class FullSyncRequired(Exception):
    """Google expired the sync token (410): list the whole calendar again."""


@dataclass(frozen=True)
class Listing:
    events: list[dict[str, Any]]
    next_sync_token: str | None
    full: bool  # every event of the calendar (in the window), not only changes


class RequestBudget(Protocol):
    """Where every Calendar request is counted before it is sent (daemon.budget.GoogleBudget)."""

    def spend(self, clinic_id: uuid.UUID) -> None:
        """One request for the clinic is about to be sent; raises BudgetExhausted when it may not be."""

    def throttled(self, clinic_id: uuid.UUID, reason: str) -> None:
        """Google answered the clinic's account with a rate or usage limit (`reason`, e.g. quotaExceeded)."""


class GoogleCalendar:
    """Calendar API v3 calls, one Http and client per worker thread. Every request goes through `_run`,
    which counts it against the clinic's Google budget first."""

    def __init__(self, api_endpoint: str, *, timeout: float, budget: RequestBudget | None = None) -> None:
        self._api_endpoint = api_endpoint
        self._timeout = timeout
        self._budget = budget
        self._local = threading.local()
        self._https: list[httplib2.Http] = []
        self._https_lock = threading.Lock()

    def close(self) -> None:
        """Close every worker's connections; call once no push is running."""
        with self._https_lock:
            for http in self._https:
                http.close()
            self._https.clear()

    def _events(self) -> Any:
        # The events resource is made once per thread: `service.events()` builds a new Resource each time,
        # re-creating every method from the discovery document (docstrings included), which cost more CPU
        # than the whole rest of a push.
        events = getattr(self._local, "events", None)
        if events is None:
            self._local.events = events = self._service().events()
        return events

    def _service(self) -> Any:
        service = getattr(self._local, "service", None)
        if service is None:
            http = httplib2.Http(timeout=self._timeout)
            with self._https_lock:
                self._https.append(http)
            service = build(
                "calendar",
                "v3",
                http=http,
                cache_discovery=False,
                static_discovery=True,
                client_options={"api_endpoint": self._api_endpoint},
            )
            self._local.service = service
        return service

    def _run(self, request: Any, access_token: str, clinic_id: uuid.UUID) -> Any:
        if self._budget is not None:
            self._budget.spend(clinic_id)
        request.headers["authorization"] = f"Bearer {access_token}"
        try:
            return request.execute(num_retries=0)
        except HttpError as error:
            reason = _reason(error)
            if self._budget is not None and (error.status_code == 429 or reason in RATE_LIMIT_REASONS | QUOTA_REASONS):
                self._budget.throttled(clinic_id, reason or f"HTTP {error.status_code}")
            raise

    def push(self, claim: Claim, access_token: str) -> PushResult:
        """Make Google's calendar match the claimed revision. Runs in a worker thread.

        An event that must change calendars (its booking moved to another practitioner) is put into the
        new calendar first and only then deleted from the old one: a crash or a failure between the two
        leaves it in both for a moment (the mirror ignores the copy), never in neither, and the repeat
        of either step is harmless (the same id: 409 on insert, 404/410 on delete)."""
        try:
            if claim.status == "cancelled":
                return self._remove(claim, access_token)
            if claim.moving:
                result = self._put(claim.model_copy(update={"calendar_event_id": None}), access_token)
                self._delete_moved(claim, access_token)
                return result
            return self._put(claim, access_token)
        except HttpError as error:
            return classify(error, what="calendar request failed")
        except BudgetExhausted as error:
            return PushResult(Verdict.RETRY, error=str(error), retry_reason="budget", retry_after=error.retry_after)
        except RestoreRefused as error:
            return PushResult(Verdict.RESTORE_REFUSED, error=str(error))
        except (TimeoutError, OSError, httplib2.HttpLib2Error) as error:
            return PushResult(
                Verdict.RETRY, error=f"Google unreachable: {type(error).__name__}", retry_reason="network"
            )

    def _put(self, claim: Claim, token: str) -> PushResult:
        events = self._events()
        body = event_body(claim)
        calendar, event_id, clinic = claim.calendar_id, body["id"], claim.clinic_id
        if claim.calendar_event_id is not None:
            try:
                event = self._update(events, calendar, event_id, body, token, clinic)
                return PushResult(Verdict.SYNCED, event["id"], event.get("htmlLink"))
            except HttpError as error:
                if error.status_code != 404:
                    raise
        try:
            event = self._run(events.insert(calendarId=calendar, body=body), token, clinic)
        except HttpError as error:
            if error.status_code != 409:
                raise
            # Created before (a lost response, another replica): confirm it, restore or update it.
            event = self._run(events.get(calendarId=calendar, eventId=event_id), token, clinic)
            if not _same_event(event, body):
                event = self._update(events, calendar, event_id, body, token, clinic)
        return PushResult(Verdict.SYNCED, event["id"], event.get("htmlLink"))

    def _update(
        self, events: Any, calendar: str, event_id: str, body: dict[str, Any], token: str, clinic: uuid.UUID
    ) -> Any:
        """Update the event (restoring it when it was deleted); RestoreRefused when it was deleted and
        Google will not bring it back (403 forbidden, or 409), which only a new event id mends."""
        try:
            return self._run(events.update(calendarId=calendar, eventId=event_id, body=body), token, clinic)
        except HttpError as error:
            if not (error.status_code == 409 or (error.status_code == 403 and _reason(error) == "forbidden")):
                raise
            current = self._run(events.get(calendarId=calendar, eventId=event_id), token, clinic)
            if current.get("status") == "cancelled":
                raise RestoreRefused(
                    f"Google refused to restore deleted event {event_id}: HTTP {error.status_code}"
                ) from error
            raise

    def describe(self, clinic_id: uuid.UUID, calendar_id: str, access_token: str) -> CalendarInfo:
        """The calendar's name and time zone, from a one-item events.list (the calendar.events scope
        allows no calendars.get). Proves the token works and the calendar exists; raises HttpError."""
        listing = self._run(self._events().list(calendarId=calendar_id, maxResults=1), access_token, clinic_id)
        return CalendarInfo(calendar_id, str(listing.get("summary") or calendar_id), listing.get("timeZone"))

    def changes(
        self,
        clinic_id: uuid.UUID,
        calendar_id: str,
        access_token: str,
        sync_token: str | None,
        since: dt.datetime,
        page_size: int = 250,
    ) -> Listing:
        """What changed since `sync_token` (deleted events included), or, without one, every event
        from `since` on; recurring events as their occurrences; all pages. Raises FullSyncRequired or
        HttpError. An incremental listing repeats every parameter of the full one that Google allows with
        a sync token: without `singleEvents` it would get a recurring series as its first occurrence only."""
        query: dict[str, Any] = {"singleEvents": True, "showDeleted": True}
        query |= {"syncToken": sync_token} if sync_token else {"timeMin": since.isoformat()}
        events: list[dict[str, Any]] = []
        page_token: str | None = None
        while True:
            request = self._events().list(calendarId=calendar_id, maxResults=page_size, pageToken=page_token, **query)
            try:
                page = self._run(request, access_token, clinic_id)
            except HttpError as error:
                if error.status_code == 410 and sync_token:
                    raise FullSyncRequired from error
                raise
            events.extend(page.get("items", []))
            page_token = page.get("nextPageToken")
            if not page_token:
                return Listing(events, page.get("nextSyncToken"), full=not sync_token)

    def watch(
        self, clinic_id: uuid.UUID, calendar_id: str, access_token: str, channel: ChannelRequest
    ) -> WatchedChannel:
        """Ask Google to notify `channel.address` of every change to the calendar's events (events.watch)."""
        body: dict[str, Any] = {
            "id": channel.channel_id,
            "type": "web_hook",
            "address": channel.address,
            "token": channel.token,
            "params": {"ttl": str(channel.ttl_seconds)},
        }
        answer = self._run(self._events().watch(calendarId=calendar_id, body=body), access_token, clinic_id)
        expiration = dt.datetime.fromtimestamp(int(answer["expiration"]) / 1000, dt.UTC)
        return WatchedChannel(str(answer["id"]), str(answer["resourceId"]), expiration)

    def stop_channel(self, clinic_id: uuid.UUID, channel_id: str, resource_id: str, access_token: str) -> None:
        """End a channel's notifications (channels.stop); one Google no longer knows is ended already."""
        request = self._service().channels().stop(body={"id": channel_id, "resourceId": resource_id})
        try:
            self._run(request, access_token, clinic_id)
        except HttpError as error:
            if error.status_code != 404:
                raise

    def event(self, clinic_id: uuid.UUID, calendar_id: str, event_id: str, access_token: str) -> dict[str, Any]:
        """One event as Google has it (a deleted one has status "cancelled"); raises HttpError."""
        request = self._events().get(calendarId=calendar_id, eventId=event_id)
        event: dict[str, Any] = self._run(request, access_token, clinic_id)
        return event

    def _remove(self, claim: Claim, token: str) -> PushResult:
        event_id = event_id_for(claim.appointment_id, claim.event_generation)
        self._delete(claim.clinic_id, claim.calendar_id, event_id, token)
        if claim.moving:  # cancelled in the middle of a move: the event may be in either calendar
            self._delete_moved(claim, token)
        return PushResult(Verdict.SYNCED, event_id)

    def _delete_moved(self, claim: Claim, token: str) -> None:
        assert claim.event_calendar_id is not None
        event_id = claim.calendar_event_id or event_id_for(claim.appointment_id, claim.event_generation)
        self._delete(claim.clinic_id, claim.event_calendar_id, event_id, token)

    def _delete(self, clinic_id: uuid.UUID, calendar_id: str, event_id: str, token: str) -> None:
        try:
            self._run(self._events().delete(calendarId=calendar_id, eventId=event_id), token, clinic_id)
        except HttpError as error:
            if error.status_code not in (404, 410):  # never created, or already deleted: done
                raise
