"""Practitioners (supabase/schemas/20_practitioners.sql), as the operator commands list, change and deactivate
them."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from daemon.domain.clinics import OpeningPeriod
from daemon.domain.reply import Count, Reply


class Practitioner(Reply):
    """One of a clinic's practitioners as `clinic_practitioners(id)` lists them, deactivated ones too."""

    id: uuid.UUID
    name: str
    services: tuple[str, ...] | None  # None: every service of the clinic
    calendar_id: str | None  # None: the clinic's calendar
    active: bool
    opening_hours: tuple[OpeningPeriod, ...] | None  # None: the clinic's opening hours
    upcoming_bookings: Count  # booked and not yet over


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


class PractitionerBooking(Reply):
    """A booking ahead of a deactivated practitioner and what `deactivate_practitioner` did with it: `kept`
    (still theirs: the clinic moves or cancels it) or `moved` (to `practitioner_name`, a colleague free then)."""

    appointment_id: uuid.UUID
    reference: str
    starts_at: dt.datetime
    service: str
    practitioner_name: str  # who the patient sees now
    outcome: Literal["kept", "moved"]
