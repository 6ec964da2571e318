"""This replica's share of the one Google budget that every replica draws from (kept in PostgreSQL).

Every Calendar request comes out of a reservation made in the database first (`claim_appointments`
reserves one per claimed row; `reserve_google_requests` reserves on demand), so no replica can send
more than its share of any account's or the project's sliding 60 s window. Reservations live here, per
clinic, until they are spent or their hold runs out: a request is sent within `hold_seconds` of its
reservation or never, which is what lets the database count it in the right windows. What was not
sent is given back with the next claim.

`spend` is called by the worker threads right before each request (GoogleCalendar's single point of
sending): from the reservations held, else by a reservation on demand made through the event loop
for that request alone (a database round trip, off the hot path: the claim's own reservation covers a
row's first request).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from loguru import logger

from daemon.calendar import QUOTA_REASONS
from daemon.domain.google_budget import BudgetExhausted, BudgetGrant, BudgetLimits, BudgetReturn
from daemon.domain.sync_queue import Claim
from daemon.store import Store, StoreError

# How long a worker waits for a reservation on demand before giving up on the request.
RESERVE_TIMEOUT_SECONDS = 10.0
# When the database cannot be asked, try the request's row again after this long.
UNREACHABLE_RETRY_SECONDS = 5.0
# A reservation is used only this long before its hold ends: the request must reach Google in time.
SEND_MARGIN_SECONDS = 0.5
# After a rate-limit answer an account is held back for the configured hold, doubled while Google keeps
# refusing, up to this; after a usage limit (Google's are daily) for an hour.
RATE_LIMIT_MAX_HOLD_SECONDS = 300.0
QUOTA_HOLD_SECONDS = 3600.0


@dataclass
class _Reservation:
    entry: int | None
    remaining: int
    usable_until: float  # this process's monotonic clock


class GoogleBudget:
    def __init__(
        self,
        store: Store,
        limits: BudgetLimits,
        loop: asyncio.AbstractEventLoop,
        *,
        rate_limit_hold_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._rate_limit_hold = rate_limit_hold_seconds
        self._store = store
        self._loop = loop
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[uuid.UUID, deque[_Reservation]] = {}
        self._unsent: dict[int, int] = {}  # reservation entry -> requests that expired unsent

    def granted(self, claims: Iterable[Claim], reserved_from: float) -> None:
        """The claims reserved one request each; `reserved_from` is when the claim call began (this clock)."""
        usable_until = self._usable_until(reserved_from)
        with self._lock:
            for claim in claims:
                if claim.budget_entry is not None:
                    self._held.setdefault(claim.clinic_id, deque()).append(
                        _Reservation(claim.budget_entry, 1, usable_until)
                    )

    def returns(self) -> list[BudgetReturn]:
        """Requests reserved and never sent, to give back with the next claim (forgotten here)."""
        with self._lock:
            self._expire_all()
            unsent, self._unsent = self._unsent, {}
        return [BudgetReturn(entry, requests) for entry, requests in unsent.items() if requests]

    def spend(self, clinic_id: uuid.UUID) -> None:
        """One request for this clinic is about to be sent (from a worker thread). Raises BudgetExhausted."""
        if self._take(clinic_id):
            return
        if _running_loop() is self._loop:
            raise RuntimeError("GoogleBudget.spend blocks: call it from a worker thread, not the event loop")
        started = self._clock()
        future = asyncio.run_coroutine_threadsafe(self._reserve(clinic_id), self._loop)
        try:
            grant = future.result(timeout=RESERVE_TIMEOUT_SECONDS)
        except TimeoutError:
            future.cancel()
            raise BudgetExhausted(UNREACHABLE_RETRY_SECONDS) from None
        if grant.granted == 0:
            raise BudgetExhausted(grant.retry_after_seconds)
        # The request granted is this thread's own (never pooled, where another thread could take it first),
        # unless its hold ran out while the grant was on its way back.
        if self._clock() > self._usable_until(started):
            if grant.entry is not None:
                with self._lock:
                    self._unsent[grant.entry] = self._unsent.get(grant.entry, 0) + grant.granted
            raise BudgetExhausted(0.0)

    def throttled(self, clinic_id: uuid.UUID, reason: str) -> None:
        """Google refused one of this clinic's requests for its rate or usage: hold its account back
        everywhere (from a worker thread; the database call is not waited for)."""
        with self._lock:
            self._expire(self._held.pop(clinic_id, deque()), until=float("inf"))
        if reason in QUOTA_REASONS:
            hold = maximum = QUOTA_HOLD_SECONDS
        else:
            hold, maximum = self._rate_limit_hold, max(self._rate_limit_hold, RATE_LIMIT_MAX_HOLD_SECONDS)
        asyncio.run_coroutine_threadsafe(self._throttle(clinic_id, hold, maximum, reason), self._loop)

    async def _reserve(self, clinic_id: uuid.UUID) -> BudgetGrant:
        """Reserve one request (none granted, and when to ask again, when the database cannot be asked)."""
        try:
            return await self._store.reserve_google_requests(clinic_id, 1, self.limits, self.returns())
        except StoreError as error:
            logger.warning("could not reserve a Google request for clinic {}: {}", clinic_id, error)
            return BudgetGrant(granted=0, entry=None, retry_after_seconds=UNREACHABLE_RETRY_SECONDS)

    async def _throttle(self, clinic_id: uuid.UUID, seconds: float, maximum: float, reason: str) -> None:
        try:
            await self._store.throttle_google_requests(clinic_id, seconds, maximum, reason)
        except StoreError as error:  # this replica's own pushes back off regardless
            logger.warning("could not hold clinic {}'s Google account back: {}", clinic_id, error)

    def _usable_until(self, reserved_from: float) -> float:
        return reserved_from + max(0.0, self.limits.hold_seconds - SEND_MARGIN_SECONDS)

    def _take(self, clinic_id: uuid.UUID) -> bool:
        with self._lock:
            held = self._held.get(clinic_id)
            if not held:
                return False
            self._expire(held, until=self._clock())
            if not held:
                return False
            held[0].remaining -= 1
            if held[0].remaining == 0:
                held.popleft()
            return True

    def _expire_all(self) -> None:
        now = self._clock()
        for clinic_id in list(self._held):
            self._expire(self._held[clinic_id], until=now)
            if not self._held[clinic_id]:
                del self._held[clinic_id]

    def _expire(self, held: deque[_Reservation], *, until: float) -> None:
        """Drop reservations whose hold ended before `until`, noting what was never sent (lock held)."""
        while held and held[0].usable_until <= until:
            gone = held.popleft()
            if gone.entry is not None and gone.remaining:
                self._unsent[gone.entry] = self._unsent.get(gone.entry, 0) + gone.remaining


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
