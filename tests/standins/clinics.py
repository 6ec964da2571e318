"""Sets up clinics directly in the database (as the owner), for tests and the demo."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from tests.standins.postgres import scalar

WEEKDAYS_9_TO_5 = {day: [("09:00", "17:00")] for day in range(1, 6)}
DEFAULT_SERVICES = (("Check-up", 30, True), ("Consultation", 60, False))


def create_clinic(
    conn: psycopg.Connection,
    name: str = "Riverside Clinic",
    *,
    hours: Mapping[int, Sequence[tuple[str, str]]] = WEEKDAYS_9_TO_5,
    services: Sequence[tuple[str, int, bool]] = DEFAULT_SERVICES,
    **settings: Any,
) -> uuid.UUID:
    """Insert a clinic with opening hours ({ISO weekday: [(opens, closes)]}) and services."""
    columns = ["name", *settings]
    clinic_id: uuid.UUID = scalar(
        conn,
        f"insert into public.clinics ({', '.join(columns)}) values ({', '.join(['%s'] * len(columns))}) returning id",
        [name, *settings.values()],
    )
    for weekday, periods in hours.items():
        for opens, closes in periods:
            conn.execute(
                "insert into public.clinic_opening_hours (clinic_id, weekday, opens, closes) values (%s, %s, %s, %s)",
                (clinic_id, weekday, opens, closes),
            )
    for service, minutes, is_default in services:
        conn.execute(
            "insert into public.clinic_services (clinic_id, name, duration_minutes, is_default)"
            " values (%s, %s, %s, %s)",
            (clinic_id, service, minutes, is_default),
        )
    return clinic_id


def issue_key(conn: psycopg.Connection, clinic_id: uuid.UUID, label: str = "") -> str:
    return str(scalar(conn, "select public.issue_clinic_key(%s, %s)", (clinic_id, label)))
