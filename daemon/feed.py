"""The change feed: a doorbell that wakes the sync loop when an appointment changes.

A doorbell is not a queue. Realtime and LISTEN/NOTIFY deliver only to a listener connected at
the time, so every (re)subscription rings once more to make the loop sweep, and the loop's own
timer stays the last backstop. What the feed adds is speed: a booking is claimed within
milliseconds instead of at the next timer tick.

- `RealtimeFeed` (Supabase path): Supabase Realtime Broadcast from Database on the private topic
  `calendar-sync`, where a trigger on public.appointments sends the ids (appointment, clinic) of
  each row left waiting for the calendar; nothing of the patient travels. The daemon joins as
  the service role (the legacy JWT key or a secret key, `sb_secret_...`), which Realtime's
  authorisation lets in. The client library neither notices a silent connection nor surfaces a
  reconnect that gave up, so this supervises it: the client is built without auto-reconnect,
  any channel error or an unanswered liveness probe (an acknowledged broadcast) tears it down,
  and a fresh client is built after a backoff with jitter. "Subscribed" means the server's
  "Replication connection established" system message arrived (asked for with
  `broadcast.replication_ready`), not merely the join reply: only then do stored messages flow.
- `PostgresNotifyFeed` (direct path): LISTEN calendar_sync on a dedicated connection, probed
  with `select 1` when quiet and re-established when lost.
"""

from __future__ import annotations

import asyncio
import enum
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import psycopg
from loguru import logger
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates
from realtime.types import RealtimeChannelOptions

from daemon.backoff import backoff_delay

Doorbell = Callable[[], None]
NOTIFY_CHANNEL = "calendar_sync"
FEED_APPLICATION_NAME = "calendar-sync-feed"  # shows in pg_stat_activity
# Where the database's doorbell rings on the Supabase path: the migration's trigger calls
# realtime.send(<ids>, DOORBELL_EVENT, DOORBELL_TOPIC, private => true).
DOORBELL_TOPIC = "calendar-sync"
DOORBELL_EVENT = "pending"
REPLICATION_READY_MESSAGE = "Replication connection established"


class FeedState(enum.StrEnum):
    STARTING = "starting"
    SUBSCRIBED = "subscribed"
    DOWN = "down"


class FeedDown(Exception):
    """The feed's connection is gone, silent, or refused; it is rebuilt after a backoff."""


