"""Each clinic's Google tokens: encrypted at rest, refreshed ahead of expiry, and a dead grant
turned into a visible `needs_reauth` (its appointments wait, parked) instead of silent failures."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import google.auth.exceptions
import google_auth_httplib2
import httplib2
from google.oauth2.credentials import Credentials
from loguru import logger

from daemon.crypto import TokenCipher
from daemon.domain.calendar_connections import ConnectionTokens
from daemon.metrics import Metrics
from daemon.store import Store, StoreError

CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar.events"
# A token this close to expiry is refreshed before use rather than sent.
USE_MARGIN = dt.timedelta(seconds=60)


class NeedsReauth(Exception):
    """The clinic's Google grant is dead; only the clinic reconnecting helps."""


class TokenUnavailable(Exception):
    """No access token right now (Google or the network failed); try again later."""


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    client_secret: str
    token_uri: str
    timeout: float = 30.0


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: dt.datetime

    def usable(self, now: dt.datetime) -> bool:
        return self.expires_at - USE_MARGIN > now


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TokenManager:
    """Hands out valid access tokens per clinic, refreshing (once at a time per clinic) when needed."""

    def __init__(
        self,
        store: Store,
        cipher: TokenCipher,
        oauth: OAuthClient,
        executor: Executor,
        clock: Callable[[], dt.datetime] = _now,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics or Metrics()
        self._cipher = cipher
        self._oauth = oauth
        self._executor = executor
        self._clock = clock
        self._cache: dict[uuid.UUID, AccessToken] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}

    async def access_token(self, clinic_id: uuid.UUID, *, stale: str | None = None) -> str:
        """A usable access token. `stale` is one Google just refused: never hand it out again."""
        cached = self._cache.get(clinic_id)
        if cached and cached.value != stale and cached.usable(self._clock()):
            return cached.value
        async with self._locks.setdefault(clinic_id, asyncio.Lock()):
            cached = self._cache.get(clinic_id)
            if cached and cached.value != stale and cached.usable(self._clock()):
                return cached.value
            tokens = await self._active_tokens(clinic_id)
            if tokens.access_token_encrypted and tokens.access_token_expires_at:
                stored = AccessToken(
                    self._cipher.decrypt(tokens.access_token_encrypted), tokens.access_token_expires_at
                )
                if stored.value != stale and stored.usable(self._clock()):
                    self._cache[clinic_id] = stored
                    return stored.value
            return (await self._refresh_locked(tokens)).value

    async def force_refresh(self, clinic_id: uuid.UUID) -> str:
        """Exchange the refresh token now, whatever the cached token's age: proves the grant is alive.
        Raises NeedsReauth or TokenUnavailable."""
        async with self._locks.setdefault(clinic_id, asyncio.Lock()):
            return (await self._refresh_locked(await self._active_tokens(clinic_id))).value

    async def refresh(self, clinic_id: uuid.UUID) -> None:
        """Refresh now (the scheduled job); NeedsReauth / TokenUnavailable are logged, not raised."""
        try:
            await self.force_refresh(clinic_id)
        except (NeedsReauth, TokenUnavailable, StoreError) as error:
            logger.warning("token refresh for clinic {} failed: {}", clinic_id, error)

    async def refresh_due(self, within_seconds: int) -> int:
        """Refresh every active connection whose token expires within `within_seconds`."""
        due = await self._store.connections_to_refresh(within_seconds)
        for clinic_id in due:
            await self.refresh(clinic_id)
        return len(due)

    async def _active_tokens(self, clinic_id: uuid.UUID) -> ConnectionTokens:
        tokens = await self._store.connection_tokens(clinic_id)
        if tokens is None or tokens.status != "active":
            self._cache.pop(clinic_id, None)
            raise NeedsReauth("the clinic has no active Google Calendar connection")
        return tokens

    async def _refresh_locked(self, tokens: ConnectionTokens) -> AccessToken:
        clinic_id = tokens.clinic_id
        refresh_token = self._cipher.decrypt(tokens.refresh_token_encrypted)
        loop = asyncio.get_running_loop()
        try:
            credentials = await loop.run_in_executor(self._executor, self._exchange, refresh_token)
        except google.auth.exceptions.RefreshError as error:
            if getattr(error, "retryable", False):
                self._metrics.token_refresh("error")
                await self._store.record_token_failure(clinic_id, _describe(error), needs_reauth=False)
                raise TokenUnavailable(_describe(error)) from error
            self._cache.pop(clinic_id, None)
            self._metrics.token_refresh("needs_reauth")
            await self._store.record_token_failure(clinic_id, _describe(error), needs_reauth=True)
            logger.warning("clinic {} must reconnect Google Calendar: {}", clinic_id, _describe(error))
            raise NeedsReauth(_describe(error)) from error
        except (google.auth.exceptions.TransportError, OSError, httplib2.HttpLib2Error) as error:
            self._metrics.token_refresh("error")
            await self._store.record_token_failure(clinic_id, _describe(error), needs_reauth=False)
            raise TokenUnavailable(_describe(error)) from error
        expiry = credentials.expiry.replace(tzinfo=dt.UTC) if credentials.expiry else self._clock()
        token = AccessToken(str(credentials.token), expiry)
        rotated = credentials.refresh_token if credentials.refresh_token != refresh_token else None
        await self._store.record_refresh(
            clinic_id,
            self._cipher.encrypt(token.value),
            token.expires_at,
            self._cipher.encrypt(rotated) if rotated else None,
        )
        self._cache[clinic_id] = token
        self._metrics.token_refresh("ok")
        logger.info("refreshed the Google access token of clinic {}", clinic_id)
        return token

    def _exchange(self, refresh_token: str) -> Credentials:
        credentials = Credentials(  # type: ignore[no-untyped-call]
            token=None,
            refresh_token=refresh_token,
            token_uri=self._oauth.token_uri,
            client_id=self._oauth.client_id,
            client_secret=self._oauth.client_secret,
            scopes=[CALENDAR_SCOPE],
        )
        http = httplib2.Http(timeout=self._oauth.timeout)
        try:
            credentials.refresh(google_auth_httplib2.Request(http))  # type: ignore[no-untyped-call]
        finally:
            http.close()
        return credentials


def _describe(error: Exception) -> str:
    # google-auth puts Google's JSON answer in args[1]; the message alone names the cause.
    return str(error.args[0] if error.args else error)[:300]
