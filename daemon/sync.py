"""The sync loop: claim due appointments, push each to Google, record what happened.

Nothing is dropped: every claimed row leaves this loop synced, re-queued with a delay, failed
with a reason, or parked for re-authorisation; a row held by a crashed replica comes back when
its lease expires. The loop wakes on a doorbell (`wake()`), when work finishes while a backlog
remains, and on a timer, so it never spins and never waits long.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal

from loguru import logger

from daemon.backoff import backoff_delay
from daemon.budget import GoogleBudget
from daemon.calendar import GoogleCalendar, PushResult, Verdict
from daemon.domain.sync_queue import Claim, RetryReason
from daemon.metrics import Metrics
from daemon.store import Store, StoreError
from daemon.tokens import NeedsReauth, TokenManager, TokenUnavailable
from daemon.writeback import CompletionWriter

QUOTA_BACKOFF_SECONDS = 3600.0


@dataclass(frozen=True)
class SyncOptions:
    owner: str
    batch_size: int = 50
    per_clinic_batch: int = 10
    max_in_flight: int = 16
    lease_seconds: int = 120
    poll_seconds: float = 5.0
    max_attempts: int = 12
    shutdown_grace_seconds: float = 8.0  # below `docker stop`'s 10 s
    backoff_base_seconds: float = 2.0
    backoff_cap_seconds: float = 900.0
    # After a doorbell, wait this long for more before claiming, so a burst makes one claim.
    coalesce_seconds: float = 0.02


class SyncLoop:
    def __init__(
        self,
        store: Store,
        calendar: GoogleCalendar,
        tokens: TokenManager,
        executor: Executor,
        options: SyncOptions,
        metrics: Metrics | None = None,
        on_synced: Callable[[uuid.UUID, str], None] | None = None,
        budget: GoogleBudget | None = None,
    ) -> None:
        self._store = store
        self._completions = CompletionWriter(store)
        self._metrics = metrics or Metrics()
        self._on_synced = on_synced  # told each calendar that changed (the busy mirror)
        self._calendar = calendar
        self._tokens = tokens
        self._executor = executor
        self._options = options
        self._budget = budget  # None: Google requests are not budgeted (tests of the loop alone)
        self._held_back_until = 0.0  # monotonic time the next clinic held back for budget has some again
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        # `backlog`: the last claim found work, so more may be waiting. `poked`: a doorbell rang
        # since the last claim began (kept apart so a claim already running cannot swallow it).
        self._backlog = True
        self._poked = True
        self.claims = 0  # claim queries made, for metrics and for seeing that doorbells coalesce
        self.last_claim_ok: float | None = None  # monotonic time of the last claim that reached the database
        self.failing_since: float | None = None  # monotonic time claims started failing, None while they work

    def wake(self) -> None:
        """Something may be due (a change-feed doorbell, a test): claim soon."""
        self._poked = True
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Claim and push until stop(); then finish or release what is in flight."""
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self._claim_more()
                failures = 0
                self.failing_since = None
            except StoreError as error:
                failures += 1
                self.failing_since = self.failing_since or time.monotonic()
                delay = backoff_delay(failures, 1.0, 30.0)
                logger.warning("claiming failed ({}); retrying in {:.1f}s", error, delay)
                await self._sleep(delay)
                continue
            await self._wait()
        await self._drain()

    async def _claim_more(self) -> None:
        if not (self._backlog or self._poked) or not self._has_room():
            return
        room = self._options.max_in_flight - len(self._in_flight)
        self._poked = False
        wanted = min(room, self._options.batch_size)
        self.claims += 1
        started = time.monotonic()
        budget = self._budget
        claims = await self._store.claim(
            self._options.owner,
            wanted,
            self._options.lease_seconds,
            self._options.per_clinic_batch,
            budget.limits if budget else None,
            budget.returns() if budget else (),
        )
        if budget is not None:
            budget.granted(claims, started)
        self.last_claim_ok = time.monotonic()
        self._metrics.claimed(len(claims))
        # Any claim may have left more behind (the per-clinic cap can make a claim come back
        # short while that clinic still has a backlog); only an empty claim means drained.
        self._backlog = bool(claims)
        if not claims and budget is not None:
            await self._note_held_back(budget)
        for claim in claims:
            task = asyncio.create_task(self._sync(claim))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _has_room(self) -> bool:
        """Claim in batches: when idle, or once at least a quarter of the in-flight slots are free. (Half
        kept a quarter of them idle on average, which at Google's ~100 ms cost a sixth of the throughput.)"""
        free = self._options.max_in_flight - len(self._in_flight)
        return not self._in_flight or free >= max(1, self._options.max_in_flight // 4)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if (self._backlog or self._poked) and self._has_room():
            self._wake.set()

    async def _note_held_back(self, budget: GoogleBudget) -> None:
        """Nothing claimable: if that is for lack of budget, look again as soon as some comes back."""
        snapshot = await self._store.google_budget_snapshot(budget.limits, top=0)
        if snapshot.held_back_clinics and snapshot.next_budget_seconds is not None:
            self._held_back_until = time.monotonic() + snapshot.next_budget_seconds

    async def _wait(self) -> None:
        timeout = self._options.poll_seconds
        if self._held_back_until > time.monotonic():
            timeout = min(timeout, self._held_back_until - time.monotonic())
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=timeout)
        except TimeoutError:
            self._poked = True  # the timer is the backstop: look again
            return
        # Coalesce doorbells that wake an idle loop. With a backlog, the wake-up is work finishing
        # and rows are known to wait: claim at once (waiting here capped a drain at a batch per window).
        if self._options.coalesce_seconds > 0 and not self._backlog:
            await self._sleep(self._options.coalesce_seconds)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _drain(self) -> None:
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=self._options.shutdown_grace_seconds)
            for task in self._in_flight:
                task.cancel()
        try:
            released = await self._store.release(self._options.owner)
            logger.info("released {} unfinished appointment(s) on shutdown", released)
        except StoreError as error:
            logger.warning("could not release leases on shutdown ({}); they expire by themselves", error)

    async def _sync(self, claim: Claim) -> None:
        try:
            result = await self._push(claim)
            if result.verdict is Verdict.RESTORE_REFUSED:
                renewed = await self._new_event_id(claim)
                if renewed is None:
                    return
                claim, result = renewed, await self._push(renewed)
            await self._record(claim, result)
        except StoreError as error:
            # The outcome could not be written back; the lease expires and the row is pushed
            # again, which the deterministic event id makes harmless.
            logger.warning(
                "appointment {} clinic {}: could not record the outcome: {}",
                claim.appointment_id,
                claim.clinic_id,
                error,
            )
        except Exception as error:  # a bug must not lose the appointment: re-queue it
            logger.exception("appointment {} clinic {}: unexpected error", claim.appointment_id, claim.clinic_id)
            await self._retry(claim, f"internal error: {type(error).__name__}", "internal")

    async def _new_event_id(self, claim: Claim) -> Claim | None:
        """Google will not bring the appointment's deleted event back: make its next event id current (in the
        database first, so a crash or another replica inserts the same one) and push under it."""
        generation = await self._store.next_event_generation(claim.appointment_id, self._options.owner)
        if generation is None:  # the lease was lost: its new holder pushes
            return None
        logger.bind(appointment_id=str(claim.appointment_id), clinic_id=str(claim.clinic_id)).info(
            "appointment {}: Google refused to restore its deleted event; a new event (generation {})",
            claim.appointment_id,
            generation,
        )
        # A moving event keeps its old id: that is the event to delete from the calendar it leaves.
        event_id = claim.calendar_event_id if claim.moving else None
        return claim.model_copy(update={"event_generation": generation, "calendar_event_id": event_id})

    async def _push(self, claim: Claim) -> PushResult:
        try:
            token = await self._tokens.access_token(claim.clinic_id)
        except NeedsReauth as error:
            return PushResult(Verdict.UNAUTHORIZED, error=f"needs re-authorisation: {error}")
        except TokenUnavailable as error:
            return PushResult(Verdict.RETRY, error=f"token refresh failed: {error}", retry_reason="token")
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, self._calendar.push, claim, token)
        if result.verdict is not Verdict.UNAUTHORIZED:
            return result
        try:  # the token was refused: refresh once and try once more
            token = await self._tokens.access_token(claim.clinic_id, stale=token)
        except NeedsReauth as error:
            return PushResult(Verdict.UNAUTHORIZED, error=f"needs re-authorisation: {error}")
        except TokenUnavailable as error:
            return PushResult(Verdict.RETRY, error=f"token refresh failed: {error}", retry_reason="token")
        result = await loop.run_in_executor(self._executor, self._calendar.push, claim, token)
        if result.verdict is Verdict.UNAUTHORIZED:
            return PushResult(Verdict.RETRY, error=result.error, retry_reason="token")
        return result

    async def _record(self, claim: Claim, result: PushResult) -> None:
        owner = self._options.owner
        # One line per outcome, naming ids only (bound, so JSON logs carry them as fields).
        log = logger.bind(appointment_id=str(claim.appointment_id), clinic_id=str(claim.clinic_id))
        where = f"appointment {claim.appointment_id} clinic {claim.clinic_id}"
        if result.verdict is Verdict.SYNCED:
            assert result.event_id is not None
            state = await self._completions.complete(
                claim, owner, result.event_id, result.event_link, claim.calendar_id
            )
            if state == "lease_lost":
                await self._store.resync(claim.appointment_id)
            else:
                self._metrics.synced(_action(claim), _latency(claim))
                if self._on_synced is not None:
                    self._on_synced(claim.clinic_id, claim.calendar_id)
                    if claim.event_calendar_id is not None:  # the calendar it left changed too
                        self._on_synced(claim.clinic_id, claim.event_calendar_id)
            log.bind(outcome=state).info("{}: {} (revision {})", where, state, claim.revision)
        elif result.verdict is Verdict.UNAUTHORIZED:
            await self._store.end_attempt(claim, owner, "parked", result.error or "needs re-authorisation")
            self._metrics.parked()
            log.bind(outcome="parked").warning("{}: parked until the clinic reconnects Google", where)
        elif result.verdict is Verdict.FAILED or (
            # Waiting for budget is not a failed attempt at Google: never a reason to give up.
            claim.sync_attempts >= self._options.max_attempts and result.retry_reason != "budget"
        ):
            error = result.error or "failed"
            if result.verdict is not Verdict.FAILED:
                error = f"gave up after {claim.sync_attempts} attempts: {error}"
            await self._store.end_attempt(claim, owner, "failed", error)
            self._metrics.failed("rejected" if result.verdict is Verdict.FAILED else "gave_up")
            log.bind(outcome="failed").error("{}: failed: {}", where, error)
        else:
            await self._retry(
                claim,
                result.error or "retry",
                result.retry_reason or "google_error",
                quota=result.verdict is Verdict.QUOTA,
                after=result.retry_after,
            )

    async def _retry(
        self, claim: Claim, error: str, reason: RetryReason, *, quota: bool = False, after: float | None = None
    ) -> None:
        if after is not None:
            delay = after
        elif quota:
            delay = QUOTA_BACKOFF_SECONDS
        else:
            delay = backoff_delay(
                claim.sync_attempts, self._options.backoff_base_seconds, self._options.backoff_cap_seconds
            )
        self._metrics.retried(reason)
        log = logger.bind(appointment_id=str(claim.appointment_id), clinic_id=str(claim.clinic_id), outcome="retry")
        try:
            await self._store.end_attempt(claim, self._options.owner, "pending", error, delay)
            log.info(
                "appointment {} clinic {}: retry in {:.1f}s: {}", claim.appointment_id, claim.clinic_id, delay, error
            )
        except StoreError as store_error:
            log.warning(
                "appointment {}: could not schedule a retry ({}); the lease will expire",
                claim.appointment_id,
                store_error,
            )


def _action(claim: Claim) -> Literal["insert", "update", "delete"]:
    if claim.status == "cancelled":
        return "delete"
    return "insert" if claim.calendar_event_id is None else "update"


def _latency(claim: Claim) -> float | None:
    """Seconds from the change being committed to Google confirming it."""
    if claim.changed_at is None:
        return None
    return max(0.0, (dt.datetime.now(dt.UTC) - claim.changed_at).total_seconds())
