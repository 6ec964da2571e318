"""Someone at the clinic working in Google Calendar directly, with the real API client and a
token of their own: how staff events, moves and deletions reach the Google stand-in."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import httplib2
from google.oauth2.credentials import Credentials
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import build

from tests.standins.google import GoogleStandIn

LONDON = ZoneInfo("Europe/London")


class Receptionist:
    """Someone at the clinic working in Google Calendar directly (the real API client, their own token)."""

    def __init__(self, google: GoogleStandIn, account: str) -> None:
        credentials = Credentials(  # type: ignore[no-untyped-call]
            token=None,
            refresh_token=google.issue_refresh_token(account),
            token_uri=google.token_uri,
            client_id=google.client_id,
            client_secret=google.client_secret,
        )
        self._http = httplib2.Http(timeout=10)
        service = build(
            "calendar", "v3", http=AuthorizedHttp(credentials, http=self._http), cache_discovery=False,
            client_options={"api_endpoint": google.api_endpoint},
        )  # fmt: skip
        self._events = service.events()

    def close(self) -> None:
        self._http.close()

    def add(self, day: dt.date, start: str, end: str, *, calendar_id: str = "primary", **extra: Any) -> str:
        body = {"summary": "Dr Patel: lunch", "start": at(day, start), "end": at(day, end), **extra}
        return str(self._events.insert(calendarId=calendar_id, body=body).execute()["id"])

    def add_all_day(self, first: dt.date, after_last: dt.date) -> str:
        body = {"summary": "Training", "start": {"date": first.isoformat()}, "end": {"date": after_last.isoformat()}}
        return str(self._events.insert(calendarId="primary", body=body).execute()["id"])

    def add_series(self, first: dt.date, start: str, end: str, rule: str, **extra: Any) -> str:
        """A recurring event (`rule`: an RRULE line, e.g. "RRULE:FREQ=WEEKLY;COUNT=4") from `first`."""
        body = {"summary": "Staff meeting", "start": at(first, start), "end": at(first, end), "recurrence": [rule]}
        return str(self._events.insert(calendarId="primary", body={**body, **extra}).execute()["id"])

    def add_all_day_series(self, first: dt.date, rule: str) -> str:
        after = first + dt.timedelta(days=1)
        body = {
            "summary": "Theatre day",
            "start": {"date": first.isoformat()},
            "end": {"date": after.isoformat()},
            "recurrence": [rule],
        }
        return str(self._events.insert(calendarId="primary", body=body).execute()["id"])

    def occurrences(self, series_id: str, since: dt.date) -> list[dict[str, Any]]:
        """The series' occurrences from `since` on, as Google lists them with singleEvents."""
        time_min = dt.datetime.combine(since, dt.time(), LONDON).isoformat()
        items = self._events.list(calendarId="primary", singleEvents=True, timeMin=time_min).execute()["items"]
        return [item for item in items if item.get("recurringEventId") == series_id]

    def delete(self, event_id: str) -> None:
        self._events.delete(calendarId="primary", eventId=event_id).execute()

    def move(self, event_id: str, day: dt.date, start: str, end: str) -> None:
        self._events.patch(
            calendarId="primary", eventId=event_id, body={"start": at(day, start), "end": at(day, end)}
        ).execute()


def at(day: dt.date, clock: str) -> dict[str, str]:
    local = dt.datetime.combine(day, dt.time.fromisoformat(clock), LONDON)
    return {"dateTime": local.isoformat(), "timeZone": "Europe/London"}
