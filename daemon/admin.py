"""Operator actions on clinics and their keys, over either database path.

The database validates everything (`create_clinic` refuses a bad time zone, overlapping hours,
a second default service ...; `add_practitioner` a service the clinic does not have, a name it already
has ...); this module only turns the command line's compact notation ("mon-fri 09:00-17:00",
"Check-up=30", "Check-up, Hygiene") into the JSON those functions take, and back.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from daemon.domain.clinics import OpeningPeriod
from daemon.domain.practitioners import Practitioner, PractitionerBooking, PractitionerChanges
from daemon.store import Store

WEEKDAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
HOURS_PATTERN = re.compile(r"^\s*(?P<days>[a-z,\-]+)\s+(?P<opens>\d{1,2}:\d{2})\s*-\s*(?P<closes>\d{1,2}:\d{2})\s*$")
SERVICE_PATTERN = re.compile(r"^\s*(?P<name>[^=]+?)\s*=\s*(?P<minutes>\d+)\s*(?P<default>\*?)\s*$")
DEFAULT_HOURS = ("mon-fri 09:00-17:00",)
DEFAULT_SERVICES = ("Appointment=30",)


class UsageError(ValueError):
    """The command line could not be understood; nothing was changed."""


class Refused(Exception):
    """The request does not fit what the database holds (e.g. a practitioner of another clinic); nothing was
    changed."""


def parse_days(days: str) -> list[int]:
    """'mon-fri', 'sat', 'mon,wed,fri' or 'mon-wed,fri' as ISO weekdays (1 = Monday)."""
    result: list[int] = []
    for part in days.split(","):
        ends = part.split("-")
        if len(ends) > 2 or any(end not in WEEKDAYS for end in ends):
            raise UsageError(f"unknown day(s) {part!r}: use mon, tue, wed, thu, fri, sat, sun, ranges like mon-fri")
        first, last = WEEKDAYS[ends[0]], WEEKDAYS[ends[-1]]
        if last < first:
            raise UsageError(f"day range {part!r} runs backwards")
        result.extend(range(first, last + 1))
    return sorted(set(result))


def parse_hours(specs: list[str]) -> list[dict[str, Any]]:
    """['mon-fri 09:00-17:00', 'sat 09:00-12:00'] as [{"weekday", "opens", "closes"}, ...]."""
    periods: list[dict[str, Any]] = []
    for spec in specs:
        match = HOURS_PATTERN.match(spec.lower())
        if match is None:
            raise UsageError(f"opening hours {spec!r} are not like 'mon-fri 09:00-17:00'")
        opens, closes = (_zero_pad(match[k]) for k in ("opens", "closes"))
        periods.extend({"weekday": day, "opens": opens, "closes": closes} for day in parse_days(match["days"]))
    return periods


def parse_services(specs: list[str]) -> list[dict[str, Any]]:
    """['Check-up=30*', 'Consultation=60'] as [{"name", "duration_minutes", "is_default"}]; `*` marks
    the default (else the first one is)."""
    services = []
    for spec in specs:
        match = SERVICE_PATTERN.match(spec)
        if match is None:
            raise UsageError(f"service {spec!r} is not like 'Check-up=30' (name=minutes, '*' after the default)")
        services.append(
            {"name": match["name"], "duration_minutes": int(match["minutes"]), "is_default": bool(match["default"])}
        )
    return services


def format_hours(periods: Sequence[OpeningPeriod]) -> list[str]:
    """The notation `parse_hours` reads, from periods: days with the same hours together, e.g.
    ['mon-fri 09:00-17:00', 'sat 09:00-12:00']."""
    days_by_hours: dict[tuple[str, str], list[int]] = {}
    for period in sorted(periods, key=lambda p: (p.weekday, p.opens)):
        days_by_hours.setdefault((period.opens, period.closes), []).append(period.weekday)
    ordered = sorted(days_by_hours.items(), key=lambda item: (item[1][0], item[0]))
    return [f"{_format_days(days)} {opens}-{closes}" for (opens, closes), days in ordered]


def _format_days(days: list[int]) -> str:
    names = {number: name for name, number in WEEKDAYS.items()}
    runs = []
    for _, run in itertools.groupby(enumerate(days), key=lambda pair: pair[1] - pair[0]):
        consecutive = [day for _, day in run]
        first, last = names[consecutive[0]], names[consecutive[-1]]
        runs.append(first if first == last else f"{first}-{last}")
    return ",".join(runs)


def parse_service_names(spec: str) -> tuple[str, ...]:
    """'Check-up, Hygiene' as ('Check-up', 'Hygiene'); the database checks that the clinic offers each."""
    names = tuple(name.strip() for name in spec.split(","))
    if any(not name for name in names):
        raise UsageError(f"services {spec!r} are not like 'Check-up, Hygiene' (the clinic's service names)")
    return names


def _zero_pad(clock: str) -> str:
    hours, minutes = clock.split(":")
    return f"{int(hours):02d}:{minutes}"


@dataclass(frozen=True)
class NewClinic:
    name: str
    time_zone: str = "Europe/London"
    calendar_id: str = "primary"
    hours: list[str] = field(default_factory=lambda: list(DEFAULT_HOURS))
    services: list[str] = field(default_factory=lambda: list(DEFAULT_SERVICES))
    phone_country_code: str = "44"
    key_label: str = "vapi"


@dataclass(frozen=True)
class CreatedClinic:
    clinic_id: uuid.UUID
    key: str  # shown once: only its hash is stored


async def add_clinic(store: Store, clinic: NewClinic) -> CreatedClinic:
    """Create the clinic (hours and services in the same transaction) and issue its first key."""
    hours, services = parse_hours(clinic.hours), parse_services(clinic.services)
    clinic_id = await store.create_clinic(
        clinic.name, clinic.time_zone, clinic.calendar_id, hours, services, clinic.phone_country_code
    )
    key = await store.issue_key(clinic_id, clinic.key_label)
    return CreatedClinic(clinic_id, key)


async def rotate_key(store: Store, clinic_id: uuid.UUID, label: str, grace_minutes: int) -> str:
    """A new key; the clinic's other keys stop working after the grace period."""
    if grace_minutes < 0:
        raise UsageError("the grace period cannot be negative")
    return await store.rotate_key(clinic_id, label, grace_minutes)


