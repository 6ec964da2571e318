"""Operator actions on clinics and their keys, over either database path.

The database validates everything (`create_clinic` refuses a bad time zone, overlapping hours,
a second default service ...); this module only turns the command line's compact notation
("mon-fri 09:00-17:00", "Check-up=30") into the JSON those functions take.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from daemon.store import Store

WEEKDAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
HOURS_PATTERN = re.compile(r"^\s*(?P<days>[a-z,\-]+)\s+(?P<opens>\d{1,2}:\d{2})\s*-\s*(?P<closes>\d{1,2}:\d{2})\s*$")
SERVICE_PATTERN = re.compile(r"^\s*(?P<name>[^=]+?)\s*=\s*(?P<minutes>\d+)\s*(?P<default>\*?)\s*$")
DEFAULT_HOURS = ("mon-fri 09:00-17:00",)
DEFAULT_SERVICES = ("Appointment=30",)


class UsageError(ValueError):
    """The command line could not be understood; nothing was changed."""


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
