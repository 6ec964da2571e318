"""The daemon's main loop: one replica, wired from Settings, run until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from loguru import logger

from daemon.budget import GoogleBudget
from daemon.calendar import GoogleCalendar
from daemon.channels import ChannelKeeper
from daemon.config import Settings
from daemon.connect_web import ClinicPages
from daemon.feed import ChangeFeed
from daemon.logs import configure_logging
from daemon.metrics import Health, HealthServer, Metrics
from daemon.mirror import CalendarMirror
from daemon.public import PublicServer, RefusalLimiter
from daemon.store import Store, StoreError
from daemon.sync import SyncLoop, SyncOptions
from daemon.tokens import TokenManager
from daemon.vapi_setup import vapi_keeper
from daemon.wiring import google_calendar, make_feed, open_store, token_manager


def default_owner() -> str:
    """Names this replica in lease columns: host, process and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


# /healthz fails when the event loop cannot run a no-op within this long (a wedged loop).
LIVENESS_TIMEOUT_SECONDS = 5.0
# The clinic pages' budgets per client address (burst, per second): every request, and refused ones (guessed
# links, forged forms).
PAGE_REQUESTS = (60, 1.0)
PAGE_REFUSALS = (10, 0.1)


@dataclass
class Push:
    public: PublicServer
    keeper: ChannelKeeper | None
    task: asyncio.Task[None] | None

    async def stop(self) -> None:
        if self.keeper is not None and self.task is not None:
            self.keeper.stop()
            self.task.cancel()  # a channel half made is replaced: unconfirmed, or recorded and never answered
            await asyncio.gather(self.task, return_exceptions=True)
        await self.public.stop()


