"""Google push notifications: one events.watch channel per connected calendar, kept alive.

The database decides what is needed (`calendar_channel_work`): a channel for every active connection
that has none, a new one before the live one expires or when Google never confirmed it or it was
lost, and channels.stop for the ones retired (replaced, or their connection changed). This replica
does the leased work: it asks Google for the channel with a fresh secret token, which Google sends
back with every notification and the database keeps only as a hash. Every request comes out of the
shared Google budget like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import httplib2
from googleapiclient.errors import HttpError
from loguru import logger

from daemon.calendar import ChannelRequest, GoogleCalendar, classify
from daemon.domain.google_budget import BudgetExhausted
from daemon.domain.push_channels import ChannelWork
from daemon.store import Store, StoreError
from daemon.tokens import NeedsReauth, TokenManager, TokenUnavailable

NOTIFICATIONS_PATH = "/google/calendar-notifications"
T = TypeVar("T")


def token_hash(token: str) -> str:
    """What the database keeps of a channel's secret token (and compares each notification's with)."""
    return hashlib.sha256(token.encode()).hexdigest()


class ChannelKeeper:
    def __init__(
        self,
        store: Store,
        calendar: GoogleCalendar,
        tokens: TokenManager,
        executor: Executor,
        *,
        owner: str,
        public_url: str,
        ttl_seconds: int,
        renew_before_seconds: int,
        confirm_seconds: int,
        check_seconds: float,
        lease_seconds: int = 120,
    ) -> None:
        self._store = store
        self._calendar = calendar
        self._tokens = tokens
        self._executor = executor
        self._owner = owner
        self._address = public_url.rstrip("/") + NOTIFICATIONS_PATH
        self._ttl = ttl_seconds
        self._renew_before = renew_before_seconds
        self._confirm = confirm_seconds
        self._check = check_seconds
        self._lease = lease_seconds
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            await self.keep()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._check)

    async def keep(self) -> None:
        """Do the channel work that is due (none when the database cannot say)."""
        try:
            work = await self._store.channel_work(self._owner, self._renew_before, self._confirm, self._lease)
        except StoreError as error:
            logger.warning("push channels: could not read the work due: {}", error)
            return
        for item in work:
            if self._stopping.is_set():
                return
            if item.action == "create":
                await self._create(item)
            else:
                await self._stop(item)

    async def _create(self, work: ChannelWork) -> None:
        secret = secrets.token_urlsafe(32)
        request = ChannelRequest(uuid.uuid4().hex, self._address, secret, self._ttl)
        try:
            access = await self._tokens.access_token(work.clinic_id)
            # Recorded before Google is asked: its first notification may arrive before its answer.
            await self._store.begin_channel(work.clinic_id, request.channel_id, token_hash(secret), work.calendar_id)
        except (NeedsReauth, TokenUnavailable, StoreError) as error:
            logger.warning("push channel for clinic {}: not made now ({}); tried again later", work.clinic_id, error)
            return
        try:
            watched = await self._google(self._calendar.watch, work.clinic_id, work.calendar_id, access, request)
        except (BudgetExhausted, HttpError, OSError, httplib2.HttpLib2Error) as error:
            reason = classify(error, what="events.watch").error if isinstance(error, HttpError) else str(error)
            logger.warning("push channel for clinic {}: Google did not make it ({})", work.clinic_id, reason)
            with contextlib.suppress(StoreError):
                await self._store.abandon_channel(request.channel_id)
            return
        try:
            await self._store.record_channel(watched.channel_id, watched.resource_id, watched.expires_at, self._owner)
        except StoreError as error:  # unconfirmed, it is replaced; Google ends it at its expiration
            logger.warning("push channel for clinic {}: could not be recorded ({})", work.clinic_id, error)
            return
        logger.bind(clinic_id=str(work.clinic_id)).info(
            "push channel for clinic {} until {:%Y-%m-%d %H:%M} UTC", work.clinic_id, watched.expires_at
        )

    async def _stop(self, work: ChannelWork) -> None:
        assert work.channel_id is not None and work.resource_id is not None
        try:
            access = await self._tokens.access_token(work.clinic_id)
            await self._google(self._calendar.stop_channel, work.clinic_id, work.channel_id, work.resource_id, access)
        except NeedsReauth:
            pass  # no way to ask Google any more: the channel ends at its expiration, unheeded meanwhile
        except (TokenUnavailable, BudgetExhausted, OSError, httplib2.HttpLib2Error) as error:
            logger.info("push channel {}: not stopped now ({}); tried again later", work.channel_id, error)
            return
        except HttpError as error:
            if error.status_code >= 500 or error.status_code == 429:
                return
            # Refused for good (another account's channel, say): it ends at its expiration, unheeded meanwhile.
            logger.info("push channel {}: Google would not stop it ({})", work.channel_id, error.status_code)
        with contextlib.suppress(StoreError):
            await self._store.channel_stopped(work.channel_id)

    async def _google(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)
