"""Vapi set up by the product (supabase/schemas/55_vapi_setup.sql): what `clinic-sync vapi-sync` made in Vapi
for a clinic, and whether Vapi is in step with it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import Field, SecretStr

from daemon.domain.reply import Count, Reply, null_as


class VapiSetup(Reply):
    """`vapi_setup(id)`, `claim_vapi_setup(...)`, a row of `claim_stale_vapi_setups(...)` or of
    `vapi_setups_overview()`: Vapi's ids for the clinic and the stale/retry bookkeeping."""

    clinic_id: uuid.UUID
    clinic_name: str
    assistant_id: str | None = None
    credential_id: str | None = None
    credential_key_id: uuid.UUID | None = None
    # The key in the credential still works (not revoked, or in a rotation's grace period).
    credential_key_valid: bool = False
    # Vapi's tool id by function name.
    tools: Annotated[dict[str, str], null_as({})] = Field(default_factory=dict)
    # The clinic's revision: what a sync now makes Vapi match.
    revision: Count
    stale: bool
    stale_since: dt.datetime | None = None
    stale_because: str | None = None
    sync_attempts: Count = 0
    next_attempt_at: dt.datetime | None = None
    last_error: str | None = None
    last_synced_at: dt.datetime | None = None


class IssuedVapiKey(Reply):
    """`issue_vapi_credential_key(...)`: a new clinic key for the Vapi credential, this once in plain text."""

    key_id: uuid.UUID
    key: SecretStr  # never printed or logged: it goes to Vapi only