class ChangeFeed(ABC):
    def __init__(
        self, *, probe_seconds: float = 15.0, probe_timeout_seconds: float = 10.0, backoff_cap_seconds: float = 30.0
    ) -> None:
        self._state = FeedState.STARTING
        self.on_state: Callable[[FeedState], None] | None = None  # told of every change (metrics)
        self.subscriptions = 0  # successful (re)subscriptions, each followed by a sweep
        self.last_change_at: float | None = None
        self._probe_seconds = probe_seconds
        self._probe_timeout = probe_timeout_seconds
        self._backoff_cap = backoff_cap_seconds
        self._stopping = asyncio.Event()

    @property
    def state(self) -> FeedState:
        return self._state

    @state.setter
    def state(self, state: FeedState) -> None:
        self._state = state
        if self.on_state is not None:
            self.on_state(state)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, doorbell: Doorbell) -> None:
        """Keep a subscription alive until stop(), ringing on every change and (re)subscription."""
        failures = 0
        while not self._stopping.is_set():
            subscribed = self.subscriptions
            try:
                await self._session(doorbell)
                failures = 0
            except Exception as error:  # any failure of the feed means: rebuild it, never crash the daemon
                # Failures since the last subscription: a session ends only by failing, so counting them all
                # would make a feed that lived through a few blips wait the whole backoff cap after each next one.
                failures = 1 if self.subscriptions > subscribed else failures + 1
                self.state = FeedState.DOWN
                delay = backoff_delay(failures, 0.5, self._backoff_cap)
                logger.warning("change feed down ({}: {}); reconnecting in {:.1f}s", type(error).__name__, error, delay)
                await self._pause(delay)
        self.state = FeedState.DOWN

    def _changed(self, doorbell: Doorbell) -> None:
        self.last_change_at = time.monotonic()
        doorbell()

    def _subscribed(self, doorbell: Doorbell) -> None:
        self.state = FeedState.SUBSCRIBED
        self.subscriptions += 1
        logger.info("change feed subscribed; sweeping for anything missed")
        doorbell()

    async def _pause(self, seconds: float) -> bool:
        """Sleep unless stopped first; True when stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    @abstractmethod
    async def _session(self, doorbell: Doorbell) -> None:
        """Connect, subscribe, ring on changes, probe liveness; return on stop, raise when broken."""


class RealtimeFeed(ChangeFeed):
    def __init__(self, supabase_url: str, api_key: str, **timing: float) -> None:
        super().__init__(**timing)
        self._url = supabase_url.rstrip("/") + "/realtime/v1"
        self._key = api_key

    async def _session(self, doorbell: Doorbell) -> None:
        client = AsyncRealtimeClient(
            self._url, self._key, auto_reconnect=False, timeout=max(1, round(self._probe_timeout))
        )
        broken: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_state(status: RealtimeSubscribeStates, error: Exception | None) -> None:
            if status is not RealtimeSubscribeStates.SUBSCRIBED and not broken.done():
                broken.set_result(f"channel {status.value}" + (f": {error}" if error else ""))

        try:
            await asyncio.wait_for(client.connect(), timeout=self._probe_timeout)
            # private: Realtime checks the role may read the topic (RLS on realtime.messages) before it joins.
            # ack: the server answers our broadcasts, which is how the liveness probe works.
            # replication_ready: the server says when the messages the database stores will flow.
            options: RealtimeChannelOptions = {
                "config": {
                    "broadcast": {"ack": True, "self": False, "replication_ready": True},
                    "presence": None,
                    "private": True,
                }
            }
            channel = client.channel(DOORBELL_TOPIC, options)
            subscribed = asyncio.Event()
            channel.on_system(lambda p: subscribed.set() if p.message == REPLICATION_READY_MESSAGE else None)
            # The message carries the appointment's and the clinic's ids; the claim finds the work itself.
            channel.on_broadcast(DOORBELL_EVENT, lambda _message: self._changed(doorbell))
            await channel.subscribe(on_state)
            await self._until(subscribed.wait(), broken, "no 'Replication connection established' from Realtime")
            self._subscribed(doorbell)
            while not await self._pause_or_break(broken):
                await self._until(self._probe(channel), broken, "Realtime did not answer the liveness probe")
        finally:
            # close() forgets its socket before the closing handshake, which a silent server never answers:
            # keep a hold of it, so a close that times out can still drop it instead of leaving it open.
            socket = getattr(client, "_ws_connection", None)
            try:
                await asyncio.wait_for(client.close(), timeout=self._probe_timeout)
            except Exception as error:  # a dead socket may not close politely; it is dropped either way
                logger.debug("closing the Realtime client: {}", type(error).__name__)
                _drop(client, socket)

    async def _until(self, awaitable: Any, broken: asyncio.Future[str], silence: str) -> None:
        """Await `awaitable` within the probe timeout, unless the channel breaks first."""
        task: asyncio.Future[Any] = asyncio.ensure_future(awaitable)
        waiting: set[asyncio.Future[Any]] = {task, broken}
        done, _ = await asyncio.wait(waiting, timeout=self._probe_timeout, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            raise FeedDown(broken.result() if broken in done else silence)
        task.result()

    async def _pause_or_break(self, broken: asyncio.Future[str]) -> bool:
        """Wait one probe interval; True when stopping, raise when the channel broke meanwhile."""
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        waiting: set[asyncio.Future[Any]] = {stopping, broken}
        try:
            done, _ = await asyncio.wait(waiting, timeout=self._probe_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if broken in done:
            raise FeedDown(broken.result())
        return stopping in done

    async def _probe(self, channel: Any) -> None:
        """An acknowledged broadcast: only a live server on a live connection answers it."""
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        push = await channel.push(
            "broadcast",
            {"type": "broadcast", "event": "liveness", "payload": {}},
            timeout=max(1, round(self._probe_timeout)),
        )

        def acknowledged(*_: Any) -> None:
            if not answered.done():
                answered.set_result(None)

        push.receive("ok", acknowledged)
        await answered


def _drop(client: AsyncRealtimeClient, socket: Any) -> None:
    """What a close that timed out left behind: the TCP connection is aborted and the client's reader and
    heartbeat tasks are cancelled (the library keeps them in private attributes; missing ones are skipped)."""
    transport = getattr(socket, "transport", None)
    if transport is not None:
        transport.abort()
    for name in ("_listen_task", "_heartbeat_task"):
        task = getattr(client, name, None)
        if isinstance(task, asyncio.Task):
            task.cancel()


class PostgresNotifyFeed(ChangeFeed):
    def __init__(self, dsn: str, **timing: float) -> None:
        super().__init__(**timing)
        self._dsn = dsn

    async def _session(self, doorbell: Doorbell) -> None:
        conn = await asyncio.wait_for(
            psycopg.AsyncConnection.connect(self._dsn, autocommit=True, application_name=FEED_APPLICATION_NAME),
            timeout=self._probe_timeout,
        )
        async with conn:
            await conn.execute(f"listen {NOTIFY_CHANNEL}")
            self._subscribed(doorbell)
            while not self._stopping.is_set():
                async for _notification in conn.notifies(timeout=self._probe_seconds):
                    self._changed(doorbell)
                    if self._stopping.is_set():
                        return
                # Quiet for a probe interval: is the connection still there?
                await asyncio.wait_for(conn.execute("select 1"), timeout=self._probe_timeout)
