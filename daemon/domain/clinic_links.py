"""Clinic links (supabase/schemas/85_clinic_links.sql): the links behind the clinic-facing pages, what one
opens, and the status page it shows."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import model_validator

from daemon.domain.reply import Reply, null_as, rows_as_tuples


class IssuedLink(Reply):
    """`issue_clinic_link(...)`: a new link; its secret is returned this once (only its hash is stored)."""

    id: uuid.UUID
    secret: str
    expires_at: dt.datetime


class ClinicLink(Reply):
    """One of a clinic's links as `clinic_links(id)` lists it: never its secret."""

    id: uuid.UUID
    purpose: str  # connect | status
    state: str  # open | used | expired | revoked
    created_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class _AboutALink(Reply):
    """A reply about a link: `state` is open, used, expired, revoked or unknown, and one not open tells
    nothing else."""

    state: str

    @model_validator(mode="before")
    @classmethod
    def _state_alone_unless_open(cls, row: Any) -> Any:
        if isinstance(row, Mapping) and row.get("state") != "open":
            return {"state": row.get("state") or "unknown"}
        return row


class LinkTarget(_AboutALink):
    """What a link (or a consent's state) opens: the clinic, for an open one."""

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


class StatusBooking(Reply):
    """A booking on the clinic status page: what the clinic's calendar event shows its staff, and its sync state."""

    starts_at: dt.datetime
    local_start: str
    reference: str
    service: str
    patient_name: Annotated[str, null_as("")]
    status: str
    sync_state: str
    reason: str | None = None


class StatusConnection(Reply):
    status: str  # active | needs_reauth | revoked
    google_account: str | None = None
    connected_at: dt.datetime | None = None
    last_error: str | None = None
    refresh_token_expires_at: dt.datetime | None = None


class StatusPage(_AboutALink):
    """`clinic_status_page(secret)`: one clinic's connection and bookings, for an open status link."""

    clinic_name: str = ""
    calendar_id: str = ""
    time_zone: str = ""
    connection: StatusConnection | None = None
    upcoming: Annotated[tuple[StatusBooking, ...], null_as(())] = ()
    failures: Annotated[tuple[StatusBooking, ...], null_as(())] = ()


class ConnectReadiness(Reply):
    """`connect_readiness()`: clinics never connected to Google, and links still open (for `verify`)."""

    # (clinic id, clinic name) from [{"clinic_id", "clinic_name"}, ...]
    never_connected: Annotated[tuple[tuple[uuid.UUID, str], ...], rows_as_tuples("clinic_id", "clinic_name")]
    # (link id, clinic name, purpose, expiry) from [{"link_id", "clinic_name", "purpose", "expires_at"}, ...]
    open_links: Annotated[
        tuple[tuple[uuid.UUID, str, str, dt.datetime], ...],
        rows_as_tuples("link_id", "clinic_name", "purpose", "expires_at"),
    ]
