"""The Google stand-in behaves like Google, as seen through the real google-api-python-client and google-auth."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import google_auth_httplib2
import httplib2
import pytest
from google.auth.exceptions import RefreshError
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from tests.standins.google import CALENDAR_EVENTS_SCOPE, Fault, GoogleStandIn, RecordedRequest

CLINIC = "clinic@example.com"
OTHER_CLINIC = "other@example.com"
TEAM_CALENDAR = "team@group.calendar.google.com"
EVENTS_PATH = "/calendar/v3/calendars/primary/events"

Connect = Callable[..., Any]


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


def test_latency_applies_to_calendar_requests(google: GoogleStandIn, refresh_token: str, connect: Connect) -> None:
    service = connect(credentials(google, refresh_token), timeout=0.3)
    google.latency = 2.0
    with pytest.raises(TimeoutError):
        service.events().list(calendarId="primary").execute()
    google.latency = 0.0
    service.events().list(calendarId="primary").execute()


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
