"""Clinics and their keys (supabase/schemas/10_clinics_and_keys.sql): a clinic's profile as the assistant and
the operator commands see it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from daemon.domain.reply import Reply, null_as


class ClinicService(Reply):
    name: str
    duration_minutes: int
    is_default: bool


class OpeningPeriod(Reply):
    weekday: int  # ISO: 1 = Monday
    opens: str  # "HH:MM", clinic local time
    closes: str


class ConnectionState(Reply):
    """What an operator may see of a clinic's Google connection (no token)."""

    status: str
    google_account: str | None = None
    last_error: str | None = None
    refresh_token_expires_at: dt.datetime | None = None


class BookablePractitioner(Reply):
    """A practitioner the assistant can book, as `clinic_profile(id)` names them: every service they offer
    (spelt as the clinic spells them) and their own calendar (None: the clinic's)."""

    id: uuid.UUID
    name: str
    services: Annotated[tuple[str, ...], null_as(())] = ()
    calendar_id: str | None = None


class ClinicProfile(Reply):
    """`clinic_profile(id)`: a clinic's settings, services, hours and connection state."""

    id: uuid.UUID
    name: str
    time_zone: str
    calendar_id: str
    slot_minutes: int
    booking_horizon_days: int
    services: tuple[ClinicService, ...]
    opening_hours: tuple[OpeningPeriod, ...]
    connection: ConnectionState | None = None
    # Active ones only; none: the clinic is one diary.
    practitioners: Annotated[tuple[BookablePractitioner, ...], null_as(())] = ()


class ClinicKey(Reply):
    """One of a clinic's keys as `clinic_keys(id)` lists it: never the key itself, only its prefix."""

    id: uuid.UUID
    key_prefix: str
    label: Annotated[str, null_as("")]
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