class Daemon:
    """One replica: the sync loop, the scheduled token refresh and backlog snapshot, and the
    metrics and health endpoints."""

    def __init__(self, settings: Settings, *, owner: str | None = None) -> None:
        self.settings = settings
        self.owner = owner or default_owner()
        self.metrics = Metrics()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sync: SyncLoop | None = None
        self._stop_requested = False
        self.feed: ChangeFeed | None = None
        self.health: HealthServer | None = None
        self.mirror: CalendarMirror | None = None
        self.public: PublicServer | None = None

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.health = self._start_health_server()
        try:
            await self._run()
        finally:
            if self.health is not None:
                self.health.stop()

    def _start_health_server(self) -> HealthServer | None:
        if not self.settings.metrics_enabled:
            return None
        server = HealthServer(
            self.metrics,
            host=self.settings.metrics_host,
            port=self.settings.metrics_port,
            liveness=self._liveness,
            readiness=self._readiness,
        )
        server.start()
        logger.info("metrics and health checks on http://{}:{}/metrics", self.settings.metrics_host, server.port)
        return server

    async def _run(self) -> None:
        settings = self.settings
        store = await open_store(settings)
        executor = ThreadPoolExecutor(max_workers=settings.sync_workers + 2, thread_name_prefix="google")
        tokens = token_manager(settings, store, executor, self.metrics)
        calendar, budget = google_calendar(settings, store)
        self._sync = self._sync_loop(store, calendar, tokens, executor, budget)
        self.mirror = self._calendar_mirror(store, calendar, tokens, executor) if settings.mirror_enabled else None
        if self._stop_requested:
            self._sync.stop()
        scheduler = self._scheduler(store, tokens)
        scheduler.start()
        self.feed = make_feed(settings) if settings.feed_enabled else None
        self.metrics.feed_state(self.feed.state if self.feed else None)
        if self.feed:
            self.feed.on_state = self.metrics.feed_state
        feed_task = asyncio.create_task(self.feed.run(self._sync.wake)) if self.feed else None
        mirror_task = asyncio.create_task(self.mirror.run()) if self.mirror else None
        push: Push | None = None
        try:
            # Inside the try: a listener that cannot listen stops the daemon with everything else closed.
            push = await self._start_push(store, calendar, tokens, executor) if settings.public_url else None
            logger.info("daemon {} started ({} database path)", self.owner, settings.database_backend)
            await self._sync.run()
        finally:
            if push is not None:
                await push.stop()
            if self.feed and feed_task:
                self.feed.stop()
                feed_task.cancel()
                await asyncio.gather(feed_task, return_exceptions=True)
            if self.mirror and mirror_task:
                self.mirror.stop()
                await asyncio.gather(mirror_task, return_exceptions=True)
            scheduler.shutdown(wait=False)
            await store.close()
            # Bounded by the Google timeout: a push still running in a worker finishes first.
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
            calendar.close()
            logger.info("daemon {} stopped", self.owner)

    def _sync_loop(
        self,
        store: Store,
        calendar: GoogleCalendar,
        tokens: TokenManager,
        executor: ThreadPoolExecutor,
        budget: GoogleBudget,
    ) -> SyncLoop:
        settings = self.settings
        options = SyncOptions(
            owner=self.owner,
            batch_size=settings.sync_batch_size,
            per_clinic_batch=settings.sync_per_clinic_batch,
            max_in_flight=settings.sync_workers,
            lease_seconds=settings.sync_lease_seconds,
            poll_seconds=settings.sync_poll_seconds,
            max_attempts=settings.sync_max_attempts,
            shutdown_grace_seconds=settings.sync_shutdown_grace_seconds,
            backoff_base_seconds=settings.sync_backoff_base_seconds,
            backoff_cap_seconds=settings.sync_backoff_cap_seconds,
            coalesce_seconds=settings.sync_coalesce_seconds,
        )
        return SyncLoop(
            store, calendar, tokens, executor, options, self.metrics, on_synced=self._mirror_pushed, budget=budget
        )

    def _calendar_mirror(
        self, store: Store, calendar: GoogleCalendar, tokens: TokenManager, executor: ThreadPoolExecutor
    ) -> CalendarMirror:
        settings = self.settings
        return CalendarMirror(
            store,
            calendar,
            tokens,
            executor,
            owner=self.owner,
            # With push notifications a slow safety net; without, the polling period.
            interval_seconds=(
                settings.mirror_safety_net_seconds if settings.push_enabled else settings.mirror_interval_seconds
            ),
            page_size=settings.mirror_page_size,
            after_push_delay_seconds=settings.mirror_after_push_seconds,
            metrics=self.metrics,
        )

    def _scheduler(self, store: Store, tokens: TokenManager) -> AsyncIOScheduler:
        """The periodic jobs: token refresh, the backlog snapshot for metrics, the tool-call retention, and with
        VAPI_API_KEY the re-sync of clinics whose Vapi tools are stale."""
        settings = self.settings
        scheduler = AsyncIOScheduler()
        scheduler.add_job(
            tokens.refresh_due,
            "interval",
            args=[settings.token_refresh_margin_seconds],
            seconds=settings.token_refresh_interval_seconds,
            max_instances=1,
            coalesce=True,
        )
        scheduler.add_job(
            self._snapshot_backlog,
            "interval",
            args=[store],
            seconds=settings.backlog_metrics_seconds,
            max_instances=1,
            coalesce=True,
            next_run_time=dt.datetime.now(dt.UTC),
        )
        scheduler.add_job(
            self._purge_vapi_tool_calls,
            "interval",
            args=[store],
            hours=1,
            max_instances=1,
            coalesce=True,
            next_run_time=dt.datetime.now(dt.UTC),
        )
        keeper = vapi_keeper(settings, store, self.owner, self.metrics)  # with VAPI_API_KEY: stale tools re-synced
        scheduler.add_job(
            keeper.run_once if keeper is not None else self._snapshot_vapi,
            "interval",
            args=[] if keeper is not None else [store],
            seconds=settings.vapi_sync_interval_seconds,
            max_instances=1,
            coalesce=True,
            next_run_time=dt.datetime.now(dt.UTC),
        )
        return scheduler

    async def _start_push(
        self, store: Store, calendar: GoogleCalendar, tokens: TokenManager, executor: ThreadPoolExecutor
    ) -> Push:
        """The public listener (the clinic pages; Google's push notifications), and with the busy mirror the
        push channels kept for every calendar."""
        settings, mirror = self.settings, self.mirror
        assert settings.public_url is not None
        pages = ClinicPages(
            settings, store, requests=RefusalLimiter(*PAGE_REQUESTS), refusals=RefusalLimiter(*PAGE_REFUSALS)
        )
        self.public = PublicServer(
            store,
            mirror.notified if mirror else (lambda _clinic: None),
            host=settings.public_host,
            port=settings.public_port,
            routes=pages.routes(),
        )
        await self.public.start()
        if mirror is None or not settings.push_enabled:
            return Push(self.public, None, None)
        keeper = ChannelKeeper(
            store,
            calendar,
            tokens,
            executor,
            owner=self.owner,
            public_url=settings.public_url,
            ttl_seconds=settings.channel_ttl_seconds,
            renew_before_seconds=settings.channel_renew_before_seconds,
            confirm_seconds=settings.channel_confirm_seconds,
            check_seconds=settings.channel_check_seconds,
        )
        return Push(self.public, keeper, asyncio.create_task(keeper.run()))

    def _mirror_pushed(self, clinic_id: uuid.UUID, calendar_id: str) -> None:
        # With push notifications Google announces our own changes like anyone's.
        if self.mirror is not None and not self.settings.push_enabled:
            self.mirror.pushed(clinic_id, calendar_id)

    async def _snapshot_backlog(self, store: Store) -> None:
        try:
            self.metrics.backlog(await store.backlog())
            self.metrics.mirror_freshness(await store.mirror_freshness())
            self.metrics.google_budget(await store.google_budget_snapshot(self.settings.google_budget))
        except (StoreError, ValueError) as error:
            logger.warning("could not read the backlog for metrics: {}", error)

    async def _snapshot_vapi(self, store: Store) -> None:
        """Without VAPI_API_KEY nothing re-syncs, but the metrics still count the stale clinics."""
        try:
            self.metrics.vapi_setups(await store.vapi_setups_overview())
        except (StoreError, ValueError) as error:
            logger.warning("could not read the Vapi setups for metrics: {}", error)

    async def _purge_vapi_tool_calls(self, store: Store, batch: int = 10_000) -> None:
        """Hourly: forget Vapi tool-call answers past VAPI_TOOL_CALL_RETENTION_DAYS, a batch per call."""
        days = self.settings.vapi_tool_call_retention_days
        purged = 0
        try:
            for _ in range(100):  # at most a million an hour; the rest next hour
                deleted = await store.purge_vapi_tool_calls(days, batch)
                purged += deleted
                if deleted < batch:
                    break
        except StoreError as error:
            logger.warning("could not forget old Vapi tool calls: {}", error)
        if purged:
            logger.info("forgot {} Vapi tool-call answers older than {} days", purged, days)

    def _liveness(self) -> Health:
        """Called from the health server's thread: can the event loop still run something?"""
        loop = self._loop
        if loop is None or loop.is_closed():
            return Health(False, {"error": "event loop not running"})
        started = time.monotonic()
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(timeout=LIVENESS_TIMEOUT_SECONDS)
        return Health(True, {"loop_delay_seconds": round(time.monotonic() - started, 4)})

    def _readiness(self) -> Health:
        """Ready once a claim has reached the database and while claims keep reaching it."""
        sync = self._sync
        detail = {
            "owner": self.owner,
            "database": self.settings.database_backend,
            "feed": str(self.feed.state) if self.feed else "disabled",
        }
        if sync is None or sync.last_claim_ok is None:
            return Health(False, {**detail, "error": "not yet claimed from the database"})
        if sync.failing_since is not None:
            failing = round(time.monotonic() - sync.failing_since, 1)
            return Health(False, {**detail, "error": f"database unreachable for {failing}s"})
        if self._stop_requested:
            return Health(False, {**detail, "error": "shutting down"})
        return Health(True, detail)

    @property
    def claims(self) -> int:
        return self._sync.claims if self._sync else 0

    def stop(self) -> None:
        """Thread-safe: stop claiming, finish or release in-flight work, return from run()."""
        self._stop_requested = True
        if self._loop is not None and self._sync is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already (the daemon stopped by itself)
                self._loop.call_soon_threadsafe(self._sync.stop)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT."""
    configure_logging(settings.log_level, settings.log_format)
    daemon = Daemon(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.stop)
    await daemon.run()
