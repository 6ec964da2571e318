"""The daemon's way to the database: the only module that names SQL functions, over one of two paths.

Both paths call the same functions with the same named arguments and get the same JSON back
(the shape PostgREST gives), so every rule lives in SQL once and the Python above this module
does not care which path is in use. What they return is validated here into the reply models of
`daemon.domain` (`Model.model_validate(row)`):

- `SupabaseStore`: Supabase's REST gateway with the service-role key (the default).
- `PostgresStore`: a direct PostgreSQL connection pool (self-hosting, high volume).
"""

from __future__ import annotations

import datetime as dt
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from daemon.domain.calendar_connections import ConnectionOverview, ConnectionTokens
from daemon.domain.calendar_mirror import MirrorFreshness, MirrorSummary, MirrorTarget
from daemon.domain.clinic_links import ClinicLink, ConnectReadiness, IssuedLink, LinkTarget, StatusPage
from daemon.domain.clinics import ClinicKey, ClinicProfile
from daemon.domain.google_budget import BudgetGrant, BudgetLimits, BudgetReturn, BudgetSnapshot
from daemon.domain.operations import ReadinessFacts
from daemon.domain.practitioners import Practitioner, PractitionerBooking, PractitionerChanges
from daemon.domain.push_channels import ChannelWork
from daemon.domain.sync_queue import BacklogSnapshot, Claim, Completion, LeaseResult, SyncStatus
from daemon.domain.vapi_setup import IssuedVapiKey, VapiSetup


def _budget_params(budget: BudgetLimits, returns: Sequence[BudgetReturn]) -> dict[str, Any]:
    return {
        "p_account_limit": budget.per_account,
        "p_project_limit": budget.per_project,
        "p_hold_seconds": budget.hold_seconds,
        "p_returns": Json([r.to_json() for r in returns]) if returns else None,
    }


