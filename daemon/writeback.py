"""Writing confirmed pushes back to the database, many per round trip under load.

One call when idle; completions arriving while a call is under way go together in the next one,
so a burst of pushes costs a few round trips instead of one each, and nothing waits on a timer.
"""

from __future__ import annotations

import asyncio
import uuid

from loguru import logger

from daemon.domain.sync_queue import Claim, Completion, LeaseResult
from daemon.store import Store, StoreError

COMPLETION_BATCH = 200  # at most this many completions per call
COMPLETION_ATTEMPTS = 3  # tries of one batch that deadlocked before its callers hear the error
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure

Outcome = LeaseResult | StoreError


class CompletionWriter:
    """Batches `Store.complete_syncs` calls for the completions that arrive while one is under way."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: list[tuple[Completion, asyncio.Future[LeaseResult]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def complete(
        self, claim: Claim, owner: str, event_id: str, event_link: str | None, calendar_id: str | None = None
    ) -> LeaseResult:
        """Google confirmed the claimed revision: record it (raises StoreError when it could not be)."""
        future: asyncio.Future[LeaseResult] = asyncio.get_running_loop().create_future()
        self._waiting.append(
            (Completion(claim.appointment_id, owner, claim.revision, event_id, event_link, calendar_id), future)
        )
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        waiting = self._waiting
        while waiting:
            batch = waiting[:COMPLETION_BATCH]
            del waiting[:COMPLETION_BATCH]
            try:
                outcomes = await self._write_batch([completion for completion, _ in batch])
            except Exception as error:  # the callers hear a StoreError; each lease expires and the push repeats
                failed = batch
                if not isinstance(error, StoreError) or error.sqlstate is None:
                    # Unreachable: those queued behind this batch would only wait as long again.
                    failed = batch + waiting
                    waiting.clear()
                outcomes = {completion.appointment_id: StoreError(str(error)) for completion, _ in failed}
                batch = failed
            for completion, future in batch:
                if future.done():
                    continue
                outcome = outcomes.get(completion.appointment_id, "lease_lost")
                if isinstance(outcome, StoreError):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _write_batch(self, completions: list[Completion]) -> dict[uuid.UUID, Outcome]:
        """Each completion's outcome by appointment id. A batch holds several row locks, so it can deadlock
        with another writer of several rows (the busy mirror) where a single completion could not: it is
        tried again (a failed call changed nothing). Refused for another reason, the completions are
        recorded one by one, so one bad item cannot hold back the others."""
        for attempt in range(COMPLETION_ATTEMPTS):
            try:
                return dict(await self._store.complete_syncs(completions))
            except StoreError as error:
                sqlstate = error.sqlstate
                if sqlstate in TRANSIENT_SQLSTATES and attempt + 1 < COMPLETION_ATTEMPTS:
                    logger.info("recording {} synced appointment(s): {}; trying again", len(completions), error)
                    await asyncio.sleep(0.05 * 4**attempt)
                    continue
                if sqlstate is None or len(completions) == 1:
                    raise
                logger.warning(
                    "recording {} synced appointments together failed ({}); one by one", len(completions), error
                )
                break
        outcomes: dict[uuid.UUID, Outcome] = {}
        for completion in completions:
            try:
                outcomes[completion.appointment_id] = await self._store.complete_sync(completion)
            except StoreError as error:
                outcomes[completion.appointment_id] = error
        return outcomes
