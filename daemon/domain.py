"""The values every layer shares: what the database answers, parsed once, and the names of outcomes.

This module is the bottom of the package: it imports nothing of the daemon's. Each type is a frozen
dataclass with `from_json`, which reads the JSON either database path returns (PostgreSQL's
`json_agg` on the direct path, PostgREST's answer on the Supabase path: the same shape) and raises
ValueError naming the field when a row is not what the SQL function promises.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# What a leased appointment became when its holder reported back.
LeaseResult = Literal["synced", "pending", "failed", "parked", "lease_lost"]
# Why a push goes round again (a metric label, so a closed set).
RetryReason = Literal["rate_limited", "quota", "google_error", "network", "token", "budget", "internal"]

# What one applied calendar listing can change, as `apply_calendar_changes` counts it.
MIRROR_CHANGES = ("busy", "freed", "cancelled", "moved", "restored")

# Integers, decimals and exponents as PostgreSQL and PostgREST write them; float() alone would
# also take "nan", "inf", "1_000" and surrounding whitespace.
_NUMERAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _required(row: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in row:
        raise ValueError(f"{name}: missing from the {what}")
    return row[name]


def _timestamp(value: str) -> dt.datetime:
    # PostgreSQL's JSON writes "2026-12-01T10:00:00+00:00"; Python 3.11 parses it as is.
    return dt.datetime.fromisoformat(value)


def _optional_timestamp(value: str | None) -> dt.datetime | None:
    return _timestamp(value) if value else None


def _uuid(value: object) -> uuid.UUID:
    return uuid.UUID(str(value))


def _moving_from(claim_row: Mapping[str, Any]) -> str | None:
    """The calendar a claimed appointment's event must leave, or None when it is where it belongs."""
    holder = claim_row.get("event_calendar_id")
    return None if holder is None or holder == claim_row["calendar_id"] else str(holder)


