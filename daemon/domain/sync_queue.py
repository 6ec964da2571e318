"""The sync queue (supabase/schemas/65_sync_queue.sql): leased appointments, what their pushes became, and
the queue's backlog."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from daemon.domain.reply import Count, Number, Reply, null_as

# What a leased appointment became when its holder reported back.
LeaseResult = Literal["synced", "pending", "failed", "parked", "lease_lost"]
# Why a push goes round again (a metric label, so a closed set).
RetryReason = Literal["rate_limited", "quota", "google_error", "network", "token", "budget", "internal"]


class Claim(Reply):
    """One appointment leased to this daemon (`claim_appointments`), with what a calendar push needs."""

    appointment_id: uuid.UUID
    clinic_id: uuid.UUID
    revision: int
    status: str
    reference: str
    patient: Mapping[str, Any] = Field(repr=False)  # patient details never reach logs
    service: str
    notes: str | None = Field(repr=False)
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
    # Which of the appointment's event ids is current (a new one after a refused restore).
    event_generation: Annotated[int, null_as(0)] = 0
    # The calendar holding the appointment's event now, when that is not `calendar_id` (where it belongs: its
    # practitioner's): the event moves there. None: no event yet, or already in the right calendar.
    event_calendar_id: str | None = None
    practitioner_name: str | None = None

    @field_validator("event_calendar_id")
    @classmethod
    def _moving_from(cls, holder: str | None, info: ValidationInfo) -> str | None:
        """The SQL names the event's calendar even when it is where it belongs: then it is not moving."""
        return None if holder == info.data.get("calendar_id") else holder

    @property
    def moving(self) -> bool:
        """The event is in another calendar than its practitioner's: it moves."""
        return self.event_calendar_id is not None


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


class BacklogSnapshot(Reply):
    """`sync_backlog()`: the shared sync queue as one database query saw it, e.g.
    `{"by_state": {"pending": 3}, "oldest_pending_age_seconds": 12.5, "clinics_needing_reauth": 1}`.
    States the metrics do not know are kept but not exported."""

    by_state: Mapping[str, Count]  # sync_state -> count; a state left out counts as 0
    oldest_pending_age_seconds: Number  # the oldest unsynced change's wait; 0 when nothing waits
    clinics_needing_reauth: Count

    def state(self, name: str) -> int:
        return self.by_state.get(name, 0)


class SyncStatus(Reply):
    """`appointment_sync_status(clinic, reference)`: where one booking stands with the calendar."""

    appointment_id: uuid.UUID
    status: str
    sync_state: str
    calendar_event_id: str | None
    last_sync_error: str | None
    revision: int
    synced_revision: int | None
