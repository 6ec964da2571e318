"""Fidelity of the Supabase Realtime stand-in, driven by the real `realtime` client (AsyncRealtimeClient).

Where the client is bypassed (a raw `websockets` connection) it is to see frames the client swallows:
the exact join reply, heartbeat replies, and that some pushes get no reply at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates
from realtime._async.channel import AsyncRealtimeChannel
from realtime.message import ServerMessageAdapter, SuccessSystemPayload
from realtime.types import (
    BroadcastPayload,
    PostgresChangesPayload,
    RealtimeAcknowledgementStatus,
    RealtimeChannelOptions,
    RealtimePostgresChangesListenEvent,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.conftest import Database
from tests.standins.clinics import create_clinic
from tests.standins.realtime import RealtimeStandIn
from tests.standins.supabase_rest import make_api_key

Event = RealtimePostgresChangesListenEvent
WAIT = 5.0  # seconds; every wait below is bounded by this
COMMIT_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# realtime 2.34.1 reads ConnectionClosed.code/.reason when a connection fails; websockets 15 deprecates both.
pytestmark = pytest.mark.filterwarnings("ignore:ConnectionClosed.(code|reason) is deprecated:DeprecationWarning")


# --- fixtures and helpers ---------------------------------------------------------------------------


def publish_probe_table(admin: psycopg.Connection, name: str = "rt_probe") -> None:
    admin.execute(f"create table public.{name} (id serial primary key, note text)")
    admin.execute(f"grant select on public.{name} to anon, authenticated, service_role")
    admin.execute(f"alter publication supabase_realtime add table public.{name}")


@pytest.fixture
def realtime(database: Database, admin: psycopg.Connection) -> Iterator[RealtimeStandIn]:
    publish_probe_table(admin)
    with RealtimeStandIn(database.dsn()) as standin:
        yield standin


def make_client(standin: RealtimeStandIn, key: str | None = None, **options: Any) -> AsyncRealtimeClient:
    """The client as `supabase` builds it from SUPABASE_URL: `<url>/realtime/v1` (+ `/websocket`)."""
    options.setdefault("initial_backoff", 0.05)
    return AsyncRealtimeClient(f"{standin.url}/realtime/v1", token=key or standin.service_role_key, **options)


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Watcher:
    """What one channel's callbacks saw, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.states: list[tuple[RealtimeSubscribeStates, Exception | None]] = []
        self.system: list[SuccessSystemPayload] = []
        self.changes: list[PostgresChangesPayload] = []
        self.by_binding: dict[int, list[PostgresChangesPayload]] = {}
        self.broadcasts: list[BroadcastPayload] = []

    def on_state(self, state: RealtimeSubscribeStates, error: Exception | None) -> None:
        self.states.append((state, error))
        self.log.append(state.value)

    def on_system(self, payload: SuccessSystemPayload) -> None:
        self.system.append(payload)
        self.log.append(f"system:{payload.message}")

    def on_change(self, binding: int) -> Callable[[PostgresChangesPayload], None]:
        def record(payload: PostgresChangesPayload) -> None:
            self.changes.append(payload)
            self.by_binding.setdefault(binding, []).append(payload)

        return record

    def on_broadcast(self, payload: BroadcastPayload) -> None:
        self.broadcasts.append(payload)

    def errors(self) -> list[Exception | None]:
        return [error for state, error in self.states if state == RealtimeSubscribeStates.CHANNEL_ERROR]

    async def next_change(self, seen: int) -> PostgresChangesPayload:
        await until(lambda: len(self.changes) > seen, f"change #{seen + 1}")
        return self.changes[seen]


async def watch(
    client: AsyncRealtimeClient,
    name: str,
    bindings: list[tuple[Event, str, str | None]],
    *,
    params: RealtimeChannelOptions | None = None,
    wait_for_changes: bool = True,
) -> tuple[AsyncRealtimeChannel, Watcher]:
    """Join `name` with postgres_changes bindings (event, table, filter); by default wait until changes flow."""
    watcher = Watcher()
    channel = client.channel(name, params)
    for i, (event, table, filter_) in enumerate(bindings):
        channel.on_postgres_changes(event, watcher.on_change(i), table=table, schema="public", filter=filter_)
    channel.on_system(watcher.on_system)
    channel.on_broadcast("*", watcher.on_broadcast)
    await channel.subscribe(watcher.on_state)
    if bindings and wait_for_changes:
        await until(lambda: bool(watcher.system), "Subscribed to PostgreSQL")
    return channel, watcher


def broadcast_options(*, ack: bool, self_: bool = False) -> RealtimeChannelOptions:
    return {
        "config": {
            "broadcast": {"ack": ack, "self": self_},
            "presence": {"key": "", "enabled": False},
            "private": False,
        }
    }


