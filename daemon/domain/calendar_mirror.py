"""The busy mirror (supabase/schemas/70_calendar_mirror.sql): the calendars read back, what a listing
changed, and how fresh each clinic's mirror is."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import Field

from daemon.domain.reply import Count, Number, Reply, null_as

# What one applied calendar listing can change, as `apply_calendar_changes` counts it.
MIRROR_CHANGES = ("busy", "freed", "cancelled", "moved", "restored")


class MirrorTarget(Reply):
    """A connected calendar the busy mirror reads (`claim_mirror_targets`), with where its last listing ended."""

    clinic_id: uuid.UUID
    calendar_id: str
    time_zone: str
    sync_token: str | None = Field(repr=False)
    last_synced_at: dt.datetime | None


class MirrorSummary(Reply):
    """What one applied listing changed (`apply_calendar_changes`); a change left out counts as 0."""

    busy: Count = 0
    freed: Count = 0
    cancelled: Count = 0
    moved: Count = 0
    restored: Count = 0
    # Google notified a change while the calendar was listed: list it once more.
    again: Annotated[bool, null_as(False)] = False


class MirrorFreshness(Reply):
    """`calendar_mirror_freshness()`: how long ago a connected clinic's calendar was read back."""

    clinic_id: uuid.UUID
    clinic_name: str
    last_synced_at: dt.datetime | None
    age_seconds: Number | None  # None: never mirrored
    stale: bool
    last_error: str | None