# --- practitioners ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewPractitioner:
    clinic_id: uuid.UUID
    name: str
    services: tuple[str, ...] | None = None  # None: every service of the clinic
    hours: list[dict[str, Any]] | None = None  # [{"weekday", "opens", "closes"}]; None: the clinic's opening hours
    calendar_id: str | None = None  # None: the clinic's calendar

    @classmethod
    def from_notation(
        cls, clinic_id: uuid.UUID, name: str, services: str | None, hours: list[str] | None, calendar_id: str | None
    ) -> NewPractitioner:
        """From the command line's 'Check-up, Hygiene' and ['mon-fri 09:00-17:00'] (UsageError when they are not
        like that, before the database is touched)."""
        return cls(
            clinic_id,
            name,
            None if services is None else parse_service_names(services),
            None if hours is None else parse_hours(hours),
            calendar_id,
        )


def practitioner_changes(
    *,
    name: str | None = None,
    services: str | None = None,
    all_services: bool = False,
    hours: list[str] | None = None,
    clinic_hours: bool = False,
    calendar_id: str | None = None,
    clinic_calendar: bool = False,
    reactivate: bool = False,
) -> PractitionerChanges:
    """The command line's changes, checked for notation; refuses a change of nothing."""
    try:
        changes = PractitionerChanges(
            name=name,
            services=None if services is None else parse_service_names(services),
            all_services=all_services,
            opening_hours=None if hours is None else tuple(parse_hours(hours)),
            clinic_hours=clinic_hours,
            calendar_id=calendar_id,
            clinic_calendar=clinic_calendar,
            reactivate=reactivate,
        )
    except ValueError as error:
        raise UsageError(str(error)) from error
    if not changes.to_json():
        raise UsageError(
            "nothing to change: give --name, --services/--all-services, --hours/--clinic-hours,"
            " --calendar-id/--clinic-calendar or --reactivate"
        )
    return changes


async def add_practitioner(store: Store, practitioner: NewPractitioner) -> uuid.UUID:
    return await store.add_practitioner(
        practitioner.clinic_id, practitioner.name, practitioner.services, practitioner.hours, practitioner.calendar_id
    )


@dataclass(frozen=True)
class Deactivation:
    """A deactivated practitioner and each of their bookings ahead, kept with them or moved to a colleague."""

    practitioner: Practitioner
    time_zone: str  # the clinic's: the bookings' local times
    bookings: list[PractitionerBooking]

    def local_start(self, booking: PractitionerBooking) -> dt.datetime:
        return booking.starts_at.astimezone(ZoneInfo(self.time_zone))


async def find_practitioner(store: Store, clinic_id: uuid.UUID, practitioner_id: uuid.UUID) -> Practitioner:
    """The clinic's practitioner with this id; refuses an id the clinic does not have."""
    for practitioner in await store.clinic_practitioners(clinic_id):
        if practitioner.id == practitioner_id:
            return practitioner
    raise Refused(f"the clinic {clinic_id} has no practitioner with id {practitioner_id}")


async def deactivate_practitioner(
    store: Store, clinic_id: uuid.UUID, practitioner_id: uuid.UUID, reassign: bool
) -> Deactivation:
    """Stop the clinic's practitioner taking bookings (checked to be the clinic's first: an id of another clinic
    changes nothing) and say what became of each of their bookings ahead."""
    profile = await store.clinic_profile(clinic_id)
    practitioner = await find_practitioner(store, clinic_id, practitioner_id)
    bookings = await store.deactivate_practitioner(practitioner_id, reassign)
    return Deactivation(practitioner, profile.time_zone, bookings)
