"""The daemon's way to the database: the SQL functions of the sync queue, over one of two paths.

Both paths call the same functions with the same named arguments and get the same JSON back
(the shape PostgREST gives), so every rule lives in SQL once and the Python above this module
does not care which path is in use:

- `SupabaseStore`: Supabase's REST gateway with the service-role key (the default).
- `PostgresStore`: a direct PostgreSQL connection pool (self-hosting, high volume).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from loguru import logger
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

LeaseResult = Literal["synced", "pending", "failed", "parked", "lease_lost"]
COMPLETION_BATCH = 200  # at most this many completions per call
COMPLETION_ATTEMPTS = 3  # tries of one batch that deadlocked before its callers hear the error
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure


class StoreError(Exception):
    """The database could not be reached or refused a call; the caller may try again later."""


@dataclass(frozen=True)
class Claim:
    """One appointment leased to this daemon, with what a calendar push needs."""

    appointment_id: uuid.UUID
    clinic_id: uuid.UUID
    revision: int
    status: str
    reference: str
    patient: Mapping[str, Any] = field(repr=False)  # patient details never reach logs
    service: str
    notes: str | None = field(repr=False)
    starts_at: dt.datetime
    ends_at: dt.datetime
    calendar_event_id: str | None
    sync_attempts: int
    created_at: dt.datetime
    time_zone: str
    calendar_id: str
    changed_at: dt.datetime | None = None  # when this revision was made (booking-to-calendar latency)

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Claim:
        return cls(
            appointment_id=uuid.UUID(str(row["appointment_id"])),
            clinic_id=uuid.UUID(str(row["clinic_id"])),
            revision=int(row["revision"]),
            status=str(row["status"]),
            reference=str(row["reference"]),
            patient=dict(row["patient"]),
            service=str(row["service"]),
            notes=row["notes"],
            starts_at=_timestamp(row["starts_at"]),
            ends_at=_timestamp(row["ends_at"]),
            calendar_event_id=row["calendar_event_id"],
            sync_attempts=int(row["sync_attempts"]),
            created_at=_timestamp(row["created_at"]),
            time_zone=str(row["time_zone"]),
            calendar_id=str(row["calendar_id"]),
            changed_at=_timestamp(row["changed_at"]) if row.get("changed_at") else None,
        )


@dataclass(frozen=True)
class ConnectionTokens:
    clinic_id: uuid.UUID
    status: str
    refresh_token_encrypted: str
    access_token_encrypted: str | None
    access_token_expires_at: dt.datetime | None


def _sqlstate(error: StoreError) -> str | None:
    """The SQLSTATE the database answered with (either path); None when it was not reached or answered
    that it cannot serve (connection exceptions, shutting down)."""
    cause = error.__cause__
    code = getattr(cause, "sqlstate", None) or getattr(cause, "code", None)
    if not isinstance(code, str) or len(code) != 5 or code.startswith(("08", "57P")):
        return None
    return code


def _timestamp(value: str) -> dt.datetime:
    # PostgreSQL's JSON writes "2026-12-01T10:00:00+00:00"; Python 3.11 parses it as is.
    return dt.datetime.fromisoformat(value)


@dataclass(frozen=True)
class Json:
    """A jsonb argument. Dicts are sent as jsonb anyway; a list needs this, as a plain list is a
    PostgreSQL array (text[] scopes) on the direct path."""

    value: Any


def _postgres_value(value: Any) -> Any:
    if isinstance(value, Json):
        return Jsonb(value.value)
    return Jsonb(value) if isinstance(value, dict) else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Json):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


class Store(ABC):
    """The sync queue and connection operations, over `call` / `call_rows`."""

    @abstractmethod
    async def call(self, function: str, params: Mapping[str, Any]) -> Any:
        """Call a scalar-returning function; its result as JSON."""

    @abstractmethod
    async def call_rows(self, function: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Call a set-returning function; its rows as JSON objects."""

    @abstractmethod
    async def close(self) -> None: ...

    async def claim(self, owner: str, limit: int, lease_seconds: int, per_clinic: int) -> list[Claim]:
        rows = await self.call_rows(
            "claim_appointments",
            {"p_owner": owner, "p_limit": limit, "p_lease_seconds": lease_seconds, "p_per_clinic": per_clinic},
        )
        return [Claim.from_json(row) for row in rows]

    # Completions waiting for the next `complete_appointment_syncs` call, and the task making those calls.
    _completions: list[tuple[dict[str, Any], asyncio.Future[LeaseResult]]] | None = None
    _completion_writer: asyncio.Task[None] | None = None

    async def complete(self, claim: Claim, owner: str, event_id: str, event_link: str | None) -> LeaseResult:
        """Google confirmed the claimed revision. One call when idle; completions arriving while a call is
        under way go together in the next one (one round trip for many under load, no added wait)."""
        future: asyncio.Future[LeaseResult] = asyncio.get_running_loop().create_future()
        item = {
            "appointment_id": str(claim.appointment_id),
            "owner": owner,
            "revision": claim.revision,
            "event_id": event_id,
            "event_link": event_link,
        }
        if self._completions is None:
            self._completions = []
        self._completions.append((item, future))
        if self._completion_writer is None or self._completion_writer.done():
            self._completion_writer = asyncio.create_task(self._write_completions(self._completions))
        return await future

    async def _write_completions(self, waiting: list[tuple[dict[str, Any], asyncio.Future[LeaseResult]]]) -> None:
        while waiting:
            batch = waiting[:COMPLETION_BATCH]
            del waiting[:COMPLETION_BATCH]
            try:
                outcomes = await self._complete_batch([item for item, _ in batch])
            except Exception as error:  # the callers hear a StoreError; each lease expires and the push repeats
                failed = batch
                if not isinstance(error, StoreError) or _sqlstate(error) is None:
                    # Unreachable: those queued behind this batch would only wait as long again.
                    failed = batch + waiting
                    waiting.clear()
                outcomes = {item["appointment_id"]: StoreError(str(error)) for item, _ in failed}
                batch = failed
            for item, future in batch:
                outcome = outcomes.get(item["appointment_id"], "lease_lost")
                if future.done():
                    continue
                if isinstance(outcome, StoreError):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _complete_batch(self, items: list[dict[str, Any]]) -> dict[str, LeaseResult | StoreError]:
        """Each item's outcome by appointment id. A batch holds several row locks, so it can deadlock with
        another writer of several rows (the busy mirror) where a single completion could not: it is tried
        again (a failed call changed nothing). Refused for another reason, the items are completed one by
        one, so one bad item cannot hold back the others."""
        for attempt in range(COMPLETION_ATTEMPTS):
            try:
                rows = await self.call_rows("complete_appointment_syncs", {"p_completions": Json(items)})
                return {str(row["appointment_id"]): row["state"] for row in rows}
            except StoreError as error:
                sqlstate = _sqlstate(error)
                if sqlstate in TRANSIENT_SQLSTATES and attempt + 1 < COMPLETION_ATTEMPTS:
                    logger.info("recording {} synced appointment(s): {}; trying again", len(items), error)
                    await asyncio.sleep(0.05 * 4**attempt)
                    continue
                if sqlstate is None or len(items) == 1:
                    raise
                logger.warning("recording {} synced appointments together failed ({}); one by one", len(items), error)
                break
        outcomes: dict[str, LeaseResult | StoreError] = {}
        for item in items:
            try:
                outcomes[item["appointment_id"]] = await self.call(
                    "complete_appointment_sync",
                    {
                        "p_appointment_id": item["appointment_id"],
                        "p_owner": item["owner"],
                        "p_revision": item["revision"],
                        "p_event_id": item["event_id"],
                        "p_event_link": item["event_link"],
                    },
                )
            except StoreError as error:
                outcomes[item["appointment_id"]] = error
        return outcomes

    async def end_attempt(
        self,
        claim: Claim,
        owner: str,
        state: Literal["pending", "failed", "parked"],
        error: str,
        delay_seconds: float = 0.0,
    ) -> LeaseResult:
        """The push did not sync: `pending` again after a delay, `failed`, or `parked`."""
        result: LeaseResult = await self.call(
            "end_appointment_attempt",
            {
                "p_appointment_id": claim.appointment_id,
                "p_owner": owner,
                "p_state": state,
                "p_error": error,
                "p_delay_seconds": delay_seconds,
            },
        )
        return result

    async def resync(self, appointment_id: uuid.UUID) -> str:
        return str(await self.call("resync_appointment", {"p_appointment_id": appointment_id}))

    async def release(self, owner: str) -> int:
        return int(await self.call("release_appointment_leases", {"p_owner": owner}))

    async def retry_failed(self, clinic_id: uuid.UUID | None = None, appointment_id: uuid.UUID | None = None) -> int:
        return int(
            await self.call("retry_failed_appointments", {"p_clinic_id": clinic_id, "p_appointment_id": appointment_id})
        )

    async def connection_tokens(self, clinic_id: uuid.UUID) -> ConnectionTokens | None:
        rows = await self.call_rows("calendar_connection_tokens", {"p_clinic_id": clinic_id})
        if not rows:
            return None
        row = rows[0]
        expires = row["access_token_expires_at"]
        return ConnectionTokens(
            clinic_id=uuid.UUID(str(row["clinic_id"])),
            status=str(row["status"]),
            refresh_token_encrypted=str(row["refresh_token_encrypted"]),
            access_token_encrypted=row["access_token_encrypted"],
            access_token_expires_at=_timestamp(expires) if expires else None,
        )

    async def connections_to_refresh(self, within_seconds: int) -> list[uuid.UUID]:
        rows = await self.call_rows("calendar_connections_to_refresh", {"p_within_seconds": within_seconds})
        return [uuid.UUID(str(row["clinic_id"])) for row in rows]

    async def save_connection(
        self,
        clinic_id: uuid.UUID,
        google_account: str,
        refresh_token_encrypted: str,
        scopes: list[str],
        access_token_encrypted: str | None = None,
        access_token_expires_at: dt.datetime | None = None,
        refresh_token_expires_at: dt.datetime | None = None,
    ) -> None:
        await self.call(
            "save_calendar_connection",
            {
                "p_clinic_id": clinic_id,
                "p_google_account": google_account,
                "p_refresh_token_encrypted": refresh_token_encrypted,
                "p_scopes": scopes,
                "p_access_token_encrypted": access_token_encrypted,
                "p_access_token_expires_at": access_token_expires_at,
                "p_refresh_token_expires_at": refresh_token_expires_at,
            },
        )

    async def record_refresh(
        self,
        clinic_id: uuid.UUID,
        access_token_encrypted: str,
        expires_at: dt.datetime,
        refresh_token_encrypted: str | None,
    ) -> None:
        await self.call(
            "record_token_refresh",
            {
                "p_clinic_id": clinic_id,
                "p_access_token_encrypted": access_token_encrypted,
                "p_access_token_expires_at": expires_at,
                "p_refresh_token_encrypted": refresh_token_encrypted,
            },
        )

    async def record_token_failure(self, clinic_id: uuid.UUID, error: str, needs_reauth: bool) -> None:
        await self.call(
            "record_token_failure", {"p_clinic_id": clinic_id, "p_error": error, "p_needs_reauth": needs_reauth}
        )