async def acked(channel: AsyncRealtimeChannel, timeout: int) -> str:
    """Push a broadcast and wait for what becomes of it: "ok", "error" or "timeout" (`timeout` is in seconds)."""
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def settle(result: str) -> None:
        if not outcome.done():
            outcome.set_result(result)

    push = await channel.push("broadcast", {"type": "broadcast", "event": "ping", "payload": {}}, timeout=timeout)
    push.receive(RealtimeAcknowledgementStatus.Ok, lambda _: settle("ok"))
    push.receive(RealtimeAcknowledgementStatus.Error, lambda _: settle("error"))
    push.receive(RealtimeAcknowledgementStatus.Timeout, lambda: settle("timeout"))
    return await asyncio.wait_for(outcome, timeout + WAIT)


async def raw_socket(standin: RealtimeStandIn) -> ClientConnection:
    """A bare WebSocket to the same URL the client uses."""
    base = standin.url.replace("http://", "ws://", 1)
    return await connect(f"{base}/realtime/v1/websocket?apikey={standin.service_role_key}&vsn=1.0.0")


async def receive(ws: ClientConnection) -> dict[str, Any]:
    """The next frame, which must be one the real client can parse."""
    text = await asyncio.wait_for(ws.recv(), WAIT)
    assert isinstance(text, str)
    ServerMessageAdapter.validate_json(text)
    frame = json.loads(text)
    assert isinstance(frame, dict)
    return frame


