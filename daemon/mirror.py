"""The busy mirror: each connected clinic's Google Calendar, read back into the database.

Receptionists put things straight into Google (a doctor's lunch, a home visit, a blocked
afternoon) and move or delete the events of bookings. The mirror lists each calendar
incrementally (a sync token; a full listing when there is none or Google expired it; the same
parameters both times, recurring events as their occurrences) and hands `apply_calendar_changes`
only what it needs: ids, times, status, transparency, when the event last changed, and for our
own events the appointment id (decoded from the event id, which Google always lists, even for a
deleted event it lists with nothing else) and the revision we put in them. What the events say
(titles, descriptions, attendees) never leaves Google.

Which calendar is listed when is decided in the database, so replicas add capacity, not Google
requests: `claim_mirror_targets` leases each calendar that is due to one replica at a time (every
`interval_seconds`, sooner when Google notified a change), and the listing's result ends the lease
(and says when a notification arrived meanwhile: one more listing then). With push notifications
the interval is a slow safety net and `notified()` lists at once; without, the interval is the
polling period and `pushed()` lists a calendar `after_push_delay_seconds` after the sync loop wrote
to it (so the sync token moves past our own changes while they are few).
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

from daemon.calendar import FullSyncRequired, GoogleCalendar, Listing, appointment_of, classify
from daemon.domain.calendar_mirror import MirrorTarget
from daemon.domain.google_budget import BudgetExhausted
from daemon.metrics import Metrics
from daemon.store import Store, StoreError
from daemon.tokens import NeedsReauth, TokenManager, TokenUnavailable

# Busy time that ended more than this long ago is of no use to availability.
LOOKBACK = dt.timedelta(days=1)


def compact(event: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an event the database needs. Our events are known by their id: Google lists a deleted
    event with its id and status only."""
    private = (event.get("extendedProperties") or {}).get("private") or {}
    appointment = appointment_of(str(event["id"]))
    return {
        "id": event["id"],
        "status": event.get("status", "confirmed"),
        "start": event.get("start"),
        "end": event.get("end"),
        "transparency": event.get("transparency", "opaque"),
        "updated": event.get("updated"),
        "appointment_id": None if appointment is None else str(appointment),
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
        owner: str,
        interval_seconds: float,
        after_push_delay_seconds: float = 5.0,
        lease_seconds: int = 120,
        page_size: int = 250,
        metrics: Metrics | None = None,
    ) -> None:
        self._page_size = page_size
        self._store = store
        self._calendar = calendar
        self._tokens = tokens
        self._executor = executor
        self._owner = owner
        self._interval = interval_seconds
        # How often this replica asks which calendars are due: often enough to keep to the interval.
        self._check = min(interval_seconds, 5.0)
        self._delay = after_push_delay_seconds
        self._lease = lease_seconds
        self._metrics = metrics or Metrics()
        self._pushed: set[tuple[uuid.UUID, str]] = set()
        self._notified: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._locks: dict[tuple[uuid.UUID, str], asyncio.Lock] = {}

    def pushed(self, clinic_id: uuid.UUID, calendar_id: str) -> None:
        """The sync loop changed one of this clinic's calendars (without push notifications): list it soon."""
        self._pushed.add((clinic_id, calendar_id))
        self._wake.set()

    def notified(self, clinic_id: uuid.UUID) -> None:
        """Google notified a change of one of this clinic's calendars (the database knows which): list it now."""
        self._notified.add(clinic_id)
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """The calendars that are due, every few seconds; notified ones at once; pushed-to ones after a
        short delay (which gathers a burst of pushes into one listing)."""
        loop = asyncio.get_running_loop()
        next_check = loop.time()
        while not self._stopping.is_set():
            if not self._notified and not self._pushed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_check - loop.time()))
            self._wake.clear()
            if self._stopping.is_set():
                return
            if self._notified:
                notified, self._notified = self._notified, set()
                for clinic_id in notified:
                    await self._mirror_all(await self._targets(clinic_id, only_due=True))
            elif loop.time() >= next_check:
                await self.mirror_due()
                next_check = loop.time() + self._check
            elif self._pushed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self._delay)
                pushed, self._pushed = self._pushed, set()
                for clinic_id, calendar_id in pushed:
                    await self._mirror_all(await self._targets(clinic_id, calendar_id))

    async def mirror_due(self) -> None:
        """List every calendar that is due and that no other replica is listing."""
        await self._mirror_all(await self._targets(None))

    async def mirror_clinic(self, clinic_id: uuid.UUID) -> None:
        """List each of one clinic's calendars now, unless another replica is listing it (it then lists it again)."""
        await self._mirror_all(await self._targets(clinic_id))

    async def _mirror_all(self, targets: list[MirrorTarget]) -> None:
        for target in targets:
            if self._stopping.is_set():
                return
            await self._mirror(target)

    async def _targets(
        self, clinic_id: uuid.UUID | None, calendar_id: str | None = None, *, only_due: bool = False
    ) -> list[MirrorTarget]:
        """The calendars leased to this replica for a listing (none when the database cannot say)."""
        try:
            return await self._store.claim_mirror_targets(
                self._owner,
                self._lease,
                self._interval,
                clinic_id=clinic_id,
                calendar_id=calendar_id,
                only_due=only_due,
            )
        except StoreError as error:
            logger.warning("calendar mirror: could not lease the calendars due: {}", error)
            return []

    async def _mirror(self, target: MirrorTarget) -> None:
        clinic_id, calendar_id = target.clinic_id, target.calendar_id
        async with self._locks.setdefault((clinic_id, calendar_id), asyncio.Lock()):
            try:
                listing = await self._list(clinic_id, calendar_id, target.sync_token)
                summary = await self._store.apply_calendar_changes(
                    clinic_id,
                    [compact(event) for event in listing.events],
                    listing.next_sync_token,
                    listing.full,
                    self._owner,
                    calendar_id,
                )
            except (NeedsReauth, TokenUnavailable) as error:
                await self._failed(target, f"no Google access: {error}")
                return
            except BudgetExhausted as error:
                await self._failed(target, f"not listed: {error}")
                return
            except HttpError as error:
                await self._failed(target, classify(error, what="calendar listing failed").error or "HTTP error")
                return
            except (TimeoutError, OSError, httplib2.HttpLib2Error) as error:
                await self._failed(target, f"Google unreachable: {type(error).__name__}")
                return
            except StoreError as error:
                logger.warning("calendar mirror of clinic {}: could not record the listing: {}", clinic_id, error)
                return
            except Exception as error:  # a bug must not stop the mirror of every clinic: report it, go on
                logger.exception("calendar mirror of clinic {}: unexpected error", clinic_id)
                await self._failed(target, f"internal error: {type(error).__name__}")
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
        if summary.again:  # Google notified a change while this listing was under way
            self.notified(clinic_id)

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

    async def _failed(self, target: MirrorTarget, error: str) -> None:
        clinic_id = target.clinic_id
        self._metrics.mirrored("error")
        logger.warning("calendar mirror of clinic {} failed: {}", clinic_id, error)
        try:
            await self._store.record_mirror_failure(clinic_id, error, self._owner, target.calendar_id)
        except StoreError as store_error:
            logger.warning("calendar mirror of clinic {}: could not record the failure: {}", clinic_id, store_error)
