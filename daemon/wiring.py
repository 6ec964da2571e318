"""The configured parts, built from Settings: the database path, the change feed, the token manager.

The daemon's main loop and the operator commands both build their parts here, so a command such
as `verify` or `connect-google` never imports the main loop.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from daemon.budget import GoogleBudget
from daemon.calendar import GoogleCalendar
from daemon.config import Settings, StoreSettings
from daemon.crypto import TokenCipher
from daemon.feed import ChangeFeed, PostgresNotifyFeed, RealtimeFeed
from daemon.metrics import Metrics
from daemon.store import PostgresStore, Store, SupabaseStore
from daemon.tokens import OAuthClient, TokenManager


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


def token_manager(settings: Settings, store: Store, executor: Executor, metrics: Metrics | None = None) -> TokenManager:
    """Access tokens for every clinic, refreshed with the configured OAuth client."""
    return TokenManager(
        store,
        TokenCipher(settings.token_encryption_key.get_secret_value()),
        OAuthClient(
            settings.google_client_id,
            settings.google_client_secret.get_secret_value(),
            settings.google_token_uri,
            settings.google_timeout_seconds,
        ),
        executor,
        metrics=metrics,
    )


async def open_store(settings: StoreSettings, *, timeout: float = 30.0) -> Store:
    """The configured database path, connected; StoreError when the database cannot be reached."""
    if settings.database_backend == "postgres":
        assert settings.database_url is not None
        postgres = PostgresStore(settings.database_url.get_secret_value())
        await postgres.open(timeout)
        return postgres
    assert settings.supabase_url is not None and settings.supabase_service_role_key is not None
    supabase = SupabaseStore(settings.supabase_url, settings.supabase_service_role_key.get_secret_value())
    await supabase.open()
    return supabase


def google_calendar(settings: Settings, store: Store) -> tuple[GoogleCalendar, GoogleBudget]:
    """The Calendar client, every request of which comes out of the shared Google budget (call it on the
    event loop: reservations on demand are made through it)."""
    budget = GoogleBudget(
        store,
        settings.google_budget,
        asyncio.get_running_loop(),
        rate_limit_hold_seconds=settings.google_rate_limit_hold_seconds,
    )
    calendar = GoogleCalendar(settings.google_api_endpoint, timeout=settings.google_timeout_seconds, budget=budget)
    return calendar, budget