async def send(ws: ClientConnection, topic: str, event: str, payload: dict[str, Any], ref: str | None) -> None:
    await ws.send(json.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": ref}))


def join_payload(key: str, postgres_changes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "config": {
            "broadcast": {"ack": False, "self": False},
            "presence": {"key": "", "enabled": False},
            "private": False,
            "postgres_changes": postgres_changes,
        },
        "access_token": key,
    }


# --- the protocol, frame by frame -------------------------------------------------------------------


def test_join_reply_then_system_message_and_frames_a_client_cannot_see(realtime: RealtimeStandIn) -> None:
    bindings = [
        {"event": "INSERT", "schema": "public", "table": "rt_probe"},
        {"event": "DELETE", "schema": "public", "table": "rt_probe", "filter": "id=eq.1"},
    ]

    async def scenario() -> None:
        ws = await raw_socket(realtime)
        try:
            await send(ws, "realtime:room", "phx_join", join_payload(realtime.service_role_key, bindings), "1")
            reply = await receive(ws)
            assert set(reply) == {"event", "topic", "payload", "ref"}  # Phoenix V1: never a join_ref
            assert reply["event"] == "phx_reply" and reply["topic"] == "realtime:room" and reply["ref"] == "1"
            assert reply["payload"]["status"] == "ok"
            echoed = reply["payload"]["response"]["postgres_changes"]
            assert [{k: v for k, v in b.items() if k != "id"} for b in echoed] == bindings  # same order
            ids = [b["id"] for b in echoed]
            assert all(isinstance(i, int) and i > 0 for i in ids) and ids[0] != ids[1]
            assert await receive(ws) == {
                "event": "system",
                "topic": "realtime:room",
                "payload": {
                    "extension": "postgres_changes",
                    "status": "ok",
                    "message": "Subscribed to PostgreSQL",
                    "channel": "room",
                },
                "ref": None,
            }

            # Heartbeats are answered with the same ref, null included.
            await send(ws, "phoenix", "heartbeat", {}, None)
            assert await receive(ws) == {
                "event": "phx_reply",
                "topic": "phoenix",
                "payload": {"status": "ok", "response": {}},
                "ref": None,
            }
            # A broadcast without ack, an access_token push and an unknown event get no reply: the next
            # frame is the reply to the heartbeat sent after them.
            await send(ws, "realtime:room", "broadcast", {"type": "broadcast", "event": "e", "payload": {}}, "2")
            await send(ws, "realtime:room", "access_token", {"access_token": realtime.service_role_key}, "3")
            await send(ws, "realtime:room", "whatever", {}, "4")
            await send(ws, "phoenix", "heartbeat", {}, "5")
            assert (await receive(ws))["ref"] == "5"
            # A topic this connection has not joined.
            await send(ws, "realtime:elsewhere", "broadcast", {}, "6")
            assert await receive(ws) == {
                "event": "phx_reply",
                "topic": "realtime:elsewhere",
                "payload": {"status": "error", "response": {"reason": "unmatched topic"}},
                "ref": "6",
            }
            # A join whose access token is not signed with the project's secret is refused.
            bad = make_api_key("service_role", "another-secret-another-secret-another-secret")
            await send(ws, "realtime:other", "phx_join", join_payload(bad, []), "7")
            refused = await receive(ws)
            assert refused["payload"] == {
                "status": "error",
                "response": {"reason": "JwtSignatureError: Failed to validate JWT signature"},
            }
            # Leaving is acknowledged.
            await send(ws, "realtime:room", "phx_leave", {}, "8")
            assert (await receive(ws))["payload"] == {"status": "ok", "response": {}}
        finally:
            await ws.close()

    asyncio.run(scenario())
    assert realtime.joins() == 1
    received = realtime.messages_received()
    assert [m["event"] for m in received][:2] == ["phx_join", "heartbeat"]
    assert received[1]["ref"] is None


def test_heartbeat_of_the_real_client_is_recorded(realtime: RealtimeStandIn) -> None:
    async def scenario() -> None:
        client = make_client(realtime)
        try:
            await client.connect()  # the client sends its first heartbeat at once, then every hb_interval (>= 15 s)
            await until(lambda: any(m.get("event") == "heartbeat" for m in realtime.messages_received()), "a heartbeat")
            assert realtime.connection_count() == 1
        finally:
            await client.close()
        await until(lambda: realtime.connection_count() == 0, "the connection to close")

    asyncio.run(scenario())
    heartbeat = next(m for m in realtime.messages_received() if m.get("event") == "heartbeat")
    assert heartbeat == {"event": "heartbeat", "payload": {}, "topic": "phoenix", "ref": None, "join_ref": None}


# --- postgres_changes through the real client --------------------------------------------------------


def test_bindings_get_ids_by_position_and_system_message_comes_after_the_join_reply(
    realtime: RealtimeStandIn, admin: psycopg.Connection
) -> None:
    async def scenario() -> None:
        client = make_client(realtime)
        try:
            channel, watcher = await watch(
                client, "room", [(Event.Insert, "rt_probe", None), (Event.Delete, "rt_probe", None)]
            )
            assert watcher.log == ["SUBSCRIBED", "system:Subscribed to PostgreSQL"]
            insert_id, delete_id = (cb.id for cb in channel.postgres_changes_callbacks)
            assert insert_id and delete_id and insert_id != delete_id
            row = admin.execute("insert into public.rt_probe (note) values ('a') returning id").fetchone()
            assert row is not None
            admin.execute("delete from public.rt_probe where id = %s", row)
            await until(lambda: len(watcher.changes) == 2, "two changes")
            assert [c["data"]["type"] for c in watcher.by_binding[0]] == ["INSERT"]
            assert [c["data"]["type"] for c in watcher.by_binding[1]] == ["DELETE"]
            assert watcher.changes[0]["ids"] == [insert_id]
            assert watcher.changes[1]["ids"] == [delete_id]
        finally:
            await client.close()

    asyncio.run(scenario())


def test_insert_update_delete_arrive_shaped_like_realtime(realtime: RealtimeStandIn, admin: psycopg.Connection) -> None:
    async def scenario() -> None:
        client = make_client(realtime)
        try:
            _, watcher = await watch(client, "room", [(Event.All, "rt_probe", None)])
            admin.execute("insert into public.rt_probe (note) values ('first')")
            admin.execute("update public.rt_probe set note = 'second' where id = 1")
            admin.execute("delete from public.rt_probe where id = 1")
            insert, update, delete = [await watcher.next_change(i) for i in range(3)]

            columns = [{"name": "id", "type": "int4"}, {"name": "note", "type": "text"}]
            for change in (insert, update, delete):
                data = change["data"]
                assert (data["schema"], data["table"], data["columns"], data["errors"]) == (
                    "public",
                    "rt_probe",
                    columns,
                    None,
                )
                assert COMMIT_TIMESTAMP.match(data["commit_timestamp"])
            assert insert["data"]["type"] == "INSERT"
            assert insert["data"]["record"] == {"id": 1, "note": "first"}
            assert "old_record" not in insert["data"]
            # Replica identity DEFAULT: the old row is only its primary key.
            assert update["data"]["type"] == "UPDATE"
            assert update["data"]["record"] == {"id": 1, "note": "second"}
            assert update["data"]["old_record"] == {"id": 1}
            assert delete["data"]["type"] == "DELETE"
            assert "record" not in delete["data"]  # Realtime's DeletedRecord has no record at all
            assert delete["data"]["old_record"] == {"id": 1}

            # Replica identity FULL: the whole old row.
            admin.execute("alter table public.rt_probe replica identity full")
            admin.execute("insert into public.rt_probe (note) values ('third')")
            admin.execute("update public.rt_probe set note = 'fourth' where id = 2")
            _, full_update = [await watcher.next_change(i) for i in range(3, 5)]
            assert full_update["data"]["old_record"] == {"id": 2, "note": "third"}
        finally:
            await client.close()

    asyncio.run(scenario())


def test_changes_of_one_transaction_share_a_commit_timestamp(realtime: RealtimeStandIn, database: Database) -> None:
    async def scenario() -> None:
        client = make_client(realtime)
        try:
            _, watcher = await watch(client, "room", [(Event.Insert, "rt_probe", None)])
            with database.connect() as conn, conn.transaction():
                conn.execute("insert into public.rt_probe (note) values ('a'), ('b')")
            await until(lambda: len(watcher.changes) == 2, "both rows")
            assert [c["data"].get("record") for c in watcher.changes] == [
                {"id": 1, "note": "a"},
                {"id": 2, "note": "b"},
            ]
            assert watcher.changes[0]["data"]["commit_timestamp"] == watcher.changes[1]["data"]["commit_timestamp"]
        finally:
            await client.close()

    asyncio.run(scenario())


def test_filter_eq_selects_rows(realtime: RealtimeStandIn, admin: psycopg.Connection) -> None:
    async def scenario() -> None:
        client = make_client(realtime)
        try:
            _, by_note = await watch(client, "by-note", [(Event.Insert, "rt_probe", "note=eq.wanted")])
            _, by_id = await watch(client, "by-id", [(Event.Update, "rt_probe", "id=eq.2")])
            admin.execute("insert into public.rt_probe (note) values ('other'), ('wanted'), ('wanted too')")
            admin.execute("update public.rt_probe set note = note || '!'")  # rows 1, 2, 3
            # Delivery is in commit order, so anything filtered wrongly would have arrived first.
            first = await by_note.next_change(0)
            assert first["data"]["record"] == {"id": 2, "note": "wanted"}
            updated = await by_id.next_change(0)
            assert updated["data"]["record"] == {"id": 2, "note": "wanted!"}
            admin.execute("insert into public.rt_probe (note) values ('wanted')")
            assert (await by_note.next_change(1))["data"]["record"] == {"id": 4, "note": "wanted"}
            assert len(by_id.changes) == 1
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_table_outside_the_publication_gets_no_changes(realtime: RealtimeStandIn, admin: psycopg.Connection) -> None:
    admin.execute("create table public.rt_hidden (id serial primary key, note text)")
    admin.execute("grant select on public.rt_hidden to service_role")

    async def scenario() -> None:
        client = make_client(realtime)
        try:
            _, hidden = await watch(client, "hidden", [(Event.All, "rt_hidden", None)], wait_for_changes=False)
            # Realtime acknowledges the join, then fails the subscription: a `system` error, which the client
            # reports as CHANNEL_ERROR (and then rejoins every few seconds, failing again).
            await until(lambda: bool(hidden.errors()), "the subscription to fail")
            assert hidden.log[:2] == ["SUBSCRIBED", "CHANNEL_ERROR"]
            assert hidden.system == []
            assert "Unable to subscribe to changes with given parameters" in str(hidden.errors()[0])
            assert "table: rt_hidden" in str(hidden.errors()[0])

            _, sentinel = await watch(client, "sentinel", [(Event.All, "rt_probe", None)])
            admin.execute("insert into public.rt_hidden (note) values ('unseen')")
            admin.execute("insert into public.rt_probe (note) values ('seen')")
            await sentinel.next_change(0)
            assert hidden.changes == []
        finally:
            await client.close()

    asyncio.run(scenario())
    assert not any(m.get("event") == "postgres_changes" for m in realtime.messages_received())


def test_a_bad_filter_fails_the_subscription(realtime: RealtimeStandIn) -> None:
    async def scenario() -> None:
        client = make_client(realtime)
        try:
            _, missing = await watch(client, "a", [(Event.All, "rt_probe", "nope=eq.1")], wait_for_changes=False)
            _, mistyped = await watch(client, "b", [(Event.All, "rt_probe", "id=eq.abc")], wait_for_changes=False)
            _, unsupported = await watch(client, "c", [(Event.All, "rt_probe", "id=gt.1")], wait_for_changes=False)
            await until(lambda: all(w.errors() for w in (missing, mistyped, unsupported)), "three failures")
            assert "invalid column for filter nope" in str(missing.errors()[0])
            assert "invalid input syntax for type integer" in str(mistyped.errors()[0])
            assert "not implemented" in str(unsupported.errors()[0])
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_table_published_after_start_is_captured_on_join(
    realtime: RealtimeStandIn, admin: psycopg.Connection
) -> None:
    publish_probe_table(admin, "rt_late")

    async def scenario() -> None:
        client = make_client(realtime)
        try:
            _, watcher = await watch(client, "late", [(Event.Insert, "rt_late", None)])
            admin.execute("insert into public.rt_late (note) values ('late')")
            assert (await watcher.next_change(0))["data"]["record"] == {"id": 1, "note": "late"}
        finally:
            await client.close()

    asyncio.run(scenario())
    trigger = admin.execute(
        "select count(*) from pg_trigger where tgrelid = 'public.rt_late'::regclass and tgname = %s",
        ("realtime_standin_capture",),
    ).fetchone()
    assert trigger == (1,)


def test_rows_are_seen_through_rls_as_the_token_role(realtime: RealtimeStandIn, admin: psycopg.Connection) -> None:
    publish_probe_table(admin, "rt_private")
    admin.execute("alter table public.rt_private enable row level security")  # and no policy: anon sees nothing

    async def scenario() -> None:
        service = make_client(realtime)
        anon = make_client(realtime, realtime.anon_key)
        try:
            _, as_service = await watch(service, "s", [(Event.All, "rt_private", None)])
            _, as_anon = await watch(anon, "a", [(Event.All, "rt_private", None), (Event.Insert, "rt_probe", None)])
            admin.execute("insert into public.rt_private (note) values ('secret')")
            admin.execute("insert into public.rt_probe (note) values ('public')")
            assert (await as_service.next_change(0))["data"]["record"] == {"id": 1, "note": "secret"}
            assert (await as_anon.next_change(0))["data"]["table"] == "rt_probe"  # the INSERT was not visible
            # RLS cannot vet a delete: Realtime sends it to every subscriber, with the key only, even when the
            # replica identity would carry the whole row.
            admin.execute("alter table public.rt_private replica identity full")
            admin.execute("delete from public.rt_private")
            for watcher, seen in ((as_service, 1), (as_anon, 1)):
                deleted = await watcher.next_change(seen)
                assert deleted["data"]["type"] == "DELETE" and deleted["data"]["table"] == "rt_private"
                assert deleted["data"]["old_record"] == {"id": 1}
        finally:
            await service.close()
            await anon.close()

    asyncio.run(scenario())


def test_published_appointments_would_reach_the_service_role_whole(
    realtime: RealtimeStandIn, admin: psycopg.Connection
) -> None:
    """Why the migrations take appointments out of the publication: Postgres Changes sends whole rows."""
    published = admin.execute(
        "select exists (select from pg_publication_tables where pubname = 'supabase_realtime'"
        " and schemaname = 'public' and tablename = 'appointments')"
    ).fetchone()
    assert published == (False,)
    admin.execute("alter publication supabase_realtime add table public.appointments")
    clinic_id = create_clinic(admin)

    async def scenario() -> None:
        service = make_client(realtime)
        anon = make_client(realtime, realtime.anon_key)
        try:
            _, as_service = await watch(service, "appointments", [(Event.All, "appointments", None)])
            _, as_anon = await watch(
                anon, "appointments", [(Event.All, "appointments", None), (Event.All, "rt_probe", None)]
            )
            admin.execute(
                "insert into public.appointments (clinic_id, reference, patient, service, starts_at, ends_at)"
                " values (%s, 'ABCDEF', '{\"name\": \"Pat\"}', 'Check-up', now() + interval '1 day',"
                " now() + interval '1 day 30 minutes')",
                (clinic_id,),
            )
            admin.execute("insert into public.rt_probe (note) values ('after')")
            change = await as_service.next_change(0)
            assert change["data"]["type"] == "INSERT"
            record = change["data"]["record"]
            assert record is not None
            assert record["clinic_id"] == str(clinic_id) and record["patient"] == {"name": "Pat"}
            assert (await as_anon.next_change(0))["data"]["table"] == "rt_probe"
        finally:
            await service.close()
            await anon.close()

    asyncio.run(scenario())


# --- broadcast ------------------------------------------------------------------------------------------


def test_broadcast_is_acknowledged_and_fanned_out(realtime: RealtimeStandIn) -> None:
    async def scenario() -> None:
        sender = make_client(realtime)
        listener = make_client(realtime)
        try:
            channel, own = await watch(sender, "room", [], params=broadcast_options(ack=True, self_=True))
            _, other = await watch(listener, "room", [])
            assert await acked(channel, timeout=2) == "ok"
            await channel.send_broadcast("hello", {"n": 1})
            await until(lambda: len(other.broadcasts) == 2 and len(own.broadcasts) == 2, "both broadcasts")
            assert other.broadcasts[1] == {"event": "hello", "payload": {"n": 1}}  # the client drops "type"
            assert own.broadcasts == other.broadcasts  # config.broadcast.self
        finally:
            await sender.close()
            await listener.close()

    asyncio.run(scenario())


# --- faults ----------------------------------------------------------------------------------------------


def test_dropped_connection_is_reported_then_reconnected_and_rejoined(
    realtime: RealtimeStandIn, admin: psycopg.Connection
) -> None:
    async def scenario() -> None:
        client = make_client(realtime)
        try:
            _, watcher = await watch(client, "room", [(Event.Insert, "rt_probe", None)])
            realtime.drop_connections()
            # ConnectionClosedError (1006) -> CHANNEL_ERROR, then the client reconnects at once and rejoins.
            await until(lambda: len(watcher.system) == 2, "the rejoin to be subscribed again")
            assert watcher.log == [
                "SUBSCRIBED",
                "system:Subscribed to PostgreSQL",
                "CHANNEL_ERROR",
                "SUBSCRIBED",
                "system:Subscribed to PostgreSQL",
            ]
            assert realtime.joins() == 2 and realtime.connection_count() == 1
            admin.execute("insert into public.rt_probe (note) values ('after')")
            assert (await watcher.next_change(0))["data"]["record"] == {"id": 1, "note": "after"}
        finally:
            await client.close()

    asyncio.run(scenario())


def test_dropped_connection_without_auto_reconnect_stays_down(realtime: RealtimeStandIn) -> None:
    async def scenario() -> None:
        client = make_client(realtime, auto_reconnect=False)
        try:
            _, watcher = await watch(client, "room", [(Event.Insert, "rt_probe", None)])
            realtime.drop_connections()
            await until(lambda: bool(watcher.errors()), "CHANNEL_ERROR")
            assert not client.is_connected
            assert realtime.connection_count() == 0 and realtime.joins() == 1
        finally:
            await client.close()

    asyncio.run(scenario())


def test_clean_close_is_reported_then_reconnected_and_rejoined(realtime: RealtimeStandIn) -> None:
    async def scenario() -> None:
        client = make_client(realtime)
        quiet = make_client(realtime, auto_reconnect=False)
        try:
            _, watcher = await watch(client, "room", [(Event.Insert, "rt_probe", None)])
            _, quiet_watcher = await watch(quiet, "quiet", [(Event.Insert, "rt_probe", None)])
            await asyncio.to_thread(realtime.close_connections)  # it waits for the client's close frame
            # This client version treats a clean 1000 close like a failure: CHANNEL_ERROR, reconnect, rejoin.
            await until(lambda: len(watcher.system) == 2, "the rejoin to be subscribed again")
            assert watcher.log[2:] == ["CHANNEL_ERROR", "SUBSCRIBED", "system:Subscribed to PostgreSQL"]
            # Without auto_reconnect it reports CHANNEL_ERROR and stays disconnected (is_connected is honest).
            await until(lambda: bool(quiet_watcher.errors()), "CHANNEL_ERROR without auto_reconnect")
            assert not quiet.is_connected
            assert realtime.connection_count() == 1
        finally:
            await client.close()
            await quiet.close()

    asyncio.run(scenario())


def test_silent_server_times_pushes_out_and_drops_changes_until_resumed(
    realtime: RealtimeStandIn, admin: psycopg.Connection
) -> None:
    async def scenario() -> None:
        client = make_client(realtime)
        ws = await raw_socket(realtime)
        try:
            channel, watcher = await watch(
                client, "room", [(Event.Insert, "rt_probe", None)], params=broadcast_options(ack=True)
            )
            assert await asyncio.wait_for(await ws.ping(), WAIT) >= 0  # WebSocket pings are answered...
            await asyncio.to_thread(realtime.go_silent)
            try:
                pong = asyncio.ensure_future(await ws.ping())
                admin.execute("insert into public.rt_probe (note) values ('lost')")
                assert await acked(channel, timeout=1) == "timeout"  # push timeouts are in seconds
                assert not pong.done()  # ...but not while silent, so the client's keepalive would notice too
                assert client.is_connected and watcher.errors() == []  # nothing else has noticed yet
            finally:
                await asyncio.to_thread(realtime.resume)
            await asyncio.wait_for(pong, WAIT)  # answered late, once resumed
            assert await acked(channel, timeout=2) == "ok"
            admin.execute("insert into public.rt_probe (note) values ('heard')")
            assert (await watcher.next_change(0))["data"]["record"] == {"id": 2, "note": "heard"}
        finally:
            await ws.close()
            await client.close()

    asyncio.run(scenario())


def test_restart_serves_the_same_url_and_forgets_what_happened_meanwhile(
    realtime: RealtimeStandIn, admin: psycopg.Connection
) -> None:
    async def scenario() -> None:
        url = realtime.url
        survivor = make_client(realtime)
        try:
            _, survived = await watch(survivor, "room", [(Event.Insert, "rt_probe", None)])
            await asyncio.to_thread(realtime.stop)
            admin.execute("insert into public.rt_probe (note) values ('while down')")
            await asyncio.to_thread(realtime.start)
            assert realtime.url == url
            fresh = make_client(realtime)
            try:
                _, watcher = await watch(fresh, "room", [(Event.Insert, "rt_probe", None)])
                admin.execute("insert into public.rt_probe (note) values ('after')")
                assert (await watcher.next_change(0))["data"]["record"] == {"id": 2, "note": "after"}
            finally:
                await fresh.close()
            # The old client saw the server go away (1001), reconnected and rejoined by itself.
            await until(lambda: len(survived.system) == 2, "the old client to rejoin")
            assert survived.log[2:] == ["CHANNEL_ERROR", "SUBSCRIBED", "system:Subscribed to PostgreSQL"]
            assert all(c["data"]["record"] != {"id": 1, "note": "while down"} for c in survived.changes)

            await asyncio.to_thread(realtime.restart)
            assert realtime.url == url
            await until(lambda: len(survived.system) == 3, "the old client to rejoin after restart()")
        finally:
            await survivor.close()

    asyncio.run(scenario())


def test_a_bad_apikey_is_refused_at_the_handshake(realtime: RealtimeStandIn) -> None:
    other_secret = make_api_key("service_role", "another-secret-another-secret-another-secret")
    cases = [
        (None, "API key is missing"),
        ("not-a-jwt", "The token provided is not a valid JWT"),
        (other_secret, "Failed to validate JWT signature"),
    ]

    async def scenario() -> None:
        for key, message in cases:
            client = AsyncRealtimeClient(f"{realtime.url}/realtime/v1", token=key, auto_reconnect=False)
            try:
                with pytest.raises(InvalidStatus) as refused:
                    await client.connect()
            finally:
                await client.close()
            assert refused.value.response.status_code == 401
            assert json.loads(refused.value.response.body) == {"error": message}

    asyncio.run(scenario())
    assert realtime.connection_count() == 0
    assert realtime.messages_received() == []


def test_big_rows_arrive_whole_and_huge_ones_truncated_as_realtime_does(
    realtime: RealtimeStandIn, admin: psycopg.Connection
) -> None:
    async def scenario() -> None:
        client = make_client(realtime)
        try:
            _, watcher = await watch(client, "room", [(Event.Insert, "rt_probe", None)])
            admin.execute("insert into public.rt_probe (note) values (repeat('x', 20000))")  # over NOTIFY's 8000 bytes
            admin.execute("insert into public.rt_probe (note) values (repeat('y', 1100000))")  # over 1 MiB
            big = await watcher.next_change(0)
            assert big["data"]["record"] == {"id": 1, "note": "x" * 20000} and big["data"]["errors"] is None
            huge = await watcher.next_change(1)
            assert huge["data"]["record"] == {"id": 2}  # only values of at most 64 bytes survive
            assert huge["data"]["errors"] == ["Error 413: Payload Too Large"]
        finally:
            await client.close()

    asyncio.run(scenario())


def test_access_token_refresh_resubscribes_and_a_bad_one_closes_the_channel(realtime: RealtimeStandIn) -> None:
    async def scenario() -> None:
        client = make_client(realtime)
        try:
            channel, watcher = await watch(client, "room", [(Event.Insert, "rt_probe", None)])
            await client.set_auth(make_api_key("authenticated"))  # a new valid token: subscribed again
            await until(lambda: len(watcher.system) == 2, "a second 'Subscribed to PostgreSQL'")
            await client.set_auth("not-a-jwt")  # the server ends the channel: system error, then phx_close
            await until(lambda: watcher.log[-1] == "CLOSED", "the channel to close")
            assert watcher.log[-2:] == ["CHANNEL_ERROR", "CLOSED"]
            assert "The token provided is not a valid JWT" in str(watcher.errors()[0])
            assert channel.is_closed and client.get_channels() == []
        finally:
            await client.close()

    asyncio.run(scenario())


def test_client_gives_up_when_the_server_stays_down(realtime: RealtimeStandIn) -> None:
    async def scenario() -> None:
        client = make_client(realtime, max_retries=2)
        try:
            _, watcher = await watch(client, "room", [(Event.Insert, "rt_probe", None)])
            listen_task = client._listen_task
            assert listen_task is not None
            await asyncio.to_thread(realtime.stop)
            # One CHANNEL_ERROR, then the reconnect attempts fail and the error ends up in the listen task only.
            await asyncio.wait_for(asyncio.wait([listen_task]), WAIT)
            assert isinstance(listen_task.exception(), OSError)
            assert watcher.log[2:] == ["CHANNEL_ERROR"]
            assert not client.is_connected
        finally:
            await client.close()

    asyncio.run(scenario())


# --- private channels and Broadcast from Database ------------------------------------------------------


def private_options(*, ack: bool = False, self_: bool = False, ready: bool = False) -> RealtimeChannelOptions:
    return {
        "config": {
            "broadcast": {"ack": ack, "self": self_, "replication_ready": ready},
            "presence": {"key": "", "enabled": False},
            "private": True,
        }
    }


async def joined(watcher: Watcher) -> str:
    """How the join ended: SUBSCRIBED or CHANNEL_ERROR."""
    await until(lambda: bool(watcher.states), "the join to be answered")
    return watcher.states[0][0].value


def test_a_private_topic_is_joined_only_as_the_policies_on_realtime_messages_allow(
    realtime: RealtimeStandIn, admin: psycopg.Connection
) -> None:
    admin.execute(
        "create policy room_a_readers on realtime.messages for select to authenticated"
        " using ((select realtime.topic()) = 'room-a' and extension = 'broadcast')"
    )

    async def scenario() -> None:
        staff = make_client(realtime, make_api_key("authenticated"))
        anon = make_client(realtime, realtime.anon_key)
        service = make_client(realtime)
        try:
            _, allowed = await watch(staff, "room-a", [], params=private_options())
            _, other_topic = await watch(staff, "room-b", [], params=private_options())
            _, anonymous = await watch(anon, "room-a", [], params=private_options())
            _, bypassing = await watch(service, "room-b", [], params=private_options())
            assert await joined(allowed) == "SUBSCRIBED"
            assert await joined(bypassing) == "SUBSCRIBED"  # service_role has BYPASSRLS: no policy needed
            assert await joined(other_topic) == "CHANNEL_ERROR"
            assert await joined(anonymous) == "CHANNEL_ERROR"
            assert "Unauthorized: You do not have permissions to read from this Channel topic: room-b" in str(
                other_topic.errors()[0]
            )
        finally:
            for client in (staff, anon, service):
                await client.close()

    asyncio.run(scenario())
    assert scalar_of(admin, "select count(*) from realtime.messages") == 0  # the probes were rolled back
    refusals = [m for m in realtime.messages_sent() if m["event"] == "phx_reply" and m["payload"]["status"] == "error"]
    assert refusals[0]["payload"]["response"] == {
        "reason": "Unauthorized: You do not have permissions to read from this Channel topic: room-b"
    }


def test_messages_the_database_stores_are_broadcast_to_their_topic(
    realtime: RealtimeStandIn, database: Database
) -> None:
    async def scenario() -> None:
        client = make_client(realtime)
        public_client = make_client(realtime)
        try:
            _, room = await watch(client, "room", [], params=private_options(ready=True))
            _, elsewhere = await watch(client, "elsewhere", [], params=private_options())
            _, public_room = await watch(public_client, "room", [])
            await until(lambda: bool(room.system), "the replication-ready message")
            assert (room.system[0].extension, room.system[0].message) == (
                "system",
                "Replication connection established",
            )
            with database.connect() as conn:
                with conn.transaction():
                    conn.execute("""select realtime.send('{"n": 1}', 'ping', 'room', true)""")
                    conn.execute("""select realtime.send('{"n": 2}', 'ping', 'room', false)""")
                with contextlib.suppress(psycopg.Rollback), conn.transaction():
                    conn.execute("""select realtime.send('{"n": 3}', 'ping', 'room', true)""")
                    raise psycopg.Rollback
                conn.execute("""select realtime.send('{"n": 4, "id": "mine"}', 'pong', 'room')""")  # private by default
            await until(lambda: len(room.broadcasts) == 2 and len(public_room.broadcasts) == 1, "the broadcasts")
            first, second = room.broadcasts
            assert first["event"] == "ping" and first["payload"]["n"] == 1
            assert first["payload"]["id"] == first["meta"]["id"]  # realtime.send adds the message's id
            assert second == {"event": "pong", "payload": {"n": 4, "id": "mine"}, "meta": second["meta"]}
            assert public_room.broadcasts[0]["payload"]["n"] == 2  # a public message reaches public channels only
            assert elsewhere.broadcasts == []
        finally:
            await client.close()
            await public_client.close()

    asyncio.run(scenario())
    [frame, *_] = [m for m in realtime.messages_sent() if m["event"] == "broadcast" and m["payload"]["event"] == "ping"]
    message_id = frame["payload"]["meta"]["id"]
    assert frame == {
        "event": "broadcast",
        "topic": "realtime:room",
        "payload": {
            "event": "ping",
            "payload": {"n": 1, "id": message_id},
            "type": "broadcast",
            "meta": {"id": message_id},
        },
        "ref": None,
    }


def test_sending_to_a_private_topic_needs_a_policy_that_lets_the_role_insert(
    realtime: RealtimeStandIn, admin: psycopg.Connection
) -> None:
    admin.execute(
        "create policy room_readers on realtime.messages for select to authenticated"
        " using ((select realtime.topic()) = 'room-a')"
    )

    async def scenario() -> None:
        reader = make_client(realtime, make_api_key("authenticated"))
        writer = make_client(realtime, make_api_key("authenticated"))
        listener = make_client(realtime)
        try:
            refused, _ = await watch(reader, "room-a", [], params=private_options(ack=True))
            _, heard = await watch(listener, "room-a", [], params=private_options())
            assert await acked(refused, timeout=1) == "timeout"  # no INSERT policy: dropped without an answer
            admin.execute(
                "create policy room_writers on realtime.messages for insert to authenticated"
                " with check ((select realtime.topic()) = 'room-a')"
            )
            allowed, _ = await watch(writer, "room-a", [], params=private_options(ack=True))
            assert await acked(allowed, timeout=2) == "ok"
            await until(lambda: len(heard.broadcasts) == 1, "the listener to hear it")
            assert heard.broadcasts[0]["event"] == "ping"
        finally:
            for client in (reader, writer, listener):
                await client.close()

    asyncio.run(scenario())
    assert scalar_of(admin, "select count(*) from realtime.messages") == 0  # the write checks were rolled back


def test_a_new_access_token_without_read_permission_ends_the_private_channel(
    realtime: RealtimeStandIn, admin: psycopg.Connection
) -> None:
    admin.execute(
        "create policy staff_readers on realtime.messages for select to authenticated"
        " using ((select realtime.topic()) = 'room-a')"
    )

    async def scenario() -> None:
        client = make_client(realtime, make_api_key("authenticated"))
        try:
            _, watcher = await watch(client, "room-a", [], params=private_options())
            assert await joined(watcher) == "SUBSCRIBED"
            await client.set_auth(make_api_key("anon"))
            await until(lambda: watcher.log[-1] == "CLOSED", "the channel to close")
            assert "You do not have permissions to read from this Channel topic: room-a" in str(watcher.errors()[0])
        finally:
            await client.close()

    asyncio.run(scenario())


def scalar_of(conn: psycopg.Connection, query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]
