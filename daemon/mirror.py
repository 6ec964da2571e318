"""The busy mirror: each connected clinic's Google Calendar, read back into the database.

Receptionists put things straight into Google (a doctor's lunch, a home visit, a blocked
afternoon) and move or delete the events of bookings. The mirror lists each calendar
incrementally (a sync token; a full listing when there is none or Google expired it) and hands
`apply_calendar_changes` only what it needs: ids, times, status, transparency, when the event
last changed, and for our own events the appointment id and revision we put in them. What the events say
(titles, descriptions, attendees) never leaves Google.

It runs every `MIRROR_INTERVAL_SECONDS` for every clinic, and for one clinic
`MIRROR_AFTER_PUSH_SECONDS` after the sync loop pushed to its calendar (so the sync token moves
past our own changes while they are few; a stream of pushes makes one listing per period). Every
replica mirrors; `apply_calendar_changes` is idempotent, so that only costs requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

import httplib2
from googleapiclient.errors import HttpError
from loguru import logger

from daemon.calendar import FullSyncRequired, GoogleCalendar, Listing, classify
from daemon.domain import BudgetExhausted, MirrorTarget
from daemon.metrics import Metrics
from daemon.store import Store, StoreError
from daemon.tokens import NeedsReauth, TokenManager, TokenUnavailable

# Busy time that ended more than this long ago is of no use to availability.
LOOKBACK = dt.timedelta(days=1)


def compact(event: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an event the database needs."""
    private = (event.get("extendedProperties") or {}).get("private") or {}
    return {
        "id": event["id"],
        "status": event.get("status", "confirmed"),
        "start": event.get("start"),
        "end": event.get("end"),
        "transparency": event.get("transparency", "opaque"),
        "updated": event.get("updated"),
        "appointment_id": private.get("appointmentId"),
        "revision": private.get("revision"),
    }


class CalendarMirror:
    def __init__(
        self,
        store: Store,
        calendar: GoogleCalendar,
        tokens: TokenManager,
        executor: Executor,
        *,
        interval_seconds: float,
        after_push_delay_seconds: float = 5.0,
        page_size: int = 250,
        metrics: Metrics | None = None,
    ) -> None:
        self._page_size = page_size
        self._store = store
        self._calendar = calendar
        self._tokens = tokens
        self._executor = executor
        self._interval = interval_seconds
        self._delay = after_push_delay_seconds
        self._metrics = metrics or Metrics()
        self._wanted: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}

    def pushed(self, clinic_id: uuid.UUID) -> None:
        """The sync loop changed this clinic's calendar: mirror it soon."""
        self._wanted.add(clinic_id)
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Every clinic now and every interval; a pushed-to clinic after a short delay (which
        gathers a burst of pushes into one listing)."""
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        while not self._stopping.is_set():
            if not self._wanted:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_round - loop.time()))
            if self._stopping.is_set():
                return
            if loop.time() >= next_round:
                self._wake.clear()
                self._wanted.clear()
                await self.mirror_all()
                next_round = loop.time() + self._interval
            elif self._wanted:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self._delay)
                self._wake.clear()
                wanted, self._wanted = self._wanted, set()
                for clinic_id in wanted:
                    await self.mirror_clinic(clinic_id)
            else:
                self._wake.clear()

    async def mirror_all(self) -> None:
        for target in await self._targets(None):
            if self._stopping.is_set():
                return
            await self._mirror(target)

    async def mirror_clinic(self, clinic_id: uuid.UUID) -> None:
        for target in await self._targets(clinic_id):
            await self._mirror(target)

    async def _targets(self, clinic_id: uuid.UUID | None) -> list[MirrorTarget]:
        """Every active connection's calendar and sync token, or one clinic's (none when the database
        cannot say)."""
        try:
            return await self._store.mirror_targets(clinic_id)
        except StoreError as error:
            logger.warning("calendar mirror: could not list the calendars: {}", error)
            return []

    async def _mirror(self, target: MirrorTarget) -> None:
        clinic_id = target.clinic_id
        async with self._locks.setdefault(clinic_id, asyncio.Lock()):
            try:
                listing = await self._list(clinic_id, target.calendar_id, target.sync_token)
                summary = await self._store.apply_calendar_changes(
                    clinic_id, [compact(event) for event in listing.events], listing.next_sync_token, listing.full
                )
            except (NeedsReauth, TokenUnavailable) as error:
                await self._failed(clinic_id, f"no Google access: {error}")
                return
            except BudgetExhausted as error:
                await self._failed(clinic_id, f"not listed: {error}")
                return
            except HttpError as error:
                await self._failed(clinic_id, classify(error, what="calendar listing failed").error or "HTTP error")
                return
            except (TimeoutError, OSError, httplib2.HttpLib2Error) as error:
                await self._failed(clinic_id, f"Google unreachable: {type(error).__name__}")
                return
            except StoreError as error:
                logger.warning("calendar mirror of clinic {}: could not record the listing: {}", clinic_id, error)
                return
            except Exception as error:  # a bug must not stop the mirror of every clinic: report it, go on
                logger.exception("calendar mirror of clinic {}: unexpected error", clinic_id)
                await self._failed(clinic_id, f"internal error: {type(error).__name__}")
                return
        self._metrics.mirrored("full" if listing.full else "incremental", summary)
        if summary.cancelled or summary.moved or summary.restored:
            logger.bind(clinic_id=str(clinic_id)).info(
                "calendar mirror of clinic {}: {} cancelled, {} moved, {} put back in Google",
                clinic_id,
                summary.cancelled,
                summary.moved,
                summary.restored,
            )

    async def _list(self, clinic_id: uuid.UUID, calendar_id: str, sync_token: str | None) -> Listing:
        token = await self._tokens.access_token(clinic_id)
        since = dt.datetime.now(dt.UTC) - LOOKBACK
        try:
            return await self._changes(clinic_id, calendar_id, token, sync_token, since)
        except FullSyncRequired:
            logger.info("calendar mirror of clinic {}: Google expired the sync token; listing everything", clinic_id)
            return await self._changes(clinic_id, calendar_id, token, None, since)
        except HttpError as error:
            if error.status_code != 401:
                raise
            token = await self._tokens.access_token(clinic_id, stale=token)
            return await self._changes(clinic_id, calendar_id, token, sync_token, since)

    async def _changes(
        self, clinic_id: uuid.UUID, calendar_id: str, token: str, sync_token: str | None, since: dt.datetime
    ) -> Listing:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._calendar.changes, clinic_id, calendar_id, token, sync_token, since, self._page_size
        )

    async def _failed(self, clinic_id: uuid.UUID, error: str) -> None:
        self._metrics.mirrored("error")
        logger.warning("calendar mirror of clinic {} failed: {}", clinic_id, error)
        try:
            await self._store.record_mirror_failure(clinic_id, error)
        except StoreError as store_error:
            logger.warning("calendar mirror of clinic {}: could not record the failure: {}", clinic_id, store_error)