def number(name: str, value: object) -> float:
    """A finite, non-negative number from a JSON value: int, float or a numeral string."""
    # bool is an int to Python, but true/false in a count means the query is wrong.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name}: expected a number, got {type(value).__name__}")
    if isinstance(value, str) and not _NUMERAL.fullmatch(value):
        raise ValueError(f"{name}: expected a numeral, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if result < 0:
        raise ValueError(f"{name}: must not be negative, got {value!r}")
    return result


def count(name: str, value: object) -> int:
    """A whole, non-negative number from a JSON value (see `number`)."""
    result = number(name, value)
    if not result.is_integer():
        raise ValueError(f"{name}: expected a whole number, got {value!r}")
    return int(result)


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
    budget_key: str | None = None  # whose Google budget its requests come out of
    budget_entry: int | None = None  # the reservation the claim made for its first request (None: no budget)
    event_generation: int = 0  # which of the appointment's event ids is current (a new one after a refused restore)
    # The calendar holding the appointment's event now, when that is not `calendar_id` (where it belongs: its
    # practitioner's): the event moves there. None: no event yet, or already in the right calendar.
    event_calendar_id: str | None = None
    practitioner_name: str | None = None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Claim:
        return cls(
            appointment_id=_uuid(row["appointment_id"]),
            clinic_id=_uuid(row["clinic_id"]),
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
            changed_at=_optional_timestamp(row.get("changed_at")),
            budget_key=row.get("budget_key"),
            budget_entry=None if row.get("budget_entry") is None else int(row["budget_entry"]),
            event_generation=int(row.get("event_generation") or 0),
            event_calendar_id=_moving_from(row),
            practitioner_name=row.get("practitioner_name"),
        )

    @property
    def moving(self) -> bool:
        """The event is in another calendar than its practitioner's: it moves."""
        return self.event_calendar_id is not None


@dataclass(frozen=True)
class BudgetLimits:
    """Google's quotas as this deployment spends them: requests a minute per Google account and for the
    whole Google project, on a sliding 60 s window, shared by every replica. A reserved request must be
    sent within `hold_seconds` of its reservation, or not at all."""

    per_account: int
    per_project: int
    hold_seconds: float = 2.0


class BudgetExhausted(Exception):
    """No Google request may be sent for this clinic now; its account (or the project) has budget again
    in about `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"Google request budget spent; more in {retry_after:.1f}s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class BudgetGrant:
    """What `reserve_google_requests` granted: maybe fewer than asked, or none (then when to ask again)."""

    granted: int
    entry: int | None
    retry_after_seconds: float

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> BudgetGrant:
        entry = row["entry"]
        return cls(
            granted=count("granted", row["granted"]),
            entry=None if entry is None else int(entry),
            retry_after_seconds=number("retry_after_seconds", row["retry_after_seconds"]),
        )


@dataclass(frozen=True)
class BudgetReturn:
    """Requests of a reservation that were not sent: budget again for every replica."""

    entry: int
    requests: int

    def to_json(self) -> dict[str, int]:
        return {"entry": self.entry, "requests": self.requests}


@dataclass(frozen=True)
class BudgetSnapshot:
    """`google_budget_snapshot()`: the shared Google budget's use of the current window."""

    project_used: int
    project_limit: int
    account_limit: int
    accounts: tuple[tuple[str, int], ...]  # the busiest budget keys, most used first
    throttled: int  # keys held back after a rate-limit answer from Google
    held_back_clinics: int  # clinics with due work and no budget
    next_budget_seconds: float | None  # when the first of them has budget again

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> BudgetSnapshot:
        following = row["next_budget_seconds"]
        return cls(
            project_used=count("project_used", row["project_used"]),
            project_limit=count("project_limit", row["project_limit"]),
            account_limit=count("account_limit", row["account_limit"]),
            accounts=tuple((str(a["key"]), count("used", a["used"])) for a in row["accounts"]),
            throttled=count("throttled", row["throttled"]),
            held_back_clinics=count("held_back_clinics", row["held_back_clinics"]),
            next_budget_seconds=None if following is None else number("next_budget_seconds", following),
        )


@dataclass(frozen=True)
class Completion:
    """Google confirmed a claimed revision: what `complete_appointment_syncs` records for one row."""

    appointment_id: uuid.UUID
    owner: str
    revision: int
    event_id: str
    event_link: str | None
    calendar_id: str | None = None  # the calendar the event was written to

    def to_json(self) -> dict[str, Any]:
        return {
            "appointment_id": str(self.appointment_id),
            "owner": self.owner,
            "revision": self.revision,
            "event_id": self.event_id,
            "event_link": self.event_link,
            "calendar_id": self.calendar_id,
        }


@dataclass(frozen=True)
class ConnectionTokens:
    """A clinic's stored Google tokens, still encrypted."""

    clinic_id: uuid.UUID
    status: str
    refresh_token_encrypted: str = field(repr=False)
    access_token_encrypted: str | None = field(repr=False)
    access_token_expires_at: dt.datetime | None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ConnectionTokens:
        return cls(
            clinic_id=_uuid(row["clinic_id"]),
            status=str(row["status"]),
            refresh_token_encrypted=str(row["refresh_token_encrypted"]),
            access_token_encrypted=row["access_token_encrypted"],
            access_token_expires_at=_optional_timestamp(row["access_token_expires_at"]),
        )


@dataclass(frozen=True)
class BacklogSnapshot:
    """The shared sync queue as one database query saw it."""

    by_state: Mapping[str, int]  # sync_state -> count; a state left out counts as 0
    oldest_pending_age_seconds: float  # the oldest unsynced change's wait; 0 when nothing waits
    clinics_needing_reauth: int

    def state(self, name: str) -> int:
        return self.by_state.get(name, 0)

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> BacklogSnapshot:
        """Parse `sync_backlog()`, e.g.
        `{"by_state": {"pending": 3}, "oldest_pending_age_seconds": 12.5, "clinics_needing_reauth": 1}`.

        Numbers may be JSON numbers or numeral strings (PostgREST sends bigint and numeric either
        way). Anything malformed raises ValueError naming the field: a wrong number on a dashboard
        is worse than a missing one. Extra top-level keys are ignored, so the function can grow
        a field before every replica reads it; extra states are kept but not exported.
        """
        what = "backlog snapshot"
        if not isinstance(row, Mapping):
            raise ValueError(f"{what}: expected an object, got {type(row).__name__}")
        by_state = _required(row, "by_state", what)
        if not isinstance(by_state, Mapping):
            raise ValueError(f"by_state: expected an object, got {type(by_state).__name__}")
        counts: dict[str, int] = {}
        for state, value in by_state.items():
            if not isinstance(state, str):
                raise ValueError(f"by_state: expected state names, got {type(state).__name__}")
            counts[state] = count(f"by_state.{state}", value)
        return cls(
            by_state=counts,
            oldest_pending_age_seconds=number(
                "oldest_pending_age_seconds", _required(row, "oldest_pending_age_seconds", what)
            ),
            clinics_needing_reauth=count("clinics_needing_reauth", _required(row, "clinics_needing_reauth", what)),
        )


@dataclass(frozen=True)
class ClinicService:
    name: str
    duration_minutes: int
    is_default: bool


@dataclass(frozen=True)
class OpeningPeriod:
    weekday: int  # ISO: 1 = Monday
    opens: str  # "HH:MM", clinic local time
    closes: str


@dataclass(frozen=True)
class ConnectionState:
    """What an operator may see of a clinic's Google connection (no token)."""

    status: str
    google_account: str | None
    last_error: str | None
    refresh_token_expires_at: dt.datetime | None


@dataclass(frozen=True)
class BookablePractitioner:
    """A practitioner the assistant can book, as `clinic_profile(id)` names them: every service they offer
    (spelt as the clinic spells them) and their own calendar (None: the clinic's)."""

    id: uuid.UUID
    name: str
    services: tuple[str, ...]
    calendar_id: str | None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> BookablePractitioner:
        return cls(
            id=_uuid(row["id"]),
            name=str(row["name"]),
            services=tuple(str(s) for s in row.get("services") or ()),
            calendar_id=row.get("calendar_id"),
        )


@dataclass(frozen=True)
class ClinicProfile:
    """`clinic_profile(id)`: a clinic's settings, services, hours and connection state."""

    id: uuid.UUID
    name: str
    time_zone: str
    calendar_id: str
    slot_minutes: int
    booking_horizon_days: int
    services: tuple[ClinicService, ...]
    opening_hours: tuple[OpeningPeriod, ...]
    connection: ConnectionState | None
    practitioners: tuple[BookablePractitioner, ...] = ()  # active ones only; none: the clinic is one diary

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ClinicProfile:
        connection = row.get("connection")
        return cls(
            id=_uuid(row["id"]),
            name=str(row["name"]),
            time_zone=str(row["time_zone"]),
            calendar_id=str(row["calendar_id"]),
            slot_minutes=int(row["slot_minutes"]),
            booking_horizon_days=int(row["booking_horizon_days"]),
            services=tuple(
                ClinicService(str(s["name"]), int(s["duration_minutes"]), bool(s["is_default"]))
                for s in row["services"]
            ),
            opening_hours=tuple(
                OpeningPeriod(int(h["weekday"]), str(h["opens"]), str(h["closes"])) for h in row["opening_hours"]
            ),
            connection=None
            if connection is None
            else ConnectionState(
                status=str(connection["status"]),
                google_account=connection.get("google_account"),
                last_error=connection.get("last_error"),
                refresh_token_expires_at=_optional_timestamp(connection.get("refresh_token_expires_at")),
            ),
            practitioners=tuple(BookablePractitioner.from_json(p) for p in row.get("practitioners") or ()),
        )


@dataclass(frozen=True)
class ClinicKey:
    """One of a clinic's keys as `clinic_keys(id)` lists it: never the key itself, only its prefix."""

    id: uuid.UUID
    key_prefix: str
    label: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ClinicKey:
        return cls(
            id=_uuid(row["id"]),
            key_prefix=str(row["key_prefix"]),
            label=str(row["label"] or ""),
            created_at=_timestamp(row["created_at"]),
            revoked_at=_optional_timestamp(row["revoked_at"]),
            last_used_at=_optional_timestamp(row["last_used_at"]),
        )


@dataclass(frozen=True)
class ConnectionOverview:
    """`calendar_connections_overview()`: one row per clinic, connected or not."""

    clinic_id: uuid.UUID
    clinic_name: str
    calendar_id: str
    time_zone: str
    status: str  # active, needs_reauth, ... or not_connected
    google_account: str | None
    last_refreshed_at: dt.datetime | None
    last_error: str | None
    refresh_token_expires_at: dt.datetime | None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ConnectionOverview:
        return cls(
            clinic_id=_uuid(row["clinic_id"]),
            clinic_name=str(row["clinic_name"]),
            calendar_id=str(row["calendar_id"]),
            time_zone=str(row["time_zone"]),
            status=str(row["status"]),
            google_account=row["google_account"],
            last_refreshed_at=_optional_timestamp(row["last_refreshed_at"]),
            last_error=row["last_error"],
            refresh_token_expires_at=_optional_timestamp(row["refresh_token_expires_at"]),
        )


@dataclass(frozen=True)
class MirrorTarget:
    """A connected calendar the busy mirror reads, with where its last listing ended."""

    clinic_id: uuid.UUID
    calendar_id: str
    time_zone: str
    sync_token: str | None = field(repr=False)
    last_synced_at: dt.datetime | None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> MirrorTarget:
        return cls(
            clinic_id=_uuid(row["clinic_id"]),
            calendar_id=str(row["calendar_id"]),
            time_zone=str(row["time_zone"]),
            sync_token=row["sync_token"],
            last_synced_at=_optional_timestamp(row["last_synced_at"]),
        )


@dataclass(frozen=True)
class ChannelWork:
    """`calendar_channel_work()`: a calendar that needs a push channel, or a retired channel to stop."""

    action: Literal["create", "stop"]
    clinic_id: uuid.UUID
    calendar_id: str
    channel_id: str | None
    resource_id: str | None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ChannelWork:
        action = row["action"]
        if action not in ("create", "stop"):
            raise ValueError(f"action: expected create or stop, got {action!r}")
        return cls(action, _uuid(row["clinic_id"]), str(row["calendar_id"]), row["channel_id"], row["resource_id"])


@dataclass(frozen=True)
class MirrorSummary:
    """What one applied listing changed (`apply_calendar_changes`)."""

    busy: int = 0
    freed: int = 0
    cancelled: int = 0
    moved: int = 0
    restored: int = 0
    again: bool = False  # Google notified a change while the calendar was listed: list it once more

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> MirrorSummary:
        return cls(**{name: count(name, row.get(name, 0)) for name in MIRROR_CHANGES}, again=bool(row.get("again")))


@dataclass(frozen=True)
class MirrorFreshness:
    """`calendar_mirror_freshness()`: how long ago a connected clinic's calendar was read back."""

    clinic_id: uuid.UUID
    clinic_name: str
    last_synced_at: dt.datetime | None
    age_seconds: float | None  # None: never mirrored
    stale: bool
    last_error: str | None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> MirrorFreshness:
        age = row["age_seconds"]
        return cls(
            clinic_id=_uuid(row["clinic_id"]),
            clinic_name=str(row["clinic_name"]),
            last_synced_at=_optional_timestamp(row["last_synced_at"]),
            age_seconds=None if age is None else number("age_seconds", age),
            stale=bool(row["stale"]),
            last_error=row["last_error"],
        )


@dataclass(frozen=True)
class ReadinessFacts:
    """`readiness_facts()`: what `verify` needs to know about the schema's safety and history."""

    tables_without_rls: tuple[str, ...]
    anon_table_privileges: tuple[str, ...]
    broadcast_doorbell: bool  # the Supabase path's: a trigger sending ids to Realtime with realtime.send
    notify_doorbell: bool  # the direct path's: a trigger NOTIFYing calendar_sync
    appointments_in_realtime: bool  # in supabase_realtime: whole rows could reach Postgres Changes subscribers
    applied_migrations: tuple[str, ...]

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ReadinessFacts:
        return cls(
            tables_without_rls=tuple(str(t) for t in row["tables_without_rls"]),
            anon_table_privileges=tuple(str(p) for p in row["anon_table_privileges"]),
            broadcast_doorbell=bool(row["broadcast_doorbell"]),
            notify_doorbell=bool(row["notify_doorbell"]),
            appointments_in_realtime=bool(row["appointments_in_realtime"]),
            applied_migrations=tuple(str(v) for v in row["applied_migrations"]),
        )


@dataclass(frozen=True)
class SyncStatus:
    """`appointment_sync_status(clinic, reference)`: where one booking stands with the calendar."""

    appointment_id: uuid.UUID
    status: str
    sync_state: str
    calendar_event_id: str | None
    last_sync_error: str | None
    revision: int
    synced_revision: int | None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> SyncStatus:
        synced = row["synced_revision"]
        return cls(
            appointment_id=_uuid(row["appointment_id"]),
            status=str(row["status"]),
            sync_state=str(row["sync_state"]),
            calendar_event_id=row["calendar_event_id"],
            last_sync_error=row["last_sync_error"],
            revision=int(row["revision"]),
            synced_revision=None if synced is None else int(synced),
        )


# --- practitioners (operator commands) -----------------------------------------------------------------


@dataclass(frozen=True)
class Practitioner:
    """One of a clinic's practitioners as `clinic_practitioners(id)` lists them, deactivated ones too."""

    id: uuid.UUID
    name: str
    services: tuple[str, ...] | None  # None: every service of the clinic
    calendar_id: str | None  # None: the clinic's calendar
    active: bool
    opening_hours: tuple[OpeningPeriod, ...] | None  # None: the clinic's opening hours
    upcoming_bookings: int  # booked and not yet over

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Practitioner:
        services, hours = row["services"], row["opening_hours"]
        return cls(
            id=_uuid(row["id"]),
            name=str(row["name"]),
            services=None if services is None else tuple(str(s) for s in services),
            calendar_id=row["calendar_id"],
            active=bool(row["active"]),
            opening_hours=None
            if hours is None
            else tuple(OpeningPeriod(int(h["weekday"]), str(h["opens"]), str(h["closes"])) for h in hours),
            upcoming_bookings=count("upcoming_bookings", row["upcoming_bookings"]),
        )


@dataclass(frozen=True)
class PractitionerChanges:
    """What `change_practitioner` changes: a field left None stays as it is. `all_services`, `clinic_hours` and
    `clinic_calendar` put the practitioner back on the clinic's; `reactivate` takes a deactivated one back."""

    name: str | None = None
    services: tuple[str, ...] | None = None
    all_services: bool = False
    opening_hours: tuple[Mapping[str, Any], ...] | None = None  # [{"weekday", "opens", "closes"}, ...]
    clinic_hours: bool = False
    calendar_id: str | None = None
    clinic_calendar: bool = False
    reactivate: bool = False

    def __post_init__(self) -> None:
        for given, reset, what in (
            (self.services, self.all_services, "services"),
            (self.opening_hours, self.clinic_hours, "opening hours"),
            (self.calendar_id, self.clinic_calendar, "calendar"),
        ):
            if given is not None and reset:
                raise ValueError(f"{what}: give new ones or the clinic's, not both")

    def to_json(self) -> dict[str, Any]:
        """Only the keys that change (JSON null: back to the clinic's)."""
        changes: dict[str, Any] = {}
        if self.name is not None:
            changes["name"] = self.name
        if self.services is not None or self.all_services:
            changes["services"] = None if self.services is None else list(self.services)
        if self.opening_hours is not None or self.clinic_hours:
            changes["opening_hours"] = None if self.opening_hours is None else [dict(p) for p in self.opening_hours]
        if self.calendar_id is not None or self.clinic_calendar:
            changes["calendar_id"] = self.calendar_id
        if self.reactivate:
            changes["active"] = True
        return changes


@dataclass(frozen=True)
class PractitionerBooking:
    """A booking ahead of a deactivated practitioner and what `deactivate_practitioner` did with it: `kept`
    (still theirs: the clinic moves or cancels it) or `moved` (to `practitioner_name`, a colleague free then)."""

    appointment_id: uuid.UUID
    reference: str
    starts_at: dt.datetime
    service: str
    practitioner_name: str  # who the patient sees now
    outcome: Literal["kept", "moved"]

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> PractitionerBooking:
        outcome = row["outcome"]
        if outcome not in ("kept", "moved"):
            raise ValueError(f"outcome: expected kept or moved, got {outcome!r}")
        return cls(
            appointment_id=_uuid(row["appointment_id"]),
            reference=str(row["reference"]),
            starts_at=_timestamp(row["starts_at"]),
            service=str(row["service"]),
            practitioner_name=str(row["practitioner_name"]),
            outcome=outcome,
        )


# --- clinic links (the clinic-facing pages) ----------------------------------------------------------


@dataclass(frozen=True)
class IssuedLink:
    """`issue_clinic_link(...)`: a new link; its secret is returned this once (only its hash is stored)."""

    id: uuid.UUID
    secret: str
    expires_at: dt.datetime

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> IssuedLink:
        return cls(_uuid(row["id"]), str(row["secret"]), _timestamp(row["expires_at"]))


@dataclass(frozen=True)
class ClinicLink:
    """One of a clinic's links as `clinic_links(id)` lists it: never its secret."""

    id: uuid.UUID
    purpose: str  # connect | status
    state: str  # open | used | expired | revoked
    created_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ClinicLink:
        return cls(
            id=_uuid(row["id"]),
            purpose=str(row["purpose"]),
            state=str(row["state"]),
            created_at=_timestamp(row["created_at"]),
            expires_at=_timestamp(row["expires_at"]),
            used_at=_optional_timestamp(row["used_at"]),
            revoked_at=_optional_timestamp(row["revoked_at"]),
        )


@dataclass(frozen=True)
class LinkTarget:
    """What a link (or a consent's state) opens: `state` is open, used, expired, revoked or unknown; the clinic
    only for an open one."""

    state: str
    link_id: uuid.UUID | None = None
    clinic_id: uuid.UUID | None = None
    clinic_name: str = ""
    calendar_id: str = ""
    time_zone: str = ""
    expires_at: dt.datetime | None = None
    code_verifier_encrypted: str | None = None

    @property
    def open(self) -> bool:
        return self.state == "open" and self.clinic_id is not None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> LinkTarget:
        if row.get("state") != "open":
            return cls(str(row.get("state") or "unknown"))
        return cls(
            state="open",
            link_id=_uuid(row["link_id"]),
            clinic_id=_uuid(row["clinic_id"]),
            clinic_name=str(row["clinic_name"]),
            calendar_id=str(row["calendar_id"]),
            time_zone=str(row["time_zone"]),
            expires_at=_optional_timestamp(row.get("expires_at")),
            code_verifier_encrypted=row.get("code_verifier_encrypted"),
        )


@dataclass(frozen=True)
class StatusBooking:
    """A booking on the clinic status page: what the clinic's calendar event shows its staff, and its sync state."""

    starts_at: dt.datetime
    local_start: str
    reference: str
    service: str
    patient_name: str
    status: str
    sync_state: str
    reason: str | None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> StatusBooking:
        return cls(
            starts_at=_timestamp(row["starts_at"]),
            local_start=str(row["local_start"]),
            reference=str(row["reference"]),
            service=str(row["service"]),
            patient_name=str(row["patient_name"] or ""),
            status=str(row["status"]),
            sync_state=str(row["sync_state"]),
            reason=row.get("reason"),
        )


@dataclass(frozen=True)
class StatusConnection:
    status: str  # active | needs_reauth | revoked
    google_account: str | None
    connected_at: dt.datetime | None
    last_error: str | None
    refresh_token_expires_at: dt.datetime | None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> StatusConnection:
        return cls(
            status=str(row["status"]),
            google_account=row.get("google_account"),
            connected_at=_optional_timestamp(row.get("connected_at")),
            last_error=row.get("last_error"),
            refresh_token_expires_at=_optional_timestamp(row.get("refresh_token_expires_at")),
        )


@dataclass(frozen=True)
class StatusPage:
    """`clinic_status_page(secret)`: one clinic's connection and bookings; only `state` for a link not open."""

    state: str
    clinic_name: str = ""
    calendar_id: str = ""
    time_zone: str = ""
    connection: StatusConnection | None = None
    upcoming: tuple[StatusBooking, ...] = ()
    failures: tuple[StatusBooking, ...] = ()

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> StatusPage:
        if row.get("state") != "open":
            return cls(str(row.get("state") or "unknown"))
        connection = row.get("connection")
        return cls(
            state="open",
            clinic_name=str(row["clinic_name"]),
            calendar_id=str(row["calendar_id"]),
            time_zone=str(row["time_zone"]),
            connection=StatusConnection.from_json(connection) if connection else None,
            upcoming=tuple(StatusBooking.from_json(b) for b in row.get("upcoming") or []),
            failures=tuple(StatusBooking.from_json(b) for b in row.get("failures") or []),
        )


@dataclass(frozen=True)
class ConnectReadiness:
    """`connect_readiness()`: clinics never connected to Google, and links still open (for `verify`)."""

    never_connected: tuple[tuple[uuid.UUID, str], ...]
    open_links: tuple[tuple[uuid.UUID, str, str, dt.datetime], ...]  # link id, clinic name, purpose, expiry

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ConnectReadiness:
        return cls(
            never_connected=tuple((_uuid(c["clinic_id"]), str(c["clinic_name"])) for c in row["never_connected"]),
            open_links=tuple(
                (_uuid(link["link_id"]), str(link["clinic_name"]), str(link["purpose"]), _timestamp(link["expires_at"]))
                for link in row["open_links"]
            ),
        )
