"""Clinics' Google connections (supabase/schemas/60_calendar_connections.sql): their stored tokens and how
each stands."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import Field

from daemon.domain.reply import Reply


class ConnectionTokens(Reply):
    """A clinic's stored Google tokens, still encrypted (`calendar_connection_tokens`)."""

    clinic_id: uuid.UUID
    status: str
    refresh_token_encrypted: str = Field(repr=False)
    access_token_encrypted: str | None = Field(repr=False)
    access_token_expires_at: dt.datetime | None


class ConnectionOverview(Reply):
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