class StoreError(Exception):
    """The database could not be reached or refused a call; the caller may try again later."""

    @property
    def sqlstate(self) -> str | None:
        """The SQLSTATE the database answered with (either path); None when it was not reached or
        answered that it cannot serve (connection exceptions, shutting down)."""
        cause = self.__cause__
        code = getattr(cause, "sqlstate", None) or getattr(cause, "code", None)
        if not isinstance(code, str) or len(code) != 5 or code.startswith(("08", "57P")):
            return None
        return code


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
    """Every SQL function the daemon and the operator commands use, as typed methods over the two
    primitives a path provides (`call`, `call_rows`). Holds no state of its own beyond its connection."""

    @abstractmethod
    async def call(self, function: str, params: Mapping[str, Any]) -> Any:
        """Call a scalar-returning function; its result as JSON."""

    @abstractmethod
    async def call_rows(self, function: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Call a set-returning function; its rows as JSON objects."""

    @abstractmethod
    async def close(self) -> None: ...

    # --- the sync queue -----------------------------------------------------------------------------

    async def claim(
        self,
        owner: str,
        limit: int,
        lease_seconds: int,
        per_clinic: int,
        budget: BudgetLimits | None = None,
        returns: Sequence[BudgetReturn] = (),
    ) -> list[Claim]:
        """Lease due appointments fairly across clinics; with `budget`, only as many as the Google budget
        allows, each reserving its first request (and `returns` gives back requests that were not sent)."""
        params: dict[str, Any] = {
            "p_owner": owner,
            "p_limit": limit,
            "p_lease_seconds": lease_seconds,
            "p_per_clinic": per_clinic,
        }
        if budget is not None:
            params |= _budget_params(budget, returns)
        rows = await self.call_rows("claim_appointments", params)
        return [Claim.model_validate(row) for row in rows]

    async def complete_syncs(self, completions: Sequence[Completion]) -> dict[uuid.UUID, LeaseResult]:
        """Record several confirmed pushes in one call; each one's outcome by appointment id."""
        rows = await self.call_rows(
            "complete_appointment_syncs", {"p_completions": Json([c.to_json() for c in completions])}
        )
        return {uuid.UUID(str(row["appointment_id"])): row["state"] for row in rows}

    async def complete_sync(self, completion: Completion) -> LeaseResult:
        return (await self.complete_syncs([completion]))[completion.appointment_id]

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

    async def next_event_generation(self, appointment_id: uuid.UUID, owner: str) -> int | None:
        """Make the appointment's next event id current (Google refused to restore its deleted event);
        None when the lease was lost."""
        generation = await self.call("next_event_generation", {"p_appointment_id": appointment_id, "p_owner": owner})
        return None if generation is None else int(generation)

    async def resync(self, appointment_id: uuid.UUID) -> str:
        return str(await self.call("resync_appointment", {"p_appointment_id": appointment_id}))

    async def release(self, owner: str) -> int:
        return int(await self.call("release_appointment_leases", {"p_owner": owner}))

    async def retry_failed(self, clinic_id: uuid.UUID | None = None, appointment_id: uuid.UUID | None = None) -> int:
        return int(
            await self.call("retry_failed_appointments", {"p_clinic_id": clinic_id, "p_appointment_id": appointment_id})
        )

    async def backlog(self) -> BacklogSnapshot:
        return BacklogSnapshot.model_validate(await self.call("sync_backlog", {}))

    async def sync_status(self, clinic_id: uuid.UUID, reference: str) -> SyncStatus | None:
        """Where the clinic's booking with this reference stands; None when there is none."""
        row = await self.call("appointment_sync_status", {"p_clinic_id": clinic_id, "p_reference": reference})
        return None if row is None else SyncStatus.model_validate(row)

    async def delete_cancelled_appointment(self, appointment_id: uuid.UUID) -> None:
        await self.call("delete_cancelled_appointment", {"p_appointment_id": appointment_id})

    # --- the Google budget ------------------------------------------------------------------------------

    async def reserve_google_requests(
        self, clinic_id: uuid.UUID, requests: int, budget: BudgetLimits, returns: Sequence[BudgetReturn] = ()
    ) -> BudgetGrant:
        rows = await self.call_rows(
            "reserve_google_requests",
            {"p_clinic_id": clinic_id, "p_requests": requests, **_budget_params(budget, returns)},
        )
        return BudgetGrant.model_validate(rows[0])

    async def throttle_google_requests(
        self, clinic_id: uuid.UUID, seconds: float, max_seconds: float, reason: str
    ) -> None:
        await self.call(
            "throttle_google_requests",
            {"p_clinic_id": clinic_id, "p_seconds": seconds, "p_max_seconds": max_seconds, "p_reason": reason},
        )

    async def google_budget_snapshot(self, budget: BudgetLimits, top: int = 5) -> BudgetSnapshot:
        snapshot = await self.call(
            "google_budget_snapshot",
            {"p_account_limit": budget.per_account, "p_project_limit": budget.per_project, "p_top": top},
        )
        return BudgetSnapshot.model_validate(snapshot)

    # --- Google connections and tokens ---------------------------------------------------------------

    async def connection_tokens(self, clinic_id: uuid.UUID) -> ConnectionTokens | None:
        rows = await self.call_rows("calendar_connection_tokens", {"p_clinic_id": clinic_id})
        return ConnectionTokens.model_validate(rows[0]) if rows else None

    async def connections_to_refresh(self, within_seconds: int) -> list[uuid.UUID]:
        rows = await self.call_rows("calendar_connections_to_refresh", {"p_within_seconds": within_seconds})
        return [uuid.UUID(str(row["clinic_id"])) for row in rows]

    async def connections_overview(self) -> list[ConnectionOverview]:
        rows = await self.call_rows("calendar_connections_overview", {})
        return [ConnectionOverview.model_validate(row) for row in rows]

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

    # --- the busy mirror ------------------------------------------------------------------------------

    async def claim_mirror_targets(
        self,
        owner: str,
        lease_seconds: int,
        interval_seconds: float,
        limit: int = 100,
        clinic_id: uuid.UUID | None = None,
        calendar_id: str | None = None,
        only_due: bool = False,
    ) -> list[MirrorTarget]:
        """Lease the calendars due for a listing to this replica; or `clinic_id`'s (each, or `calendar_id`),
        due or not; or with `only_due`, those of `clinic_id`'s that are due (notified)."""
        rows = await self.call_rows(
            "claim_mirror_targets",
            {
                "p_owner": owner,
                "p_lease_seconds": lease_seconds,
                "p_interval_seconds": interval_seconds,
                "p_limit": limit,
                "p_clinic_id": clinic_id,
                "p_calendar_id": calendar_id,
                "p_only_due": only_due,
            },
        )
        return [MirrorTarget.model_validate(row) for row in rows]

    async def apply_calendar_changes(
        self,
        clinic_id: uuid.UUID,
        events: Sequence[Mapping[str, Any]],
        sync_token: str | None,
        full: bool,
        owner: str | None = None,
        calendar_id: str | None = None,
    ) -> MirrorSummary:
        """Record a listing of one of the clinic's calendars (None: the clinic's own)."""
        summary = await self.call(
            "apply_calendar_changes",
            {
                "p_clinic_id": clinic_id,
                "p_events": Json(list(events)),
                "p_sync_token": sync_token,
                "p_full": full,
                "p_owner": owner,
                "p_calendar_id": calendar_id,
            },
        )
        return MirrorSummary.model_validate(summary)

    async def record_mirror_failure(
        self, clinic_id: uuid.UUID, error: str, owner: str | None = None, calendar_id: str | None = None
    ) -> None:
        await self.call(
            "record_mirror_failure",
            {"p_clinic_id": clinic_id, "p_error": error, "p_owner": owner, "p_calendar_id": calendar_id},
        )

    # --- push notifications ---------------------------------------------------------------------------

    async def channel_work(
        self, owner: str, renew_within_seconds: int, confirm_within_seconds: int, lease_seconds: int
    ) -> list[ChannelWork]:
        rows = await self.call_rows(
            "calendar_channel_work",
            {
                "p_owner": owner,
                "p_renew_within_seconds": renew_within_seconds,
                "p_confirm_within_seconds": confirm_within_seconds,
                "p_lease_seconds": lease_seconds,
            },
        )
        return [ChannelWork.model_validate(row) for row in rows]

    async def begin_channel(self, clinic_id: uuid.UUID, channel_id: str, token_hash: str, calendar_id: str) -> None:
        await self.call(
            "begin_calendar_channel",
            {
                "p_clinic_id": clinic_id,
                "p_channel_id": channel_id,
                "p_token_hash": token_hash,
                "p_calendar_id": calendar_id,
            },
        )

    async def record_channel(self, channel_id: str, resource_id: str, expires_at: dt.datetime, owner: str) -> None:
        await self.call(
            "record_calendar_channel",
            {"p_channel_id": channel_id, "p_resource_id": resource_id, "p_expires_at": expires_at, "p_owner": owner},
        )

    async def abandon_channel(self, channel_id: str) -> None:
        await self.call("abandon_calendar_channel", {"p_channel_id": channel_id})

    async def channel_stopped(self, channel_id: str) -> None:
        await self.call("calendar_channel_stopped", {"p_channel_id": channel_id})

    async def record_notification(
        self, channel_id: str, resource_id: str, token: str, state: str, message_number: int
    ) -> uuid.UUID | None:
        """The clinic whose calendar a genuine notification is about; None when it was refused."""
        clinic_id = await self.call(
            "record_calendar_notification",
            {
                "p_channel_id": channel_id,
                "p_resource_id": resource_id,
                "p_token": token,
                "p_state": state,
                "p_message_number": message_number,
            },
        )
        return None if clinic_id is None else uuid.UUID(str(clinic_id))

    async def mirror_freshness(self) -> list[MirrorFreshness]:
        return [MirrorFreshness.model_validate(row) for row in await self.call_rows("calendar_mirror_freshness", {})]

    # --- clinics, keys and readiness (operator commands) ----------------------------------------------

    async def create_clinic(
        self,
        name: str,
        time_zone: str,
        calendar_id: str,
        opening_hours: Sequence[Mapping[str, Any]],
        services: Sequence[Mapping[str, Any]],
        phone_country_code: str,
    ) -> uuid.UUID:
        """The new clinic's id; the database refuses bad zones, overlapping hours, two defaults, ..."""
        clinic_id = await self.call(
            "create_clinic",
            {
                "p_name": name,
                "p_time_zone": time_zone,
                "p_calendar_id": calendar_id,
                "p_opening_hours": Json(list(opening_hours)),
                "p_services": Json(list(services)),
                "p_phone_country_code": phone_country_code,
            },
        )
        return uuid.UUID(str(clinic_id))

    async def clinic_profile(self, clinic_id: uuid.UUID) -> ClinicProfile:
        return ClinicProfile.model_validate(await self.call("clinic_profile", {"p_clinic_id": clinic_id}))

    async def issue_key(self, clinic_id: uuid.UUID, label: str) -> str:
        """A new key for the clinic, returned this once: only its hash is stored."""
        return str(await self.call("issue_clinic_key", {"p_clinic_id": clinic_id, "p_label": label}))

    async def rotate_key(self, clinic_id: uuid.UUID, label: str, grace_minutes: int) -> str:
        return str(
            await self.call(
                "rotate_clinic_key",
                {"p_clinic_id": clinic_id, "p_label": label, "p_grace": f"{grace_minutes} minutes"},
            )
        )

    async def revoke_key(self, key_id: uuid.UUID) -> None:
        await self.call("revoke_clinic_key", {"p_key_id": key_id})

    async def clinic_keys(self, clinic_id: uuid.UUID) -> list[ClinicKey]:
        rows = await self.call_rows("clinic_keys", {"p_clinic_id": clinic_id})
        return [ClinicKey.model_validate(row) for row in rows]

    async def readiness_facts(self) -> ReadinessFacts:
        return ReadinessFacts.model_validate(await self.call("readiness_facts", {}))

    async def purge_vapi_tool_calls(self, older_than_days: int, limit: int) -> int:
        """Forget up to `limit` Vapi tool-call answers (they carry patient details) older than the days given;
        how many went. The database refuses less than a day: Vapi may still retry a younger call."""
        return int(
            await self.call("purge_vapi_tool_calls", {"p_older_than": f"{older_than_days} days", "p_limit": limit})
        )

    # --- practitioners (operator commands) ------------------------------------------------------------------

    async def add_practitioner(
        self,
        clinic_id: uuid.UUID,
        name: str,
        services: Sequence[str] | None = None,
        opening_hours: Sequence[Mapping[str, Any]] | None = None,
        calendar_id: str | None = None,
    ) -> uuid.UUID:
        """The new practitioner's id. None: every service, the clinic's hours, the clinic's calendar. The database
        refuses a service the clinic does not have, a name the clinic already has, bad hours, ..."""
        practitioner_id = await self.call(
            "add_practitioner",
            {
                "p_clinic_id": clinic_id,
                "p_name": name,
                "p_services": None if services is None else Json(list(services)),
                "p_opening_hours": None if opening_hours is None else Json(list(opening_hours)),
                "p_calendar_id": calendar_id,
            },
        )
        return uuid.UUID(str(practitioner_id))

    async def change_practitioner(self, practitioner_id: uuid.UUID, changes: PractitionerChanges) -> None:
        await self.call(
            "change_practitioner", {"p_practitioner_id": practitioner_id, "p_changes": Json(changes.to_json())}
        )

    async def deactivate_practitioner(
        self, practitioner_id: uuid.UUID, reassign: bool = False
    ) -> list[PractitionerBooking]:
        """Stop the practitioner taking bookings; each booking of theirs ahead and whether it was kept with them
        or (with `reassign`) moved to a colleague free at that time."""
        rows = await self.call_rows(
            "deactivate_practitioner", {"p_practitioner_id": practitioner_id, "p_reassign": reassign}
        )
        return [PractitionerBooking.model_validate(row) for row in rows]

    async def clinic_practitioners(self, clinic_id: uuid.UUID) -> list[Practitioner]:
        """Every practitioner of the clinic, active ones first."""
        rows = await self.call_rows("clinic_practitioners", {"p_clinic_id": clinic_id})
        return [Practitioner.model_validate(row) for row in rows]

    # --- clinic links: the clinic-facing pages ------------------------------------------------------------

    async def issue_link(self, clinic_id: uuid.UUID, purpose: str, valid_for_seconds: int) -> IssuedLink:
        """A new connect or status link; its secret is returned this once (only its hash is stored)."""
        rows = await self.call_rows(
            "issue_clinic_link",
            {"p_clinic_id": clinic_id, "p_purpose": purpose, "p_valid_for": f"{valid_for_seconds} seconds"},
        )
        return IssuedLink.model_validate(rows[0])

    async def clinic_links(self, clinic_id: uuid.UUID) -> list[ClinicLink]:
        rows = await self.call_rows("clinic_links", {"p_clinic_id": clinic_id})
        return [ClinicLink.model_validate(row) for row in rows]

    async def revoke_link(self, link_id: uuid.UUID) -> None:
        await self.call("revoke_clinic_link", {"p_link_id": link_id})

    async def open_link(self, secret: str, purpose: str) -> LinkTarget:
        link = await self.call("open_clinic_link", {"p_secret": secret, "p_purpose": purpose})
        return LinkTarget.model_validate(link)

    async def begin_consent(self, secret: str, state: str, verifier_encrypted: str) -> str:
        """Records a consent's state (hashed) and PKCE verifier on an open connect link; the link's state word."""
        return str(
            await self.call(
                "begin_connect_consent",
                {"p_secret": secret, "p_state": state, "p_verifier_encrypted": verifier_encrypted},
            )
        )

    async def consent_link(self, state: str) -> LinkTarget:
        """The connect link a consent's state belongs to."""
        return LinkTarget.model_validate(await self.call("connect_consent", {"p_state": state}))

    async def complete_consent(
        self,
        state: str,
        google_account: str,
        refresh_token_encrypted: str,
        scopes: list[str],
        access_token_encrypted: str | None = None,
        access_token_expires_at: dt.datetime | None = None,
        refresh_token_expires_at: dt.datetime | None = None,
    ) -> str:
        """Stores the connection and spends the link together; the link's state word as it was ('open': stored)."""
        return str(
            await self.call(
                "complete_connect_consent",
                {
                    "p_state": state,
                    "p_google_account": google_account,
                    "p_refresh_token_encrypted": refresh_token_encrypted,
                    "p_scopes": scopes,
                    "p_access_token_encrypted": access_token_encrypted,
                    "p_access_token_expires_at": access_token_expires_at,
                    "p_refresh_token_expires_at": refresh_token_expires_at,
                },
            )
        )

    async def status_page(self, secret: str) -> StatusPage:
        return StatusPage.model_validate(await self.call("clinic_status_page", {"p_secret": secret}))

    async def reconnect_link(self, status_secret: str) -> IssuedLink | None:
        """A fresh connect link for an open status link's clinic; None for any other link."""
        rows = await self.call_rows("reconnect_link", {"p_status_secret": status_secret})
        return IssuedLink.model_validate(rows[0]) if rows else None

    async def connect_readiness(self) -> ConnectReadiness:
        return ConnectReadiness.model_validate(await self.call("connect_readiness", {}))

    # --- Vapi set up by the product (55_vapi_setup) ----------------------------------------------------------

    async def vapi_setup(self, clinic_id: uuid.UUID) -> VapiSetup | None:
        """The clinic's Vapi setup; None when `vapi-sync` never ran for it."""
        setup = await self.call("vapi_setup", {"p_clinic_id": clinic_id})
        return None if setup is None else VapiSetup.model_validate(setup)

    async def vapi_setups_overview(self) -> list[VapiSetup]:
        return [VapiSetup.model_validate(row) for row in await self.call("vapi_setups_overview", {}) or []]

    async def claim_vapi_setup(
        self, clinic_id: uuid.UUID, owner: str, lease_seconds: int, assistant_id: str | None = None
    ) -> VapiSetup:
        """Lease the clinic's setup for one run (made on its first sync); refused while another run holds it."""
        setup = await self.call(
            "claim_vapi_setup",
            {
                "p_clinic_id": clinic_id,
                "p_owner": owner,
                "p_lease_seconds": lease_seconds,
                "p_assistant_id": assistant_id,
            },
        )
        return VapiSetup.model_validate(setup)

    async def claim_stale_vapi_setups(self, owner: str, limit: int, lease_seconds: int) -> list[VapiSetup]:
        """Stale setups due for another sync, leased to `owner`."""
        rows = await self.call(
            "claim_stale_vapi_setups", {"p_owner": owner, "p_limit": limit, "p_lease_seconds": lease_seconds}
        )
        return [VapiSetup.model_validate(row) for row in rows or []]

    async def issue_vapi_credential_key(self, clinic_id: uuid.UUID, owner: str) -> IssuedVapiKey:
        rows = await self.call_rows("issue_vapi_credential_key", {"p_clinic_id": clinic_id, "p_owner": owner})
        return IssuedVapiKey.model_validate(rows[0])

    async def save_vapi_credential(
        self,
        clinic_id: uuid.UUID,
        owner: str,
        credential_id: str,
        key_id: uuid.UUID,
        revoke_others_after_minutes: int | None = None,
    ) -> None:
        """Vapi's credential now holds `key_id`; the key it held before stops working (with a grace period:
        every other key of the clinic, after it)."""
        await self.call(
            "save_vapi_credential",
            {
                "p_clinic_id": clinic_id,
                "p_owner": owner,
                "p_credential_id": credential_id,
                "p_key_id": key_id,
                "p_revoke_others_after": None
                if revoke_others_after_minutes is None
                else f"{revoke_others_after_minutes} minutes",
            },
        )

    async def record_vapi_tool(self, clinic_id: uuid.UUID, owner: str, tool_name: str, tool_id: str) -> None:
        await self.call(
            "record_vapi_tool",
            {"p_clinic_id": clinic_id, "p_owner": owner, "p_tool_name": tool_name, "p_tool_id": tool_id},
        )

    async def vapi_setup_synced(self, clinic_id: uuid.UUID, owner: str, revision: int) -> bool:
        """Vapi matches `revision`; True when that is the clinic's current one (in step). Ends the lease."""
        return bool(
            await self.call("vapi_setup_synced", {"p_clinic_id": clinic_id, "p_owner": owner, "p_revision": revision})
        )

    async def vapi_setup_failed(
        self, clinic_id: uuid.UUID, owner: str, error: str, retry_after_seconds: int | None = None
    ) -> dt.datetime:
        """Record a failed sync (the setup stays stale); when the next try is due. Ends the lease."""
        due = await self.call(
            "vapi_setup_failed",
            {
                "p_clinic_id": clinic_id,
                "p_owner": owner,
                "p_error": error,
                "p_retry_after_seconds": retry_after_seconds,
            },
        )
        return dt.datetime.fromisoformat(str(due))


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
    """Supabase's REST gateway (PostgREST `rpc`), as the service role: with a secret key (`sb_secret_...`) or
    the legacy `service_role` JWT key.

    postgrest-py directly, not supabase-py's client: that one sends its key as `Authorization: Bearer` too,
    which Supabase documents as unsupported for the new keys (hosted projects let it pass when it equals
    `apikey`; the CLI's gateway hands it to PostgREST, which refuses a non-JWT). A new key goes in `apikey`
    only, and the gateway puts a JWT for its role in its place; a legacy key is a JWT and goes in both."""

    def __init__(self, url: str, service_role_key: str) -> None:
        self._url = url
        self._key = service_role_key
        self._client: Any = None

    async def open(self) -> None:
        from postgrest import AsyncPostgrestClient

        headers = {"apikey": self._key}
        if not self._key.startswith("sb_"):
            headers["Authorization"] = f"Bearer {self._key}"
        self._client = AsyncPostgrestClient(self._url.rstrip("/") + "/rest/v1", headers=headers)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
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
