"""The change feed: a booking wakes the daemon at once, outages lose nothing, floods coalesce.

The timer sweep is set to a minute here, so anything synced within seconds was picked up by the
feed (a change, or the sweep that follows every (re)subscription), never by the timer.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import warnings
from collections.abc import Iterator

import psycopg
import pytest
from realtime import AsyncRealtimeClient
from realtime.types import RealtimeChannelOptions

from daemon.feed import DOORBELL_TOPIC, FEED_APPLICATION_NAME, FeedState, RealtimeFeed
from tests.conftest import Clinic, Database
from tests.daemon_harness import (
    Backend,
    DaemonThread,
    all_synced,
    connect_google,
    make_settings,
    running,
    sync_states,
    wait_until,
)
from tests.dates import upcoming
from tests.standins.google import GoogleStandIn
from tests.standins.postgres import AUTHENTICATOR, MIGRATOR, scalar
from tests.standins.realtime import RealtimeStandIn
from tests.standins.supabase_rest import SupabaseRestStandIn, make_api_key
from tests.standins.vapi import Assistant

TUESDAY = 2
# Google's per-clinic rate limit is not what these tests are about: keep it out of the way.
NO_TIMER = {"sync_poll_seconds": 60, "google_requests_per_minute": 100_000}


@pytest.fixture
def backend(database: Database) -> Backend:
    return Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)}, feed=True)


@pytest.fixture
def connected(admin: psycopg.Connection, google: GoogleStandIn, clinic: Clinic) -> Clinic:
    connect_google(admin, google, clinic.id)
    return clinic


def flood(admin: psycopg.Connection, clinic: Clinic, count: int) -> None:
    """`count` separate commits (autocommit), pipelined: a burst of doorbells."""
    with admin.pipeline(), admin.cursor() as cursor:
        for n in range(count):
            cursor.execute(
                "insert into public.appointments (clinic_id, reference, patient, service, starts_at, ends_at)"
                " values (%s, %s, '{\"name\": \"Pat\"}', 'Check-up', '2031-01-07 08:00Z'::timestamptz"
                " + make_interval(mins => 30 * %s), '2031-01-07 08:30Z'::timestamptz + make_interval(mins => 30 * %s))",
                (clinic.id, f"F{n:05d}", n, n),
            )


def book(assistant: Assistant, clock: str) -> None:
    result = assistant.use("book_appointment", {"start": f"{upcoming(TUESDAY)}T{clock}", "patient_name": "Jo"})
    assert "result" in result, result


@pytest.fixture
def daemon(backend: Backend, google: GoogleStandIn) -> Iterator[DaemonThread]:
    with running(make_settings(backend, google, **NO_TIMER)) as runner:
        wait_until(
            lambda: runner.daemon.feed is not None and runner.daemon.feed.state is FeedState.SUBSCRIBED,
            what="the feed subscribed",
        )
        yield runner


def test_a_booking_wakes_the_daemon_without_waiting_for_the_timer(
    daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, connected: Clinic
) -> None:
    started = time.monotonic()
    book(assistant, "10:00")
    wait_until(all_synced(admin), timeout=5, what="the booking synced by the doorbell")
    assert time.monotonic() - started < 5  # the timer would have taken a minute
    assert daemon.daemon.feed is not None and daemon.daemon.feed.last_change_at is not None


def test_bookings_made_while_the_listener_is_down_are_synced_after_it_reconnects(
    daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, connected: Clinic
) -> None:
    feed = daemon.daemon.feed
    assert feed is not None and feed.subscriptions == 1
    killed = scalar(
        admin,
        "select count(pg_terminate_backend(pid)) from pg_stat_activity where application_name = %s",
        (FEED_APPLICATION_NAME,),
    )
    assert killed == 1
    book(assistant, "10:00")  # nobody is listening: this notification is lost
    book(assistant, "11:00")
    wait_until(lambda: feed.subscriptions == 2, what="the feed resubscribed")
    wait_until(all_synced(admin), timeout=5, what="the sweep after resubscribing")
    assert sync_states(admin) == {"synced": 2}


def test_a_flood_of_changes_does_not_make_a_flood_of_claims(
    daemon: DaemonThread, admin: psycopg.Connection, connected: Clinic
) -> None:
    before = daemon.daemon.claims
    started = time.monotonic()
    flood(admin, connected, 200)
    burst = time.monotonic() - started
    wait_until(all_synced(admin), timeout=30, what="the flood synced")
    claims = daemon.daemon.claims - before
    # Doorbells that ring while a claim runs, or within the coalescing window, merge into one
    # more claim; the backlog is taken in batches of at least a quarter of the workers (8).
    assert claims <= 200 / 4, (claims, f"burst took {burst:.3f}s")


# --- the Supabase path: Realtime --------------------------------------------------------------


@pytest.fixture
def realtime(database: Database) -> Iterator[RealtimeStandIn]:
    with RealtimeStandIn(database.dsn()) as standin:
        yield standin


@pytest.fixture
def realtime_daemon(database: Database, google: GoogleStandIn, realtime: RealtimeStandIn) -> Iterator[DaemonThread]:
    with SupabaseRestStandIn(database.dsn(AUTHENTICATOR)) as rest:
        backend = Backend(
            "supabase",
            {
                "SUPABASE_URL": rest.url,
                "SUPABASE_SERVICE_ROLE_KEY": rest.service_role_key,
                "SUPABASE_REALTIME_URL": realtime.url,
            },
            feed=True,
        )
        with running(make_settings(backend, google, **NO_TIMER)) as runner:
            wait_until(lambda: subscriptions(runner) == 1, what="the feed subscribed")
            yield runner


def subscriptions(runner: DaemonThread) -> int:
    feed = runner.daemon.feed
    return feed.subscriptions if feed is not None and feed.state is FeedState.SUBSCRIBED else 0


def swept_after_subscribing(runner: DaemonThread) -> bool:
    """The sweep the first subscription rings for has run to its end, and no claim is running. The daemon's first
    claim starts before the feed can subscribe, so that sweep is its second claim (with the timer at a minute,
    nothing else claims)."""
    finished = runner.daemon.metrics.registry.get_sample_value("calendar_sync_claims_total") or 0
    return finished >= 2 and finished == runner.daemon.claims


def test_realtime_wakes_the_daemon_for_a_booking(
    realtime_daemon: DaemonThread, admin: psycopg.Connection, assistant: Assistant, connected: Clinic
) -> None:
    book(assistant, "10:00")
    wait_until(all_synced(admin), timeout=5, what="the booking synced by Realtime")
    feed = realtime_daemon.daemon.feed
    assert feed is not None and feed.last_change_at is not None and feed.subscriptions == 1


@pytest.mark.parametrize("outage", ["dropped", "closed cleanly", "restarted"])
def test_bookings_made_while_realtime_is_away_are_synced_after_it_comes_back(
    realtime_daemon: DaemonThread,
    realtime: RealtimeStandIn,
    admin: psycopg.Connection,
    assistant: Assistant,
    connected: Clinic,
    outage: str,
) -> None:
    {"dropped": realtime.drop_connections, "closed cleanly": realtime.close_connections, "restarted": realtime.restart}[
        outage
    ]()
    book(assistant, "10:00")
    book(assistant, "11:00")
    wait_until(lambda: subscriptions(realtime_daemon) == 2, what="the feed rebuilt and resubscribed")
    wait_until(all_synced(admin), timeout=5, what="the sweep after resubscribing")
    assert sync_states(admin) == {"synced": 2}


def test_a_silent_realtime_connection_is_noticed_and_replaced(
    realtime_daemon: DaemonThread,
    realtime: RealtimeStandIn,
    admin: psycopg.Connection,
    assistant: Assistant,
    connected: Clinic,
) -> None:
    # Else the sweep after subscribing, when it runs late (a loaded machine), finds the booking below.
    wait_until(lambda: swept_after_subscribing(realtime_daemon), what="the sweep after subscribing")
    realtime.go_silent()  # the socket stays open; nothing comes back, changes included
    book(assistant, "10:00")
    feed = realtime_daemon.daemon.feed
    assert feed is not None
    wait_until(lambda: feed.state is FeedState.DOWN, what="the silence noticed by the liveness probe")
    assert sync_states(admin) == {"pending": 1}
    realtime.resume()
    wait_until(lambda: subscriptions(realtime_daemon) >= 2, what="a new subscription")
    wait_until(all_synced(admin), timeout=5, what="the sweep after resubscribing")
    # The silent connection was dropped when its closing handshake went unanswered, not left open.
    wait_until(lambda: realtime.connection_count() == 1, timeout=5, what="only the new connection open")


def test_a_flood_through_realtime_does_not_make_a_flood_of_claims(
    realtime_daemon: DaemonThread, admin: psycopg.Connection, connected: Clinic
) -> None:
    before = realtime_daemon.daemon.claims
    flood(admin, connected, 200)
    wait_until(all_synced(admin), timeout=30, what="the flood synced")
    assert realtime_daemon.daemon.claims - before <= 200 / 4


def test_the_supabase_doorbell_carries_ids_and_nothing_of_the_patient(
    realtime_daemon: DaemonThread,
    realtime: RealtimeStandIn,
    admin: psycopg.Connection,
    assistant: Assistant,
    connected: Clinic,
) -> None:
    feed = realtime_daemon.daemon.feed
    assert feed is not None and feed.last_change_at is None
    result = assistant.use(
        "book_appointment",
        {
            "start": f"{upcoming(TUESDAY)}T10:00",
            "patient_name": "Philippa Quartermaine",
            "patient_phone": "07700 900123",
            "notes": "allergic to latex",
        },
    )
    assert "result" in result, result
    wait_until(all_synced(admin), timeout=5, what="the booking synced by the doorbell")
    assert feed.last_change_at is not None  # rung by the broadcast, not found by the (one-minute) timer
    appointment_id, clinic_id = admin.execute("select id, clinic_id from public.appointments").fetchone() or ()

    sent = realtime.messages_sent()
    doorbells = [m for m in sent if m["event"] == "broadcast" and m["payload"].get("event") == "pending"]
    assert doorbells, sent
    for message in doorbells:
        assert message["topic"] == "realtime:calendar-sync"
        ids = message["payload"]["payload"]
        assert set(ids) == {"appointment_id", "clinic_id", "id"}  # `id`: the message's own, added by realtime.send
        assert (ids["appointment_id"], ids["clinic_id"]) == (str(appointment_id), str(clinic_id))
    wire = json.dumps(sent)
    for detail in ("Philippa", "Quartermaine", "900123", "latex", "Check-up"):
        assert detail not in wire
    assert not [m for m in sent if m["event"] == "postgres_changes"]


@pytest.mark.parametrize("who", ["anon key", "publishable key", "staff, even with a policy reading every topic"])
def test_only_the_service_role_joins_the_doorbell_topic(
    realtime: RealtimeStandIn, admin: psycopg.Connection, connected: Clinic, who: str
) -> None:
    key = {
        "anon key": realtime.anon_key,
        "publishable key": realtime.publishable_key,
        "staff, even with a policy reading every topic": make_api_key("authenticated"),
    }[who]
    admin.execute(
        "create policy staff_read_all on realtime.messages for select to authenticated using (true);"
        " create policy staff_send_all on realtime.messages for insert to authenticated with check (true)"
    )
    outcomes: dict[str, list[str]] = {}

    async def join(label: str, token: str) -> None:
        client = AsyncRealtimeClient(f"{realtime.url}/realtime/v1", token=token, auto_reconnect=False)
        states: list[str] = []
        try:
            await client.connect()
            options: RealtimeChannelOptions = {
                "config": {"broadcast": {"ack": True}, "presence": {"key": "", "enabled": False}, "private": True}
            }
            channel = client.channel(DOORBELL_TOPIC, options)
            await channel.subscribe(lambda state, _error: states.append(state.value))
            deadline = time.monotonic() + 5
            while not states and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            await client.close()
        outcomes[label] = states

    async def scenario() -> None:
        await join(who, key)
        await join("secret key", realtime.secret_key)

    asyncio.run(scenario())
    assert outcomes[who][:1] == ["CHANNEL_ERROR"], outcomes
    assert outcomes["secret key"][:1] == ["SUBSCRIBED"], outcomes
    refusals = [m["payload"]["response"] for m in realtime.messages_sent() if m["payload"].get("status") == "error"]
    assert refusals == [
        {"reason": f"Unauthorized: You do not have permissions to read from this Channel topic: {DOORBELL_TOPIC}"}
    ]


def test_a_silent_realtime_connection_is_dropped_not_left_open(realtime: RealtimeStandIn) -> None:
    """The closing handshake a silent server never answers times out; the socket is aborted, not left to the
    garbage collector (an open file descriptor per outage until then, and a ResourceWarning)."""
    feed = RealtimeFeed(realtime.url, realtime.secret_key, probe_seconds=0.2, probe_timeout_seconds=0.5)

    async def until_state(state: FeedState, deadline: float) -> None:
        while feed.state is not state and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert feed.state is state

    async def scenario() -> None:
        task = asyncio.create_task(feed.run(lambda: None))
        deadline = time.monotonic() + 10
        await until_state(FeedState.SUBSCRIBED, deadline)
        await asyncio.to_thread(realtime.go_silent)
        await until_state(FeedState.DOWN, deadline)  # the probe went unanswered, and then the close timed out
        feed.stop()
        await asyncio.wait_for(task, 10)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        asyncio.run(scenario())
        gc.collect()
    realtime.resume()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