class PostgresStore(Store):
    """Direct PostgreSQL, through a small async connection pool."""

    def __init__(self, dsn: str, *, max_connections: int = 8, wait_seconds: float = 5.0) -> None:
        # `wait_seconds`: how long a call waits for a pooled connection. The pool's default (30 s) held every
        # call that long while the database was down (the pool had dropped its dead connections and found no
        # new one), so the loop neither backed off nor reported itself not ready for half a minute.
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max_connections,
            open=False,
            kwargs={"autocommit": True},
            timeout=wait_seconds,
        )

    async def open(self, timeout: float = 30.0) -> None:
        try:
            await self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout as error:
            raise StoreError(f"database: no connection within {timeout:g}s") from error

    async def close(self) -> None:
        await self._pool.close()

    @staticmethod
    def _invocation(function: str, params: Mapping[str, Any]) -> tuple[sql.Composed, list[Any]]:
        arguments = sql.SQL(", ").join(sql.SQL("{} => %s").format(sql.Identifier(name)) for name in params)
        values = [_postgres_value(v) for v in params.values()]
        return sql.SQL("public.{}({})").format(sql.Identifier(function), arguments), values

    async def _fetch(self, query: sql.Composed, values: list[Any]) -> Any:
        try:
            async with self._pool.connection() as conn:
                row = await (await conn.execute(query, values)).fetchone()
        except psycopg.Error as error:
            raise StoreError(f"database: {error.diag.message_primary or error}") from error
        assert row is not None
        return row[0]

    async def call(self, function: str, params: Mapping[str, Any]) -> Any:
        invocation, values = self._invocation(function, params)
        return await self._fetch(sql.SQL("select to_json({})").format(invocation), values)

    async def call_rows(self, function: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        invocation, values = self._invocation(function, params)
        rows: list[dict[str, Any]] = await self._fetch(
            # `select *` makes each row a record even for a one-column result, as PostgREST answers.
            sql.SQL("select coalesce(json_agg(t), '[]'::json) from (select * from {}) as t").format(invocation),
            values,
        )
        return rows


class SupabaseStore(Store):
    """Supabase's REST gateway (PostgREST `rpc`), as the service role."""

    def __init__(self, url: str, service_role_key: str) -> None:
        self._url = url
        self._key = service_role_key
        self._client: Any = None

    async def open(self) -> None:
        from supabase import acreate_client

        self._client = await acreate_client(self._url, self._key)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.postgrest.aclose()
            self._client = None

    async def _rpc(self, function: str, params: Mapping[str, Any]) -> Any:
        from postgrest.exceptions import APIError

        if self._client is None:
            raise StoreError("the Supabase store is not open")
        try:
            response = await self._client.rpc(function, {k: _jsonable(v) for k, v in params.items()}).execute()
        except APIError as error:
            raise StoreError(f"supabase: {error.code}: {error.message}") from error
        except Exception as error:  # httpx transport errors and friends: the gateway is unreachable
            raise StoreError(f"supabase: {type(error).__name__}: {error}") from error
        return response.data

    async def call(self, function: str, params: Mapping[str, Any]) -> Any:
        return await self._rpc(function, params)

    async def call_rows(self, function: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        rows = await self._rpc(function, params)
        return list(rows or [])
