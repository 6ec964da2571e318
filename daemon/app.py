"""Wires the daemon together from Settings and runs it until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from loguru import logger

from daemon.calendar import GoogleCalendar
from daemon.config import Settings
from daemon.feed import ChangeFeed, PostgresNotifyFeed, RealtimeFeed
from daemon.store import PostgresStore, Store, SupabaseStore
from daemon.sync import SyncLoop, SyncOptions
from daemon.tokens import OAuthClient, TokenCipher, TokenManager


def configure_logging(level: str = "INFO") -> None:
    """One line per event on stderr. Tracebacks never show variable values (`diagnose`), because
    those can hold patient details; log calls themselves name only appointment and clinic ids."""
    logger.remove()
    logger.add(sys.stderr, level=level, backtrace=False, diagnose=False)


def default_owner() -> str:
    """Names this replica in lease columns: host, process and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def make_feed(settings: Settings) -> ChangeFeed:
    """The doorbell for the configured database path."""
    timing = {
        "probe_seconds": settings.feed_probe_seconds,
        "probe_timeout_seconds": settings.feed_probe_timeout_seconds,
    }
    if settings.database_backend == "postgres":
        assert settings.database_url is not None
        return PostgresNotifyFeed(settings.database_url.get_secret_value(), **timing)
    assert settings.supabase_url is not None and settings.supabase_service_role_key is not None
    return RealtimeFeed(
        settings.supabase_realtime_url or settings.supabase_url,
        settings.supabase_service_role_key.get_secret_value(),
        **timing,
    )


async def open_store(settings: Settings) -> Store:
    if settings.database_backend == "postgres":
        assert settings.database_url is not None
        postgres = PostgresStore(settings.database_url.get_secret_value())
        await postgres.open()
        return postgres
    assert settings.supabase_url is not None and settings.supabase_service_role_key is not None
    supabase = SupabaseStore(settings.supabase_url, settings.supabase_service_role_key.get_secret_value())
    await supabase.open()
    return supabase


class Daemon:
    """One replica: the sync loop plus the scheduled token refresh."""

    def __init__(self, settings: Settings, *, owner: str | None = None) -> None:
        self.settings = settings
        self.owner = owner or default_owner()
        self._cipher = TokenCipher(settings.token_encryption_key.get_secret_value())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sync: SyncLoop | None = None
        self._stop_requested = False
        self.feed: ChangeFeed | None = None

    async def run(self) -> None:
        settings = self.settings
        self._loop = asyncio.get_running_loop()
        store = await open_store(settings)
        executor = ThreadPoolExecutor(max_workers=settings.sync_workers + 2, thread_name_prefix="google")
        tokens = TokenManager(
            store,
            self._cipher,
            OAuthClient(
                settings.google_client_id,
                settings.google_client_secret.get_secret_value(),
                settings.google_token_uri,
                settings.google_timeout_seconds,
            ),
            executor,
        )
        calendar = GoogleCalendar(settings.google_api_endpoint, timeout=settings.google_timeout_seconds)
        self._sync = SyncLoop(
            store,
            calendar,
            tokens,
            executor,
            SyncOptions(
                owner=self.owner,
                batch_size=settings.sync_batch_size,
                per_clinic_batch=settings.sync_per_clinic_batch,
                max_in_flight=settings.sync_workers,
                lease_seconds=settings.sync_lease_seconds,
                poll_seconds=settings.sync_poll_seconds,
                max_attempts=settings.sync_max_attempts,
                requests_per_minute=settings.google_requests_per_minute,
                shutdown_grace_seconds=settings.sync_shutdown_grace_seconds,
                backoff_base_seconds=settings.sync_backoff_base_seconds,
                backoff_cap_seconds=settings.sync_backoff_cap_seconds,
                coalesce_seconds=settings.sync_coalesce_seconds,
            ),
        )
        if self._stop_requested:
            self._sync.stop()
        scheduler = AsyncIOScheduler()
        scheduler.add_job(
            tokens.refresh_due,
            "interval",
            args=[settings.token_refresh_margin_seconds],
            seconds=settings.token_refresh_interval_seconds,
            max_instances=1,
            coalesce=True,
        )
        scheduler.start()
        self.feed = make_feed(settings) if settings.feed_enabled else None
        feed_task = asyncio.create_task(self.feed.run(self._sync.wake)) if self.feed else None
        logger.info("daemon {} started ({} database path)", self.owner, settings.database_backend)
        try:
            await self._sync.run()
        finally:
            if self.feed and feed_task:
                self.feed.stop()
                feed_task.cancel()
                await asyncio.gather(feed_task, return_exceptions=True)
            scheduler.shutdown(wait=False)
            await store.close()
            # Bounded by the Google timeout: a push still running in a worker finishes first.
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
            calendar.close()
            logger.info("daemon {} stopped", self.owner)

    @property
    def claims(self) -> int:
        return self._sync.claims if self._sync else 0

    def stop(self) -> None:
        """Thread-safe: stop claiming, finish or release in-flight work, return from run()."""
        self._stop_requested = True
        if self._loop is not None and self._sync is not None:
            self._loop.call_soon_threadsafe(self._sync.stop)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT."""
    configure_logging()
    daemon = Daemon(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.stop)
    await daemon.run()
